"""An entry point's training runs in a trainer process started with it (training/trainer_process.py): the stage's
process never imports torch, logs what the trainer sends, and signals and deaths on either side end the run as
they would in one process."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import mlflow
import pytest

from pipeline.config.compose import compose_plan
from tests.support.process import PYTHON, REPO, child_env
from tests.support.store import all_runs
from tests.support.training import TINY

pytestmark = pytest.mark.slow

LONG = "algorithm.summary_freq=1000 algorithm.checkpoint_interval=2000 algorithm.hyperparameters.buffer_size=1024 " \
       "algorithm.hyperparameters.batch_size=256 env.num_envs=1 env.num_areas=8"


def trainer_pids(stage_pid: int) -> list[int]:
    """Live trainer processes started by the stage process `stage_pid` (their last argument names it)."""
    found = []
    for proc_dir in Path("/proc").iterdir():
        try:
            if not proc_dir.name.isdigit():
                continue
            argv = (proc_dir / "cmdline").read_bytes().decode().split("\0")[:-1]
            state = (proc_dir / "stat").read_text().rsplit(") ", 1)[1].split()[0]
            if state != "Z" and "pipeline.training.trainer_process" in argv and argv[-1] == str(stage_pid):
                found.append(int(proc_dir.name))
        except (OSError, IndexError, UnicodeDecodeError):
            continue
    return found


def gone(stage_pid: int, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while trainer_pids(stage_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not trainer_pids(stage_pid)


def start_training(tmp_path: Path, max_steps: int, **popen) -> subprocess.Popen:
    cmd = [PYTHON, "-m", "pipeline.cli", "train", "--max_steps", str(max_steps),
           "--overrides", f"{LONG} results_dir={tmp_path / 'results'}"]
    return subprocess.Popen(cmd, cwd=REPO, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, **popen)


def wait_for_checkpoint(tmp_path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if list((tmp_path / "results").glob("*/NavigationAgent/NavigationAgent-*.pt")):
            return
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.2)
    raise AssertionError("no checkpoint appeared")


def the_train_run():
    (run,) = [r for r in all_runs() if r.data.tags.get("pipeline.stage") == "train"]
    return run


def test_a_cli_training_is_logged_whole_and_the_stage_process_never_imports_torch(store, tmp_path):
    driver = textwrap.dedent(f"""
        import json, sys
        from pipeline.cli import main
        main(["train", "--max_steps", "3000", "--overrides", {" ".join([*TINY[1:], f"results_dir={tmp_path}"])!r}])
        print("LOADED " + json.dumps(sorted(m for m in ("torch", "mlagents") if m in sys.modules)))
    """)
    proc = subprocess.Popen([PYTHON, "-c", driver], cwd=REPO, env=child_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert json.loads(out.split("LOADED ")[-1]) == []
    assert "[NavigationAgent] step 3,0" in out  # the progress line, written here from the trainer's stats
    run = the_train_run()
    assert run.info.status == "FINISHED"
    client = mlflow.MlflowClient()
    history = client.get_metric_history(run.info.run_id, "Environment/Cumulative Reward")
    assert [m.step for m in history][-1] >= 3000
    assert "Environment/Steps per Second" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"unity", "learning_curve.png", "run_logs", "checkpoint"} <= artifacts
    assert [a.path for a in client.list_artifacts(run.info.run_id, "unity")] == ["unity/NavigationAgent.onnx"]
    assert gone(proc.pid, timeout=0)


def test_the_trainer_process_logs_what_the_same_training_logs_in_process(store, tmp_path, tiny):
    """The trainer process runs the same ML-Agents code on the same seed: the same numbers reach the run."""
    from pipeline.stages import train

    here = train.train(compose_plan(tiny + ["results_dir=" + str(tmp_path / "here")]))
    proc = subprocess.run([PYTHON, "-m", "pipeline.cli", "train", "--overrides",
                           " ".join([*TINY, f"results_dir={tmp_path / 'there'}"])],
                          cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    there = next(r for r in all_runs() if r.data.tags.get("pipeline.stage") == "train" and r.info.run_id != here.run_id)
    client = mlflow.MlflowClient()
    key = "Policy/Extrinsic Value Estimate"  # logged at every summary, a function of the weights and the data
    ours = [(m.step, m.value) for m in client.get_metric_history(here.run_id, key)]
    theirs = [(m.step, m.value) for m in client.get_metric_history(there.info.run_id, key)]
    assert ours and ours == theirs
    assert set(here.metrics) == set(there.data.metrics)


def test_ctrl_c_reaches_both_processes_and_the_training_saves_once_and_ends_killed(store, tmp_path):
    proc = start_training(tmp_path, 200_000, start_new_session=True)  # its own group, as a terminal's job
    wait_for_checkpoint(tmp_path, proc)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: every process of the group gets it
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, out[-3000:]
    run = the_train_run()
    assert run.info.status == "KILLED"
    assert run.data.tags["pipeline.error"].startswith("interrupted: training stopped at step"), out[-2000:]
    assert "unity/NavigationAgent.onnx" in [a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id,
                                                                                                   "unity")]
    assert gone(proc.pid)


def test_a_trainer_process_that_dies_fails_its_run_saying_so(store, tmp_path):
    proc = start_training(tmp_path, 200_000)
    wait_for_checkpoint(tmp_path, proc)
    (trainer,) = trainer_pids(proc.pid)
    os.kill(trainer, signal.SIGKILL)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, out[-3000:]
    run = the_train_run()
    assert run.info.status == "FAILED"
    assert run.data.tags["pipeline.error"] == (f"TrainerProcessDied: the trainer process (pid {trainer}) exited "
                                               "with code -9 before it answered; its output above says why")


def test_a_stage_killed_outright_takes_its_trainer_process_along(store, tmp_path):
    proc = start_training(tmp_path, 200_000)
    wait_for_checkpoint(tmp_path, proc)
    assert len(trainer_pids(proc.pid)) == 1
    proc.kill()
    proc.wait(timeout=60)
    assert gone(proc.pid)


def test_a_config_error_ends_the_started_trainer_process_at_once(store, tmp_path):
    proc = subprocess.Popen([PYTHON, "-m", "pipeline.cli", "train", "--max_steps", "-5"], cwd=REPO, env=child_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert err.startswith("error: max_steps must be a positive number of agent steps, got -5")
    assert gone(proc.pid, timeout=0)
    assert all_runs() == []
