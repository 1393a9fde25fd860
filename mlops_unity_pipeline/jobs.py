"""Guide API: describe an asset and a training config, run it as a job, get a result back.

A job runs the same pipeline as `mlflow run . -e main`, in a child process: training never blocks
the event loop, concurrent jobs do not share ML-Agents' process-global state, and cancelling the
task stops the child the way Ctrl-C would (the checkpoint is saved, the MLflow run ends KILLED).
"""
from __future__ import annotations

import asyncio
import json
import os
import shlex
import sys
import tempfile
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from pipeline.sim import SIMULATIONS
from pipeline.tracking.store import REPO_ROOT

# Behavior name -> the conf/asset group that simulates it.
_ASSET_GROUPS = {world.spec.behavior_name: name for name, world in SIMULATIONS.items()}


@dataclass
class UnityAssetSpec:
    asset_id: str
    name: str  # the ML-Agents behavior name
    asset_type: str = "behavior"
    description: str = ""
    observation_space: dict[str, int] = field(default_factory=dict)
    action_space: dict[str, Any] = field(default_factory=dict)
    env_path: Optional[str] = None  # a Unity player build; None trains on the built-in simulation


@dataclass
class RLTrainingConfig:
    algorithm: str = "PPO"
    max_steps: int = 500_000
    num_envs: int = 2
    time_scale: float = 20.0
    training_mode: str = "online"
    offline_dataset_path: Optional[str] = None
    seed: int = 0
    overrides: list[str] = field(default_factory=list)  # any further Hydra overrides


@dataclass
class TrainingJob:
    job_id: str
    asset_spec: UnityAssetSpec
    rl_config: RLTrainingConfig


