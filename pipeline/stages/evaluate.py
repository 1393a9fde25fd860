"""Evaluate stage: check the exported ONNX against Unity's inference contract, then play seeded episodes."""
from __future__ import annotations

import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import mlflow

from pipeline.config.errors import ConfigError
from pipeline.config.plan import RunPlan
from pipeline.evaluation import rollout
from pipeline.evaluation.onnx_contract import check_policy
from pipeline.reporting import plots
from pipeline.stages.common import experiment_for, plan_tags
from pipeline.stages.train import UNITY_POLICY_DIR
from pipeline.tracking import runs
from pipeline.tracking.runs import stage_run

RUN_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class EvaluateResult:
    run_id: str
    policy: str  # what was evaluated (local ONNX path or artifact URI)
    source_run_id: Optional[str]
    metrics: dict[str, float]


def resolve_policy(policy: str, plan: RunPlan, download_dir: Path) -> tuple[Path, Optional[str]]:
    """A training run id, a runs:/ or models:/ artifact URI, or a local .onnx path -> local file, source run."""
    if RUN_ID.match(policy):
        uri, source = f"runs:/{policy}/{UNITY_POLICY_DIR}/{plan.behavior_name}.onnx", policy
    elif policy.startswith(("runs:/", "models:/", "mlflow-artifacts:/")):
        uri, source = policy, (policy.split("/")[1] if policy.startswith("runs:/") else None)
    else:
        path = Path(policy).expanduser()
        if not path.is_file():
            raise ConfigError(f"policy={policy}: no such ONNX file; give a training run id, a runs:/ URI "
                              "or the path of a <Behavior>.onnx")
        return path, None
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(download_dir)))
    except Exception as exc:
        raise ConfigError(f"policy={policy}: cannot fetch {uri} from the tracking store ({exc})") from None
    return local, source


def evaluate(plan: RunPlan, policy: str) -> EvaluateResult:
    ev = plan.config.evaluation
    if plan.simulation is None:
        raise ConfigError(f"evaluate: asset {plan.asset_id} has no built-in simulation to play episodes in; "
                          "set asset.source.simulation to the simulation of the same behavior (e.g. nav)")
    world = plan.world
    experiment = experiment_for(plan)
    with tempfile.TemporaryDirectory() as tmp:
        # Fetch and check before the run starts: a bad policy leaves no empty evaluation run behind.
        onnx_path, source_run = resolve_policy(policy, plan, Path(tmp))
        contract = check_policy(onnx_path, tuple(size for _, size in world.spec.observations), world.spec.action_size,
                                world.spec.action_branches)
        tags = {**plan_tags(plan), "eval.policy": policy, "eval.deterministic": str(ev.deterministic).lower()}
        if source_run:
            tags["pipeline.train_run_id"] = source_run
        with stage_run("evaluate", experiment, f"evaluate-{plan.asset_id}", tags,
                       adopt_run_id=plan.adopted_run_id) as run:
            runs.log_params({"evaluation": asdict(ev), "onnx.opset": contract.opset, "onnx.inputs": contract.inputs})
            results = {"policy": rollout.run_episodes(world, rollout.onnx_policy(onnx_path, ev.deterministic),
                                                      ev.episodes, ev.seed, trace=4)}
            if ev.baselines:
                results["random"] = rollout.run_episodes(world, rollout.random_policy_for(world, ev.seed),
                                                         ev.episodes, ev.seed)
                results["heuristic"] = rollout.run_episodes(world, world.heuristic, ev.episodes, ev.seed)
            metrics = results["policy"].metrics("eval")
            for name in ("random", "heuristic"):
                if name in results:
                    metrics.update(results[name].metrics(f"baseline/{name}"))
            mlflow.log_metrics(metrics)
            out = Path(tmp)
            title = f"{plan.behavior_name}: {ev.episodes} seeded episodes (seed {ev.seed})"
            mlflow.log_artifact(str(plots.eval_comparison(results, title, out / "eval_comparison.png")))
            mlflow.log_artifact(str(plots.trajectories(results["policy"].traces,
                                                       f"{plan.behavior_name}: policy episodes",
                                                       out / "trajectories.png")))
            eval_run_id = run.info.run_id
    if source_run:
        # The training run carries its own evaluation, so runs compare side by side in the MLflow UI.
        client = mlflow.MlflowClient()
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        client.log_batch(source_run,
                         metrics=[Metric(k, v, now, 0) for k, v in metrics.items() if k.startswith("eval/")])
        client.set_tag(source_run, "pipeline.eval_run_id", eval_run_id)
    p = results["policy"]
    print(f"evaluate: success {p.success_rate:.1%} (95% CI {p.success_ci95[0]:.1%}-{p.success_ci95[1]:.1%}), "
          f"mean reward {p.mean_reward:.3f}, mean length {p.mean_episode_length:.1f} over {p.episodes} episodes"
          + "".join(f"; {n}: success {r.success_rate:.1%}" for n, r in results.items() if n != "policy"), flush=True)
    return EvaluateResult(eval_run_id, policy, source_run, metrics)
