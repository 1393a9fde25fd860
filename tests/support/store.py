"""A throw-away MLflow store for a test, and what landed in it."""
from __future__ import annotations

import atexit
import shutil
import sqlite3
import tempfile
from pathlib import Path

import mlflow
import pytest

_template: Path | None = None


def fresh_store(directory: Path) -> str:
    """The URI of a new, empty sqlite MLflow store at directory/mlflow.db.

    Creating MLflow's schema takes seconds (its migrations run one by one), so the first call creates it once
    and every store after that is a copy of that empty, fully migrated database: the same tables, the same
    Default experiment, nothing else.
    """
    global _template
    if _template is None:
        folder = Path(tempfile.mkdtemp(prefix="mlflow-store-template-"))
        atexit.register(shutil.rmtree, folder, True)
        template = folder / "mlflow.db"
        mlflow.MlflowClient(tracking_uri=f"sqlite:///{template}").search_experiments()  # creates the schema
        _template = template
    target = directory / "mlflow.db"
    source, copy = sqlite3.connect(_template), sqlite3.connect(target)
    try:
        source.backup(copy)
    finally:
        source.close()
        copy.close()
    return f"sqlite:///{target}"


def use_store(tmp: Path, mp: pytest.MonkeyPatch) -> str:
    """Point this process and its children at a fresh sqlite store in tmp (for module-scoped fixtures)."""
    uri = fresh_store(tmp)
    mp.setenv("MLFLOW_TRACKING_URI", uri)
    mp.delenv("MLFLOW_RUN_ID", raising=False)
    mlflow.set_tracking_uri(uri)
    return uri


def all_runs(experiment: str = "unity-mlagents"):
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return mlflow.MlflowClient().search_runs([exp.experiment_id])
