"""Mirror an MLflow model version into Vertex AI's Model Registry, idempotently.

Each step looks before it writes, so a re-run after a failure finishes the job instead of repeating it:
the Vertex version for a training run is found by its `mlflow_run_id` label, staged files whose MD5
already matches in Cloud Storage are not sent again, and aliases are merged only where missing.
"""
from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from pipeline.config.errors import ConfigError, ServiceUnavailable
from pipeline.registry import sdk_compat, vertex_rules
from pipeline.registry.lineage import PolicySource
from pipeline.registry.vertex_target import VertexTarget


class VertexError(ConfigError):
    """Google Cloud refused a call for a reason the user fixes (credentials, permission, a missing bucket,
    a request it calls invalid): bad input, one clear line."""


class VertexUnavailable(ServiceUnavailable):
    """Vertex AI or Cloud Storage could not be reached, timed out, or failed on its side (5xx): the settings
    may be right and a re-run later can finish the mirror. One clear line."""


@dataclass(frozen=True)
class VertexVersion:
    resource_name: str  # projects/.../models/<id>@<version>
    version_id: str
    artifact_uri: str
    uploaded: bool  # False: found from an earlier attempt
    aliases: list[str]
    staged_files: list[str]
    skipped_files: list[str]


def labels_for(source: PolicySource, mlflow_model: str, mlflow_version: str, extra: dict[str, str]) -> dict[str, str]:
    """Labels that lead from a Vertex version back to the MLflow model version and run."""
    labels = {"mlflow_model": vertex_rules.label_value(mlflow_model), "mlflow_version": mlflow_version,
              "mlflow_run_id": source.run_id, "asset": vertex_rules.label_value(source.asset_id),
              "behavior": vertex_rules.label_value(source.behavior),
              "git_commit": vertex_rules.label_value(source.git_commit),
              "managed_by": "mlops-unity-pipeline"}
    clash = sorted(set(extra) & set(labels))
    if clash:
        raise ConfigError(f"registry.vertex_labels: {', '.join(clash)} is set by the registry itself; "
                          "choose other keys")
    return {**labels, **extra}


def staged_files(source: PolicySource) -> dict[str, Path]:
    """Relative name in the artifact directory -> local file: what Unity imports, plus the MLflow model."""
    files = {f"{source.behavior}.onnx": source.onnx_path}
    for path in sorted(source.model_dir.rglob("*")):
        if path.is_file():
            files[f"mlflow_model/{path.relative_to(source.model_dir).as_posix()}"] = path
    return files


def artifact_uri(target: VertexTarget, source: PolicySource) -> str:
    return f"{target.staging_bucket.rstrip('/')}/{target.model_id}/{source.run_id}"


def mirror(target: VertexTarget, source: PolicySource, mlflow_model: str, mlflow_version: str,
           aliases: list[str], display_name: str, description: str) -> VertexVersion:
    from google.api_core import exceptions as api_errors
    from google.cloud import aiplatform

    sdk_compat.apply()
    logging.getLogger("google.cloud.aiplatform").setLevel(logging.WARNING)  # we print our own progress
    with _calling(target, "connect"):
        aiplatform.init(project=target.project, location=target.region, credentials=target.credentials,
                        api_transport="rest", api_endpoint=target.api_endpoint)
        if target.api_endpoint is None:  # init() keeps an endpoint set earlier in this process
            from google.cloud.aiplatform import initializer

            initializer.global_config._api_endpoint = None
    labels = labels_for(source, mlflow_model, mlflow_version, target.labels)

    # The low-level client, so that lookups retry within registry.timeout_s rather than the SDK's 120 s.
    from google.api_core.retry import Retry, if_transient_error
    from google.cloud.aiplatform.compat.types import model_service_v1 as model_service_types

    api = aiplatform.Model._instantiate_client(location=target.region, credentials=target.credentials)
    calls = dict(retry=Retry(predicate=if_transient_error, deadline=target.timeout_s), timeout=target.timeout_s)
    with _calling(target, f"look up model {target.model_resource}"):
        try:
            api.get_model(name=target.model_resource, **calls)
            model_exists = True
        except api_errors.NotFound:
            model_exists = False
    existing = None
    if model_exists:
        with _calling(target, f"list versions of {target.model_resource}"):
            found = list(api.list_model_versions(request=model_service_types.ListModelVersionsRequest(
                name=target.model_resource, filter=f'labels.mlflow_run_id="{source.run_id}"'), **calls))
        existing = min(found, key=lambda v: int(v.version_id)) if found else None

    staged, skipped = [], []
    uri = artifact_uri(target, source)
    if existing is not None:
        version_id, uploaded = existing.version_id, False
        print(f"register: Vertex AI already has {target.model_resource}@{version_id} for run {source.run_id}",
              flush=True)
    else:
        staged, skipped = stage(target, source, uri)
        print(f"register: uploading version of {target.model_resource} to Vertex AI ({target.endpoint_label})",
              flush=True)
        with _calling(target, f"upload a version of {target.model_resource}"):
            model = aiplatform.Model.upload(
                serving_container_image_uri=target.image, artifact_uri=uri,
                model_id=None if model_exists else target.model_id,
                parent_model=target.model_resource if model_exists else None,
                is_default_version=not model_exists,  # later versions become default only as champion
                display_name=display_name, version_description=description, description=description,
                serving_container_environment_variables={"POLICY_ONNX": f"{source.behavior}.onnx",
                                                         "MLFLOW_MODEL_DIR": "mlflow_model"},
                labels=labels, upload_request_timeout=target.timeout_s, sync=True)
        version_id, uploaded = str(model.version_id), True

    registry = aiplatform.ModelRegistry(target.model_resource)
    with _calling(target, f"read aliases of {target.model_resource}@{version_id}"):
        current = list(registry.get_version_info(version_id).version_aliases)
    missing = [a for a in aliases if a not in current]
    if missing:  # Vertex moves an alias held by another version to this one
        with _calling(target, f"set aliases {missing} on {target.model_resource}@{version_id}"):
            registry.add_version_aliases(missing, version=version_id)
    return VertexVersion(f"{target.model_resource}@{version_id}", version_id, uri, uploaded,
                         sorted(set(current) | set(aliases)), staged, skipped)


