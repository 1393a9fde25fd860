"""Resuming an interrupted training into the same ML-Agents results directory and the same MLflow run.

A training holds an exclusive lock on `<results>/.<run id>.lock` while it runs. The kernel
drops it when the process dies, however it dies (SIGKILL included), so "is this run still training?"
has an exact answer on this machine: that is what keeps a resume from adopting a live run and what
lets `reap` mark a run whose process is gone as FAILED instead of RUNNING forever.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
from pathlib import Path
from typing import Iterator, Optional

import mlflow
from mlflow.entities import RunStatus

from pipeline.config.errors import ConfigError
from pipeline.tracking.runs import INTERRUPTED

RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def check_resume_value(value: Optional[str]) -> None:
    if value is not None and value != "latest" and not RUN_ID.match(value):
        raise ConfigError(f"resume={value!r} must be 'latest' or an MLflow run id (32 hex characters)")


def lock_path(write_path: Path) -> Path:
    # Beside, not inside, the results directory: ML-Agents refuses to start a new run in a non-empty one.
    return write_path.parent / f".{write_path.name}.lock"


@contextlib.contextmanager
def training_lock(write_path: Path) -> Iterator[None]:
    write_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path(write_path), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            # POSIX record locks belong to this process only: the environment workers ML-Agents forks
            # do not inherit them, so the lock dies with the trainer even if a worker lingers.
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise ConfigError(f"{write_path} is being trained by another process right now") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.close(fd)


def is_training(write_path: Path) -> bool:
    lock = lock_path(write_path)
    if not lock.exists():
        return False
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def resumable_run(value: str, asset_id: str, experiment_id: str) -> tuple[str, Path]:
    """The run to resume and its results directory, or a ConfigError saying why there is none."""
    client = mlflow.MlflowClient()
    if value == "latest":
        runs = client.search_runs([experiment_id], filter_string=f"tags.`pipeline.stage` = 'train' and "
                                  f"tags.asset = '{asset_id}'", order_by=["attributes.start_time DESC"], max_results=50)
        for run in runs:
            if run.info.status != "FINISHED" and _resumable(run) is None:
                return run.info.run_id, Path(run.data.tags["results_dir"])
        raise ConfigError(f"resume=latest: no interrupted training of asset {asset_id} with a checkpoint "
                          "in this experiment")
    try:
        run = client.get_run(value)
    except mlflow.exceptions.MlflowException:
        raise ConfigError(f"resume={value}: no such MLflow run in this tracking store") from None
    if run.data.tags.get("pipeline.stage") != "train" or run.data.tags.get("asset") != asset_id:
        raise ConfigError(f"resume={value}: not a training run of asset {asset_id} "
                          f"(stage {run.data.tags.get('pipeline.stage')!r}, asset {run.data.tags.get('asset')!r})")
    if run.info.status == "FINISHED":
        raise ConfigError(f"resume={value}: that training already finished; start a new run instead")
    reason = _resumable(run)
    if reason:
        raise ConfigError(f"resume={value}: {reason}")
    return value, Path(run.data.tags["results_dir"])


PROCESS_DIED = "the training process died"  # how `reap` starts the `pipeline.error` of a run it ends
# What our own code writes into `pipeline.error` when a training was stopped from outside (SIGTERM/SIGINT,
# or its process vanished and `reap` found it), as opposed to failing on an error of its own.
INTERRUPTION_PREFIXES = (INTERRUPTED, PROCESS_DIED)


def why_not_continued(run) -> Optional[str]:
    """None if this training run was interrupted from outside and can continue from its checkpoint; else why not.

    A run that failed on its own error (a bad config, a crashed player, a bug) is not resumed automatically:
    it would fail the same way again."""
    if run.data.tags.get("pipeline.stage") != "train":
        return f"run {run.info.run_id} is not a training run"
    if run.info.status == "FINISHED":
        return "its training finished"
    error = run.data.tags.get("pipeline.error")
    if error and not error.startswith(INTERRUPTION_PREFIXES):
        return f"it failed on its own error ({error[:200]})"
    return _resumable(run)


def _resumable(run) -> Optional[str]:
    write_path = Path(run.data.tags.get("results_dir", ""))
    if not any(write_path.glob("*/checkpoint.pt")):
        return f"its results directory {write_path} has no checkpoint to resume from"
    if is_training(write_path):
        return f"it is still training (lock held on {lock_path(write_path)})"
    return None


def reap(experiment_ids: list[str]) -> list[str]:
    """Mark RUNNING training runs whose process is gone (lock free) as FAILED; returns their ids."""
    client = mlflow.MlflowClient()
    reaped = []
    for run in client.search_runs(experiment_ids, filter_string="attributes.status = 'RUNNING' and "
                                  "tags.`pipeline.stage` = 'train'"):
        write_path = Path(run.data.tags.get("results_dir", ""))
        if write_path.is_dir() and not is_training(write_path):
            client.set_tag(run.info.run_id, "pipeline.error", f"{PROCESS_DIED} (no lock held); "
                           "resume it with resume=" + run.info.run_id)
            client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.FAILED))
            reaped.append(run.info.run_id)
    return reaped
