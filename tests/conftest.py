"""Shared fixtures only: a throw-away MLflow store per test and the real Hydra config, shrunk.

Helpers and test doubles live in `tests/support/` and are imported from there.
"""
from __future__ import annotations

import mlflow
import pytest

from tests.support.postgres import postgres_server, team_server  # noqa: F401  (session fixtures)
from tests.support.ray_cluster import ray_cluster  # noqa: F401  (session fixture: a real 2-worker Ray cluster)
from tests.support.store import fresh_store
from tests.support.training import TINY


@pytest.fixture
def store(tmp_path, monkeypatch) -> str:
    """A fresh sqlite MLflow store; also exported so child processes use it."""
    uri = fresh_store(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "tests")
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    # mlflow.set_experiment exports MLFLOW_EXPERIMENT_ID: set and removed here so monkeypatch takes it away again
    # after the test, or a later test's `mlflow run` child gets both an experiment name and id, and refuses.
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", "")
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID")
    mlflow.set_tracking_uri(uri)
    yield uri
    while mlflow.active_run():
        mlflow.end_run()


@pytest.fixture
def tiny(tmp_path) -> list[str]:
    """Overrides for a few-second real training whose results stay in tmp_path."""
    return TINY + [f"results_dir={tmp_path / 'results'}"]
