"""A local `mlflow server`: the single writer of a sqlite store, or a team's server on PostgreSQL.

Parallel sweep jobs writing straight into one sqlite file race for its write lock ("database is locked")
and can race the schema migration on first connect. Behind one server process, every write goes
through one connection pool; jobs talk HTTP. Artifacts still go straight to the experiment's
file:// location, which the jobs share on this machine.

With `artifacts_destination` the server also proxies artifacts (`mlflow-artifacts:`): clients upload
and download them over HTTP, so machines that share no filesystem with it can log and resume runs
(the team server, `pipeline/tracking/team_server.py`).
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self needs Python 3.11; conda.yaml has 3.10


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TrackingServer:
    """`mlflow server` on 127.0.0.1:<free port> for `backend_uri`; `url` once started, stopped by `stop()`."""

    def __init__(self, backend_uri: str, log_path: Path | None = None, port: int | None = None,
                 ui: bool = False, artifacts_destination: str | os.PathLike | None = None,
                 host: str = "127.0.0.1", workers: int = 1):
        self.backend_uri = backend_uri
        self.port = port or free_port()
        self.host = host
        # What clients dial: the loopback address unless the server listens on one interface only.
        self.url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{self.port}"
        self.log_path = log_path
        self.ui = ui  # `mlflow ui` serves the same app; kept apart only for what the log says
        self.artifacts_destination = artifacts_destination
        self.workers = workers
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120.0) -> TrackingServer:
        if self.proc is not None and self.proc.poll() is None:
            return self  # already running (`with server.start():` enters it a second time)
        mlflow_bin = Path(sys.executable).with_name("mlflow")
        cmd = [str(mlflow_bin) if mlflow_bin.exists() else "mlflow", "ui" if self.ui else "server",
               "--backend-store-uri", self.backend_uri, "--host", self.host, "--port", str(self.port),
               "--workers", str(self.workers)]
        if self.artifacts_destination is not None:
            # New experiments get `mlflow-artifacts:/<id>`: clients move artifacts through this server only.
            dest = str(self.artifacts_destination)
            cmd += ["--serve-artifacts", "--artifacts-destination",
                    dest if "://" in dest else Path(dest).resolve().as_uri()]
        elif self.backend_uri.startswith("sqlite:///"):
            # Runs created through the server without an experiment location keep artifacts beside the db.
            root = Path(self.backend_uri[len("sqlite:///"):]).resolve().parent / "mlruns"
            cmd += ["--default-artifact-root", root.as_uri()]
        env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_RUN_ID", "MLFLOW_TRACKING_URI")}
        log = open(self.log_path, "ab") if self.log_path else contextlib.nullcontext(subprocess.DEVNULL)  # noqa: SIM115
        with log as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with code {self.proc.returncode} before it answered; "
                                   f"see {self.log_path or 'its output'}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"mlflow server did not answer on {self.url} within {timeout:.0f}s")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        # Its own session: the uvicorn worker it forks goes with it.
        try:
            os.killpg(self.proc.pid, 15)
            self.proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, 9)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
