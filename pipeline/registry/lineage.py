"""What a registered policy is and where it came from, read from its training run before anything is written."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import mlflow
import yaml
from mlflow.exceptions import MlflowException

from pipeline.config.errors import ConfigError
from pipeline.digest import file_sha256
from pipeline.redaction import redact_uri
from pipeline.registry.gate import Evaluation

UNITY_POLICY_DIR = "unity"  # as pipeline.stages.train writes it
MODEL_NAME = "policy"
# Keys of config.yaml that do not change the trained policy: left out of its hash.
_NOT_POLICY = ("tracking", "registry", "results_dir", "run_tags", "stages", "evaluation", "build")


@dataclass(frozen=True)
class PolicySource:
    run_id: str
    asset_id: str
    behavior: str
    algorithm: str
    onnx_path: Path  # local copy of unity/<Behavior>.onnx
    model_dir: Path  # local copy of the logged mlflow.onnx model
    onnx_sha256: str
    config_sha256: Optional[str]
    git_commit: str
    git_dirty: Optional[str]
    dataset_digests: list[str]
    evaluation: Optional[Evaluation]

    @property
    def onnx_uri(self) -> str:
        return f"runs:/{self.run_id}/{UNITY_POLICY_DIR}/{self.behavior}.onnx"

    @property
    def model_uri(self) -> str:
        return f"runs:/{self.run_id}/{MODEL_NAME}"

    def version_tags(self) -> dict[str, str]:
        tags = {"source_run_id": self.run_id, "asset": self.asset_id, "behavior": self.behavior,
                "algorithm": self.algorithm, "onnx.sha256": self.onnx_sha256, "onnx.artifact": self.onnx_uri,
                "git.commit": self.git_commit}
        if self.git_dirty is not None:
            tags["git.dirty"] = self.git_dirty
        if self.config_sha256:
            tags["config.sha256"] = self.config_sha256
        if self.dataset_digests:
            tags["dataset.digest"] = ",".join(self.dataset_digests)
        if self.evaluation:
            tags.update(self.evaluation.as_tags())
        return tags


def collect(run_id: str, eval_metrics: Optional[dict], workdir: Path) -> PolicySource:
    """Check the run is a finished training run with an exported policy, fetch it, gather its lineage."""
    client = mlflow.MlflowClient()
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise ConfigError(f"--run_id {run_id}: no such run in the tracking store "
                          f"{redact_uri(mlflow.get_tracking_uri())}; "
                          "give the id of a training run (the `train` stage's run)") from None
    tags = run.data.tags
    stage = tags.get("pipeline.stage")
    if stage != "train":
        hint = f" (its training run is {tags['pipeline.train_run_id']})" if tags.get("pipeline.train_run_id") else ""
        raise ConfigError(f"--run_id {run_id} is a {stage or 'non-pipeline'} run, not a training run{hint}; "
                          "register the training run")
    if run.info.status != "FINISHED":
        raise ConfigError(f"--run_id {run_id}: training run is {run.info.status}; only a FINISHED training run's "
                          "policy is registered (train it to completion first)")
    behavior = tags.get("behavior") or ""
    onnx_rel = f"{UNITY_POLICY_DIR}/{behavior}.onnx"
    try:
        onnx_path = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=onnx_rel,
                                                             dst_path=str(workdir / "unity")))
        # runs:/ resolves to the run's logged model (MLflow 3 keeps it outside the run's artifacts)
        model_dir = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"runs:/{run_id}/{MODEL_NAME}",
                                                             dst_path=str(workdir / "mlflow")))
    except Exception as exc:
        raise ConfigError(f"--run_id {run_id}: the training run has no ONNX policy at {onnx_rel} and {MODEL_NAME}/ "
                          f"({type(exc).__name__}); nothing to register — re-run training") from None
    if not onnx_path.is_file() or onnx_path.stat().st_size == 0:
        raise ConfigError(f"--run_id {run_id}: {onnx_rel} is missing or empty; nothing to register — re-run training")
    return PolicySource(
        run_id=run_id, asset_id=tags.get("asset", "unknown"), behavior=behavior,
        algorithm=tags.get("algorithm", "unknown"), onnx_path=onnx_path, model_dir=model_dir,
        onnx_sha256=file_sha256(onnx_path), config_sha256=_config_hash(client, run_id, workdir),
        git_commit=tags.get("git.commit", "unknown"), git_dirty=tags.get("git.dirty"),
        dataset_digests=sorted({d.dataset.digest for d in (run.inputs.dataset_inputs if run.inputs else [])
                                if d.dataset.digest}
                               | ({tags["dataset.digest"]} if tags.get("dataset.digest") else set())),
        evaluation=_evaluation(client, tags.get("pipeline.eval_run_id"), eval_metrics),
    )


def _config_hash(client: mlflow.MlflowClient, run_id: str, workdir: Path) -> Optional[str]:
    try:
        path = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="config.yaml",
                                                        dst_path=str(workdir / "config")))
    except Exception:
        return None
    cfg = yaml.safe_load(path.read_text()) or {}
    policy_cfg = {k: v for k, v in cfg.items() if k not in _NOT_POLICY}
    return hashlib.sha256(json.dumps(policy_cfg, sort_keys=True, default=str).encode()).hexdigest()


def _evaluation(client: mlflow.MlflowClient, eval_run_id: Optional[str],
                eval_metrics: Optional[dict]) -> Optional[Evaluation]:
    """The evaluate run's eval/* figures and protocol; else what the caller passed, protocol unknown."""
    if eval_run_id:
        try:
            ev = client.get_run(eval_run_id)
        except MlflowException:
            ev = None
        if ev is not None:
            figures = {k[len("eval/"):]: v for k, v in ev.data.metrics.items() if k.startswith("eval/")}
            protocol = {k: ev.data.params[f"evaluation.{k}"] for k in ("episodes", "seed", "deterministic")
                        if f"evaluation.{k}" in ev.data.params}
            if figures:
                return Evaluation(figures, protocol, eval_run_id)
    if eval_metrics:
        figures = {k[len("eval/"):]: float(v) for k, v in eval_metrics.items() if k.startswith("eval/")}
        return Evaluation(figures, {}) if figures else None
    return None
