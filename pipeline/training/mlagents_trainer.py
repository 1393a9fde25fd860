"""Where training happens: ML-Agents' own TrainerController, driven as `mlagents-learn` drives it.

This mirrors `mlagents.trainers.learn.run_training` step for step; the differences are the
environment factory (a built-in simulation when there is no Unity build), the StatsWriters
passed in by the caller, a SIGTERM that stops training like Ctrl-C (ML-Agents then saves the
model), and resetting ML-Agents' process-global state so several runs can share a process.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

from pipeline import mlagents_patches

mlagents_patches.apply()  # before the trainers: ONNX export on torch 2.13, hot paths
from mlagents import torch_utils  # noqa: E402, I001
from mlagents.plugins.stats_writer import get_default_stats_writers
from mlagents.plugins.trainer_type import register_trainer_plugins
from mlagents.trainers import learn
from mlagents.trainers.environment_parameter_manager import EnvironmentParameterManager
from mlagents.trainers.settings import RunOptions
from mlagents.trainers.stats import ConsoleWriter, StatsReporter, StatsWriter
from mlagents.trainers.subprocess_env_manager import SubprocessEnvManager
from mlagents.trainers.trainer import TrainerFactory
from mlagents.trainers.trainer_controller import TrainerController
from mlagents.trainers.training_status import GlobalTrainingStatus, StatusType
from mlagents_envs.timers import add_metadata as add_timer_metadata, reset_timers

from pipeline.config.plan import RunPlan
from pipeline.redaction import redact_uri
from pipeline.tracking.stats_writer import write_pending_summaries
from pipeline.training import atomic_checkpoints
from pipeline.training import env_factory


@dataclass(frozen=True)
class TrainingOutcome:
    results_dir: Path  # ML-Agents' <results_dir>/<run_id>
    onnx_path: Path  # <Behavior>.onnx, exactly what Unity imports
    checkpoint_path: Optional[Path]
    steps: int
    interrupted: bool  # stopped by SIGINT/SIGTERM before max_steps


def run_options_for(plan: RunPlan, results_dir: Path, run_id: str, resume: bool = False) -> RunOptions:
    register_trainer_plugins()
    options = plan.trainer_config()
    # ML-Agents only allows num_envs > 1 with a build; our factory provides the workers itself.
    options["env_settings"] = {**options["env_settings"], "num_envs": 1}
    options["checkpoint_settings"] = {"run_id": run_id, "results_dir": str(results_dir), "resume": resume}
    return RunOptions.from_dict(options)


def train(plan: RunPlan, results_dir: Path, run_id: str, writers: Sequence[StatsWriter] = (),
          resume: bool = False, on_checkpoint: Callable[[Path, int], None] | None = None) -> TrainingOutcome:
    """resume: continue <results_dir>/<run_id> from its checkpoints, as `mlagents-learn --resume` does.
    on_checkpoint(write_path, step): called after each checkpoint ML-Agents saves, with training_status.json
    written for it (resume.CheckpointUploader sends both to the tracking server)."""
    options = run_options_for(plan, results_dir, run_id, resume)
    write_path = Path(options.checkpoint_settings.write_path)
    run_logs = Path(options.checkpoint_settings.run_logs_dir)
    learn.validate_existing_directories(str(write_path), resume, False, None)
    run_logs.mkdir(parents=True, exist_ok=True)
    _reset_mlagents_globals()
    atomic_checkpoints.install()
    if resume:  # step counters, checkpoint list and curriculum lesson of the interrupted attempt
        GlobalTrainingStatus.load_state(str(run_logs / learn.TRAINING_STATUS_FILE_NAME))
    torch_utils.set_torch_config(options.torch_settings)

    factory = env_factory.for_plan(plan, log_folder=run_logs)  # a Unity player writes Player-<i>.log there
    env_manager = SubprocessEnvManager(factory, options, plan.cfg["env"]["num_envs"])  # workers start here
    try:
        param_manager = EnvironmentParameterManager(options.environment_parameters, plan.seed, restore=resume)
        trainer_factory = TrainerFactory(
            trainer_config=options.behaviors, output_path=str(write_path), train_model=True, load_model=resume,
            seed=plan.seed, param_manager=param_manager, init_path=None, multi_gpu=False)
        controller = TrainerController(trainer_factory, str(write_path), run_id, param_manager, True, plan.seed)
        status_writer = TrainingStatusWriter(run_logs)
        all_writers = [*_default_writers(options), *writers, status_writer]
    except BaseException:
        # Started workers are non-daemon processes: left open, the trainer process would never exit.
        _close_quietly(env_manager)
        raise

    stop = _StopRequest()
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
            learn.write_run_options(str(write_path), options)
            learn.write_timing_tree(str(run_logs))
            learn.write_training_status(str(run_logs))

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


def _close_quietly(env_manager: SubprocessEnvManager) -> None:
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


def _reset_mlagents_globals() -> None:
    """ML-Agents keeps training status, timers and stats in module globals; start each run clean."""
    GlobalTrainingStatus.saved_state.clear()
    reset_timers()
    # timers.json (a run_logs artifact) records the command line, whose --overrides may carry a tracking URI.
    add_timer_metadata("command_line_arguments", redact_uri(" ".join(sys.argv)))
    StatsReporter.stats_dict.clear()


@contextlib.contextmanager
def stats_writers(writers: Sequence[StatsWriter]) -> Iterator[None]:
    """Attach writers to ML-Agents' process-global StatsReporter for the duration of one training."""
    for w in writers:
        StatsReporter.add_writer(w)
    try:
        yield
    finally:
        for w in writers:
            StatsReporter.writers.remove(w)


def _default_writers(options: RunOptions) -> list[StatsWriter]:
    # mlagents-learn's own writers (TensorBoard, gauges), minus its console line: ours says more.
    return [w for w in get_default_stats_writers(options) if not isinstance(w, ConsoleWriter)]


class _StopRequest:
    """SIGTERM behaves like Ctrl-C: ML-Agents catches KeyboardInterrupt and saves the model."""

    def __init__(self) -> None:
        self.requested = False

    @contextlib.contextmanager
    def on_sigterm(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            self.requested = True
            raise KeyboardInterrupt(f"signal {signum}")

        previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
