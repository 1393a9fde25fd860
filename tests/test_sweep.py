"""Hydra multirun sweeps on the real stack: one parent MLflow run, a child per job, the comparison report."""
from __future__ import annotations

import subprocess
from pathlib import Path

import mlflow
import pytest
import yaml

from pipeline.sweeps.handoff import multirun_argv
from pipeline.sweeps.jobs import config_key, expand_basic, is_sweep, job_params
from tests.support.process import PYTHON, REPO, child_env
from tests.support.training import TINY

TINY_NO_RESULTS = [o for o in TINY if not o.startswith("results_dir=")]


def sweep_store(tmp: Path) -> dict[str, str]:
    return child_env(MLFLOW_TRACKING_URI=f"sqlite:///{tmp / 'mlflow.db'}", MLFLOW_EXPERIMENT_NAME="tests")


def run(args: list[str], env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def runs_of(uri: str, filter_string: str = ""):
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("unity-mlagents")
    return [] if exp is None else client.search_runs([exp.experiment_id], filter_string, max_results=1000)


# -- what overrides mean (fast) -------------------------------------------------------------------
def test_sweep_syntax_is_recognised_and_expanded():
    assert is_sweep(["asset=nav,patrol"]) and is_sweep(["-m", "max_steps=10"]) and is_sweep(["seed=range(0,3)"])
    assert not is_sweep(["max_steps=3000", "env.num_envs=1"])
    assert expand_basic(["asset=nav,patrol", "seed=0,1"]) == [
        ["asset=nav", "seed=0"], ["asset=nav", "seed=1"], ["asset=patrol", "seed=0"], ["asset=patrol", "seed=1"]]
    params = job_params(["asset=nav", "+run_tags.team=a", "seed=3"])
    assert params == {"asset": "nav", "run_tags.team": "a", "seed": "3"}
    assert config_key(params) == "asset=nav run_tags.team=a"  # seeds of one configuration group together


def test_mlflow_run_parameters_hand_sweeps_to_hydra_multirun():
    # MLproject's `main` passes --asset nav --seed 0 ...; the overrides' own sweep of a key wins.
    assert multirun_argv(["asset=nav", "algorithm=ppo", "seed=0"], "asset=nav,patrol seed=0,1 max_steps=10") == [
        "--multirun", "algorithm=ppo", "asset=nav,patrol", "seed=0,1", "max_steps=10"]
    assert multirun_argv(["asset=nav"], "-m +search=ppo") == ["--multirun", "asset=nav", "+search=ppo"]


# -- bad input stops the sweep before any job (fast: no training) -----------------------------------
@pytest.mark.slow  # starts the command line in child processes
def test_unknown_option_in_a_sweep_fails_before_any_job_with_hydras_message(tmp_path):
    env = sweep_store(tmp_path)
    proc = run(["-m", "pipeline.run", "-m", "asset=nav,nope", f"hydra.sweep.dir={tmp_path / 'multirun'}"], env)
    assert proc.returncode == 1
    assert "Could not find 'asset/nope'" in proc.stderr
    assert "Available options in 'asset':" in proc.stderr
    assert runs_of(env["MLFLOW_TRACKING_URI"]) == []  # no parent, no child


@pytest.mark.slow  # starts the command line in child processes
def test_unknown_key_in_a_sweep_fails_before_any_job(tmp_path):
    env = sweep_store(tmp_path)
    proc = run(["-m", "pipeline.run", "-m", "seed=0,1", "algorithm.hyperparameters.lerning_rate=0.1,0.2",
                f"hydra.sweep.dir={tmp_path / 'multirun'}"], env)
    assert proc.returncode != 0
    assert "lerning_rate" in proc.stderr
    assert runs_of(env["MLFLOW_TRACKING_URI"]) == []


@pytest.mark.slow  # starts the command line in child processes
def test_invalid_value_in_one_job_stops_the_sweep_before_any_job_runs(tmp_path):
    env = sweep_store(tmp_path)
    proc = run(["-m", "pipeline.cli", "main", "--overrides", "max_steps=3000,-5"], env)  # the MLproject command
    assert proc.returncode == 2
    assert "error: job #1 (asset=nav mode=online seed=0 max_steps=-5): " in proc.stderr
    assert "max_steps must be a positive number of agent steps, got -5" in proc.stderr
    assert "no job was started" in proc.stderr
    assert runs_of(env["MLFLOW_TRACKING_URI"]) == []


# -- a real sweep: one job trains, one fails -------------------------------------------------------
@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """`mlflow run`'s command with a sweep in its overrides, inside a run `mlflow run` made (MLFLOW_RUN_ID)."""
    tmp = tmp_path_factory.mktemp("sweep")
    env = sweep_store(tmp)
    uri = env["MLFLOW_TRACKING_URI"]
    client = mlflow.MlflowClient(uri)
    exp = client.create_experiment("unity-mlagents", artifact_location=(tmp / "mlruns").as_uri())
    outer = client.create_run(exp, run_name="mlflow-run-main").info.run_id
    env["MLFLOW_RUN_ID"] = outer
    # A player build that exits as soon as it starts: it passes every check made before the sweep, so that
    # job fails at run time, after its child run started (a bad results_dir is refused before any job now).
    broken = tmp / "Broken.x86_64"
    broken.write_text("#!/bin/sh\necho 'Broken player: exiting' >&2\nexit 3\n")
    broken.chmod(0o755)
    overrides = " ".join(TINY_NO_RESULTS + [f"results_dir={tmp / 'results'}", f"env_path=null,{broken}",
                                            "env.timeout_wait=20", f"hydra.sweep.dir={tmp / 'multirun'}"])
    proc = run(["-m", "pipeline.cli", "main", "--asset", "nav", "--seed", "0", "--overrides", overrides], env)
    return uri, outer, proc, tmp



@pytest.mark.slow
def test_sweep_is_one_parent_run_with_a_child_per_job_carrying_its_overrides(sweep):
    uri, parent, proc, tmp = sweep
    client = mlflow.MlflowClient(uri)
    assert proc.returncode == 1, proc.stderr[-3000:]  # a job failed: the sweep says so
    parent_run = client.get_run(parent)
    assert parent_run.data.tags["pipeline.stage"] == "sweep"  # `mlflow run`'s run became the sweep's parent
    assert parent_run.info.status == "FAILED"
    children = sorted(runs_of(uri, f"tags.mlflow.parentRunId = '{parent}'"), key=lambda r: r.data.tags["sweep.job"])
    assert [c.data.tags["sweep.job"] for c in children] == ["0", "1"]
    ok, bad = children
    assert ok.info.status == "FINISHED" and bad.info.status == "FAILED"
    assert ok.data.params["results_dir"] == str(tmp / "results") and ok.data.params["asset"] == "nav"
    assert ok.data.params["max_steps"] == "3000"
    assert ok.data.tags["sweep.config"] == "env_path=null"
    assert ok.info.run_name == "#0 env_path=null"
    assert ok.data.tags["pipeline.stage"] == "main"  # the pipeline's own run, not a wrapper
    assert "eval/success_rate" in ok.data.metrics and "eval/success_rate_ci_high" in ok.data.metrics
    stages = {r.data.tags["pipeline.stage"]: r for r in runs_of(uri, f"tags.mlflow.parentRunId = '{ok.info.run_id}'")}
    assert {"build", "train", "evaluate", "register"} <= set(stages)
    curve = client.get_metric_history(stages["train"].info.run_id, "Policy/Extrinsic Value Estimate")
    assert 3000 in [m.step for m in curve] and curve[-1].step >= 3000  # the last: where training ended
    assert client.get_metric_history(stages["train"].info.run_id, "Environment/Cumulative Reward")
    assert "Broken.x86_64" in bad.data.tags["pipeline.error"], bad.data.tags["pipeline.error"]
    # No run of the second job attached itself to the first job's run (MLFLOW_RUN_ID did not leak).
    assert all(r.data.tags.get("mlflow.parentRunId") != ok.info.run_id
               for r in runs_of(uri, f"tags.mlflow.parentRunId = '{bad.info.run_id}'"))


@pytest.mark.slow
def test_sweep_reports_which_jobs_failed(sweep):
    uri, parent, proc, tmp = sweep
    assert f"sweep: 1 of 2 jobs failed: #1 env_path={tmp / 'Broken.x86_64'} (FAILED: " in proc.stderr, proc.stderr
    assert f"#1 env_path={tmp / 'Broken.x86_64'}" in \
        mlflow.MlflowClient(uri).get_run(parent).data.tags["sweep.failed_jobs"]


@pytest.mark.slow
def test_comparison_report_is_logged_on_the_parent_and_printable(sweep, tmp_path):
    uri, parent, proc, tmp = sweep
    client = mlflow.MlflowClient(uri)
    logged = {a.path for a in client.list_artifacts(parent, "comparison")}
    assert logged == {f"comparison/{n}" for n in ("comparison.md", "comparison.html", "comparison.json",
                                                  "learning_curves.png", "final_eval.png")}
    env = child_env(MLFLOW_TRACKING_URI=uri)
    out = run(["-m", "pipeline.sweeps.report", parent, "--out", str(tmp_path)], env)
    assert out.returncode == 0, out.stderr
    assert "| configuration | runs | success rate [95% CI] | mean reward [95% CI] |" in out.stdout
    assert "| `env_path=null` **best** | 1/1 | " in out.stdout
    assert f"| `env_path={tmp / 'Broken.x86_64'}` | 0/1 (failed: #1) |" in out.stdout
    assert (tmp_path / "learning_curves.png").stat().st_size > 10_000
    assert "data:image/png;base64," in (tmp_path / "comparison.html").read_text()

    missing = run(["-m", "pipeline.sweeps.report", "0" * 32], env)
    assert missing.returncode == 2
    assert f"error: no run {'0' * 32} in the tracking store" in missing.stderr


# -- parallel jobs and seeds -----------------------------------------------------------------------
@pytest.mark.slow
def test_parallel_seeds_lose_nothing_and_aggregate_into_mean_and_interval(tmp_path):
    env = sweep_store(tmp_path)
    uri = env["MLFLOW_TRACKING_URI"]
    proc = run(["-m", "pipeline.run", "-m", "hydra/launcher=parallel", "hydra.launcher.n_jobs=2", "seed=0,1",
                *TINY_NO_RESULTS, f"results_dir={tmp_path / 'results'}", f"hydra.sweep.dir={tmp_path / 'multirun'}"],
               env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "sweep: 2 jobs in parallel write through the tracking server http://127.0.0.1:" in proc.stdout
    assert "database is locked" not in proc.stdout + proc.stderr
    client = mlflow.MlflowClient(uri)  # straight from the sqlite file: the server is gone
    (parent,) = runs_of(uri, "tags.`pipeline.stage` = 'sweep'")
    assert parent.info.status == "FINISHED"
    children = runs_of(uri, f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(c.data.params["seed"] for c in children) == ["0", "1"]
    assert all(c.info.status == "FINISHED" and "eval/success_rate" in c.data.metrics for c in children)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for child in children:  # every summary ML-Agents wrote (to TensorBoard, beside us) arrived in MLflow too
        train = client.get_run(child.data.tags["pipeline.train_run_id"])
        events = EventAccumulator(str(Path(train.data.tags["results_dir"]) / "NavigationAgent"))
        events.Reload()
        for key in ("Environment/Cumulative Reward", "Environment/Episode Length", "Losses/Policy Loss"):
            written = [e.step for e in events.Scalars(key)]
            assert len(written) >= 2
            assert [m.step for m in client.get_metric_history(train.info.run_id, key)] == written, key
    # One configuration, two seeds: mean and a t-interval across them.
    assert "| `default` **best** | 2/2 |" in proc.stdout or "| `default` | 2/2 |" in proc.stdout
    assert "| 2 seeds |" in proc.stdout
    rows = yaml.safe_load(Path(client.download_artifacts(parent.info.run_id, "comparison/comparison.json",
                                                           str(tmp_path))).read_text())["rows"]
    assert rows[0]["success"]["n"] == 2 and rows[0]["success"]["kind"] == "seeds"
    assert rows[0]["reward"]["low"] <= rows[0]["reward"]["mean"] <= rows[0]["reward"]["high"]


# -- Optuna search ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_optuna_search_trials_are_children_and_the_best_config_is_saved_ready_to_use(tmp_path):
    env = sweep_store(tmp_path)
    uri = env["MLFLOW_TRACKING_URI"]
    tuned = tmp_path / "tuned"
    proc = run(["-m", "pipeline.run", "-m", "+search=ppo", "hydra.sweeper.n_trials=2", *TINY_NO_RESULTS,
                f"results_dir={tmp_path / 'results'}", f"hydra.sweep.dir={tmp_path / 'multirun'}",
                f"hydra.callbacks.mlflow_sweep.tuned_dir={tuned}"], env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (parent,) = runs_of(uri, "tags.`pipeline.stage` = 'search'")
    assert parent.info.status == "FINISHED"
    assert parent.data.params["search.algorithm.hyperparameters.learning_rate"] == "tag(log, interval(0.0001, 0.003))"
    children = runs_of(uri, f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    trials = [c for c in children if c.data.tags.get("sweep.role") != "baseline"]
    (baseline,) = [c for c in children if c.data.tags.get("sweep.role") == "baseline"]
    assert len(trials) == 2 and all(c.info.status == "FINISHED" for c in children)
    assert all("algorithm.hyperparameters.learning_rate" in t.data.params and "eval/success_rate" in t.data.metrics
               for t in trials)
    assert "eval/success_rate" in baseline.data.metrics
    tags = mlflow.MlflowClient(uri).get_run(parent.info.run_id).data.tags
    assert tags["search.best_run_id"] in {t.info.run_id for t in trials}
    assert tags["search.improved"] in ("true", "false")
    verdict = "improved on the default" if tags["search.improved"] == "true" else "did not improve on the default"
    assert verdict in tags["search.verdict"] or "point estimate only" in tags["search.verdict"]
    assert tags["search.verdict"] in proc.stdout

    # The saved file is a conf/algorithm option: it composes and validates like ppo.yaml.
    path = tuned / "ppo_nav_tuned.yaml"
    assert f"best config saved to {path} (use algorithm=ppo_nav_tuned)" in proc.stdout
    saved = yaml.safe_load(path.read_text())
    best = next(t for t in trials if t.info.run_id == tags["search.best_run_id"])
    assert saved["hyperparameters"]["learning_rate"] == pytest.approx(
        float(best.data.params["algorithm.hyperparameters.learning_rate"]))
    assert saved["max_steps"] == 3000 and saved["trainer_type"] == "ppo"
    from omegaconf import OmegaConf

    from pipeline.config.compose import compose_config
    from pipeline.config.plan import build_plan

    cfg = OmegaConf.to_container(compose_config(), resolve=True)
    cfg["algorithm"] = saved
    assert build_plan(cfg).trainer_settings.hyperparameters.learning_rate == pytest.approx(
        saved["hyperparameters"]["learning_rate"])
    assert "search/ppo_nav_tuned.yaml" in {a.path for a in mlflow.MlflowClient(uri).list_artifacts(
        parent.info.run_id, "search")}
