"""A training in a process of its own, started with the entry point so that its imports overlap the stage's.

A `train` stage spends its first seconds importing: MLflow and its SQL store for the run, torch, ML-Agents'
trainers and torch._dynamo (which the first optimizer step imports) for the training. In one process these add
up, and the GIL keeps a thread from helping. So the entry point (launch/inprocess.py) starts this process first:
it imports the training side on the other core, checks the config's algorithm with ML-Agents' own structuring
(config/plan.py: `check_algorithm`), warms up and waits. Meanwhile the stage's process composes the config,
imports MLflow and creates the run, then hands over (plan, run id); it never imports torch.

While ML-Agents trains here (training/mlagents_trainer.py, unchanged), its statistics and checkpoints come back
over a pipe, in order, to the stage's sinks (tracking/training_stats.py) and checkpoint uploader; a checkpoint
waits for its upload, as in one process. SIGTERM or Ctrl-C to the stage's process stop the training as they
would in one process: ML-Agents saves the model, the run ends KILLED. A trainer process whose stage dies sees
its pipe close and stops.

Without a started trainer process (the Python API, tests, a hybrid run's fine-tuning) `train` runs ML-Agents in
the caller's process, feeding the same sinks the same data.
"""
from __future__ import annotations

import contextlib
import os
import pickle
import signal
import subprocess
import sys
import threading
import traceback
from multiprocessing.connection import Connection, Pipe
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from pipeline.training.outcome import TrainingOutcome

CLOSE_SECONDS = 60  # a stopped training's model save, before its process is killed


class TrainerProcessDied(RuntimeError):
    """The trainer process exited without an answer (killed, out of memory): its output says why."""


class TrainerProcess:
    """The stage's side of one trainer process: one algorithm check, then one training."""

    def __init__(self) -> None:
        ours, theirs = Pipe()
        self.conn = ours
        # stdin: a held request reads its "go" there (launch/inprocess.py); the trainer must not take it.
        self.proc = subprocess.Popen([sys.executable, "-u", "-m", __name__, str(theirs.fileno()), str(os.getpid())],
                                     pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
        theirs.close()
        self._checking = False
        self._training = False  # a training was handed over and is running: it has a model to save before it ends
        self._answered = False  # its training answered
        self._signalled: int | None = None

    def check_algorithm(self, algorithm: dict, max_steps: int) -> None:
        """build_plan's algorithm_check: asks, returns at once; `checked` gives the answer."""
        self.conn.send(("check", algorithm, max_steps))
        self._checking = True

    def checked(self) -> None:
        """Raises the check's ConfigError, if any (waiting for the trainer process to have imported ML-Agents)."""
        if self._checking:
            self._checking = False
            self._result(self._receive())

    def train(self, plan, results_dir: Path, run_id: str, sinks: Sequence[Any], resume: bool = False,
              on_checkpoint: Callable[[Path, int], None] | None = None,
              meanwhile: Callable[[], None] | None = None) -> TrainingOutcome:
        self.checked()
        self.conn.send(("train", plan, results_dir, run_id, resume, on_checkpoint is not None))
        self._training = True
        with self._forwarding_signals():
            if meanwhile:
                meanwhile()
            while True:
                message = self._receive()
                if message[0] == "stats":
                    for sink in sinks:
                        sink.write_stats(*message[1:])
                elif message[0] == "checkpoint":
                    try:
                        on_checkpoint(Path(message[1]), message[2])
                    except BaseException as exc:
                        self.conn.send(_error(exc))
                        raise
                    self.conn.send(("ok", None))
                else:
                    self._training, self._answered = False, True  # it exits by itself now
                    return self._result(message)

    def close(self) -> None:
        """Ends the process. Before a training it holds nothing but imports: killed at once (a config error stays
        instant). A training that answered exits by itself; one still running is stopped as SIGTERM stops it
        (it saves its model), and killed after CLOSE_SECONDS."""
        self.conn.close()
        if self.proc.poll() is not None:
            return
        if not self._training:
            if not self._answered:
                self.proc.kill()
        else:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(CLOSE_SECONDS)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def _receive(self) -> tuple:
        try:
            return self.conn.recv()
        except (EOFError, OSError):
            code = self.proc.wait()
            if self._signalled is not None:  # stopped before its training could catch the signal
                raise KeyboardInterrupt(f"signal {self._signalled}") from None
            raise TrainerProcessDied(f"the trainer process (pid {self.proc.pid}) exited with code {code} before "
                                     "it answered; its output above says why") from None

    @staticmethod
    def _result(message: tuple) -> Any:
        if message[0] == "ok":
            return message[1]
        _, data, child_traceback = message
        try:
            exc = pickle.loads(data)
        except Exception:  # a class this process cannot rebuild: its name and text are what matter
            exc = RuntimeError(child_traceback.strip().splitlines()[-1])
        exc.add_note(f"raised in the trainer process:\n{child_traceback}")
        raise exc

    @contextlib.contextmanager
    def _forwarding_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def forward(signum, frame):
            self._signalled = signum
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signum)

        previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def _error(exc: BaseException) -> tuple:
    try:
        data = pickle.dumps(exc)
    except Exception:
        data = b""
    return ("error", data, "".join(traceback.format_exception(exc)))


