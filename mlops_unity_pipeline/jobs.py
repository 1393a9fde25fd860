"""Guide API: describe an asset and a training config, run it as a job, get a result back.

A job is one launch request (pipeline/launch/): the same pipeline as `mlflow run . -e main`, by default in
a child process: training never blocks the event loop, concurrent jobs do not share ML-Agents'
process-global state, and cancelling the task stops the child the way Ctrl-C would (the checkpoint is
saved, the MLflow run ends KILLED). Job fields reach the run's config as typed values, never as text.
"""
from __future__ import annotations

import inspect
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.launch.job_specs import (  # noqa: F401 - re-exported: the guide's names
    RLTrainingConfig,
    TrainingJob,
    TrainingJobResult,
    UnityAssetSpec,
)
from pipeline.launch.local import LocalProcessExecutor, Outcome
from pipeline.launch.request import LaunchRequest, yield_to_overrides
from pipeline.paths import REPO_ROOT
from pipeline.sim import SIMULATIONS

# Behavior name -> the conf/asset group that simulates it.
_ASSET_GROUPS = {world.spec.behavior_name: name for name, world in SIMULATIONS.items()}


@dataclass
class UnityEnvironment:
    """What `build_unity_environment` hands to `train_rl_agent`: where the agents will be trained."""

    asset_group: str  # the conf/asset group: the built-in simulation and defaults of the asset
    env_path: str | None = None  # a Unity player build (.x86_64); None: the built-in simulation


def job_request(job: TrainingJob, env: UnityEnvironment) -> LaunchRequest:
    """A guide job as a typed launch request: every field reaches the run's config exactly as given."""
    spec, rl = job.asset_spec, job.rl_config
    values: dict[str, Any] = {
        "max_steps": rl.max_steps, "seed": rl.seed, "env.num_envs": rl.num_envs, "env.time_scale": rl.time_scale,
        "asset.asset_id": spec.asset_id, "asset.name": spec.name, "asset.asset_type": spec.asset_type,
        "asset.description": spec.description}
    if spec.observation_space:
        values["asset.observation_space"] = dict(spec.observation_space)
    if spec.action_space:
        values["asset.action_space"] = dict(spec.action_space)
    if env.env_path:
        values["env_path"] = env.env_path
    if rl.offline_dataset_path:
        values["mode.dataset_path"] = rl.offline_dataset_path
    # Person-written overrides (the job's own, then a site's, e.g. a smaller budget in CI) win over fields.
    overrides = list(rl.overrides) + shlex.split(os.environ.get("MLOPS_PIPELINE_OVERRIDES", ""))
    groups = {"asset": env.asset_group, "mode": str(rl.training_mode)}
    if rl.algorithm is not None:  # None: the asset's own default (conf/asset/<asset>.yaml)
        groups["algorithm"] = rl.algorithm.lower()
    groups, values = yield_to_overrides(groups, values, overrides)
    return LaunchRequest(groups=groups, values=values, overrides=overrides)


class UnityMLOpsOrchestrator:
    """Runs guide jobs: `execute_training_job(job)` = `build_unity_environment(job)` then
    `train_rl_agent(job, env)`. Subclass and replace either, as the guide says, for project-specific steps.

    tracking_uri: where runs go; given explicitly it wins over $MLFLOW_TRACKING_URI (as mlflow.set_tracking_uri
    does). executor: how a job's pipeline run is carried out, by default a local child process
    (pipeline.launch.local.LocalProcessExecutor); pipeline.launch.ray_jobs.RayJobExecutor sends it to a Ray cluster.
    """

    def __init__(self, vertex_project: str | None = None, vertex_region: str = "us-central1",
                 tracking_uri: str | None = None, experiment_name: str = "unity-mlagents",
                 python: str = sys.executable, executor: Any = None):
        self.vertex_project = vertex_project
        self.vertex_region = vertex_region
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.python = python
        self.executor = executor if executor is not None else LocalProcessExecutor(python=python, cwd=REPO_ROOT)

    def build_unity_environment(self, job: TrainingJob) -> UnityEnvironment:
        """Where `job` trains. Receives the job; returns a `UnityEnvironment`: the conf/asset group of the
        behaviour (its built-in simulation, if any) and the Unity player build to train on (`asset_spec.env_path`,
        or None for the simulation). A subclass may build a player here (sync or async) and return its path."""
        spec = job.asset_spec
        group = _ASSET_GROUPS.get(spec.name)
        if group is None and not spec.env_path:
            known = ", ".join(f"{b} ({g})" for b, g in _ASSET_GROUPS.items())
            raise ValueError(f"UnityAssetSpec.name {spec.name!r} has no built-in simulation (known behaviors: "
                             f"{known}); set env_path to a Unity player build of it")
        return UnityEnvironment(asset_group=group or "nav", env_path=spec.env_path)

    def request(self, job: TrainingJob, env: UnityEnvironment | None = None,
                tags: dict[str, str] | None = None, resume: str | None = None) -> LaunchRequest:
        """The launch request of `job` on `env`, with this orchestrator's store, experiment and Vertex settings."""
        request = job_request(job, env or self.build_unity_environment(job))
        request.values.setdefault("tracking.experiment_name", self.experiment_name)
        if self.vertex_project:
            request.values.setdefault("registry.vertex_project", self.vertex_project)
            request.values.setdefault("registry.vertex_region", self.vertex_region)
        if self.tracking_uri:  # explicit: wins over the environment's MLFLOW_TRACKING_URI
            request.values.setdefault("tracking.tracking_uri", self.tracking_uri)
            request.env["MLFLOW_TRACKING_URI"] = self.tracking_uri
        request.env["MLFLOW_EXPERIMENT_NAME"] = self.experiment_name
        request.tags.update(tags or {})
        request.resume = resume
        return request

    async def train_rl_agent(self, job: TrainingJob, env: UnityEnvironment, **launch: Any) -> TrainingJobResult:
        """Train, evaluate and register `job` on `env` (what `build_unity_environment` returned); returns the
        `TrainingJobResult`. By default the project's whole pipeline runs through `self.executor` (a child process
        that never blocks the event loop; cancelling the task stops it the way Ctrl-C does)."""
        request = self.request(job, env, launch.pop("tags", None), launch.pop("resume", None))
        return self.result_of(job, await self.executor.run(request, **launch))

    async def execute_training_job(self, job: TrainingJob) -> TrainingJobResult:
        """Run the whole pipeline for one job without blocking the event loop."""
        env = self.build_unity_environment(job)
        if inspect.isawaitable(env):
            env = await env
        return await self.train_rl_agent(job, env)

    def use_store(self) -> None:
        """Point this process's MLflow client where this orchestrator's runs go."""
        import mlflow

        from pipeline.tracking import store

        if self.tracking_uri:
            mlflow.set_tracking_uri(self.tracking_uri)
        else:
            store.configure()

    def result_of(self, job: TrainingJob, outcome: Outcome) -> TrainingJobResult:
        if outcome.result is not None:
            return self._result(job, outcome.result)
        return TrainingJobResult(job.job_id, outcome.status, job.asset_spec.asset_id,
                                 error=outcome.error or f"exit code {outcome.exit_code}")

    @staticmethod
    def _result(job: TrainingJob, data: dict) -> TrainingJobResult:
        train, evaluate, register = data.get("train") or {}, data.get("evaluate") or {}, data.get("register") or {}
        run_ids = {stage: data[stage]["run_id"] for stage in ("build", "train", "evaluate", "register")
                   if data.get(stage)}
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
