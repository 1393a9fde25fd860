"""The MLflow Model Registry side: one registered model per asset behavior, one version per training run."""
from __future__ import annotations

import contextlib
import io
from typing import Optional

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from pipeline.registry.lineage import PolicySource


def model_name(asset_id: str, behavior: str) -> str:
    return f"{asset_id}.{behavior}"


def ensure_version(client: mlflow.MlflowClient, name: str, source: PolicySource) -> tuple[ModelVersion, bool]:
    """The version registered from this training run, created only if there is none (re-runs are no-ops)."""
    existing = find_version(client, name, source.run_id)
    tags = source.version_tags()
    if existing is not None:
        existing = client.get_model_version(name, str(existing.version))  # search results omit some tags
        for key, value in tags.items():  # a re-run may bring figures the first attempt did not have
            if existing.tags.get(key) != value:
                client.set_model_version_tag(name, str(existing.version), key, value)
        return client.get_model_version(name, str(existing.version)), False
    with contextlib.suppress(MlflowException):  # already there: fine
        client.create_registered_model(name, tags={"asset": source.asset_id, "behavior": source.behavior},
                                       description=f"ONNX policies of Unity behavior {source.behavior} "
                                                   f"(asset {source.asset_id}), one version per training run. "
                                                   "Served (pyfunc, `mlflow models serve`) as the deterministic "
                                                   "actions; each version's description names the output.")
    with contextlib.redirect_stdout(io.StringIO()):  # MLflow prints its own "Created version" banner
        version = mlflow.register_model(source.model_uri, name, tags=tags)
    return client.get_model_version(name, str(version.version)), True


def find_version(client: mlflow.MlflowClient, name: str, run_id: str) -> Optional[ModelVersion]:
    found = [v for v in client.search_model_versions(f"name='{name}'")
             if v.run_id == run_id or v.tags.get("source_run_id") == run_id]
    return min(found, key=lambda v: int(v.version)) if found else None


def version_by_alias(client: mlflow.MlflowClient, name: str, alias: str) -> Optional[ModelVersion]:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def latest_version(client: mlflow.MlflowClient, name: str) -> int:
    return max(int(v.version) for v in client.search_model_versions(f"name='{name}'"))


def set_tags(client: mlflow.MlflowClient, name: str, version: str, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
