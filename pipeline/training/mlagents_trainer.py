"""Where training happens: ML-Agents' own TrainerController, driven as `mlagents-learn` drives it.

This mirrors `mlagents.trainers.learn.run_training` step for step (the setup it shares with the offline
learner is training/session.py); the differences are the environment factory (a built-in simulation when
there is no Unity build), the StatsWriters passed in by the caller, a SIGTERM that stops training like
Ctrl-C (ML-Agents then saves the model), and resetting ML-Agents' process-global state so several runs can
share a process.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Callable, Sequence

from pipeline import mlagents_patches

mlagents_patches.apply()  # before the trainers: ONNX export on torch 2.13, hot paths
from mlagents.trainers import learn  # noqa: E402, I001
from mlagents.trainers.stats import StatsWriter
from mlagents.trainers.env_manager import EnvManager
from mlagents.trainers.trainer_controller import TrainerController
from mlagents.trainers.training_status import GlobalTrainingStatus, StatusType

from pipeline.config.plan import RunPlan
from pipeline.tracking.stats_writer import write_pending_summaries
from pipeline.mlagents_patches import onnx_export
from pipeline.training import atomic_checkpoints
from pipeline.training import env_factory
from pipeline.training import session as mlagents_session
from pipeline.training.session import StopRequest, TrainingOutcome, stats_writers


def train(plan: RunPlan, results_dir: Path, run_id: str, writers: Sequence[StatsWriter] = (),
          resume: bool = False, on_checkpoint: Callable[[Path, int], None] | None = None) -> TrainingOutcome:
    """resume: continue <results_dir>/<run_id> from its checkpoints, as `mlagents-learn --resume` does.
    on_checkpoint(write_path, step): called after each checkpoint ML-Agents saves, with training_status.json
    written for it (resume.CheckpointUploader sends both to the tracking server)."""
    session = mlagents_session.open_session(plan, results_dir, run_id, resume)
    options, write_path, run_logs = session.options, session.write_path, session.run_logs
    atomic_checkpoints.install()

    # A Unity player's workers start here (each writes Player-<i>.log to run_logs); a simulation runs in process.
    env_manager = env_factory.env_manager(plan, options, log_folder=run_logs)
    try:
        param_manager = session.parameter_manager()
        # TrainerController seeds torch and numpy itself (session.seed_generators is the offline learner's).
        controller = TrainerController(session.trainer_factory(param_manager), str(write_path), run_id,
                                       param_manager, True, plan.seed)
        status_writer = TrainingStatusWriter(run_logs)
        all_writers = [*session.default_writers(), *writers, status_writer]
    except BaseException:
        # Started workers are non-daemon processes: left open, the trainer process would never exit.
        _close_quietly(env_manager)
        raise

    onnx_export.preload()  # before a stop can land in the first checkpoint's imports
    stop = StopRequest()
    tap = _CheckpointTap(on_checkpoint, write_path, status_writer) if on_checkpoint else None
    with stats_writers(all_writers), stop.on_sigterm(), \
            (atomic_checkpoints.watching(tap) if tap else contextlib.nullcontext()):
        try:
            controller.start_learning(env_manager)
            # The last stretch since a multiple of summary_freq (all of a run shorter than it) is
            # never written by ML-Agents: without this a short run has no metrics at its last step.
            write_pending_summaries()
        finally:
            _close_quietly(env_manager)
            session.write_run_files()

    steps = max((int(t.get_step) for t in controller.trainers.values()), default=0)
    checkpoints = GlobalTrainingStatus.get_parameter_state(plan.behavior_name, StatusType.CHECKPOINTS) or []
    last_ckpt = write_path / plan.behavior_name / "checkpoint.pt"
    return TrainingOutcome(
        results_dir=write_path,
        onnx_path=write_path / f"{plan.behavior_name}.onnx",
        checkpoint_path=last_ckpt if last_ckpt.exists()
        else (Path(checkpoints[-1]["file_path"]) if checkpoints else None),
        steps=steps,
        interrupted=stop.requested or steps < plan.max_steps,
    )


def _close_quietly(env_manager: EnvManager) -> None:
    try:
        env_manager.close()
    except (EOFError, OSError, BrokenPipeError):
        # After a signal a worker can die mid-message; ML-Agents then fails to read its reply.
        # The model is saved already; a noisy close must not turn a KILLED run into FAILED.
        pass


class TrainingStatusWriter(StatsWriter):
    """Persist ML-Agents' training_status.json (steps, checkpoints, lesson) at every summary, atomically.

    mlagents-learn writes it only when training ends, so a killed run loses it; a resume needs it.
    """

    def __init__(self, run_logs: Path):
        self.path = run_logs / learn.TRAINING_STATUS_FILE_NAME

    def write_stats(self, category, values, step) -> None:
        tmp = self.path.with_suffix(".json.tmp")
        GlobalTrainingStatus.save_state(str(tmp))
        os.replace(tmp, self.path)  # a kill mid-write leaves the previous, complete file


class _CheckpointTap:
    """Turns ML-Agents' checkpoint files into one call per checkpoint. TorchModelSaver.save_checkpoint writes
    `<Behavior>-<step>.pt`, then `checkpoint.pt` (what a resume loads): the step comes from the first, the
    call follows the second, with training_status.json brought up to date first."""

    def __init__(self, sink: Callable[[Path, int], None], write_path: Path, status: TrainingStatusWriter):
        self.sink, self.write_path, self.status = sink, write_path, status
        self.step = 0

    def __call__(self, path: Path) -> None:
        if path.name != "checkpoint.pt":
            stem, _, step = path.stem.rpartition("-")
            if stem and step.isdigit():
                self.step = int(step)
            return
        self.status.write_stats("", {}, self.step)
        self.sink(self.write_path, self.step)
