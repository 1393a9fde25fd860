"""Train stage: one MLflow run around one ML-Agents training, with everything needed to reproduce it."""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import yaml

from pipeline import startup_gc
from pipeline.config.errors import ConfigError
from pipeline.config.plan import RunPlan
from pipeline.paths import REPO_ROOT
from pipeline.redaction import redact_uri
from pipeline.stages.common import experiment_for, plan_tags
from pipeline.tracking import runs
from pipeline.tracking.runs import StageInterrupted, stage_run
from pipeline.tracking.training_stats import MLflowMetrics, ProgressLine
from pipeline.training import resume, trainer_process

CURVE_METRICS = ("Environment/Cumulative Reward", "Environment/Success Rate", "Environment/Episode Length",
                 "Policy/Entropy")
UNITY_POLICY_DIR = "unity"  # <Behavior>.onnx, byte for byte what Unity imports
MODEL_NAME = "policy"  # the mlflow.onnx model


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    steps: int
    onnx_uri: str  # runs:/<id>/unity/<Behavior>.onnx
    model_uri: str  # the logged mlflow.onnx model
    results_dir: str
    metrics: dict[str, float] = field(default_factory=dict)


def resume_point(plan: RunPlan) -> tuple[str, Path] | None:
    """The interrupted training `resume=` names (its run id and results directory), or None without `resume`.
    Decided before any run is touched: a bad resume changes nothing."""
    if not plan.config.resume:
        return None
    if plan.mode != "online":
        raise ConfigError(f"resume: only online training resumes; mode={plan.mode} restarts from its dataset")
    root = Path(plan.config.results_dir)  # this machine's: a checkpoint uploaded by another lands here
    return resume.resumable_run(plan.config.resume, plan.asset_id, experiment_for(plan),
                                results_root=root if root.is_absolute() else REPO_ROOT / root)


def train(plan: RunPlan, build_run_id: str | None = None,
          resume_from: tuple[str, Path] | None = None) -> TrainResult:
    """resume_from: `resume_point(plan)` when the caller has resolved it already (the `main` pipeline)."""
    tags = {**plan_tags(plan), **runs.code_version(), **runs.software_versions()}
    if build_run_id:
        tags["pipeline.build_run_id"] = build_run_id
    experiment = experiment_for(plan)
    resume_id, results_root = None, Path(plan.config.results_dir)
    results_root = results_root if results_root.is_absolute() else REPO_ROOT / results_root
    resume_from = resume_from or resume_point(plan)
    if resume_from:
        resume_id, write_path = resume_from
        results_root = write_path.parent
    with stage_run("train", experiment, f"train-{plan.asset_id}-{plan.algorithm}-s{plan.seed}", tags,
                   run_id=resume_id, adopt_run_id=plan.adopted_run_id) as run:
        run_id = run.info.run_id
        if resume_id:
            n = int(run.data.tags.get("pipeline.resumed", "0")) + 1
            runs.set_tags({"pipeline.resumed": str(n)})
            print(f"train: resuming run {run_id} from its last checkpoint (resume #{n})", flush=True)
        else:
            runs.log_params({**plan.cfg, "max_steps": plan.max_steps})
            mlflow.log_text(yaml.safe_dump(plan.trainer_config(), sort_keys=False), "trainer_config.yaml")
            mlflow.log_text(redact_uri(yaml.safe_dump(plan.cfg, sort_keys=False)), "config.yaml")
            runs.set_tags({"results_dir": str(results_root / run_id)})

        if plan.mode == "online":
            sinks = [MLflowMetrics(run_id, plan.behavior_name, resumed=bool(resume_id)),
                     ProgressLine(plan.max_steps, group=plan.simulation is not None and plan.world.spec.grouped)]
            try:
                with resume.training_lock(results_root / run_id):
                    # Each checkpoint also goes to the run's artifacts: any machine can resume it.
                    outcome = trainer_process.train(plan, results_root, run_id, sinks, resume=bool(resume_id),
                                                    on_checkpoint=resume.CheckpointUploader(run_id),
                                                    meanwhile=_import_outputs)
            except BaseException:
                from pipeline.unity.player_logs import attach_player_logs

                attach_player_logs(results_root / run_id / "run_logs")  # what the Unity player said before it failed
                raise
        else:  # offline / hybrid: learn from the dataset, logged as this run's input (file + digest)
            from pipeline.offline import training as offline_training

            dataset = offline_training.dataset_for(plan)
            offline_training.log_dataset(dataset)
            if plan.mode == "offline":
                outcome = offline_training.train(plan, results_root, run_id, dataset)
            else:  # hybrid: pretrain and finetune child runs of this one
                from pipeline.stages import hybrid

                outcome = hybrid.train(plan, results_root, run_id, dataset)

        with startup_gc.frozen():  # the training's objects are not garbage yet: no collection scans them
            _log_outputs(plan, run_id, outcome)
        metrics = mlflow.MlflowClient().get_run(run_id).data.metrics
        result = TrainResult(run_id, outcome.steps, f"runs:/{run_id}/{UNITY_POLICY_DIR}/{outcome.onnx_path.name}",
                             f"runs:/{run_id}/{MODEL_NAME}", str(outcome.results_dir), dict(metrics))
        if outcome.interrupted:
            raise StageInterrupted(f"training stopped at step {outcome.steps:,} of {plan.max_steps:,}; "
                                   f"the policy and checkpoint at that step are logged")
    return result


def _import_outputs() -> None:
    """What logging the outputs imports (matplotlib, ONNX, MLflow's model code): done while a trainer process
    trains, this process being idle then."""
    from pipeline.registry import policy_model  # noqa: F401
    from pipeline.reporting import plots  # noqa: F401


def _log_outputs(plan: RunPlan, run_id: str, outcome) -> None:
    from pipeline.registry import policy_model
    from pipeline.reporting import plots

    run_logs = outcome.results_dir / "run_logs"
    if run_logs.is_dir():
        mlflow.log_artifacts(str(run_logs), "run_logs")
    if outcome.checkpoint_path and outcome.checkpoint_path.exists():
        mlflow.log_artifact(str(outcome.checkpoint_path), "checkpoint")
    if not outcome.onnx_path.exists():
        raise RuntimeError(f"ML-Agents did not export {outcome.onnx_path}; see {run_logs}")
    mlflow.log_artifact(str(outcome.onnx_path), UNITY_POLICY_DIR)
    # The mlflow.onnx model, with a signature from the asset's sensors, served as the deterministic actions.
    policy_model.log_policy_model(outcome.onnx_path, plan.behavior_name, plan.config.asset.observation_space,
                                  MODEL_NAME)

    client = mlflow.MlflowClient()
    keys = CURVE_METRICS
    if plan.mode == "offline":
        from pipeline.offline.learner import CURVE_METRICS as keys  # losses: there is no environment
    history = {k: [(m.step, m.value) for m in client.get_metric_history(run_id, k)] for k in keys}
    with tempfile.TemporaryDirectory() as tmp:
        png = plots.learning_curve(history, f"{plan.behavior_name} · {plan.algorithm} · seed {plan.seed}",
                                   Path(tmp) / "learning_curve.png")
        if png is None:
            note = f"no learning curve: none of {', '.join(keys)} was logged in {outcome.steps:,} steps"
            runs.set_tags({"pipeline.note": note})
            print(f"train: {note}", flush=True)
        else:
            mlflow.log_artifact(str(png))
