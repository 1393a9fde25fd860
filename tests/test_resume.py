"""Crash and resume: SIGTERM ends the run KILLED with a checkpoint, SIGKILL is reaped, resume continues
the same MLflow run and the same ML-Agents results directory."""
from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import mlflow
import pytest

from pipeline.config.compose import compose_plan
from pipeline.config.errors import ConfigError
from pipeline.evaluation.onnx_contract import check_policy
from tests.support.process import PYTHON, REPO, child_env
from tests.support.store import all_runs

pytestmark = pytest.mark.slow

BUDGET = "algorithm.summary_freq=1000 algorithm.checkpoint_interval=2000 algorithm.hyperparameters.buffer_size=1024 " \
         "algorithm.hyperparameters.batch_size=256 env.num_envs=1 env.num_areas=8 evaluation.episodes=8"


def start_training(tmp_path: Path, max_steps: int, resume: str = "") -> subprocess.Popen:
    cmd = [PYTHON, "-m", "pipeline.cli", "train", "--max_steps", str(max_steps), "--resume", resume,
           "--overrides", f"{BUDGET} results_dir={tmp_path / 'results'}"]
    return subprocess.Popen(cmd, cwd=REPO, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_checkpoint(tmp_path: Path, proc: subprocess.Popen, timeout: float = 300) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list((tmp_path / "results").glob("*/NavigationAgent/NavigationAgent-*.pt"))
        if found:
            return found[0].parents[1]
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.2)
    raise AssertionError("no checkpoint appeared")


