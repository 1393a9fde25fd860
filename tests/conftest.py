"""Shared fixtures: a throw-away MLflow store per test and the real Hydra config, shrunk."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import mlflow
import pytest

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable

# A real ML-Agents training in seconds: one worker, few areas, small buffers.
TINY = [
    "max_steps=3000",
    "algorithm.summary_freq=1000",
    "algorithm.checkpoint_interval=3000",
    "algorithm.hyperparameters.buffer_size=1024",
    "algorithm.hyperparameters.batch_size=256",
    "env.num_envs=1",
    "env.num_areas=8",
    "evaluation.episodes=12",
]


@pytest.fixture
def store(tmp_path, monkeypatch) -> str:
    """A fresh sqlite MLflow store; also exported so child processes use it."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "tests")
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    mlflow.set_tracking_uri(uri)
    yield uri
    while mlflow.active_run():
        mlflow.end_run()


def use_store(tmp: Path, mp: pytest.MonkeyPatch) -> str:
    """Point this process and its children at a fresh sqlite store in tmp (for module-scoped fixtures)."""
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    mp.setenv("MLFLOW_TRACKING_URI", uri)
    mp.delenv("MLFLOW_RUN_ID", raising=False)
    mlflow.set_tracking_uri(uri)
    return uri


@pytest.fixture
def tiny(tmp_path) -> list[str]:
    """Overrides for a few-second real training whose results stay in tmp_path."""
    return TINY + [f"results_dir={tmp_path / 'results'}"]


def all_runs(experiment: str = "unity-mlagents"):
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return mlflow.MlflowClient().search_runs([exp.experiment_id])


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_RUN_ID"}
    env["PATH"] = f"{Path(PYTHON).parent}:{env.get('PATH', '')}"
    env.update(extra)
    return env
