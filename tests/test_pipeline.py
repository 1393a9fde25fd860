"""End to end on the real stack: ML-Agents trainers, a sqlite MLflow store, onnxruntime evaluation."""
from __future__ import annotations

import subprocess

import mlflow
import onnx
import pytest
import yaml

from pipeline.config.compose import compose_plan
from pipeline.config.errors import ConfigError
from pipeline.evaluation.onnx_contract import PolicyContractError, check_policy
from pipeline.stages import evaluate
from pipeline.stages.pipeline import run_pipeline
from tests.support.process import REPO, child_env
from tests.support.store import all_runs, use_store

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One tiny real pipeline run (build, train, evaluate, register) shared by the tests below."""
    tmp = tmp_path_factory.mktemp("pipeline")
    mp = pytest.MonkeyPatch()
    use_store(tmp, mp)
    from tests.support.training import TINY

    plan = compose_plan(TINY + [f"results_dir={tmp / 'results'}", "max_steps=4000"])
    result = run_pipeline(plan)
    yield plan, result
    mp.undo()


def test_pipeline_runs_finish_with_params_streamed_metrics_and_artifacts(finished):
    plan, result = finished
    client = mlflow.MlflowClient()
    assert result.status == "FINISHED"
    stages = {r.data.tags["pipeline.stage"]: r for r in all_runs()}
    assert set(stages) == {"main", "build", "train", "evaluate", "register"}
    assert all(r.info.status == "FINISHED" for r in stages.values())
    parent = stages["main"].info.run_id
    assert all(stages[s].data.tags["mlflow.parentRunId"] == parent for s in ("build", "train", "evaluate", "register"))

    train = stages["train"]
    assert train.data.params["algorithm.hyperparameters.learning_rate"] == "0.0003"
    assert train.data.params["max_steps"] == "4000"
    for tag in ("asset", "algorithm", "mode", "seed", "git.commit", "version.mlagents", "version.torch"):
        assert tag in train.data.tags
    # Streamed during training at each summary period, at ML-Agents' step.
    # (Episode statistics appear only in periods where an episode ended; the value estimate in every one.)
    steps = [m.step for m in client.get_metric_history(train.info.run_id, "Policy/Extrinsic Value Estimate")]
    # ... and once more at the step training ended, which ML-Agents itself never summarises.
    assert steps == [1000, 2000, 3000, 4000] + ([result.train.steps] if result.train.steps > 4000 else [])
    assert client.get_metric_history(train.info.run_id, "Environment/Cumulative Reward")
    assert client.get_metric_history(train.info.run_id, "Losses/Policy Loss")
    assert client.get_metric_history(train.info.run_id, "Environment/Steps per Second")

    artifacts = {a.path for a in client.list_artifacts(train.info.run_id)}
    assert {"trainer_config.yaml", "config.yaml", "learning_curve.png", "unity", "run_logs", "checkpoint"} <= artifacts
    assert {a.path for a in client.list_artifacts(train.info.run_id, "run_logs")} >= {
        "run_logs/timers.json", "run_logs/training_status.json"}
    for key in ("eval/success_rate", "eval/success_rate_ci_low", "eval/mean_reward", "eval/mean_episode_length"):
        assert key in train.data.metrics  # the training run carries its own evaluation


def test_exported_policy_is_what_unity_loads_and_mlflow_serves(finished, tmp_path):
    plan, result = finished
    local = mlflow.artifacts.download_artifacts(result.train.onnx_uri, dst_path=str(tmp_path))
    contract = check_policy(local, (8, 2, 2), 2)
    assert contract.opset == 9 and list(contract.inputs) == ["obs_0", "obs_1", "obs_2"]
    model = mlflow.onnx.load_model(result.train.model_uri)
    assert [i.name for i in model.graph.input] == ["obs_0", "obs_1", "obs_2"]


def test_saved_trainer_config_reproduces_the_run_with_mlagents_learn(finished, tmp_path):
    from mlagents.trainers.settings import RunOptions

    plan, result = finished
    path = mlflow.artifacts.download_artifacts(f"runs:/{result.train.run_id}/trainer_config.yaml",
                                               dst_path=str(tmp_path))
    options = yaml.safe_load(open(path))
    options["env_settings"]["env_path"] = "/builds/Nav.x86_64"  # what `--env=` sets
    behavior = RunOptions.from_dict(options).behaviors["NavigationAgent"]
    assert behavior.max_steps == 4000 and behavior.hyperparameters.buffer_size == 1024


def test_evaluation_logs_baselines_and_pictures(finished):
    plan, result = finished
    ev = mlflow.get_run(result.evaluate.run_id)
    m = ev.data.metrics
    assert m["eval/episodes"] == 12
    assert m["baseline/heuristic/success_rate"] > m["baseline/random/success_rate"]
    assert m["eval/success_rate_ci_low"] <= m["eval/success_rate"] <= m["eval/success_rate_ci_high"]
    paths = {a.path for a in mlflow.MlflowClient().list_artifacts(ev.info.run_id)}
    assert {"eval_comparison.png", "trajectories.png"} <= paths


def test_evaluate_accepts_a_local_onnx_path(finished, tmp_path):
    plan, result = finished
    local = mlflow.artifacts.download_artifacts(result.train.onnx_uri, dst_path=str(tmp_path))
    again = evaluate.evaluate(plan, local)
    # Same seeded episodes, same policy: same figures as the pipeline's own evaluation.
    assert again.metrics["eval/mean_reward"] == pytest.approx(result.evaluate.metrics["eval/mean_reward"])


def test_a_broken_policy_is_refused_before_any_run(finished, tmp_path):
    plan, result = finished
    local = mlflow.artifacts.download_artifacts(result.train.onnx_uri, dst_path=str(tmp_path))
    model = onnx.load(local)
    model.graph.output.remove([o for o in model.graph.output if o.name == "continuous_actions"][0])
    broken = tmp_path / "broken.onnx"
    onnx.save(model, broken)
    before = len(all_runs())
    with pytest.raises(PolicyContractError, match=r"missing output\(s\) \['continuous_actions'\] that Unity reads"):
        evaluate.evaluate(plan, str(broken))
    with pytest.raises(ConfigError, match="policy=/nope.onnx: no such ONNX file"):
        evaluate.evaluate(plan, "/nope.onnx")
    assert len(all_runs()) == before


def test_the_agent_learns(store, tiny):
    """A short real PPO run on nav: the curve rises and the policy beats the random policy."""
    plan = compose_plan(tiny + ["max_steps=36000", "algorithm.summary_freq=6000", "env.num_areas=16",
                                "algorithm.hyperparameters.buffer_size=4096",
                                "algorithm.hyperparameters.batch_size=512", "evaluation.episodes=40"])
    result = run_pipeline(plan)
    history = mlflow.MlflowClient().get_metric_history(result.train.run_id, "Environment/Cumulative Reward")
    rewards = [m.value for m in sorted(history, key=lambda m: m.step)]
    assert rewards[-1] > rewards[0] + 0.15, rewards
    m = result.evaluate.metrics
    assert m["eval/mean_reward"] > m["baseline/random/mean_reward"] + 0.1


def test_mlflow_run_entry_points_train_then_evaluate(store, tmp_path):
    overrides = "algorithm.summary_freq=1000 algorithm.hyperparameters.buffer_size=1024 " \
                "algorithm.hyperparameters.batch_size=256 env.num_envs=1 env.num_areas=8 evaluation.episodes=8 " \
                f"results_dir={tmp_path / 'results'}"
    cmd = [str(REPO / ".venv/bin/mlflow") if (REPO / ".venv/bin/mlflow").exists() else "mlflow", "run", str(REPO),
           "-e", "train", "-P", "max_steps=2000", "-P", f"overrides={overrides}", "--env-manager", "local"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env(), timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    train = [r for r in all_runs("tests") if r.data.tags.get("pipeline.stage") == "train"]
    assert len(train) == 1 and train[0].info.status == "FINISHED"
    run_id = train[0].info.run_id

    proc = subprocess.run(cmd[:3] + ["-e", "evaluate", "-P", f"policy={run_id}",
                                     "-P", "overrides=evaluation.episodes=8",
                                     "--env-manager", "local"], capture_output=True, text=True, env=child_env(),
                          timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "eval/success_rate" in mlflow.get_run(run_id).data.metrics

    # A stage that fails leaves its run FAILED, never FINISHED or RUNNING.
    proc = subprocess.run(cmd[:3] + ["-e", "evaluate", "-P", "policy=/nope.onnx", "--env-manager", "local"],
                          capture_output=True, text=True, env=child_env(), timeout=600, cwd=tmp_path)
    assert proc.returncode != 0 and "policy=/nope.onnx: no such ONNX file" in proc.stderr
    evals = [r for r in all_runs("tests") if r.data.tags.get("mlflow.project.entryPoint") == "evaluate"]
    assert sorted(r.info.status for r in evals) == ["FAILED", "FINISHED"]
