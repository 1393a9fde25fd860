"""Carry out a launch request as a local child process: `python -m pipeline.cli run-request --from-env ...`.

The request travels as JSON in the child's environment (no command line is built from user values). The
child gets its own process group and SIGTERM when its parent dies however it dies (PR_SET_PDEATHSIG), so
no training outlives the guide API or the cron runner that started it; cancelling sends SIGTERM, on which
the trainer saves its checkpoint and its MLflow run ends KILLED.

A child can also be started ahead of its time (`start`, a scheduled fire's job): it gets ready (config,
imports, tracking store) and waits on its stdin; `run(..., held=child)` tells it to go, `child.release()`
closes its stdin and it exits without creating any run.
"""
from __future__ import annotations

import asyncio
import codecs
import functools
import json
import os
import shutil
import signal
import sys
import tempfile
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TextIO

from pipeline import processes
from pipeline.launch.inprocess import READY_LINE
from pipeline.launch.request import LaunchRequest
from pipeline.paths import REPO_ROOT

REQUEST_ENV = "PIPELINE_LAUNCH_REQUEST"
KILLED_CODES = (-2, -15, 130, 143)  # SIGINT/SIGTERM, as a signal or as the shell's 128+n
CHUNK = 64 * 1024
TAIL_LINES = 15
MAX_LINE = 8 * 1024  # of an overlong stderr line, the tail kept for the error message


@dataclass
class Outcome:
    """How a launched request ended: the stage's result when it wrote one, else why not."""

    status: str  # FINISHED, FAILED or KILLED
    result: dict[str, Any] | None = None
    error: str | None = None
    exit_code: int | None = None
    tail: list[str] = field(default_factory=list)


def own_group_dying_with_parent(parent: int) -> None:
    """In the child, before exec: own process group (a Ctrl-C aimed at the parent is the parent's to
    handle) and SIGTERM when the parent dies, however it dies (a stopped training saves its model)."""
    os.setpgid(0, 0)
    processes.die_with_parent(signal.SIGTERM, parent)


def child_command(python: str = sys.executable) -> list[str]:
    return [python, "-m", "pipeline.cli", "run-request", "--from-env", REQUEST_ENV]


def child_environment(request: LaunchRequest, base: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in (os.environ if base is None else base).items() if k != "MLFLOW_RUN_ID"}
    env.update(request.env)  # e.g. MLFLOW_TRACKING_URI of an orchestrator given one explicitly
    env["PYTHONUNBUFFERED"] = "1"
    env[REQUEST_ENV] = request.to_json()
    return env


def error_of(tail: list[str]) -> str:
    """The child's last `error:` line, else its last line."""
    errors = [line for line in tail if line.startswith("error:")]
    if errors:
        return errors[-1][len("error:"):].strip()
    last = [line for line in tail if line.strip()]
    return last[-1].strip() if last else ""


class LineTail:
    """The last lines of a byte stream read in chunks: a line longer than any buffer cannot break it."""

    def __init__(self, echo: TextIO | None | Literal["stderr"]) -> None:
        self.lines: deque[str] = deque(maxlen=TAIL_LINES)
        self.partial = b""
        self.echo = echo
        # A chunk can end inside a multi-byte character: decode across chunk boundaries.
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, chunk: bytes) -> None:
        # "stderr": this process's stderr as it is when the line arrives (a caller may have redirected it since).
        echo = sys.stderr if self.echo == "stderr" else self.echo
        if echo is not None:
            echo.write(self.decoder.decode(chunk))
            echo.flush()
        *complete, self.partial = (self.partial + chunk).split(b"\n")
        self.partial = self.partial[-MAX_LINE:]
        for raw in complete:
            self.lines.append(raw[-MAX_LINE:].decode(errors="replace").rstrip())

    def close(self) -> list[str]:
        if self.partial:
            self.lines.append(self.partial.decode(errors="replace").rstrip())
            self.partial = b""
        return list(self.lines)


