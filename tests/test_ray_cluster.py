"""Training beyond one machine, on a real Ray cluster the test session starts (tests/support/ray_cluster.py):
a head node with no CPUs and two one-CPU worker nodes, each a separate `ray start` process tree."""
from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
import uuid
import warnings

import mlflow
import pytest

from mlops_unity_pipeline import RLTrainingConfig, TrainingJob, UnityAssetSpec, UnityMLOpsOrchestrator
from pipeline.launch.ray_jobs import RayJobExecutor
from pipeline.scheduling.launcher import PipelineLauncher, fire_job, submission_id
from tests.support.process import PYTHON, REPO, child_env
from tests.support.ray_cluster import HeadLost
from tests.support.store import all_runs
from tests.support.training import TINY

pytestmark = pytest.mark.slow
ONLY_TRAIN = "stages=[train]"  # the cluster parts are under test, not the evaluation or the registry


def test_a_sweep_runs_each_job_on_the_cluster_as_children_of_one_parent(ray_cluster, store, tmp_path):
    proc = subprocess.run(
        [PYTHON, "-m", "pipeline.run", "-m", "hydra/launcher=ray", "asset=nav,patrol", "seed=0,1", *TINY,
         ONLY_TRAIN, f"results_dir={tmp_path / 'results'}", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        cwd=REPO, capture_output=True, text=True, timeout=900, env=child_env(RAY_ADDRESS=ray_cluster.address))
    assert proc.returncode == 0, proc.stderr[-4000:]
    runs = all_runs()  # the config's experiment (tracking.experiment_name)
    parents = [r for r in runs if r.data.tags.get("pipeline.stage") == "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 4 and {c.info.status for c in children} == {"FINISHED"}
    assert sorted(c.data.tags["sweep.override.asset"] + c.data.tags["sweep.override.seed"] for c in children) \
        == ["nav0", "nav1", "patrol0", "patrol1"]
    # Each job ran on a worker node (the head has no CPUs), and both workers took jobs.
    nodes = {ray_cluster.node_named(c.data.tags["ray_node_id"]) for c in children}
    assert nodes == {"a", "b"}
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(parent.info.run_id, "comparison")}
    assert "comparison/comparison.md" in artifacts


def test_the_same_fire_submitted_twice_trains_once(ray_cluster, store, tmp_path):
    """Two runners (say, on two machines) launch the same fire: Ray refuses the second submission of its
    id, and the second runner follows the first job instead of training again."""
    template = TrainingJob("nightly-nav-001", UnityAssetSpec("nav-001", "NavigationAgent"),
                           RLTrainingConfig(max_steps=3000, num_envs=1,
                                            overrides=[*TINY, ONLY_TRAIN, f"results_dir={tmp_path / 'results'}"]))
    minute = "2026-12-02T02:00"
    job = fire_job(template, "nightly", minute, "UTC")
    orchestrator = UnityMLOpsOrchestrator(experiment_name="tests")
    executor = RayJobExecutor(address=ray_cluster.dashboard_url)
    launchers = [PipelineLauncher(orchestrator, tmp_path / f"runner{i}", executors={"nightly": executor})
                 for i in (1, 2)]

    async def both():
        return await asyncio.gather(*(launcher.run(job, "nightly", minute, lambda *_: None, asyncio.Event())
                                      for launcher in launchers))

    first, second = asyncio.run(both())
    assert first.status == second.status == "FINISHED", (first.error, second.error)
    assert first.run_ids == second.run_ids and first.run_id == second.run_id
    mains = [r for r in all_runs("tests") if r.data.tags.get("pipeline.stage") == "main"]
    assert [r.info.run_id for r in mains] == [first.run_id]
    assert mains[0].data.tags["scheduled_minute"] == minute
    sid = submission_id("nightly", minute, "nav-001")
    assert executor.state(sid) == "SUCCEEDED"
    assert ray_cluster.node_named(executor.node_of(sid)) in ("a", "b")


def test_a_resumed_fire_is_submitted_under_an_id_derived_from_the_fire_and_only_once(ray_cluster, store, tmp_path):
    """A fire's n-th resume is the Ray job `<fire's id>-r<n>`: two runners resuming it at once make one job."""
    template = TrainingJob("nightly-nav-001", UnityAssetSpec("nav-001", "NavigationAgent"),
                           RLTrainingConfig(max_steps=3000, num_envs=1,
                                            overrides=[*TINY, ONLY_TRAIN, f"results_dir={tmp_path / 'results'}"]))
    minute = "2026-12-02T03:00"
    lost = "0" * 32  # the interrupted training run (one the store lacks: the job stops at once, no training)
    job = fire_job(template, "nightly", minute, "UTC", resume_run_id=lost, attempt=1)
    executor = RayJobExecutor(address=ray_cluster.dashboard_url)
    launchers = [PipelineLauncher(UnityMLOpsOrchestrator(experiment_name="tests"), tmp_path / f"runner{i}",
                                  executors={"nightly": executor}) for i in (1, 2)]

    async def both():
        return await asyncio.gather(*(launcher.run(job, "nightly", minute, lambda *_: None, asyncio.Event())
                                      for launcher in launchers))

    first, second = asyncio.run(both())
    assert first.status == second.status == "FAILED" and first.error == second.error and lost in first.error
    fire = submission_id("nightly", minute, "nav-001")
    ids = [j.submission_id for j in executor.client.list_jobs()]  # None: a driver's own job (a sweep's)
    assert [sid for sid in ids if sid and sid.startswith(fire)] == [f"{fire}-r1"]


def test_mlflow_run_with_the_ray_backend_finishes(ray_cluster, store, tmp_path):
    config = tmp_path / "ray.json"
    config.write_text(json.dumps({"address": ray_cluster.dashboard_url}))
    overrides = " ".join([o for o in TINY if not o.startswith("max_steps")] + [f"results_dir={tmp_path / 'results'}"])
    proc = subprocess.run(["mlflow", "run", ".", "-e", "train", "-P", "asset=nav", "-P", "max_steps=3000",
                           "-P", f"overrides={overrides}", "--backend", "ray", "--backend-config", str(config),
                           "--experiment-name", "tests"],
                          cwd=REPO, capture_output=True, text=True, timeout=900, env=child_env())
    assert proc.returncode == 0, proc.stderr[-4000:]
    runs = all_runs("tests")
    assert len(runs) == 1  # the run `mlflow run` made is the training run
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["pipeline.stage"] == "train" and run.data.tags["mlflow.project.backend"] == "ray"
    assert run.data.tags["ray.submission_id"] == f"mlflow-{run.info.run_id}"
    assert ray_cluster.node_named(run.data.tags["ray.node_id"]) in ("a", "b")
    assert run.data.params["max_steps"] == "3000" and "Environment/Cumulative Reward" in run.data.metrics


def test_the_tracking_uri_and_its_password_never_show_in_the_ray_job(ray_cluster, team_server, tmp_path,
                                                                       monkeypatch):
    """Ray's Jobs API and dashboard show a job's entrypoint, runtime env, metadata and log to whoever can read
    them: the tracking URI (here with a password in it) and MLflow's password reach the job another way, and
    the run still lands on the team server."""
    import urllib.request

    from pipeline.launch.request import LaunchRequest

    secret = f"s3cret-{uuid.uuid4().hex}"
    experiment = f"ray-private-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", team_server.url.replace("http://", f"http://pipeline:{secret}@"))
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", secret)
    executor = RayJobExecutor(address=ray_cluster.dashboard_url)
    request = LaunchRequest(groups={"asset": "nav"}, stage="train", overrides=[*TINY],
                            values={"tracking.experiment_name": experiment, "results_dir": str(tmp_path / "results")})
    sid = f"{experiment}-job"
    outcome = asyncio.run(executor.run(request, submission_id=sid))
    assert outcome.status == "FINISHED", outcome.error
    with urllib.request.urlopen(f"{ray_cluster.dashboard_url}/api/jobs/{sid}", timeout=30) as response:
        shown = response.read().decode()  # what the dashboard and `ray job status` get
    assert sid in shown and "PIPELINE_LAUNCH_REQUEST" in shown  # the job's own record, runtime env included
    listed = json.dumps([job.dict() for job in executor.client.list_jobs()], default=str)
    assert "MLFLOW_TRACKING_URI" not in shown and "MLFLOW_TRACKING_URI" not in listed
    for text in (shown, listed, executor.client.get_job_logs(sid)):
        assert secret not in text
    # The driver deleted the file that carried them, on the node that ran it.
    assert not list(ray_cluster.base.rglob("pipeline-private-env.json"))
    mlflow.set_tracking_uri(team_server.url)
    runs = mlflow.MlflowClient().search_runs([mlflow.get_experiment_by_name(experiment).experiment_id])
    assert [(r.info.run_id, r.info.status, r.data.tags["pipeline.stage"]) for r in runs] \
        == [(outcome.result["run_id"], "FINISHED", "train")]


