"""One ML-Agents training session, set up as `mlagents-learn` sets it up (`mlagents.trainers.learn.run_training`).

Shared by the two ways a policy is trained: online against an environment (training/mlagents_trainer.py, driven
by ML-Agents' TrainerController) and offline from a dataset (offline/learner.py, which drives the same trainer
itself). Both need the same RunOptions, the same results layout, the same trainers, ML-Agents' process-global state
reset so several runs can share a process, the same SIGTERM handling, and the same files at the end.
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from pipeline import mlagents_patches

mlagents_patches.apply()  # before the trainers: ONNX export on torch 2.13, hot paths
import numpy as np  # noqa: I001
from mlagents import torch_utils
from mlagents.plugins.stats_writer import get_default_stats_writers
from mlagents.plugins.trainer_type import register_trainer_plugins
from mlagents.trainers import learn
from mlagents.trainers.environment_parameter_manager import EnvironmentParameterManager
from mlagents.trainers.settings import RunOptions
from mlagents.trainers.stats import ConsoleWriter, StatsReporter, StatsWriter
from mlagents.trainers.trainer import TrainerFactory
from mlagents.trainers.training_status import GlobalTrainingStatus
from mlagents_envs.timers import add_metadata as add_timer_metadata, reset_timers

from pipeline.config.plan import RunPlan
from pipeline.redaction import redact_uri
from pipeline.training.outcome import TrainingOutcome  # noqa: F401 - re-exported


def run_options_for(plan: RunPlan, results_dir: Path, run_id: str, resume: bool = False) -> RunOptions:
    register_trainer_plugins()  # as mlagents-learn does: RunOptions refuses `trainer_type: ppo` without it
    options = plan.trainer_config()
    # ML-Agents only allows num_envs > 1 with a build; our factory provides the workers itself.
    options["env_settings"] = {**options["env_settings"], "num_envs": 1}
    options["checkpoint_settings"] = {"run_id": run_id, "results_dir": str(results_dir), "resume": resume}
    return RunOptions.from_dict(options)


@dataclass(frozen=True)
class Session:
    options: RunOptions
    run_id: str
    seed: int
    resume: bool

    @property
    def write_path(self) -> Path:  # <results_dir>/<run_id>: models, checkpoints, run_logs
        return Path(self.options.checkpoint_settings.write_path)

    @property
    def run_logs(self) -> Path:
        return Path(self.options.checkpoint_settings.run_logs_dir)

    def parameter_manager(self) -> EnvironmentParameterManager:
        # restore: a resumed run continues the curriculum lesson it had reached
        return EnvironmentParameterManager(self.options.environment_parameters, self.seed, restore=self.resume)

    def trainer_factory(self, param_manager: EnvironmentParameterManager) -> TrainerFactory:
        """What builds the plan's trainer, policy and model saver, exactly as mlagents-learn builds them."""
        return TrainerFactory(trainer_config=self.options.behaviors, output_path=str(self.write_path),
                              train_model=True, load_model=self.resume, seed=self.seed,
                              param_manager=param_manager, init_path=None, multi_gpu=False)

    def default_writers(self) -> list[StatsWriter]:
        # mlagents-learn's own writers (TensorBoard, gauges), minus its console line: ours says more.
        return [w for w in get_default_stats_writers(self.options) if not isinstance(w, ConsoleWriter)]

    def seed_generators(self) -> None:
        """Seed torch and numpy as ML-Agents' TrainerController does (online training gets this from it)."""
        np.random.seed(self.seed)
        torch_utils.torch.manual_seed(self.seed)

    def write_run_files(self) -> None:
        """What mlagents-learn leaves when training ends: configuration.yaml, timers.json, training_status.json."""
        learn.write_run_options(str(self.write_path), self.options)
        learn.write_timing_tree(str(self.run_logs))
        learn.write_training_status(str(self.run_logs))


def open_session(plan: RunPlan, results_dir: Path, run_id: str, resume: bool = False) -> Session:
    """resume: continue <results_dir>/<run_id> (as `mlagents-learn --resume`), loading its training status;
    otherwise that directory must not hold a run yet."""
    session = Session(run_options_for(plan, results_dir, run_id, resume), run_id, plan.seed, resume)
    learn.validate_existing_directories(str(session.write_path), resume, False, None)
    session.run_logs.mkdir(parents=True, exist_ok=True)
    _reset_mlagents_globals()
    if resume:  # step counters, checkpoint list and curriculum lesson of the interrupted attempt
        GlobalTrainingStatus.load_state(str(session.run_logs / learn.TRAINING_STATUS_FILE_NAME))
    torch_utils.set_torch_config(session.options.torch_settings)
    return session


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


class StopRequest:
    """SIGTERM behaves like Ctrl-C: ML-Agents catches KeyboardInterrupt and saves the model."""

    def __init__(self) -> None:
        self.requested = False

    @contextlib.contextmanager
    def on_sigterm(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self.requested:  # one stop: a second signal (Ctrl-C reaches a trainer process twice: from the
                return  # terminal and from the stage's process) must not break off the save the first started
            self.requested = True
            raise KeyboardInterrupt(f"signal {signum}")

        previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
