"""The train stage's work for mode=offline and mode=hybrid, inside the stage's MLflow run.

offline: one run, `learner.train` on the dataset; no environment process.
hybrid:  the train run is the parent of two child runs, `pretrain` (offline, on the dataset) and
         `finetune` (the configured ML-Agents trainer online, `init_path` = the pre-trained
         checkpoint.pt, optionally with ML-Agents' behavioral_cloning term on the demonstrations).
         The online statistics are also logged to the parent, so it reads like an online run.
"""
from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import mlflow

from pipeline.config.plan import RunPlan
from pipeline.offline.dataset import Dataset, layout_of_asset
from pipeline.offline.loader import load
from pipeline.training.mlagents_trainer import TrainingOutcome


def dataset_for(plan: RunPlan) -> Dataset:
    order = tuple(n for n, _ in plan.world.spec.observations) if plan.simulation else None
    return load(plan.cfg["mode"]["dataset_path"], layout_of_asset(plan.cfg["asset"], order))


def log_dataset(data: Dataset, context: str = "training") -> None:
    """The dataset as an MLflow input of the active run: its file, sha256 digest and size."""
    import warnings

    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    with warnings.catch_warnings():  # MLflow registers its local source twice and says so
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(data.path.as_uri())
    dataset = MetaDataset(source, name=data.path.name, digest=data.digest[:32])
    mlflow.log_input(dataset, context=context)
    summary = data.summary()
    mlflow.set_tags({"dataset.path": str(data.path), "dataset.sha256": data.digest, "dataset.format": data.format})
    mlflow.log_params({f"dataset.{k}": v for k, v in summary.items()})


def train(plan: RunPlan, results_root: Path, run_id: str, data: Dataset) -> TrainingOutcome:
    from pipeline.offline import learner
    from pipeline.tracking.stats_writer import MLflowStatsWriter

    if plan.mode == "offline":
        writers = [MLflowStatsWriter(run_id, plan.behavior_name), learner.OfflineProgressWriter(plan.max_steps)]
        return learner.train(plan, data, results_root, run_id, writers)
    return _hybrid(plan, results_root, run_id, data)


def _hybrid(plan: RunPlan, results_root: Path, run_id: str, data: Dataset) -> TrainingOutcome:
    from pipeline.offline import learner, unity_demo
    from pipeline.stages.common import experiment_for, plan_tags
    from pipeline.tracking import runs
    from pipeline.tracking.runs import StageInterrupted, stage_run
    from pipeline.tracking.stats_writer import MLflowStatsWriter, ProgressWriter
    from pipeline.training import mlagents_trainer

    mode = plan.cfg["mode"]
    experiment = experiment_for(plan)
    pretrain_plan = dataclasses.replace(plan, max_steps=mode["pretrain_steps"])
    tags = {**plan_tags(plan), "pipeline.parent_train_run_id": run_id}
    try:
        with stage_run("train.pretrain", experiment, f"pretrain-{plan.asset_id}-s{plan.seed}", tags) as child:
            child_id = child.info.run_id
            log_dataset(data)
            runs.log_params({"phase": "pretrain", "max_steps": pretrain_plan.max_steps, "mode": mode})
            writers = [MLflowStatsWriter(child_id, plan.behavior_name),
                       learner.OfflineProgressWriter(pretrain_plan.max_steps, "pretrain")]
            pre = learner.train(pretrain_plan, data, results_root, child_id, writers)
            if pre.checkpoint_path is None:
                raise RuntimeError(f"pre-training wrote no checkpoint.pt under {pre.results_dir}")
            mlflow.log_artifact(str(pre.checkpoint_path), "checkpoint")
            mlflow.log_artifact(str(pre.onnx_path), "unity")
            if pre.interrupted:
                raise StageInterrupted(f"pre-training stopped at sample {pre.steps:,} of {pretrain_plan.max_steps:,}")
    except StageInterrupted:
        return pre  # the train stage logs the pre-trained policy and ends KILLED

    algorithm = copy.deepcopy(plan.cfg["algorithm"])
    algorithm["init_path"] = str(pre.checkpoint_path)  # ML-Agents' TorchModelSaver loads Policy, critic ...
    if mode["bc_strength"] > 0:
        # ML-Agents' behavioral_cloning reads .demo files only: convert the dataset next to the checkpoint.
        demo = unity_demo.write(pre.results_dir / "demonstrations.demo", data, name=plan.asset_id)
        algorithm["behavioral_cloning"] = {"demo_path": str(demo), "strength": mode["bc_strength"],
                                           "steps": mode["bc_steps"]}
    online_plan = dataclasses.replace(plan, cfg={**plan.cfg, "algorithm": algorithm})
    mlflow.set_tags({"pipeline.pretrain_run_id": child_id, "hybrid.init_path": algorithm["init_path"]})
    try:
        with stage_run("train.finetune", experiment, f"finetune-{plan.asset_id}-{plan.algorithm}-s{plan.seed}",
                       tags) as child:
            finetune_id = child.info.run_id
            runs.log_params({"phase": "finetune", "max_steps": plan.max_steps, "algorithm": algorithm})
            writers = [MLflowStatsWriter(finetune_id, plan.behavior_name),
                       MLflowStatsWriter(run_id, plan.behavior_name), ProgressWriter(plan.max_steps)]
            outcome = mlagents_trainer.train(online_plan, results_root, run_id, writers)
            mlflow.set_tag("results_dir", str(outcome.results_dir))
            if outcome.interrupted:
                raise StageInterrupted(f"fine-tuning stopped at step {outcome.steps:,} of {plan.max_steps:,}")
    except StageInterrupted:
        pass  # the train stage logs what was saved and ends KILLED as well
    mlflow.set_tag("pipeline.finetune_run_id", finetune_id)
    return outcome
