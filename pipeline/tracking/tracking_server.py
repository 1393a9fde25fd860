"""A local `mlflow server` in front of a sqlite store: the single writer when several processes log at once.

Parallel sweep jobs writing straight into one sqlite file race for its write lock ("database is locked")
and can race the schema migration on first connect. Behind one server process, every write goes
through one connection pool; jobs talk HTTP. Artifacts still go straight to the experiment's
file:// location, which the jobs share on this machine.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Optional


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TrackingServer:
    """`mlflow server` on 127.0.0.1:<free port> for `backend_uri`; `url` once started, stopped by `stop()`."""

    def __init__(self, backend_uri: str, log_path: Optional[Path] = None, port: Optional[int] = None,
                 ui: bool = False):
        self.backend_uri = backend_uri
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.ui = ui  # `mlflow ui` serves the same app; kept apart only for what the log says
        self.proc: Optional[subprocess.Popen] = None

    def start(self, timeout: float = 120.0) -> "TrackingServer":
        mlflow_bin = Path(sys.executable).with_name("mlflow")
        cmd = [str(mlflow_bin) if mlflow_bin.exists() else "mlflow", "ui" if self.ui else "server",
               "--backend-store-uri", self.backend_uri, "--host", "127.0.0.1", "--port", str(self.port),
               "--workers", "1"]
        if self.backend_uri.startswith("sqlite:///"):
            # Runs created through the server without an experiment location keep artifacts beside the db.
            root = Path(self.backend_uri[len("sqlite:///"):]).resolve().parent / "mlruns"
            cmd += ["--default-artifact-root", root.as_uri()]
        env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_RUN_ID", "MLFLOW_TRACKING_URI")}
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        finally:
            if self.log_path:
                out.close()
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

    def __enter__(self) -> "TrackingServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
