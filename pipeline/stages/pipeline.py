"""The `main` entry point: build -> train -> evaluate -> register under one parent run.

Stages hand each other run ids and artifact URIs, as MLflow's multistep workflow example does.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Optional

import mlflow

from pipeline.config.plan import RunPlan
from pipeline.stages import build, evaluate, register, train
from pipeline.stages.common import experiment_for, plan_tags
from pipeline.tracking import runs
from pipeline.tracking.runs import stage_run


@dataclass
class PipelineResult:
    status: str
    run_id: str  # the parent run
    asset_id: str
    build: Optional[build.BuildResult] = None
    train: Optional[train.TrainResult] = None
    evaluate: Optional[evaluate.EvaluateResult] = None
    register: Optional[register.RegisterResult] = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def resumed_parent(train_run_id: Optional[str], adopted_run_id: Optional[str] = None) -> Optional[str]:
    """The pipeline run a resumed training belongs to, reopened so one interrupted-then-resumed pipeline
    stays one `main` run (a scheduled fire keeps one run per asset). Not when a run was made for this
    pipeline already (adopted_run_id: `mlflow run`'s, a sweep job's)."""
    if not train_run_id or adopted_run_id:
        return None
    client = mlflow.MlflowClient()
    parent_id = client.get_run(train_run_id).data.tags.get("mlflow.parentRunId")
    if not parent_id:
        return None
    parent = client.get_run(parent_id)
    if parent.data.tags.get("pipeline.stage") != "main" or parent.info.status == "FINISHED":
        return None
    return parent_id


def run_pipeline(plan: RunPlan) -> PipelineResult:
    stages = plan.config.stages
    resume_from = train.resume_point(plan)  # resolved once, before any run is opened
    with stage_run("main", experiment_for(plan), f"{plan.asset_id}-{plan.algorithm}-s{plan.seed}",
                   {**plan_tags(plan), **runs.code_version()},
                   run_id=resumed_parent(resume_from[0] if resume_from else None, plan.adopted_run_id),
                   adopt_run_id=plan.adopted_run_id) as parent:
        plan = replace(plan, adopted_run_id=None)  # the stages' runs are this run's children
        result = PipelineResult("RUNNING", parent.info.run_id, plan.asset_id)
        if "build" in stages:
            result.build = build.build(plan)
        result.train = train.train(plan, result.build.run_id if result.build else None, resume_from)
        mlflow.set_tag("pipeline.train_run_id", result.train.run_id)
        if "evaluate" in stages:
            result.evaluate = evaluate.evaluate(plan, result.train.run_id)
            mlflow.log_metrics({k: v for k, v in result.evaluate.metrics.items() if k.startswith("eval/")})
        if "register" in stages:
            result.register = register.register(plan, result.train.run_id,
                                                result.evaluate.metrics if result.evaluate else None)
        result.status = "FINISHED"
    return result
