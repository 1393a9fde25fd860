"""A throw-away MLflow store for a test, and what landed in it."""
from __future__ import annotations

from pathlib import Path

import mlflow
import pytest


def use_store(tmp: Path, mp: pytest.MonkeyPatch) -> str:
    """Point this process and its children at a fresh sqlite store in tmp (for module-scoped fixtures)."""
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    mp.setenv("MLFLOW_TRACKING_URI", uri)
    mp.delenv("MLFLOW_RUN_ID", raising=False)
    mlflow.set_tracking_uri(uri)
    return uri


def all_runs(experiment: str = "unity-mlagents"):
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return mlflow.MlflowClient().search_runs([exp.experiment_id])
