"""Schema of the `registry:` config section, and its validation (errors name the key and the fix)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, Optional

from pipeline.config.errors import ConfigError
from pipeline.config.ranges import check_ranges
from pipeline.registry import vertex_rules

GATE_METRICS = ("success_rate", "mean_reward")  # the evaluation figures that come with a 95% interval
ANONYMOUS = "anonymous"


@dataclass
class RegistryConfig:
    # Promotion gate: the challenger must beat the champion on the same evaluation protocol.
    metric: str = "success_rate"  # success_rate | mean_reward
    margin: float = 0.0  # in the metric's units: the challenger's lower 95% bound must exceed champion + margin
    tiebreak_metric: Optional[str] = "mean_reward"  # judged the same way when `metric` cannot separate them
    tiebreak_margin: float = 0.0
    force: bool = False  # a human override: promote regardless of the gate (recorded as forced)
    champion_alias: str = "champion"
    challenger_alias: str = "challenger"
    # Vertex AI Model Registry mirror. No project, or no credentials found: local record only.
    vertex_project: Optional[str] = None  # Google Cloud project; None keeps the local record only
    vertex_region: str = "us-central1"
    vertex_model_id: Optional[str] = None  # None: derived from the MLflow model name
    credentials: Optional[str] = None  # None: Application Default Credentials; a key file path; "anonymous" (emulators)
    api_endpoint: Optional[str] = None  # None: <region>-aiplatform.googleapis.com; set for an emulator
    storage_endpoint: Optional[str] = None  # None: Cloud Storage itself; set for an emulator
    staging_bucket: Optional[str] = None  # gs://bucket[/prefix]; None: gs://<project>-vertex-staging-<region>
    serving_container_image_uri: Optional[str] = None  # Vertex has no prebuilt ONNX server: bring one
    vertex_labels: Dict[str, str] = field(default_factory=dict)  # extra labels on every Vertex version
    timeout_s: float = 120.0  # per Google Cloud call, retries included

    def validate(self) -> None:
        """Raise ConfigError for the first bad `registry.*` value; cheap and offline."""
        check_registry_config(self)
        check_ranges({"registry": asdict(self)}, sections=("registry",))


def check_registry_config(reg: RegistryConfig) -> None:
    """The registry's own rules, before the range table: their messages say why (a negative margin...)."""
    if reg.metric not in GATE_METRICS:
        raise ConfigError(f"registry.metric={reg.metric!r} is not a gated evaluation figure; "
                          f"choose one of: {', '.join(GATE_METRICS)}")
    if reg.tiebreak_metric is not None and reg.tiebreak_metric not in GATE_METRICS:
        raise ConfigError(f"registry.tiebreak_metric={reg.tiebreak_metric!r} is not a gated evaluation figure; "
                          f"choose one of: {', '.join(GATE_METRICS)}, or null for none")
    for key in ("margin", "tiebreak_margin"):
        if getattr(reg, key) < 0:
            raise ConfigError(f"registry.{key}={getattr(reg, key)} must be >= 0 (a negative margin would promote a "
                              "worse policy); use registry.force=true for a deliberate override")
    for key in ("champion_alias", "challenger_alias"):
        problem = vertex_rules.alias_problem(getattr(reg, key))
        if problem:
            raise ConfigError(f"registry.{key}={getattr(reg, key)!r} {problem}")
    if reg.champion_alias == reg.challenger_alias:
        raise ConfigError("registry.champion_alias and registry.challenger_alias must differ")
    if reg.timeout_s <= 0:
        raise ConfigError(f"registry.timeout_s={reg.timeout_s} must be > 0 seconds")
    labels = reg.vertex_labels or {}
    if len(labels) > vertex_rules.MAX_LABELS - 8:
        raise ConfigError(f"registry.vertex_labels has {len(labels)} labels; Vertex AI allows "
                          f"{vertex_rules.MAX_LABELS} and the registry sets 8 itself")
    for key, value in labels.items():
        problem = vertex_rules.label_problem(str(key), str(value))
        if problem:
            raise ConfigError(f"registry.vertex_labels.{key}: {problem}")
    _check_vertex(reg)


def _check_vertex(reg: RegistryConfig) -> None:
    project = reg.vertex_project
    if project is not None and not vertex_rules.PROJECT_ID.match(project):
        raise ConfigError(f"registry.vertex_project={project!r} is not a Google Cloud project ID "
                          "(6-30 lowercase letters, digits or '-', starting with a letter), e.g. my-unity-project")
    if not vertex_rules.REGION.match(reg.vertex_region):
        raise ConfigError(f"registry.vertex_region={reg.vertex_region!r} is not a Google Cloud region, "
                          "e.g. us-central1 or europe-west4")
    model_id = reg.vertex_model_id
    if model_id is not None and not vertex_rules.MODEL_ID.match(model_id):
        raise ConfigError(f"registry.vertex_model_id={model_id!r} must be at most 63 lowercase letters, digits, "
                          "'_' or '-', not starting with a digit or '-' (Vertex AI's model ID rule)")
    bucket = reg.staging_bucket
    if bucket is not None:
        name = bucket[len("gs://"):].split("/", 1)[0] if bucket.startswith("gs://") else ""
        if not vertex_rules.BUCKET.match(name):
            raise ConfigError(f"registry.staging_bucket={bucket!r} must be gs://<bucket>[/<prefix>] with a valid "
                              "bucket name, e.g. gs://my-unity-policies/vertex")
    for key in ("api_endpoint", "storage_endpoint"):
        value = getattr(reg, key)
        if value is not None and (not value.strip() or " " in value):
            raise ConfigError(f"registry.{key}={value!r} must be a host[:port] or an http(s):// URL")
    creds = reg.credentials
    if creds == ANONYMOUS:
        if not reg.api_endpoint:
            raise ConfigError("registry.credentials=anonymous only works against an emulator: set "
                              "registry.api_endpoint (and registry.storage_endpoint) to it")
    elif creds is not None and str(creds).lstrip().startswith("{"):  # the key itself: never quote it back
        raise ConfigError("registry.credentials must be the path of a service-account key file, not the key's "
                          "contents; write it to a file only you can read and give that path")
    elif creds is not None and not Path(creds).expanduser().is_file():
        raise ConfigError(f"registry.credentials={creds!r}: no such key file; give the path of a service-account "
                          "key JSON, or leave it unset to use Application Default Credentials")
