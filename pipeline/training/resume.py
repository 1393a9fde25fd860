"""Resuming an interrupted training into the same ML-Agents results directory and the same MLflow run.

A training holds an exclusive lock on its results directory while it runs (training/lock.py): that is
what keeps a resume from adopting a live run on this machine.

Resuming on another machine: at every checkpoint ML-Agents writes, the training uploads it (and its
training_status.json) to its MLflow run (`CheckpointUploader`), alternating between two artifact slots,
`resume/a` and `resume/b`, and only then names the complete slot and its step in the run's tags. A kill
mid-upload therefore leaves the previous checkpoint intact and named. When the results directory is not
on this machine (its node died), or holds an older checkpoint than the uploaded one, resuming downloads
the named slot into this machine's results directory first: at most one checkpoint interval is lost.
"""
from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Optional

import mlflow

from pipeline.config.errors import ConfigError
from pipeline.tracking.reaper import TRAINING_DIED
from pipeline.tracking.runs import INTERRUPTED
from pipeline.training.lock import is_training, lock_path, training_lock  # noqa: F401 - re-exported


def resumable_run(value: str, asset_id: str, experiment_id: str,
                  results_root: Optional[Path] = None) -> tuple[str, Path]:
    """The run to resume and its results directory on this machine, or a ConfigError saying why there is none.

    results_root: this machine's results directory, where a checkpoint uploaded by another machine is put
    (default: where the run's own results directory was)."""
    client = mlflow.MlflowClient()
    if value == "latest":
        runs = client.search_runs([experiment_id], filter_string=f"tags.`pipeline.stage` = 'train' and "
                                  f"tags.asset = '{asset_id}'", order_by=["attributes.start_time DESC"], max_results=50)
        for run in runs:
            if run.info.status != "FINISHED" and _resumable(run, explicit=False) is None:
                return run.info.run_id, local_results(run, results_root)
        raise ConfigError(f"resume=latest: no interrupted training of asset {asset_id} with a checkpoint "
                          "in this experiment")
    try:
        run = client.get_run(value)
    except mlflow.exceptions.MlflowException:
        raise ConfigError(f"resume={value}: no such MLflow run in this tracking store") from None
    if run.data.tags.get("pipeline.stage") != "train" or run.data.tags.get("asset") != asset_id:
        raise ConfigError(f"resume={value}: not a training run of asset {asset_id} "
                          f"(stage {run.data.tags.get('pipeline.stage')!r}, asset {run.data.tags.get('asset')!r})")
    if run.info.status == "FINISHED":
        raise ConfigError(f"resume={value}: that training already finished; start a new run instead")
    reason = _resumable(run)
    if reason:
        raise ConfigError(f"resume={value}: {reason}")
    return value, local_results(run, results_root)


PROCESS_DIED = TRAINING_DIED  # how `reap` (pipeline/tracking/reaper.py) starts the `pipeline.error` of a run it ends
# What our own code writes into `pipeline.error` when a training was stopped from outside (SIGTERM/SIGINT,
# or its process vanished and `reap` found it), as opposed to failing on an error of its own.
INTERRUPTION_PREFIXES = (INTERRUPTED, PROCESS_DIED)


def why_not_continued(run) -> Optional[str]:
    """None if this training run was interrupted from outside and can continue from its checkpoint; else why not.

    A run that failed on its own error (a bad config, a crashed player, a bug) is not resumed automatically:
    it would fail the same way again."""
    if run.data.tags.get("pipeline.stage") != "train":
        return f"run {run.info.run_id} is not a training run"
    if run.info.status == "FINISHED":
        return "its training finished"
    error = run.data.tags.get("pipeline.error")
    if error and not error.startswith(INTERRUPTION_PREFIXES):
        return f"it failed on its own error ({error[:200]})"
    return _resumable(run)


def _resumable(run, explicit: bool = True) -> Optional[str]:
    """None if `run` can continue here. explicit: the user named this run, so a RUNNING run with no results
    directory on this machine is taken to have lost its machine (`resume=latest` does not guess that)."""
    write_path = Path(run.data.tags.get("results_dir", ""))
    if not any(write_path.glob("*/checkpoint.pt")):
        if uploaded_checkpoint(run) is None:
            return (f"its results directory {write_path} has no checkpoint to resume from, and none was "
                    "uploaded to the tracking server")
        if not explicit and run.info.status == "RUNNING":
            return "it may still be training on another machine"
        return None
    if is_training(write_path):
        return f"it is still training (lock held on {lock_path(write_path)})"
    return None


