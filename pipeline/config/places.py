"""Where a run writes: the tracking store and the results directory, checked before any run or file exists."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from pipeline.config.errors import ConfigError

SQLITE_MAGIC = b"SQLite format 3\x00"
MIN_FREE_BYTES = 64 << 20  # a checkpoint, an ONNX and TensorBoard events of a small run


def chosen_store(tracking_uri: Optional[str]) -> tuple[Optional[str], str]:
    """The store URI a run uses and the setting that chose it (for errors): $MLFLOW_TRACKING_URI before
    tracking.tracking_uri, as MLflow's own clients do, so `mlflow run` and a team's shell reach every stage."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    return (env, "MLFLOW_TRACKING_URI") if env else (tracking_uri, "tracking.tracking_uri")


def check_store(tracking_uri: Optional[str]) -> None:
    """An embedded store that cannot work: a directory, or a file that is not an SQLite database."""
    uri, key = chosen_store(tracking_uri)
    if not uri or not uri.startswith("sqlite:///"):
        return
    path = Path(uri[len("sqlite:///"):].split("?", 1)[0])
    if path.is_dir():
        raise ConfigError(f"{key}={uri}: {path} is a directory; give a database file, e.g. sqlite:///{path}/mlflow.db")
    if path.is_file() and path.stat().st_size > 0:
        try:
            with open(path, "rb") as f:
                magic = f.read(len(SQLITE_MAGIC))
        except OSError as exc:
            raise ConfigError(f"{key}={uri}: cannot read {path} ({exc.strerror})") from None
        if magic != SQLITE_MAGIC:
            raise ConfigError(f"{key}={uri}: {path} is not an SQLite database; point it at an MLflow database "
                              "or at a new file name (MLflow creates it)")


def check_results_dir(results_dir: str) -> None:
    """A results location the training cannot write to is found now, before any stage runs or run exists."""
    path = Path(results_dir).expanduser().absolute()
    existing = next((p for p in (path, *path.parents) if p.exists()), Path("/"))
    if not existing.is_dir():
        raise ConfigError(f"results_dir={results_dir}: {existing} is a file, not a directory; "
                          "e.g. results_dir=results")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"results_dir={results_dir}: {existing} is not writable (read-only file system or no "
                          "permission); choose a writable location, e.g. results_dir=/tmp/results")
    stat = os.statvfs(existing)
    if stat.f_bavail * stat.f_frsize < MIN_FREE_BYTES:
        raise ConfigError(f"results_dir={results_dir}: {existing} has {stat.f_bavail * stat.f_frsize >> 20} MiB "
                          f"free, less than the {MIN_FREE_BYTES >> 20} MiB a run needs; free space or choose "
                          "another location")