# --- this process's started trainer process -------------------------------------------------------------------

_started: TrainerProcess | None = None


def start() -> TrainerProcess:
    """Start this process's trainer process (an entry point does, first thing); the next `train` uses it."""
    global _started
    discard()
    _started = TrainerProcess()
    return _started


@contextlib.contextmanager
def started() -> Iterator[TrainerProcess]:
    """A started trainer process for the block (an entry point's), ended with it if its stage did not use it."""
    trainer = start()
    try:
        yield trainer
    finally:
        discard()


def keep_for(plan) -> None:
    """Offline and hybrid plans learn in the stage's own process (stages/hybrid.py): a started trainer process
    is ended once the plan says so, not held (torch and all) through the whole stage."""
    if plan.mode != "online":
        discard()


def discard() -> None:
    """An unused started trainer process (the stage trained nothing, or failed before) is ended."""
    global _started
    trainer, _started = _started, None
    if trainer is not None:
        trainer.close()


def train(plan, results_dir: Path, run_id: str, sinks: Sequence[Any], resume: bool = False,
          on_checkpoint: Callable[[Path, int], None] | None = None,
          meanwhile: Callable[[], None] | None = None) -> TrainingOutcome:
    """mlagents_trainer.train, in the started trainer process if there is one, else here. sinks: objects with
    `write_stats(category, {key: Summary}, step)` (tracking/training_stats.py). meanwhile: work for this process
    while a trainer process trains (imports the stage needs after the training)."""
    global _started
    trainer, _started = _started, None
    if trainer is None:
        from pipeline.tracking.stats_writer import SinkWriter
        from pipeline.training import mlagents_trainer

        return mlagents_trainer.train(plan, results_dir, run_id, [SinkWriter(s) for s in sinks], resume=resume,
                                      on_checkpoint=on_checkpoint)
    try:
        return trainer.train(plan, results_dir, run_id, sinks, resume, on_checkpoint, meanwhile)
    finally:
        trainer.close()


# --- the trainer process -----------------------------------------------------------------------------------------

def _serve(fd: int, parent: int) -> None:
    from pipeline import startup_gc
    from pipeline.processes import die_with_parent

    die_with_parent(parent=parent)  # a stage killed outright takes its training along, as one process would
    startup_gc.pause()  # imports only until the training starts
    # Before a training (whose own handler stops it), a Ctrl-C is the stage process's to act on: it ends this
    # process by closing the pipe, or forwards the signal to a training. A Python handler, not SIG_IGN: a Unity
    # player exec'd from here gets the default back.
    signal.signal(signal.SIGINT, lambda signum, frame: None)
    conn = Connection(fd)
    lock = threading.Lock()  # ML-Agents may write statistics from its trainer threads
    from pipeline.config.plan import check_algorithm
    from pipeline.training import mlagents_trainer  # torch, ML-Agents' trainers, our patches

    while True:
        try:
            message = conn.recv()
        except EOFError:
            return  # the stage went on without training (or is gone)
        if message[0] == "check":
            # Answered with None: unpickling ML-Agents' TrainerSettings would import torch over there.
            _answer(conn, lambda algorithm, max_steps: check_algorithm(algorithm, max_steps) and None, *message[1:])
            import torch._dynamo  # noqa: F401 - what the first optimizer step imports (~0.8 s), while we wait
        elif message[0] == "train":
            plan, results_dir, run_id, resume, checkpoints = message[1:]
            from pipeline.tracking.stats_writer import SinkWriter

            startup_gc.resume()
            writers = [SinkWriter(_Forward(conn, lock))]
            on_checkpoint = _CheckpointForward(conn, lock) if checkpoints else None
            _answer(conn, mlagents_trainer.train, plan, results_dir, run_id, writers, resume=resume,
                    on_checkpoint=on_checkpoint)
            return


def _answer(conn: Connection, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    try:
        value = fn(*args, **kwargs)
    except BaseException as exc:
        conn.send(_error(exc))
    else:
        conn.send(("ok", value))


class _Forward:
    """A training_stats sink that sends to the stage's process."""

    def __init__(self, conn: Connection, lock: threading.Lock):
        self.conn, self.lock = conn, lock

    def write_stats(self, category: str, values: dict, step: int) -> None:
        with self.lock:
            self.conn.send(("stats", category, values, step))


class _CheckpointForward:
    """on_checkpoint: the stage's process uploads it; training goes on once it has."""

    def __init__(self, conn: Connection, lock: threading.Lock):
        self.conn, self.lock = conn, lock

    def __call__(self, write_path: Path, step: int) -> None:
        with self.lock:
            self.conn.send(("checkpoint", str(write_path), step))
            TrainerProcess._result(self.conn.recv())


if __name__ == "__main__":
    _serve(int(sys.argv[1]), int(sys.argv[2]))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # torch's and ML-Agents' tear-down would only delay the stage's own
