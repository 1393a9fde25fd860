"""One seeded ML-Agents training on a single in-process environment; prints its metric history as JSON.

    python scripts/seeded_training.py --steps 4000 --seed 3 --out history.json   # MLOPS_MLAGENTS_FAST=0|1

The most deterministic way ML-Agents trains: one `SimpleEnvManager` stepping a built-in simulation in
this process (no worker processes whose timing decides which steps arrive together), one torch thread,
ML-Agents' own seeding (TrainerController seeds NumPy and torch). tests/test_hot_paths.py and
scripts/bench_hot_paths.py compare it with and without our hot-path replacements.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def train(steps: int, seed: int, asset: str = "nav", algorithm: str = "ppo", areas: int = 8) -> dict:
    from pipeline import mlagents_patches

    mlagents_patches.apply()  # honours MLOPS_MLAGENTS_FAST
    import torch
    from mlagents.plugins.trainer_type import register_trainer_plugins
    from mlagents.trainers.environment_parameter_manager import EnvironmentParameterManager
    from mlagents.trainers.settings import RunOptions
    from mlagents.trainers.simple_env_manager import SimpleEnvManager
    from mlagents.trainers.stats import StatsReporter, StatsSummary, StatsWriter
    from mlagents.trainers.trainer import TrainerFactory
    from mlagents.trainers.trainer_controller import TrainerController
    from mlagents_envs.side_channel.environment_parameters_channel import EnvironmentParametersChannel

    from pipeline.sim import simulation
    from pipeline.sim.unity_env import SimulatedUnityEnv

    torch.set_num_threads(1)
    register_trainer_plugins()
    history: dict = defaultdict(list)

    class Recorder(StatsWriter):
        def write_stats(self, category: str, values: dict[str, StatsSummary], step: int) -> None:
            for name, summary in values.items():
                if "Time" not in name and "Second" not in name:  # wall-clock figures differ by nature
                    history[name].append([step, float(summary.mean), [float(v) for v in summary.full_dist]])

    world = simulation(asset)
    behavior = {
        "ppo": {"trainer_type": "ppo", "hyperparameters": {"batch_size": 256, "buffer_size": 1024, "num_epoch": 2}},
        "sac": {"trainer_type": "sac", "hyperparameters": {"batch_size": 64, "buffer_size": 5000,
                                                           "buffer_init_steps": 256, "steps_per_update": 8}},
        "poca": {"trainer_type": "poca", "hyperparameters": {"batch_size": 256, "buffer_size": 1024,
                                                             "num_epoch": 2}},
    }[algorithm]
    behavior.update({"network_settings": {"normalize": True, "hidden_units": 64, "num_layers": 2},
                     "max_steps": steps, "time_horizon": 64, "summary_freq": max(steps // 4, 1),
                     "checkpoint_interval": steps})
    with tempfile.TemporaryDirectory(prefix="seeded-") as tmp:
        options = RunOptions.from_dict({
            "behaviors": {world.spec.behavior_name: behavior},
            "checkpoint_settings": {"run_id": "seeded", "results_dir": tmp}})
        StatsReporter.writers.clear()
        StatsReporter.add_writer(Recorder())
        params = EnvironmentParameterManager(options.environment_parameters, seed, restore=False)
        env = SimpleEnvManager(SimulatedUnityEnv(world, num_areas=areas, seed=seed), EnvironmentParametersChannel())
        write_path = options.checkpoint_settings.write_path
        factory = TrainerFactory(options.behaviors, write_path, True, False, seed, params, None, False)
        controller = TrainerController(factory, write_path, "seeded", params, True, seed)
        try:
            controller.start_learning(env)
        finally:
            env.close()
        policy = next(iter(controller.trainers.values())).get_policy(world.spec.behavior_name)
        weights = {k: v.detach().numpy().tobytes().hex() for k, v in policy.actor.state_dict().items()}
    from pipeline.mlagents_patches import hot_paths

    return {"history": dict(history), "weights": weights, "hot_paths": hot_paths.applied()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--asset", default="nav")
    ap.add_argument("--algorithm", default="ppo", choices=["ppo", "sac", "poca"])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    args.out.write_text(json.dumps(train(args.steps, args.seed, args.asset, args.algorithm)))


if __name__ == "__main__":
    main()
