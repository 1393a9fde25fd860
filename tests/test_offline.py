"""Offline training (no environment) and hybrid pre-training + online fine-tuning, through the real train stage:
ML-Agents' actor and exporter, a real MLflow store, the dataset logged as the run's input."""
from __future__ import annotations

import mlflow
import pytest
import torch

from pipeline.config.compose import compose_plan
from pipeline.evaluation.onnx_contract import check_policy
from pipeline.offline import recorder, unity_demo
from pipeline.sim import SIMULATIONS
from tests.support.training import TINY

NAV = SIMULATIONS["nav"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_file(tmp_path_factory):
    """A Unity .demo written with ML-Agents' demo writer from heuristic episodes."""
    data = recorder.record(NAV, NAV.heuristic, episodes=24, seed=1, num_areas=8)
    return unity_demo.write(tmp_path_factory.mktemp("demos") / "nav.demo", data, name="nav")


def test_offline_training_from_a_unity_demo_file(store, tmp_path, demo_file):
    from pipeline.stages import train

    plan = compose_plan(["mode=offline", f"mode.dataset_path={demo_file}", "max_steps=20000",
                         "algorithm.summary_freq=5000", f"results_dir={tmp_path / 'results'}"])
    result = train.train(plan)

    client = mlflow.MlflowClient()
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["mode"] == "offline"
    assert result.steps >= 20000
    # The dataset is the run's input, named by its digest.
    inputs = run.inputs.dataset_inputs
    assert len(inputs) == 1 and inputs[0].dataset.name == "nav.demo"
    assert run.data.tags["dataset.sha256"].startswith(inputs[0].dataset.digest)
    # Metrics at sample counts, with a held-out validation loss, like ML-Agents' summaries.
    steps = [m.step for m in client.get_metric_history(result.run_id, "Offline/Validation BC Loss")]
    assert steps[:3] == [5120, 10240, 15104]
    assert "Losses/BC Loss" in run.data.metrics and "Losses/Value Loss" in run.data.metrics
    # Same outputs as an online run: Unity's ONNX, the mlflow.onnx model, ML-Agents' checkpoint.
    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"unity", "checkpoint", "learning_curve.png"} <= artifacts
    local = mlflow.artifacts.download_artifacts(result.onnx_uri, dst_path=str(tmp_path / "dl"))
    contract = check_policy(local, (8, 2, 2), 2)
    assert contract.has_deterministic
    ckpt = torch.load(f"{result.results_dir}/NavigationAgent/checkpoint.pt")
    assert {"Policy", "global_step", "Optimizer:critic"} <= set(ckpt)


def test_awr_offline_training_weighs_by_advantage(store, tmp_path, demo_file):
    from pipeline.stages import train

    plan = compose_plan(["mode=offline", f"mode.dataset_path={demo_file}", "mode.method=awr", "max_steps=5000",
                         "algorithm.summary_freq=2500", f"results_dir={tmp_path / 'results'}"])
    result = train.train(plan)
    metrics = mlflow.MlflowClient().get_run(result.run_id).data.metrics
    assert 0 < metrics["Offline/AWR Mean Weight"] <= 20


def test_hybrid_pretrains_then_fine_tunes_from_the_checkpoint_under_one_parent(store, tmp_path, demo_file):
    from pipeline.stages import train

    plan = compose_plan([*TINY, "mode=hybrid", f"mode.dataset_path={demo_file}", "mode.pretrain_steps=5000",
                         "mode.bc_strength=0.5", f"results_dir={tmp_path / 'results'}"])
    result = train.train(plan)

    client = mlflow.MlflowClient()
    parent = client.get_run(result.run_id)
    assert parent.info.status == "FINISHED"
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{result.run_id}'")
    phases = {c.data.tags["pipeline.stage"]: c for c in children}
    assert set(phases) == {"train.pretrain", "train.finetune"}
    assert all(c.info.status == "FINISHED" for c in children)
    pre, fine = phases["train.pretrain"], phases["train.finetune"]
    assert "Losses/BC Loss" in pre.data.metrics and pre.inputs.dataset_inputs
    assert "Environment/Cumulative Reward" in fine.data.metrics
    assert "Environment/Cumulative Reward" in parent.data.metrics  # the parent reads like an online run
    # ML-Agents initialised the online trainer from the pre-trained checkpoint and kept BC on the demos.
    init_path = parent.data.tags["hybrid.init_path"]
    assert init_path.endswith(f"{pre.info.run_id}/NavigationAgent/checkpoint.pt")
    assert fine.data.params["algorithm.init_path"] == init_path
    assert fine.data.params["algorithm.behavioral_cloning.demo_path"].endswith("demonstrations.demo")
    assert "Losses/Pretraining Loss" in fine.data.metrics  # ML-Agents' BC module's own metric
    assert result.onnx_uri == f"runs:/{result.run_id}/unity/NavigationAgent.onnx"
