"""Promises users reach with clients nobody here wrote: short budgets, `mlflow run` without
MLFLOW_EXPERIMENT_NAME, learning curves of a few points."""
from __future__ import annotations

import subprocess

import matplotlib.image
import mlflow
import pytest

from pipeline.config.compose import compose_plan
from pipeline.reporting import plots
from pipeline.stages.pipeline import run_pipeline
from tests.support.process import REPO, child_env
from tests.support.store import all_runs

# TINY without its summary_freq: ML-Agents' default, 10,000, is far above these budgets.
SHORT = ["env.num_envs=1", "env.num_areas=8", "evaluation.episodes=12", "algorithm.hyperparameters.buffer_size=1024",
         "algorithm.hyperparameters.batch_size=256"]


def stage_runs(experiment: str = "unity-mlagents") -> dict:
    return {r.data.tags["pipeline.stage"]: r for r in all_runs(experiment)}


def metric_steps(run_id: str, key: str) -> list[int]:
    return [m.step for m in mlflow.MlflowClient().get_metric_history(run_id, key)]


# --- learning curves of few points -------------------------------------------------------------------
def test_a_curve_of_one_point_is_drawn_as_that_point(tmp_path):
    png = plots.learning_curve({"Environment/Cumulative Reward": [(3424, -0.3)], "Policy/Entropy": []},
                               "one summary", tmp_path / "curve.png")
    assert png == tmp_path / "curve.png"
    assert matplotlib.image.imread(png).shape[0] > 100


def test_no_point_at_all_draws_nothing_instead_of_crashing(tmp_path):
    assert plots.learning_curve({"Environment/Cumulative Reward": [], "Policy/Entropy": []}, "empty",
                                tmp_path / "curve.png") is None
    assert not (tmp_path / "curve.png").exists()


# --- every stage completes for any max_steps >= 1 ----------------------------------------------------
@pytest.mark.slow
def test_a_budget_below_summary_freq_completes_every_stage_with_metrics_at_its_last_step(store, tmp_path):
    plan = compose_plan([*SHORT, "max_steps=3000", f"results_dir={tmp_path / 'results'}"])
    assert plan.trainer_config()["behaviors"]["NavigationAgent"]["summary_freq"] == 10_000
    result = run_pipeline(plan)
    assert result.status == "FINISHED"
    runs = stage_runs()
    assert {s: r.info.status for s, r in runs.items()} == {s: "FINISHED" for s in
                                                           ("main", "build", "train", "evaluate", "register")}
    train = runs["train"].info.run_id
    last = result.train.steps
    assert 3000 <= last < 10_000
    for key in ("Environment/Cumulative Reward", "Policy/Entropy", "Losses/Policy Loss"):
        assert metric_steps(train, key) == [last], key  # the final summary ML-Agents itself never writes
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(train)}
    assert "learning_curve.png" in artifacts and "pipeline.note" not in runs["train"].data.tags
    assert result.register.version == "1"


@pytest.mark.slow
def test_a_budget_of_one_step_completes_every_stage(store, tmp_path):
    result = run_pipeline(compose_plan([*SHORT, "max_steps=1", f"results_dir={tmp_path / 'results'}"]))
    assert result.status == "FINISHED"
    runs = stage_runs()
    assert all(r.info.status == "FINISHED" for r in runs.values()) and len(runs) == 5
    train = runs["train"]
    assert train.data.metrics  # something at the step training stopped at
    steps = {s for key in train.data.metrics for s in metric_steps(train.info.run_id, key)}
    assert result.train.steps in steps
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(train.info.run_id)}
    note = train.data.tags.get("pipeline.note")
    # Either there was an episode/update to draw, or the run says why there is no curve.
    assert "learning_curve.png" in artifacts or note.startswith("no learning curve: none of ")


# --- one experiment for a whole `mlflow run` ---------------------------------------------------------
@pytest.mark.slow
def test_mlflow_run_without_experiment_name_keeps_parent_and_stages_in_one_experiment(store, tmp_path):
    env = child_env()
    env.pop("MLFLOW_EXPERIMENT_NAME")
    overrides = " ".join([*SHORT, f"results_dir={tmp_path / 'results'}"])
    cmd = [str(REPO / ".venv" / "bin" / "mlflow"), "run", str(REPO), "-P", "asset=nav", "-P", "max_steps=2000",
           "-P", f"overrides={overrides}", "--env-manager", "local"]
    out = subprocess.run(cmd, check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    client = mlflow.MlflowClient()
    found = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert {r.data.tags.get("pipeline.stage") for r in found} == {"main", "build", "train", "evaluate", "register"}
    assert {r.info.experiment_id for r in found} == {"0"}  # `mlflow run` put its run in Default: so are its stages
    main = next(r for r in found if r.data.tags["pipeline.stage"] == "main")
    assert main.data.tags["mlflow.project.entryPoint"] == "main"  # the run `mlflow run` made is the parent
    assert all(r.data.tags["mlflow.parentRunId"] == main.info.run_id for r in found if r is not main)
    assert mlflow.get_experiment_by_name("unity-mlagents") is None


@pytest.mark.slow
def test_a_sweep_under_mlflow_run_keeps_its_jobs_in_the_experiment_of_mlflow_runs_run(store, tmp_path):
    env = child_env()
    env.pop("MLFLOW_EXPERIMENT_NAME")
    overrides = " ".join([*SHORT, "max_steps=500", "seed=0,1", "stages=[train]", f"results_dir={tmp_path / 'results'}"])
    cmd = [str(REPO / ".venv" / "bin" / "mlflow"), "run", str(REPO), "-e", "main", "-P", f"overrides={overrides}",
           "--env-manager", "local"]
    out = subprocess.run(cmd, check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    client = mlflow.MlflowClient()
    found = client.search_runs([e.experiment_id for e in client.search_experiments()])
    stages = sorted(r.data.tags.get("pipeline.stage") for r in found)
    assert stages == ["main", "main", "sweep", "train", "train"]
    assert {r.info.experiment_id for r in found} == {"0"}
    assert "sweep: parent run" in out.stdout and "(experiment Default)" in out.stdout