# -- checkpoints through the tracking server ---------------------------------------------------------
RESUME_SLOTS = ("resume/a", "resume/b")
CHECKPOINT_TAG = "pipeline.checkpoint"  # the slot holding the newest complete uploaded checkpoint
CHECKPOINT_STEP_TAG = "pipeline.checkpoint_step"  # its step
STATUS_FILE = "run_logs/training_status.json"
_STEP_FILE = re.compile(r"^.+-(\d+)\.pt$")  # ML-Agents' <Behavior>-<step>.pt


class CheckpointUploader:
    """The sink of `mlagents_trainer.train(on_checkpoint=...)`: copies each checkpoint to the run's artifacts.

    A failed upload warns and training goes on (the previous uploaded checkpoint stays named)."""

    def __init__(self, run_id: str, client: Optional[mlflow.MlflowClient] = None):
        from mlflow.entities import RunTag

        self._tag = RunTag
        self.run_id = run_id
        self.client = client or mlflow.MlflowClient()
        self.committed = self.client.get_run(run_id).data.tags.get(CHECKPOINT_TAG)

    def __call__(self, write_path: Path, step: int) -> None:
        slot = RESUME_SLOTS[1] if self.committed == RESUME_SLOTS[0] else RESUME_SLOTS[0]
        files = [*sorted(write_path.glob("*/checkpoint.pt")), write_path / STATUS_FILE]
        try:
            for f in files:
                if f.exists():
                    self.client.log_artifact(self.run_id, str(f), f"{slot}/{f.parent.relative_to(write_path)}")
            # One request names slot and step together: the commit of this upload.
            self.client.log_batch(self.run_id, tags=[self._tag(CHECKPOINT_TAG, slot),
                                                     self._tag(CHECKPOINT_STEP_TAG, str(step))])
            self.committed = slot
        except Exception as exc:  # the tracking server is unreachable or refuses: training itself is fine
            from pipeline.redaction import redact_uri

            print(redact_uri(f"warning: the checkpoint of step {step:,} was not uploaded to the tracking server "
                             f"({type(exc).__name__}: {exc}); another machine would resume from an earlier one"),
                  file=sys.stderr, flush=True)


def uploaded_checkpoint(run) -> Optional[tuple[str, int]]:
    """(artifact slot, step) of the newest checkpoint uploaded for `run`, if any."""
    slot = run.data.tags.get(CHECKPOINT_TAG)
    if slot not in RESUME_SLOTS:
        return None
    return slot, int(run.data.tags.get(CHECKPOINT_STEP_TAG, "0"))


def local_checkpoint_step(write_path: Path) -> Optional[int]:
    """The step of the newest checkpoint in a results directory on this machine (-1: one of unknown step)."""
    if not any(write_path.glob("*/checkpoint.pt")):
        return None
    steps = [int(m[1]) for p in write_path.glob("*/*.pt") if (m := _STEP_FILE.match(p.name))]
    return max(steps, default=-1)


def local_results(run, results_root: Optional[Path] = None) -> Path:
    """The results directory to continue `run` in, on this machine: its own if it is here and at least as new
    as the uploaded checkpoint, else a fresh copy of the uploaded one (downloaded now)."""
    tagged = Path(run.data.tags["results_dir"])
    target = Path(results_root) / run.info.run_id if results_root else tagged
    uploaded = uploaded_checkpoint(run)
    for here in dict.fromkeys([tagged, target]):
        step = local_checkpoint_step(here)
        if step is not None and (uploaded is None or step >= uploaded[1]):
            return here
    if uploaded is None:  # _resumable() said a local checkpoint exists; it is what there is
        return tagged
    if is_training(target):
        raise ConfigError(f"resume={run.info.run_id}: it is still training (lock held on {lock_path(target)})")
    _restore(run.info.run_id, uploaded[0], target)
    mlflow.MlflowClient().set_tag(run.info.run_id, "results_dir", str(target))
    print(f"train: restored the checkpoint of step {uploaded[1]:,} from the tracking server into {target}",
          flush=True)
    return target


def _restore(run_id: str, slot: str, target: Path) -> None:
    """Download `slot` and put its files in place under `target` (each file replaced atomically)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{run_id}.restore-"))
    try:
        got = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=slot, dst_path=str(staging)))
        files = [p for p in got.rglob("*") if p.is_file()]
        for ckpt in (p for p in files if p.name == "checkpoint.pt"):
            with zipfile.ZipFile(ckpt) as z:  # torch.save's format: a torn download does not open
                if z.testzip() is not None:
                    raise zipfile.BadZipFile(f"{ckpt.name}: corrupt member")
        for f in files:
            dest = target / f.relative_to(got)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(f, dest)
    except (OSError, zipfile.BadZipFile, mlflow.exceptions.MlflowException) as exc:
        raise ConfigError(f"resume={run_id}: could not fetch its uploaded checkpoint ({slot}) from the tracking "
                          f"server: {exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