def stage(target: VertexTarget, source: PolicySource, uri: str) -> tuple[list[str], list[str]]:
    """Copy the policy directory to gs://…/<model>/<run>/, skipping files already there byte for byte."""
    from google.api_core.client_options import ClientOptions
    from google.cloud import storage
    from google.cloud.storage.retry import DEFAULT_RETRY

    retry = DEFAULT_RETRY.with_deadline(target.timeout_s)
    bucket_name, _, prefix = uri[len("gs://"):].partition("/")
    options = ClientOptions(api_endpoint=target.storage_endpoint) if target.storage_endpoint else None
    staged, skipped = [], []
    with _calling(target, f"stage the policy in {uri}", storage_api=True):
        client = storage.Client(project=target.project, credentials=target.credentials, client_options=options)
        bucket = client.lookup_bucket(bucket_name, retry=retry, timeout=target.timeout_s)
        if bucket is None:
            if not target.bucket_is_default:
                raise VertexError(f"registry.staging_bucket: bucket gs://{bucket_name} does not exist (or is not "
                                  "visible to these credentials); create it or point registry.staging_bucket elsewhere")
            bucket = client.create_bucket(bucket_name, location=target.region, retry=retry, timeout=target.timeout_s)
        for name, path in staged_files(source).items():
            blob_name = f"{prefix}/{name}"
            blob = bucket.get_blob(blob_name, retry=retry, timeout=target.timeout_s)
            if blob is not None and blob.md5_hash == _md5(path):
                skipped.append(name)
                continue
            bucket.blob(blob_name).upload_from_filename(str(path), retry=retry, timeout=target.timeout_s)
            staged.append(name)
    print(f"register: staged {len(staged)} file(s) in {uri}" + (f" ({len(skipped)} already there)" if skipped else ""),
          flush=True)
    return staged, skipped


def _md5(path: Path) -> str:
    return base64.b64encode(hashlib.md5(path.read_bytes()).digest()).decode()


@contextlib.contextmanager
def _calling(target: VertexTarget, what: str, storage_api: bool = False) -> Iterator[None]:
    """Turn Google Cloud failures into one line that says what failed, why, and what to do."""
    import requests
    from google.api_core import exceptions as api_errors
    from google.auth import exceptions as auth_errors

    where = (target.storage_endpoint or "Cloud Storage") if storage_api else target.endpoint_label
    try:
        yield
    except (VertexError, VertexUnavailable):
        raise
    except (api_errors.Unauthorized, auth_errors.RefreshError) as exc:
        raise VertexError(f"Vertex AI: could not {what}: the credentials ({target.credentials_source}) were rejected "
                          f"({_short(exc)}); refresh them (gcloud auth application-default login) or fix "
                          "registry.credentials") from None
    except (api_errors.Forbidden, api_errors.PermissionDenied) as exc:
        role = "roles/storage.objectAdmin on the staging bucket" if storage_api else \
            f"roles/aiplatform.user on project {target.project}"
        raise VertexError(f"Vertex AI: permission denied to {what} ({_short(exc)}); grant {role} to the "
                          f"credentials in use ({target.credentials_source})") from None
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout, auth_errors.TransportError,
            api_errors.RetryError, api_errors.ServiceUnavailable, api_errors.DeadlineExceeded) as exc:
        endpoints = " and registry.api_endpoint/registry.storage_endpoint" if target.api_endpoint else ""
        raise VertexUnavailable(f"Vertex AI: cannot reach {where} to {what} ({_short(exc)}); "
                                f"check the network{endpoints}") from None
    except api_errors.GoogleAPICallError as exc:
        server_side = isinstance(exc, api_errors.ServerError)  # 5xx: Google's side, not the request
        raise (VertexUnavailable if server_side else VertexError)(f"Vertex AI: could not {what}: {_short(exc)}") \
            from None


def _short(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit] + "…"


def record(target_or_local, source: PolicySource, mlflow_model: str, mlflow_version: str, aliases: list[str],
           status: str, reason: Optional[str], vertex: Optional[VertexVersion], resource_uri: str) -> dict:
    """vertex_registration.json: what was (or would have been) uploaded, where, and why not if not."""
    bucket = target_or_local.staging_bucket
    destination = f"{bucket.rstrip('/')}/{target_or_local.model_id}/{source.run_id}" if bucket else None
    return {
        "status": status, "reason": reason, "resource_uri": resource_uri,
        "project": target_or_local.project, "region": target_or_local.region,
        "model_id": target_or_local.model_id, "serving_container_image_uri": target_or_local.image,
        "artifact_uri": destination,
        "files": [{"name": n, "bytes": p.stat().st_size, "md5": _md5(p)} for n, p in staged_files(source).items()],
        "onnx_sha256": source.onnx_sha256,
        "labels": labels_for(source, mlflow_model, mlflow_version, target_or_local.labels),
        "version_aliases": aliases,
        "mlflow": {"model": mlflow_model, "version": mlflow_version, "run_id": source.run_id},
        "vertex": None if vertex is None else {"resource_name": vertex.resource_name, "version_id": vertex.version_id,
                                               "uploaded_now": vertex.uploaded, "aliases": vertex.aliases,
                                               "staged_files": vertex.staged_files,
                                               "already_staged": vertex.skipped_files},
    }
