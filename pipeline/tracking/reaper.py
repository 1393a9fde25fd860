"""Closing the MLflow runs a dead process left RUNNING: every stage, the pipeline parent, sweep parents.

MLflow has no heartbeat: a run whose process was SIGKILLed (OOM killer, full disk, reboot) stays RUNNING
for ever. So every run records, when it starts (`pipeline/tracking/runs.py::stage_run`, the sweep
callback), which process owns it:

    pipeline.host       socket.gethostname()
    pipeline.pid        the process id
    pipeline.pid_start  the kernel's start time of that pid (/proc/<pid>/stat field 22, clock ticks since boot)
    pipeline.boot_id    /proc/sys/kernel/random/boot_id (a new one at every boot)

A RUNNING run of *this* host is dead when the machine rebooted since (another boot id), when its pid no
longer exists, or when the pid now belongs to another process (another start time: pids are reused).
These are exact answers; a live run is never closed. A run of *another* host cannot be checked from here:
it is left alone unless `older_than` is given, which closes such runs (and runs from before these tags
existed) that started longer ago than that. A training run without tags still has the lock check of
pipeline/training/resume.py (the kernel drops its lock with the process).

Dead runs end FAILED (`reap`) or KILLED (the scheduler's recovery, which knows its runner was stopped),
with the reason in `pipeline.error` and the time in `pipeline.reaped_at`.
"""
from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from pipeline.processes import process_start

HOST, PID, PID_START, BOOT_ID = "pipeline.host", "pipeline.pid", "pipeline.pid_start", "pipeline.boot_id"
TRAINING_DIED = "the training process died"  # train runs: resume.py reads this prefix as an interruption


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def process_tags() -> dict[str, str]:
    """The tags that say which process owns a run; set when the run starts (or is reopened)."""
    pid = os.getpid()
    return {HOST: socket.gethostname(), PID: str(pid), PID_START: process_start(pid) or "", BOOT_ID: boot_id()}


def why_dead(run, older_than: float | None = None, now: float | None = None) -> str | None:
    """Why this RUNNING run's process is dead, or None if it is alive or cannot be told from here."""
    tags = run.data.tags
    stage = tags.get("pipeline.stage", "run")
    died = TRAINING_DIED if stage == "train" else f"the {stage} process died"
    host, pid = tags.get(HOST), tags.get(PID, "")
    if host == socket.gethostname() and pid.isdigit():
        if tags.get(BOOT_ID) and boot_id() and tags[BOOT_ID] != boot_id():
            return f"{died}: {host} was restarted since process {pid} started"
        start = process_start(int(pid))
        if start is None:
            return f"{died}: process {pid} on {host} is gone"
        if tags.get(PID_START) and start != tags[PID_START]:
            return f"{died}: process {pid} on {host} is gone (its pid now belongs to another process)"
        return None
    if not host and stage == "train":  # from before these tags: the training lock still tells
        from pipeline.training.lock import is_training

        write_path = Path(tags.get("results_dir", ""))
        if tags.get("results_dir") and write_path.is_dir() and not is_training(write_path):
            return f"{died} (no lock held on its results directory)"
    if older_than is not None:
        age = (now if now is not None else time.time()) - run.info.start_time / 1000
        if age > older_than:
            where = f"on {host}, which this host cannot check" if host else "with no process recorded"
            return (f"{died}?: RUNNING {_span(age)} {where}; closed by reap --older-than {_span(older_than)}")
    return None


@dataclass(frozen=True)
class Reaped:
    run_id: str
    stage: str
    reason: str

    def __str__(self) -> str:
        return f"{self.run_id} ({self.stage}): {self.reason}"


def close_run(client, run_id: str, status: str, reason: str) -> None:
    """End a run whose process is gone: `status` with the reason as its `pipeline.error`."""
    from mlflow.entities import RunTag

    from pipeline.redaction import redact_uri

    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    tags = [RunTag("pipeline.error", redact_uri(reason)[:5000]), RunTag("pipeline.reaped_at", now)]
    client.log_batch(run_id, tags=tags)
    client.set_terminated(run_id, status)


def reap(experiment_ids: list[str], older_than: float | None = None, status: str = "FAILED") -> list[Reaped]:
    """Close every RUNNING run of these experiments whose process is dead; returns what was closed."""
    import mlflow

    client = mlflow.MlflowClient()
    reaped = []
    token = None
    while True:
        page = client.search_runs(experiment_ids, filter_string="attributes.status = 'RUNNING'",
                                  max_results=1000, page_token=token)
        for run in page:
            reason = why_dead(run, older_than)
            if reason is None:
                continue
            if run.data.tags.get("pipeline.stage") == "train":
                reason += f"; resume it with resume={run.info.run_id}"
            close_run(client, run.info.run_id, status, reason)
            reaped.append(Reaped(run.info.run_id, run.data.tags.get("pipeline.stage", "?"), reason))
        token = page.token
        if not token:
            return reaped


def parse_duration(text: str) -> float:
    """'90s', '30m', '12h', '2d' (or plain seconds) -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    t = str(text).strip().lower()
    try:
        value = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        from pipeline.config.errors import ConfigError

        raise ConfigError(f"--older-than {text!r} must be a positive duration such as 90s, 30m, 12h or 2d")
    return value


def _span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"
