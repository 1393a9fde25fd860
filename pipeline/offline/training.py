"""The train stage's work for mode=offline and mode=hybrid, logged to runs the stage opens (stages/train.py and
stages/hybrid.py own the runs; this module only logs into the active one and names the runs it writes to).

offline: `learner.train` on the dataset, in the train run; no environment process.
hybrid:  `pretrain` (offline, on the dataset) then `finetune` (the configured ML-Agents trainer online,
         `init_path` = the pre-trained checkpoint.pt, optionally with ML-Agents' behavioral_cloning term on the
         demonstrations), each in its own child run of the train run.
"""
from __future__ import annotations

import copy
import dataclasses
import warnings
from pathlib import Path

import mlflow
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset

from pipeline.config.plan import RunPlan
from pipeline.offline import learner, unity_demo
from pipeline.offline.dataset import Dataset, layout_of_asset
from pipeline.offline.loader import load
from pipeline.tracking import runs
from pipeline.tracking.stats_writer import MLflowStatsWriter, ProgressWriter
from pipeline.training import mlagents_trainer
from pipeline.training.session import TrainingOutcome


def dataset_for(plan: RunPlan) -> Dataset:
    order = tuple(n for n, _ in plan.world.spec.observations) if plan.simulation else None
    return load(plan.config.mode.dataset_path, layout_of_asset(plan.config.asset, order))


def log_dataset(data: Dataset, context: str = "training") -> None:
    """The dataset as an MLflow input of the active run: its file, sha256 digest and size."""
    with warnings.catch_warnings():  # MLflow registers its local source twice and says so
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(data.path.as_uri())
    dataset = MetaDataset(source, name=data.path.name, digest=data.digest[:32])
    mlflow.log_input(dataset, context=context)
    summary = data.summary()
    mlflow.set_tags({"dataset.path": str(data.path), "dataset.sha256": data.digest, "dataset.format": data.format})
    mlflow.log_params({f"dataset.{k}": v for k, v in summary.items()})


def train(plan: RunPlan, results_root: Path, run_id: str, data: Dataset) -> TrainingOutcome:
    """mode=offline, in the active run `run_id`."""
    writers = [MLflowStatsWriter(run_id, plan.behavior_name), learner.OfflineProgressWriter(plan.max_steps)]
    return learner.train(plan, data, results_root, run_id, writers)


def pretrain(plan: RunPlan, results_root: Path, run_id: str, data: Dataset) -> TrainingOutcome:
    """hybrid, first phase, in the active run `run_id` (the pretrain child): mode.pretrain_steps samples of
    offline learning; its checkpoint and policy are logged to that run."""
    mode = plan.config.mode
    pretrain_plan = dataclasses.replace(plan, max_steps=mode.pretrain_steps)
    log_dataset(data)
    runs.log_params({"phase": "pretrain", "max_steps": pretrain_plan.max_steps, "mode": dataclasses.asdict(mode)})
    writers = [MLflowStatsWriter(run_id, plan.behavior_name),
               learner.OfflineProgressWriter(pretrain_plan.max_steps, "pretrain")]
    pre = learner.train(pretrain_plan, data, results_root, run_id, writers)
    if pre.checkpoint_path is None:
        raise RuntimeError(f"pre-training wrote no checkpoint.pt under {pre.results_dir}")
    mlflow.log_artifact(str(pre.checkpoint_path), "checkpoint")
    mlflow.log_artifact(str(pre.onnx_path), "unity")
    return pre


def finetune_plan(plan: RunPlan, pre: TrainingOutcome, data: Dataset) -> RunPlan:
    """hybrid, second phase's plan: the configured algorithm initialised from the pre-trained checkpoint."""
    mode = plan.config.mode
    algorithm = copy.deepcopy(plan.config.algorithm)
    algorithm["init_path"] = str(pre.checkpoint_path)  # ML-Agents' TorchModelSaver loads Policy, critic ...
    if mode.bc_strength > 0:
        # ML-Agents' behavioral_cloning reads .demo files only: convert the dataset next to the checkpoint.
        demo = unity_demo.write(pre.results_dir / "demonstrations.demo", data, name=plan.asset_id)
        algorithm["behavioral_cloning"] = {"demo_path": str(demo), "strength": mode.bc_strength,
                                           "steps": mode.bc_steps}
    return dataclasses.replace(plan, config=dataclasses.replace(plan.config, algorithm=algorithm))


def finetune(online_plan: RunPlan, results_root: Path, train_run_id: str, run_id: str) -> TrainingOutcome:
    """hybrid, second phase, in the active run `run_id` (the finetune child). ML-Agents writes under the train
    run's id, and the statistics also go to the train run, so it reads like an online run."""
    runs.log_params({"phase": "finetune", "max_steps": online_plan.max_steps,
                     "algorithm": online_plan.config.algorithm})
    writers = [MLflowStatsWriter(run_id, online_plan.behavior_name),
               MLflowStatsWriter(train_run_id, online_plan.behavior_name), ProgressWriter(online_plan.max_steps)]
    outcome = mlagents_trainer.train(online_plan, results_root, train_run_id, writers)
    mlflow.set_tag("results_dir", str(outcome.results_dir))
    return outcome
