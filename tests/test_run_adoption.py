"""The run made for a pipeline before it starts (`mlflow run`'s, a sweep job's, a launch request's) is passed
explicitly (LaunchRequest.run_id / parent_run_id -> RunPlan.adopted_run_id -> the top stage run); only the entry
points read `mlflow run`'s MLFLOW_RUN_ID (tests/test_layers.py holds the product to that)."""
from __future__ import annotations

import json
import subprocess

import mlflow
import pytest

from pipeline.launch.inprocess import run_request
from pipeline.launch.request import LaunchRequest
from tests.support.process import PYTHON, REPO, child_env
from tests.support.store import all_runs


def test_the_run_made_for_a_request_becomes_its_stage_run_in_that_run_s_experiment(store):
    client = mlflow.MlflowClient()
    made = client.create_run(client.create_experiment("chosen-by-mlflow-run")).info.run_id
    result = run_request(LaunchRequest(groups={"asset": "nav"}, stage="build", run_id=made))
    assert result.run_id == made
    run = client.get_run(made)
    assert run.info.status == "FINISHED" and run.data.tags["pipeline.stage"] == "build"
    assert run.data.tags["environment"] == "simulation:nav"  # with the stage's own tags
    assert all_runs() == []  # nothing went to the config's experiment


def test_a_request_with_a_parent_run_becomes_its_child(store):
    client = mlflow.MlflowClient()
    parent = client.create_run(client.create_experiment("sweeps")).info.run_id
    result = run_request(LaunchRequest(groups={"asset": "nav"}, stage="build", parent_run_id=parent))
    run = client.get_run(result.run_id)
    assert result.run_id != parent and run.data.tags["mlflow.parentRunId"] == parent
    assert run.info.status == "FINISHED" and run.data.tags["pipeline.stage"] == "build"
    assert client.get_run(parent).data.tags.get("pipeline.stage") is None  # the parent is left as it was


@pytest.mark.slow  # a whole CLI process: tens of seconds on a loaded box
def test_the_entry_point_takes_mlflow_run_s_run_from_its_environment(store, tmp_path):
    client = mlflow.MlflowClient()
    made = client.create_run(client.create_experiment("chosen-by-mlflow-run")).info.run_id
    out = tmp_path / "result.json"
    proc = subprocess.run([PYTHON, "-m", "pipeline.cli", "build", "--asset", "nav", "--result-json", str(out)],
                          cwd=REPO, env={**child_env(), "MLFLOW_RUN_ID": made}, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(out.read_text())["run_id"] == made
    assert client.get_run(made).data.tags["pipeline.stage"] == "build"
    assert all_runs() == []