class Child:
    """A request's child process, its stderr read from the start (a child waiting to go must not block on a
    full pipe). A held child (`LocalProcessExecutor.start`) waits for `go()`, or ends at `release()`."""

    def __init__(self, proc: asyncio.subprocess.Process, request: LaunchRequest, tail: LineTail,
                 tmp: str | None):
        self.proc, self.request, self.tail, self.tmp = proc, request, tail, tmp
        self.ready = asyncio.Event()  # a held child has said it can create its runs at once
        self.pump = asyncio.get_running_loop().create_task(self._pump())

    async def _pump(self) -> None:
        assert self.proc.stderr is not None
        while chunk := await self.proc.stderr.read(CHUNK):
            self.tail.feed(chunk)
            if not self.ready.is_set() and READY_LINE in self.tail.lines:
                self.ready.set()

    async def _tell(self, line: bytes) -> None:
        """Write to a held child's stdin and close it: "go", or nothing (end of input: released)."""
        if self.proc.stdin is None or self.proc.stdin.is_closing():
            return
        try:
            if line:
                self.proc.stdin.write(line)
                await self.proc.stdin.drain()
            self.proc.stdin.close()
        except (BrokenPipeError, ConnectionResetError):
            pass  # it has already ended (its error is in its stderr and exit code)

    async def go(self) -> None:
        await self._tell(b"go\n")

    async def release(self, grace_seconds: float = 10.0) -> int:
        """The job will not run: end the child without it creating any run. A held child exits by itself at end of
        input once it is ready; one still importing after `grace_seconds` gets SIGTERM (it has no run to end)."""
        await self._tell(b"")
        try:
            code = await asyncio.wait_for(asyncio.shield(self.proc.wait()), grace_seconds)
        except asyncio.TimeoutError:
            self.proc.terminate()
            code = await self.proc.wait()
        await self.pump
        self.cleanup()
        return code

    def cleanup(self) -> None:
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None


class LocalProcessExecutor:
    def __init__(self, python: str = sys.executable, cwd: Path = REPO_ROOT,
                 echo: TextIO | None | Literal["stderr"] = "stderr"):
        self.python, self.cwd, self.echo = python, Path(cwd), echo

    async def _spawn(self, request: LaunchRequest) -> Child:
        tmp = None
        if request.result_json is None:
            tmp = tempfile.mkdtemp(prefix="launch-")
            request = replace(request, result_json=str(Path(tmp) / "result.json"))
        proc = await asyncio.create_subprocess_exec(
            *child_command(self.python), cwd=str(self.cwd), env=child_environment(request),
            stdin=asyncio.subprocess.PIPE if request.hold else asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, preexec_fn=functools.partial(own_group_dying_with_parent, os.getpid()))
        return Child(proc, request, LineTail(self.echo), tmp)

    async def start(self, request: LaunchRequest) -> Child:
        """Start the request's process ahead of its time: it checks its config, imports what it needs and opens
        the tracking store, then waits. `run(request, held=child)` lets it go; `child.release()` ends it with no
        run created."""
        return await self._spawn(replace(request, hold=True))

    async def run(self, request: LaunchRequest, on_spawn: Callable[[int], None] | None = None,
                  cancel: asyncio.Event | None = None, held: Child | None = None) -> Outcome:
        """Run the request in a child process (or let the `held` one `start` made go) until it ends."""
        cancel = cancel or asyncio.Event()
        if held is not None and cancel.is_set():
            await held.release()
            return Outcome("KILLED", None, "cancelled before it started")
        child = held or await self._spawn(request)
        proc = child.proc
        try:
            if held is not None:
                await child.go()
            if on_spawn is not None:
                on_spawn(proc.pid)

            async def stop_on_cancel() -> None:
                await cancel.wait()
                if proc.returncode is None:
                    proc.terminate()  # SIGTERM: the trainer saves its checkpoint and the run ends KILLED

            watcher = asyncio.create_task(stop_on_cancel())
            try:
                await child.pump
                code = await proc.wait()
            except asyncio.CancelledError:
                if proc.returncode is None:
                    proc.terminate()
                    await proc.wait()
                raise
            finally:
                watcher.cancel()
            lines = child.tail.close()
            result_path = Path(child.request.result_json)
            if code == 0 and result_path.exists():
                result = json.loads(result_path.read_text())
                return Outcome(result.get("status", "FINISHED") if isinstance(result, dict) else "FINISHED",
                               result, exit_code=code, tail=lines)
            status = "KILLED" if code in KILLED_CODES or cancel.is_set() else "FAILED"
            return Outcome(status, None, error_of(lines) or f"exit code {code}", code, lines)
        finally:
            child.cleanup()


def run_blocking(request: LaunchRequest, **kwargs: Any) -> Outcome:
    """The same, for callers without an event loop (MLflow entry points, scripts)."""
    return asyncio.run(LocalProcessExecutor(**kwargs).run(request))