def test_a_training_whose_node_dies_continues_its_run_on_the_other_node(ray_cluster, team_server, tmp_path,
                                                                         monkeypatch):
    """Node a is killed mid-training (every process of it, as a machine dies); the same request with
    resume=<its run>, sent to node b, continues the same MLflow run from the checkpoint the training
    uploaded to the team server: node b never saw node a's results directory."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", team_server.url)
    mlflow.set_tracking_uri(team_server.url)
    try:
        _lose_node_a_then_resume_on_b(ray_cluster, tmp_path / "first", monkeypatch)
    except HeadLost as exc:
        # Ray's own head stopped answering after the worker was killed (once in CI, on this one-box cluster):
        # Ray's failure, not the product's. A fresh cluster, and the same scenario once more.
        warnings.warn(f"the Ray head was lost; the scenario runs again on a fresh cluster: {exc}", stacklevel=1)
        ray_cluster.restart()
        _lose_node_a_then_resume_on_b(ray_cluster, tmp_path / "again", monkeypatch)


def _lose_node_a_then_resume_on_b(ray_cluster, tmp_path, monkeypatch) -> None:
    from pipeline.launch.request import LaunchRequest
    from pipeline.training.resume import CHECKPOINT_STEP_TAG

    experiment = f"ray-node-loss-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", experiment)
    interval, max_steps, summary_freq = 2000, 12000, 1000
    values = {"max_steps": max_steps, "env.num_envs": 1, "env.num_areas": 8, "algorithm.summary_freq": summary_freq,
              "algorithm.checkpoint_interval": interval, "algorithm.hyperparameters.buffer_size": 1024,
              "algorithm.hyperparameters.batch_size": 256, "tracking.experiment_name": experiment}
    on_a = RayJobExecutor(address=ray_cluster.dashboard_url, resources={"node_a": 1})
    on_a.submit(LaunchRequest(groups={"asset": "nav"}, stage="train",
                              values={**values, "results_dir": str(tmp_path / "node-a")}), f"{experiment}-a")
    client = mlflow.MlflowClient()
    deadline = time.monotonic() + 600
    run = None
    while time.monotonic() < deadline:
        exp = client.get_experiment_by_name(experiment)
        runs = client.search_runs([exp.experiment_id]) if exp else []
        run = next((r for r in runs if r.data.tags.get(CHECKPOINT_STEP_TAG)), None)
        if run is not None:
            break
        time.sleep(1)
    assert run is not None, "no checkpoint reached the team server"
    ray_cluster.kill("a")
    reward = "Environment/Cumulative Reward"
    try:
        # What the lost node had done: its newest uploaded checkpoint and the last step it logged.
        lost = client.get_run(run.info.run_id)
        assert lost.info.status == "RUNNING"  # its process died with the node: nobody ended the run
        checkpoint = int(lost.data.tags[CHECKPOINT_STEP_TAG])
        logged = max([m.step for m in client.get_metric_history(run.info.run_id, reward)], default=0)
        # At most one checkpoint interval is lost, counted at summary granularity: ML-Agents' checkpoint and summary
        # steps land off their periods by a trajectory batch (one CI run: checkpoint 3,984, last summary 6,000).
        assert logged - checkpoint <= interval + summary_freq
        # Resubmit once the cluster has noticed the loss, as an operator would (`ray status`, the dashboard).
        ray_cluster.wait_for_loss("a", timeout=120)
        on_b = RayJobExecutor(address=ray_cluster.dashboard_url, resources={"node_b": 1})
        resumed = LaunchRequest(groups={"asset": "nav"}, stage="train", resume=run.info.run_id,
                                values={**values, "results_dir": str(tmp_path / "node-b")})
        sid = f"{experiment}-b"
        outcome = asyncio.run(on_b.run(resumed, submission_id=sid))
        assert outcome.status == "FINISHED", outcome.error
        assert outcome.result["run_id"] == run.info.run_id
        assert ray_cluster.node_named(on_b.node_of(sid)) == "b"
        final = client.get_run(run.info.run_id)
        assert final.info.status == "FINISHED"
        steps = [m.step for m in client.get_metric_history(run.info.run_id, reward)]
        assert steps == sorted(set(steps)) and steps[-1] >= max_steps - 1000  # monotone, no duplicates, to the end
        assert len([r for r in client.search_runs([final.info.experiment_id])
                    if r.data.tags.get("pipeline.stage") == "train"]) == 1  # the same run, not a new one
    except HeadLost:
        raise  # the caller starts a fresh cluster
    except BaseException:
        with contextlib.suppress(Exception):  # node a back for later tests; the failure above is the one to read
            ray_cluster.add_worker("a")
        raise
    ray_cluster.add_worker("a")
    ray_cluster.wait_for_nodes(240)