def orphans(parent_pid: int, marker: str) -> list[int]:
    """Live processes left from the killed trainer (its forked environment workers share its command line,
    which names this test's own results directory: `marker`)."""
    found = []
    for proc_dir in Path("/proc").iterdir():
        try:
            if not proc_dir.name.isdigit() or int(proc_dir.name) == parent_pid:
                continue
            state = (proc_dir / "stat").read_text().rsplit(") ", 1)[1].split()[0]
            cmd = (proc_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            if state != "Z" and "pipeline.cli train" in cmd and marker in cmd:
                found.append(int(proc_dir.name))
        except (OSError, IndexError):
            continue
    return found


# Logged at every summary: ML-Agents adds it for each trajectory. Episode statistics (Cumulative Reward)
# are not: a summary period in which no episode ended has none, so their last step is a matter of luck.
CADENCE = "Policy/Extrinsic Value Estimate"


def steps_of(run_id: str, key: str = CADENCE) -> list[int]:
    return [m.step for m in sorted(mlflow.MlflowClient().get_metric_history(run_id, key), key=lambda m: m.timestamp)]


def test_a_stop_during_the_first_checkpoint_lands_in_no_import():
    """A stop is a KeyboardInterrupt wherever the training is; in the middle of the first ONNX export's imports
    (onnx, the exporter's opset modules) it left them half-initialised, and ML-Agents' save on stop then failed
    ("Module onnx is not installed!", once in CI): the training imports all of it before it starts. Here the first
    export of ML-Agents' own nav policy after that preload imports nothing."""
    code = """
import sys, tempfile
from pipeline.training import mlagents_trainer  # noqa: F401  what a training imports
from pipeline.mlagents_patches import onnx_export
from mlagents.trainers.settings import NetworkSettings
from mlagents.trainers.torch_entities.networks import SimpleActor
from mlagents.trainers.torch_entities.model_serialization import ModelSerializer
from mlagents.trainers.policy.torch_policy import TorchPolicy
from mlagents_envs.base_env import ActionSpec, BehaviorSpec, DimensionProperty, ObservationSpec, ObservationType
onnx_export.preload()
before = set(sys.modules)
spec = BehaviorSpec([ObservationSpec((12,), (DimensionProperty.NONE,), ObservationType.DEFAULT, "obs")],
                    ActionSpec.create_continuous(2))
policy = TorchPolicy(0, spec, NetworkSettings(), SimpleActor, {"conditional_sigma": False, "tanh_squash": False})
ModelSerializer(policy).export_policy_model(tempfile.mkdtemp() + "/policy")
print(sorted(set(sys.modules) - before))
"""
    proc = subprocess.run([PYTHON, "-c", code], cwd=REPO, env=child_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_sigterm_ends_killed_with_a_checkpoint_then_resume_finishes_the_same_run(store, tmp_path):
    proc = start_training(tmp_path, 60_000)
    write_path = wait_for_checkpoint(tmp_path, proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0
    (run,) = [r for r in all_runs() if r.data.tags.get("pipeline.stage") == "train"]
    assert run.info.status == "KILLED", out[-2000:]
    assert run.data.tags["pipeline.error"].startswith("interrupted: training stopped at step")
    assert {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)} >= {"checkpoint", "unity"}
    killed_at = steps_of(run.info.run_id)[-1]

    proc = start_training(tmp_path, 8_000, resume=run.info.run_id)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    assert "resuming run" in out
    runs = [r for r in all_runs() if r.data.tags.get("pipeline.stage") == "train"]
    assert [r.info.run_id for r in runs] == [run.info.run_id]  # one run, continued
    resumed = mlflow.get_run(run.info.run_id)
    assert resumed.info.status == "FINISHED" and resumed.data.tags["pipeline.resumed"] == "1"
    steps = steps_of(run.info.run_id)
    assert steps == sorted(steps) and len(steps) == len(set(steps)), steps  # monotone, no duplicates
    assert steps[-1] >= 8000 and killed_at in steps
    assert max(b - a for a, b in zip(steps, steps[1:])) <= 2000 + 1000  # no gap beyond a checkpoint interval
    check_policy(write_path / "NavigationAgent.onnx", (8, 2, 2), 2)
    # Checkpoints were written through a temporary file and renamed: none is left behind.
    assert list(write_path.rglob("*.tmp-*")) == [] and (write_path / "NavigationAgent" / "checkpoint.pt").exists()


def test_sigkill_is_reaped_as_failed_and_resume_latest_continues_it(store, tmp_path):
    proc = start_training(tmp_path, 60_000)
    wait_for_checkpoint(tmp_path, proc)
    time.sleep(1.0)
    proc.kill()
    proc.wait(timeout=60)
    # Its environment workers die with it instead of waiting forever on the trainer's pipe.
    deadline = time.monotonic() + 30
    while orphans(proc.pid, str(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert orphans(proc.pid, str(tmp_path)) == []
    (run,) = [r for r in all_runs() if r.data.tags.get("pipeline.stage") == "train"]
    assert run.info.status == "RUNNING"  # what MLflow alone would leave forever

    reap = subprocess.run([PYTHON, "-m", "pipeline.cli", "reap"], cwd=REPO,
                          env=child_env(), capture_output=True, text=True, timeout=120)
    assert reap.returncode == 0 and run.info.run_id in reap.stdout
    assert mlflow.get_run(run.info.run_id).info.status == "FAILED"

    proc = start_training(tmp_path, 6_000, resume="latest")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    assert mlflow.get_run(run.info.run_id).info.status == "FINISHED"
    steps = steps_of(run.info.run_id)
    assert steps == sorted(steps) and len(steps) == len(set(steps)) and steps[-1] >= 6000


def test_bad_resume_values_are_refused_before_anything_runs(store, tiny):
    with pytest.raises(ConfigError, match=r"resume='yesterday' must be 'latest' or an MLflow run id"):
        compose_plan(tiny + ["resume=yesterday"])
    from pipeline.stages import train

    with pytest.raises(ConfigError, match="resume=latest: no interrupted training of asset nav-001"):
        train.train(compose_plan(tiny + ["resume=latest"]))
    with pytest.raises(ConfigError, match=r"resume=0123456789abcdef0123456789abcdef: no such MLflow run"):
        train.train(compose_plan(tiny + ["resume=0123456789abcdef0123456789abcdef"]))
    assert [r for r in all_runs() if r.data.tags.get("pipeline.stage") == "train"] == []
