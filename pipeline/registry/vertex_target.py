"""Where a policy is mirrored in Vertex AI, or why it is not: decided offline, before anything is registered."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from pipeline.config.errors import ConfigError
from pipeline.registry import vertex_rules
from pipeline.registry.settings import ANONYMOUS, RegistryConfig

SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
ADC_HELP = ("run `gcloud auth application-default login`, set GOOGLE_APPLICATION_CREDENTIALS, "
            "or set registry.credentials=/path/to/key.json")


@dataclass(frozen=True)
class VertexTarget:
    project: str
    region: str
    model_id: str
    staging_bucket: str  # gs://bucket[/prefix]
    bucket_is_default: bool  # the SDK's default staging bucket: created when missing
    image: str
    credentials: Any = field(repr=False)
    credentials_source: str = ""
    api_endpoint: Optional[str] = None
    storage_endpoint: Optional[str] = None
    labels: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 120.0

    @property
    def model_resource(self) -> str:
        return f"projects/{self.project}/locations/{self.region}/models/{self.model_id}"

    @property
    def endpoint_label(self) -> str:
        return self.api_endpoint or f"{self.region}-aiplatform.googleapis.com"


@dataclass(frozen=True)
class LocalOnly:
    """No upload: the record says what would have been uploaded, and why it was not."""

    reason: str
    project: Optional[str]
    region: str
    model_id: str
    staging_bucket: Optional[str]
    image: Optional[str]
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def model_resource(self) -> str:
        return f"projects/{self.project or '-'}/locations/{self.region}/models/{self.model_id}"


Target = Union[VertexTarget, LocalOnly]


def resolve(reg: RegistryConfig, mlflow_model: str) -> Target:
    model_id = reg.vertex_model_id or vertex_rules.model_id_for(mlflow_model)
    bucket = reg.staging_bucket or (f"gs://{reg.vertex_project}-vertex-staging-{reg.vertex_region}"
                                    if reg.vertex_project else None)
    local = dict(project=reg.vertex_project, region=reg.vertex_region, model_id=model_id, staging_bucket=bucket,
                 image=reg.serving_container_image_uri, labels=dict(reg.vertex_labels))
    if not reg.vertex_project:
        return LocalOnly("registry.vertex_project is not set (set it to mirror policies to Vertex AI)", **local)
    credentials, source = _credentials(reg)
    if credentials is None:
        return LocalOnly(f"no Google Cloud credentials found for project {reg.vertex_project}: {ADC_HELP}", **local)
    if not reg.serving_container_image_uri:
        raise ConfigError("registry.serving_container_image_uri is required to upload to Vertex AI, which has no "
                          "prebuilt ONNX server: give the image of your ONNX serving container, e.g. "
                          "registry.serving_container_image_uri=us-docker.pkg.dev/my-project/serving/onnx:1")
    return VertexTarget(project=reg.vertex_project, region=reg.vertex_region, model_id=model_id,
                        staging_bucket=bucket, bucket_is_default=reg.staging_bucket is None,
                        image=reg.serving_container_image_uri, credentials=credentials, credentials_source=source,
                        api_endpoint=reg.api_endpoint, storage_endpoint=reg.storage_endpoint,
                        labels=dict(reg.vertex_labels), timeout_s=reg.timeout_s)


def _credentials(reg: RegistryConfig) -> tuple[Any, str]:
    import google.auth
    from google.auth import exceptions as auth_errors

    if reg.credentials == ANONYMOUS:
        from google.auth.credentials import AnonymousCredentials

        return AnonymousCredentials(), "anonymous (emulator)"
    if reg.credentials:
        path = Path(reg.credentials).expanduser()
        try:
            credentials, _ = google.auth.load_credentials_from_file(str(path), scopes=SCOPES)
        except (auth_errors.DefaultCredentialsError, ValueError) as exc:
            raise ConfigError(f"registry.credentials={reg.credentials}: not a usable Google credentials file ({exc}); "
                              "give a service-account key JSON") from None
        return credentials, f"key file {path}"
    try:
        credentials, _ = google.auth.default(scopes=SCOPES)
    except auth_errors.DefaultCredentialsError:
        return None, ""
    return credentials, "Application Default Credentials"
