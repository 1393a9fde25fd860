"""The MLflow run of a plain `mlagents-learn` with MLAGENTS_MLFLOW=1, from start to its final status.

ML-Agents gives a stats-writer plugin no close hook. mlagents-learn's flow is: load the plugins (here the
run is opened, its params logged), train, save the model (also on Ctrl-C: `TrainerController` catches
KeyboardInterrupt), write `configuration.yaml`, return. So the run is ended by an `atexit` handler, which
runs after all of that, and after an uncaught exception has been printed (`sys.last_value`):

- FAILED: an exception escaped mlagents-learn (tag `pipeline.error`);
- KILLED: Ctrl-C or SIGTERM (SIGTERM is turned into Ctrl-C so ML-Agents saves the model), or a trainer
  that stopped short of its max_steps (the player quit);
- FINISHED otherwise.

Artifacts logged at exit: `trainer_config.yaml` (mlagents-learn's own `configuration.yaml`: reruns as
`mlagents-learn trainer_config.yaml`), `unity/<Behavior>.onnx` (byte for byte what Unity imports) and
`run_logs/` (timers.json, training_status.json).
"""
from __future__ import annotations

import atexit
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlflow.entities import Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipeline.redaction import redact_uri

DEFAULT_EXPERIMENT = "mlagents-learn"


class LearnRun:
    """One mlagents-learn process's run: created here unless MLFLOW_RUN_ID names one (whose owner ends it)."""

    def __init__(self, run_options: Any, client: MlflowClient | None = None):
        from pipeline.tracking import runs, store

        store.configure()
        self.client = client or MlflowClient()
        self.options = run_options
        self.write_path = Path(run_options.checkpoint_settings.write_path)
        self.behaviors = dict(run_options.behaviors)
        self.interrupted_by: str | None = None
        self._pid = os.getpid()
        self._ended = False
        self.flush: Callable[[], None] | None = None  # set by the plugin: write what its writers have pending
        given = os.environ.get("MLFLOW_RUN_ID")
        self.owned = not given
        if given:
            self.run_id = given
        else:
            experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
            tags = {"mlflow.source.name": "mlagents-learn", "mlflow.source.type": "LOCAL",
                    "results_dir": str(self.write_path.resolve()), **runs.software_versions()}
            run = self.client.create_run(store.experiment_id(experiment), tags=tags,
                                         run_name=run_options.checkpoint_settings.run_id)
            self.run_id = run.info.run_id
        self._log_params(runs.flatten(run_options.as_dict()))
        self._catch_stop_signals()
        atexit.register(self.end)

    @property
    def primary_category(self) -> str:
        # One behavior: ML-Agents' metric names as they are; several: prefixed with the behavior.
        return next(iter(self.behaviors)) if len(self.behaviors) == 1 else "\0"

    def _log_params(self, params: dict[str, str]) -> None:
        have = self.client.get_run(self.run_id).data.params
        items = [Param(k, v) for k, v in params.items() if k not in have]
        for i in range(0, len(items), 100):  # MLflow's per-request limit
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def _catch_stop_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        previous_int = signal.getsignal(signal.SIGINT)

        def on_int(signum, frame):
            self.interrupted_by = self.interrupted_by or "SIGINT"
            if callable(previous_int):
                return previous_int(signum, frame)
            raise KeyboardInterrupt

        def on_term(signum, frame):
            # Python's default for SIGTERM is to die on the spot: no model saved, no run ended.
            self.interrupted_by = self.interrupted_by or "SIGTERM"
            raise KeyboardInterrupt("SIGTERM")

        signal.signal(signal.SIGINT, on_int)
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            signal.signal(signal.SIGTERM, on_term)

    def _short_of_max_steps(self) -> str | None:
        from mlagents.trainers.training_status import GlobalTrainingStatus, StatusType

        for name, settings in self.behaviors.items():
            checkpoints = GlobalTrainingStatus.get_parameter_state(name, StatusType.CHECKPOINTS) or []
            if checkpoints and int(checkpoints[-1]["steps"]) < settings.max_steps:
                return f"{name} stopped at step {int(checkpoints[-1]['steps']):,} of {settings.max_steps:,}"
        return None

    def status(self) -> tuple[str, str | None]:
        """(final status, why) from how the process is ending."""
        exc = getattr(sys, "last_value", None)
        if isinstance(exc, KeyboardInterrupt):
            return "KILLED", f"interrupted: {self.interrupted_by or 'KeyboardInterrupt'}"
        if exc is not None:
            return "FAILED", f"{type(exc).__name__}: {exc}"
        if self.interrupted_by:
            return "KILLED", f"interrupted: {self.interrupted_by}; the model at that step is saved"
        short = self._short_of_max_steps()
        if short:
            return "KILLED", f"interrupted: {short}"
        return "FINISHED", None

    def log_outputs(self) -> None:
        config = self.write_path / "configuration.yaml"
        if config.is_file():
            self._log_as(config, "trainer_config.yaml")
        for name in self.behaviors:
            onnx = self.write_path / f"{name}.onnx"
            if onnx.is_file():
                self.client.log_artifact(self.run_id, str(onnx), "unity")
        run_logs = Path(self.options.checkpoint_settings.run_logs_dir)
        for name in ("timers.json", "training_status.json"):
            if (run_logs / name).is_file():
                self.client.log_artifact(self.run_id, str(run_logs / name), "run_logs")

    def _log_as(self, path: Path, name: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / name
            copy.write_bytes(path.read_bytes())
            self.client.log_artifact(self.run_id, str(copy))

    def end(self) -> None:
        """atexit: log what mlagents-learn wrote, then end the run with how the process ended."""
        if self._ended or os.getpid() != self._pid:  # a forked env worker inherits atexit handlers
            return
        self._ended = True
        status, why = self.status()
        try:
            if self.flush is not None:
                self.flush()  # the last summary, which ML-Agents never writes
            self.log_outputs()
        except Exception as exc:  # noqa: BLE001 - still end the run: RUNNING forever is worse than missing files
            status, why = "FAILED", why or f"logging the results failed: {type(exc).__name__}: {exc}"
        if why:
            self.client.log_batch(self.run_id, tags=[RunTag("pipeline.error", redact_uri(why)[:5000])])
        if self.owned:
            try:
                self.client.set_terminated(self.run_id, status, int(time.time() * 1000))
            except MlflowException as exc:
                print(f"mlflow: could not end run {self.run_id} {status}: {exc}", file=sys.stderr)
        print(f"mlflow: run {self.run_id} {status if self.owned else 'logged (its owner ends it)'}",
              file=sys.stderr, flush=True)
