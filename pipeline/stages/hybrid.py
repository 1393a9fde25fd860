"""The train stage's runs for mode=hybrid: the train run is the parent of two child runs, `train.pretrain`
(offline, on the dataset) and `train.finetune` (online, from the pre-trained checkpoint). What each phase does
is pipeline/offline/training.py; which runs there are, and how each ends, is decided here."""
from __future__ import annotations

from pathlib import Path

import mlflow

from pipeline.config.plan import RunPlan
from pipeline.offline import training as offline_training
from pipeline.offline.dataset import Dataset
from pipeline.stages.common import experiment_for, plan_tags
from pipeline.tracking.runs import StageInterrupted, stage_run
from pipeline.training.session import TrainingOutcome


def train(plan: RunPlan, results_root: Path, run_id: str, data: Dataset) -> TrainingOutcome:
    """Inside the active train run `run_id`; an interrupted phase ends its child KILLED and returns what was
    saved (the train stage then logs it and ends KILLED as well)."""
    experiment = experiment_for(plan)
    tags = {**plan_tags(plan), "pipeline.parent_train_run_id": run_id}
    try:
        with stage_run("train.pretrain", experiment, f"pretrain-{plan.asset_id}-s{plan.seed}", tags) as child:
            pretrain_id = child.info.run_id
            pre = offline_training.pretrain(plan, results_root, pretrain_id, data)
            if pre.interrupted:
                raise StageInterrupted(f"pre-training stopped at sample {pre.steps:,} of "
                                       f"{plan.config.mode.pretrain_steps:,}")
    except StageInterrupted:
        return pre

    online_plan = offline_training.finetune_plan(plan, pre, data)
    mlflow.set_tags({"pipeline.pretrain_run_id": pretrain_id,
                     "hybrid.init_path": online_plan.config.algorithm["init_path"]})
    try:
        with stage_run("train.finetune", experiment, f"finetune-{plan.asset_id}-{plan.algorithm}-s{plan.seed}",
                       tags) as child:
            finetune_id = child.info.run_id
            outcome = offline_training.finetune(online_plan, results_root, run_id, finetune_id)
            if outcome.interrupted:
                raise StageInterrupted(f"fine-tuning stopped at step {outcome.steps:,} of {plan.max_steps:,}")
    except StageInterrupted:
        pass
    mlflow.set_tag("pipeline.finetune_run_id", finetune_id)
    return outcome
