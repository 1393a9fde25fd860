"""Plain `mlagents-learn`, the CLI our users already run, on a trainer_config.yaml the pipeline saved.

Against the simulated Unity player (a symlink named like a build, as README "Without Unity" shows): our
changes to ML-Agents reach the CLI through its trainer_type entry point, and MLAGENTS_MLFLOW=1 makes a
proper MLflow run that ends FINISHED, KILLED or FAILED.
"""
from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

import mlflow
import pytest
import yaml

from pipeline.config.compose import compose_plan
from pipeline.evaluation.onnx_contract import check_policy
from tests.support.process import PYTHON, REPO, child_env
from tests.support.training import TINY

MLAGENTS_LEARN = str(Path(PYTHON).parent / "mlagents-learn")
PLAYER = REPO / "scripts" / "simulated_player"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def saved_config(tmp: Path, max_steps: int = 3000) -> Path:
    """The trainer_config.yaml the train stage logs (same function), for a tiny budget."""
    plan = compose_plan([*TINY, f"max_steps={max_steps}"])
    path = tmp / "trainer_config.yaml"
    path.write_text(yaml.safe_dump(plan.trainer_config(), sort_keys=False))
    return path


def build(tmp: Path) -> Path:
    exe = tmp / "Nav.x86_64"
    exe.symlink_to(PLAYER)
    return exe


def learn_cmd(tmp: Path, config: Path, env_path: Path, run_id: str) -> list[str]:
    return [MLAGENTS_LEARN, str(config), f"--env={env_path}", f"--run-id={run_id}", f"--base-port={free_port()}",
            f"--results-dir={tmp / 'results'}", "--timeout-wait=30"]


def only_run(experiment: str):
    exp = mlflow.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment!r}"
    found = mlflow.MlflowClient().search_runs([exp.experiment_id])
    assert len(found) == 1
    return found[0]


@pytest.mark.slow
def test_plain_mlagents_learn_trains_and_exports_the_onnx_unity_loads(tmp_path):
    env = child_env()
    env.pop("MLAGENTS_MLFLOW", None)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = subprocess.run(learn_cmd(tmp_path, saved_config(tmp_path), build(tmp_path), "plain"), check=False,
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    onnx = tmp_path / "results" / "plain" / "NavigationAgent.onnx"
    contract = check_policy(onnx, (8, 2, 2), 2)
    assert contract.opset == 9 and contract.has_deterministic
    assert "onnxscript" not in out.stdout + out.stderr
    assert not (tmp_path / "mlflow.db").exists()  # MLflow only when asked for


@pytest.mark.slow
def test_mlagents_learn_with_mlflow_logs_params_metrics_artifacts_and_finishes(tmp_path, store):
    env = child_env(MLAGENTS_MLFLOW="1", MLFLOW_EXPERIMENT_NAME="learn-cli")
    cmd = learn_cmd(tmp_path, saved_config(tmp_path), build(tmp_path), "withmlflow")
    out = subprocess.run(cmd, check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    run = only_run("learn-cli")
    client = mlflow.MlflowClient()
    assert run.info.status == "FINISHED" and run.info.run_name == "withmlflow"
    assert f"mlflow: run {run.info.run_id} FINISHED" in out.stderr
    params = run.data.params
    assert params["behaviors.NavigationAgent.trainer_type"] == "ppo"
    assert params["behaviors.NavigationAgent.max_steps"] == "3000"
    assert params["behaviors.NavigationAgent.hyperparameters.batch_size"] == "256"
    assert params["checkpoint_settings.run_id"] == "withmlflow"
    assert params["env_settings.num_areas"] == "8"
    results = tmp_path / "results" / "withmlflow"
    local = Path(client.download_artifacts(run.info.run_id, "unity/NavigationAgent.onnx", str(tmp_path / "dl")))
    assert local.read_bytes() == (results / "NavigationAgent.onnx").read_bytes()  # byte for byte what Unity loads
    config = client.download_artifacts(run.info.run_id, "trainer_config.yaml", str(tmp_path / "dl"))
    assert yaml.safe_load(Path(config).read_text()) == yaml.safe_load((results / "configuration.yaml").read_text())
    assert {a.path for a in client.list_artifacts(run.info.run_id, "run_logs")} == {
        "run_logs/timers.json", "run_logs/training_status.json"}
    # ML-Agents' metric names, and the end of training is logged too, not only the multiples of summary_freq.
    value_steps = [m.step for m in client.get_metric_history(run.info.run_id, "Policy/Extrinsic Value Estimate")]
    assert value_steps[:3] == [1000, 2000, 3000] and value_steps[-1] > 3000
    assert "Environment/Cumulative Reward" in run.data.metrics


@pytest.mark.slow
def test_sigterm_saves_the_model_and_ends_the_run_killed_in_the_default_experiment(tmp_path, store, monkeypatch):
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME")
    env = child_env(MLAGENTS_MLFLOW="1")
    cmd = learn_cmd(tmp_path, saved_config(tmp_path, max_steps=1_000_000), build(tmp_path), "stopped")
    with open(tmp_path / "learn.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180
        while "Step: 1000." not in (tmp_path / "learn.log").read_text():
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "learn.log").read_text()[-3000:]
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    run = only_run("mlagents-learn")
    assert run.info.status == "KILLED"
    assert run.data.tags["pipeline.error"] == "interrupted: SIGTERM; the model at that step is saved"
    assert (tmp_path / "results" / "stopped" / "NavigationAgent.onnx").is_file()
    assert "unity/NavigationAgent.onnx" in {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id,
                                                                                                 "unity")}


@pytest.mark.slow
def test_a_player_that_dies_ends_the_run_failed_with_the_error(tmp_path, store):
    dead = tmp_path / "Dead.x86_64"
    dead.write_text("#!/bin/sh\nexit 3\n")
    dead.chmod(0o755)
    env = child_env(MLAGENTS_MLFLOW="1", MLFLOW_EXPERIMENT_NAME="learn-cli")
    out = subprocess.run(learn_cmd(tmp_path, saved_config(tmp_path), dead, "dead"), check=False, cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 1
    run = only_run("learn-cli")
    assert run.info.status == "FAILED"
    assert run.data.tags["pipeline.error"] == ("UnityEnvironmentException: Environment shut down with return "
                                               "code 3.")
    assert run.data.params["behaviors.NavigationAgent.max_steps"] == "3000"
