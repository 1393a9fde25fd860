"""What every stage shares: the tags that identify a run and the experiment it goes to."""
from __future__ import annotations

from pipeline.config.plan import RunPlan
from pipeline.tracking import store
from pipeline.unity.player import player_path


def plan_tags(plan: RunPlan) -> dict[str, str]:
    return {"asset": plan.asset_id, "behavior": plan.behavior_name, "algorithm": plan.algorithm,
            "mode": plan.mode, "seed": str(plan.seed),
            "environment": f"unity:{player}" if (player := player_path(plan.cfg)) else f"simulation:{plan.simulation}",
            **plan.cfg.get("run_tags", {})}


def experiment_for(plan: RunPlan) -> str:
    store.configure(plan.cfg["tracking"]["tracking_uri"])
    return store.experiment_id(plan.cfg["tracking"]["experiment_name"])
