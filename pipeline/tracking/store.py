"""Which MLflow store runs go to: $MLFLOW_TRACKING_URI, else an embedded sqlite store in the repo root."""
from __future__ import annotations

import os
import re
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


# A URI's userinfo password (scheme://user:PASSWORD@host), wherever it appears in a piece of text.
_USERINFO_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/?#@'\"]*):(?P<password>[^\s/?#'\"]*)@")
# Query parameters that carry a credential (e.g. postgresql://host/db?password=..., https://...?token=...).
_SECRET_QUERY = re.compile(r"(?P<head>[?&;](?:[A-Za-z0-9_\-]*(?:password|passwd|pwd|token|secret|api[_\-]?key|apikey|"
                           r"access[_\-]?key|signature|sig|auth|credentials?)[A-Za-z0-9_\-]*)=)(?P<value>[^&;#\s'\"]+)",
                           re.IGNORECASE)
REDACTED = "***"


def redact_uri(text: str) -> str:
    """`text` with every URI password (userinfo `user:PASSWORD@`, or a `?password=`/`?token=` style query
    value) replaced by ***, for printing or logging a tracking URI or anything that may contain one:
    `postgresql://mlflow:s3cret@db/mlflow` -> `postgresql://mlflow:***@db/mlflow`."""
    if not isinstance(text, str) or "://" not in text and "=" not in text:
        return text
    text = _USERINFO_PASSWORD.sub(lambda m: f"{m['head']}:{REDACTED}@" if m["password"] else m[0], text)
    return _SECRET_QUERY.sub(lambda m: f"{m['head']}{REDACTED}", text)
