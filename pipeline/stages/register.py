"""Register stage: put a trained policy in the MLflow Model Registry.

The promotion gate and the Vertex AI mirror are built on this in the registry issue; here a new
version gets the `challenger` alias and the first version of a model becomes `champion`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import mlflow

from pipeline.config.plan import RunPlan
from pipeline.stages.common import experiment_for, plan_tags
from pipeline.stages.train import MODEL_NAME
from pipeline.tracking.runs import stage_run


@dataclass(frozen=True)
class RegisterResult:
    run_id: str
    model_name: str
    version: str
    aliases: list[str] = field(default_factory=list)
    decision: str = ""


def registered_model_name(plan: RunPlan) -> str:
    return f"{plan.asset_id}.{plan.behavior_name}"


def register(plan: RunPlan, train_run_id: str, eval_metrics: Optional[dict] = None) -> RegisterResult:
    client = mlflow.MlflowClient()
    experiment = experiment_for(plan)
    name = registered_model_name(plan)
    with stage_run("register", experiment, f"register-{plan.asset_id}",
                   {**plan_tags(plan), "pipeline.train_run_id": train_run_id}) as run:
        existing = [v for v in client.search_model_versions(f"name='{name}'") if v.run_id == train_run_id]
        if existing:  # idempotent: the same training run is never registered twice
            version = existing[0]
        else:
            version = mlflow.register_model(f"runs:/{train_run_id}/{MODEL_NAME}", name,
                                            tags={"source_run_id": train_run_id,
                                                  **{k: f"{v:.6g}" for k, v in (eval_metrics or {}).items()
                                                     if k.startswith("eval/")}})
        client.set_registered_model_alias(name, "challenger", version.version)
        aliases = ["challenger"]
        try:
            client.get_model_version_by_alias(name, "champion")
            decision = "kept the current champion (promotion gate: registry issue)"
        except mlflow.exceptions.MlflowException:
            client.set_registered_model_alias(name, "champion", version.version)
            aliases.append("champion")
            decision = "first version of this model: promoted to champion"
        mlflow.set_tags({"registry.model": name, "registry.version": version.version, "registry.decision": decision})
        result = RegisterResult(run.info.run_id, name, version.version, aliases, decision)
    print(f"register: {name} v{result.version} ({', '.join(aliases)}): {decision}", flush=True)
    return result