@dataclass
class TrainingJobResult:
    job_id: str
    status: str  # FINISHED, FAILED or KILLED
    asset_id: str
    run_id: Optional[str] = None  # the pipeline's parent MLflow run
    run_ids: dict[str, str] = field(default_factory=dict)  # stage -> MLflow run id
    onnx_uri: Optional[str] = None  # runs:/<train run>/unity/<Behavior>.onnx
    onnx_path: Optional[str] = None  # the same file in the local ML-Agents results directory
    training_metrics: dict[str, float] = field(default_factory=dict)
    eval_metrics: dict[str, float] = field(default_factory=dict)
    registry: dict[str, Any] = field(default_factory=dict)
    error: Optional[str] = None

    def __str__(self) -> str:
        lines = [f"TrainingJobResult {self.job_id}: {self.status} (asset {self.asset_id})"]
        if self.error:
            lines.append(f"  error: {self.error}")
        if self.run_ids:
            lines.append("  MLflow runs: " + ", ".join(f"{k}={v}" for k, v in self.run_ids.items()))
        if self.onnx_uri:
            lines.append(f"  ONNX policy: {self.onnx_uri}  (local: {self.onnx_path})")
        for title, metrics in (("training", self.training_metrics), ("evaluation", self.eval_metrics)):
            if metrics:
                lines.append(f"  {title}: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())))
        if self.registry:
            lines.append(f"  registry: {self.registry}")
        return "\n".join(lines)


def _quote(value: Any) -> str:
    """A Hydra override value that survives spaces and punctuation."""
    text = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{text}'"


def job_overrides(job: TrainingJob) -> tuple[str, list[str]]:
    """The conf/asset group and the Hydra overrides that express a guide job."""
    spec, rl = job.asset_spec, job.rl_config
    group = _ASSET_GROUPS.get(spec.name)
    if group is None and not spec.env_path:
        known = ", ".join(f"{b} ({g})" for b, g in _ASSET_GROUPS.items())
        raise ValueError(f"UnityAssetSpec.name {spec.name!r} has no built-in simulation (known behaviors: {known}); "
                         "set env_path to a Unity player build of it")
    ov = [f"algorithm={rl.algorithm.lower()}", f"mode={rl.training_mode}", f"max_steps={rl.max_steps}",
          f"seed={rl.seed}", f"env.num_envs={rl.num_envs}", f"env.time_scale={rl.time_scale}",
          f"asset.asset_id={_quote(spec.asset_id)}", f"asset.name={_quote(spec.name)}",
          f"asset.asset_type={_quote(spec.asset_type)}", f"asset.description={_quote(spec.description)}"]
    ov += [f"asset.observation_space.{k}={int(v)}" for k, v in spec.observation_space.items()]
    if spec.action_space:
        ov += [f"asset.action_space.{k}={_quote(v) if isinstance(v, str) else v}" for k, v in spec.action_space.items()]
    if spec.env_path:
        ov.append(f"env_path={_quote(spec.env_path)}")
    if rl.offline_dataset_path:
        ov.append(f"mode.dataset_path={_quote(rl.offline_dataset_path)}")
    return group or "nav", ov + list(rl.overrides)


class UnityMLOpsOrchestrator:
    def __init__(self, vertex_project: Optional[str] = None, vertex_region: str = "us-central1",
                 tracking_uri: Optional[str] = None, experiment_name: str = "unity-mlagents",
                 python: str = sys.executable):
        self.vertex_project = vertex_project
        self.vertex_region = vertex_region
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.python = python

    def command(self, job: TrainingJob, result_json: Path) -> list[str]:
        group, overrides = job_overrides(job)
        # Site-wide extra overrides (e.g. a smaller budget in CI), applied last.
        overrides += shlex.split(os.environ.get("MLOPS_PIPELINE_OVERRIDES", ""))
        overrides.append(f"tracking.experiment_name={_quote(self.experiment_name)}")
        if self.vertex_project:
            overrides += [f"registry.vertex_project={_quote(self.vertex_project)}",
                          f"registry.vertex_region={_quote(self.vertex_region)}"]
        if self.tracking_uri:
            overrides.append(f"tracking.tracking_uri={_quote(self.tracking_uri)}")
        return [self.python, "-m", "pipeline.cli", "main", "--asset", group,
                "--overrides", " ".join(overrides), "--result-json", str(result_json)]

    async def execute_training_job(self, job: TrainingJob) -> TrainingJobResult:
        """Run the whole pipeline for one job without blocking the event loop."""
        with tempfile.TemporaryDirectory(prefix=f"job-{job.job_id}-") as tmp:
            result_json = Path(tmp) / "result.json"
            cmd = self.command(job, result_json)
            env = {**os.environ, "PYTHONUNBUFFERED": "1", "MLFLOW_RUN_ID": ""}
            env.pop("MLFLOW_RUN_ID")  # a job is its own pipeline run, never a child of the caller's
            proc = await asyncio.create_subprocess_exec(*cmd, cwd=str(REPO_ROOT), env=env,
                                                        stderr=asyncio.subprocess.PIPE)
            tail: deque[str] = deque(maxlen=15)
            try:
                assert proc.stderr is not None
                async for raw in proc.stderr:
                    line = raw.decode(errors="replace")
                    tail.append(line.rstrip())
                    sys.stderr.write(line)
                code = await proc.wait()
            except asyncio.CancelledError:
                proc.terminate()  # SIGTERM: the trainer saves its checkpoint and the run ends KILLED
                await proc.wait()
                raise
            if code == 0 and result_json.exists():
                return self._result(job, json.loads(result_json.read_text()))
            errors = [line for line in tail if line.startswith("error:")]
            return TrainingJobResult(job.job_id, "KILLED" if code in (-2, -15, 130, 143) else "FAILED",
                                     job.asset_spec.asset_id,
                                     error=(errors[-1][len("error:"):].strip() if errors else "\n".join(tail))
                                     or f"exit code {code}")

    @staticmethod
    def _result(job: TrainingJob, data: dict) -> TrainingJobResult:
        train, evaluate, register = data.get("train") or {}, data.get("evaluate") or {}, data.get("register") or {}
        run_ids = {stage: data[stage]["run_id"] for stage in ("build", "train", "evaluate", "register") if data.get(stage)}
        behavior = job.asset_spec.name
        return TrainingJobResult(
            job_id=job.job_id, status=data["status"], asset_id=data["asset_id"], run_id=data["run_id"],
            run_ids=run_ids, onnx_uri=train.get("onnx_uri"),
            onnx_path=str(Path(train["results_dir"]) / f"{behavior}.onnx") if train.get("results_dir") else None,
            training_metrics={k: v for k, v in (train.get("metrics") or {}).items() if not k.startswith("eval/")},
            eval_metrics=evaluate.get("metrics") or {},
            registry={k: register[k] for k in ("model_name", "version", "aliases", "decision", "promoted",
                                               "vertex_status", "vertex_uri") if k in register},
        )
