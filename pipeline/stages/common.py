"""What every stage shares: the tags that identify a run and the experiment it goes to."""
from __future__ import annotations

import contextlib

import mlflow
from mlflow.exceptions import MlflowException

from pipeline.config.plan import RunPlan
from pipeline.tracking import store
from pipeline.unity.player import player_path


def plan_tags(plan: RunPlan) -> dict[str, str]:
    return {"asset": plan.asset_id, "behavior": plan.behavior_name, "algorithm": plan.algorithm,
            "mode": plan.mode, "seed": str(plan.seed),
            "environment": f"unity:{player}" if (player := player_path(plan.config))
            else f"simulation:{plan.simulation}",
            **plan.config.run_tags}


def experiment_for(plan: RunPlan) -> str:
    """The experiment of this pipeline's runs: the active run's, or that of the run made for this plan
    (plan.adopted_run_id: `mlflow run` puts it in whichever experiment it chose), else tracking.experiment_name.
    So parent and stage runs are in one experiment whatever MLFLOW_EXPERIMENT_NAME says."""
    store.configure(plan.config.tracking.tracking_uri)
    active = mlflow.active_run()
    if active is not None:
        return active.info.experiment_id
    if plan.adopted_run_id:
        with contextlib.suppress(MlflowException):
            return mlflow.MlflowClient().get_run(plan.adopted_run_id).info.experiment_id
    return store.experiment_id(plan.config.tracking.experiment_name)
