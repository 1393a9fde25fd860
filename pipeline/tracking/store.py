"""Which MLflow store runs go to: $MLFLOW_TRACKING_URI, else an embedded sqlite store in the repo root."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import mlflow

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_URI = f"sqlite:///{REPO_ROOT / 'mlflow.db'}"


def configure(tracking_uri: Optional[str] = None) -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI") or tracking_uri or DEFAULT_URI
    mlflow.set_tracking_uri(uri)
    return uri


def experiment_id(name: str) -> str:
    """The experiment's id, creating it (with artifacts beside the embedded store) when missing."""
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    uri = mlflow.get_tracking_uri()
    if uri.startswith("sqlite:///"):
        # Artifacts beside the database file, not in whatever directory the process started in.
        location = (Path(uri[len("sqlite:///"):]).resolve().parent / "mlruns").as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except mlflow.exceptions.MlflowException:
        # Another process created it between our lookup and create.
        return client.get_experiment_by_name(name).experiment_id

