"""Benchmark: the pipeline's overhead over bare ML-Agents, and the simulations' own speed.

    make bench                       # nav, PPO, 100k steps
    make bench ARGS="--steps 30000"  # quicker

Both trainings run as fresh processes on the same config, asset, seed and step budget:
  bare     = ML-Agents' TrainerController + SubprocessEnvManager + its default StatsWriters, wired as
             `mlagents.trainers.learn.run_training` does (our simulation is the only non-ML-Agents part);
  pipeline = `python -m pipeline.cli train` (config validation, MLflow run, streamed metrics,
             artifacts, ONNX model logging, learning-curve picture).
Results are appended to bench/results.md with the machine they ran on.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def bare_mlagents(overrides: list[str], results: str) -> None:
    """Child process: train with ML-Agents' own wiring and nothing of ours but the environment."""
    from pipeline.mlagents_patches import onnx_export

    onnx_export.apply()  # needed by bare ML-Agents too; the hot paths stay upstream
    from mlagents.plugins.stats_writer import get_default_stats_writers
    from mlagents.trainers.environment_parameter_manager import EnvironmentParameterManager
    from mlagents.trainers.stats import StatsReporter
    from mlagents.trainers.subprocess_env_manager import SubprocessEnvManager
    from mlagents.trainers.trainer import TrainerFactory
    from mlagents.trainers.trainer_controller import TrainerController

    from pipeline.config.compose import compose_plan
    from pipeline.training.env_factory import SimulationEnvFactory
    from pipeline.training.mlagents_trainer import run_options_for

    plan = compose_plan(overrides)
    options = run_options_for(plan, Path(results), "bare")
    for w in get_default_stats_writers(options):
        StatsReporter.add_writer(w)
    write_path = options.checkpoint_settings.write_path
    env_manager = SubprocessEnvManager(SimulationEnvFactory(plan.simulation, plan.cfg["env"]["num_areas"], plan.seed),
                                       options, plan.cfg["env"]["num_envs"])
    params = EnvironmentParameterManager(options.environment_parameters, plan.seed, restore=False)
    factory = TrainerFactory(options.behaviors, write_path, True, False, plan.seed, params, None, False)
    try:
        TrainerController(factory, write_path, "bare", params, True, plan.seed).start_learning(env_manager)
    finally:
        env_manager.close()


def timed(cmd: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def simulation_speed(seconds: float = 3.0) -> dict[str, float]:
    import numpy as np
    from mlagents_envs.base_env import ActionTuple

    from pipeline.sim import SIMULATIONS
    from pipeline.sim.unity_env import SimulatedUnityEnv

    out = {}
    for name, world in SIMULATIONS.items():
        for areas in (16, 256):
            env = SimulatedUnityEnv(world, num_areas=areas, seed=0)
            actions = np.zeros((areas, 2), np.float32)
            steps, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                env.set_actions(world.spec.behavior_name, ActionTuple(continuous=actions))
                env.step()
                env.get_steps(world.spec.behavior_name)
                steps += areas
            out[f"{name} ({areas} areas)"] = steps / (time.perf_counter() - start)
    return out


RESULTS = REPO / "bench" / "results.md"


def append_results(title: str, lines: list[str], out: Path = RESULTS) -> None:
    """One dated section of bench/results.md, with the machine it ran on."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as f:
        f.write(f"\n## {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} — {title}\n\n- machine: {machine()}\n"
                + "".join(f"- {line}\n" for line in lines))
    print(f"appended to {out}")


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    import torch

    return (f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, torch {torch.__version__}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--asset", default="nav")
    ap.add_argument("--algorithm", default="ppo")
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results.md")
    ap.add_argument("--bare-child", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.bare_child is not None:
        bare_mlagents(args.bare_child[1:], args.bare_child[0])
        return

    overrides = [f"asset={args.asset}", f"algorithm={args.algorithm}", f"max_steps={args.steps}", "seed=0"]
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db", "PYTHONUNBUFFERED": "1"}
        env.pop("MLFLOW_RUN_ID", None)
        # The store exists before timing, as it does for every run but a store's first: creating its tables
        # (~2-3 s, once per store) is not a per-run cost.
        subprocess.run([sys.executable, "-c", "import mlflow; mlflow.MlflowClient().search_experiments()"],
                       check=True, env=env, cwd=REPO)
        bare, piped = [], []
        for i in range(args.repeats):
            # Alternate the order so drift in machine load does not favour one side.
            pair = [("bare", [sys.executable, __file__, "--bare-child", f"{tmp}/bare{i}", *overrides,
                              f"results_dir={tmp}/bare{i}"]),
                    ("pipeline", [sys.executable, "-m", "pipeline.cli", "train", "--asset", args.asset,
                                  "--algorithm", args.algorithm, "--max_steps", str(args.steps), "--seed", "0",
                                  "--overrides", f"results_dir={tmp}/pipe{i}"])]
            for name, cmd in (pair if i % 2 == 0 else pair[::-1]):
                seconds = timed(cmd, env)
                (bare if name == "bare" else piped).append(seconds)
                print(f"{name}: {seconds:.1f} s", flush=True)
    sim = simulation_speed()
    b, p = min(bare), min(piped)
    row = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
           "config": f"{args.asset}/{args.algorithm}, {args.steps:,} steps, 2 workers x 16 areas",
           "bare_s": round(b, 1), "pipeline_s": round(p, 1), "overhead_ratio": round(p / b, 3),
           "pair_ratios": [round(x / y, 3) for x, y in zip(piped, bare)],  # this box is noisy: show the spread
           "bare_steps_per_s": round(args.steps / b), "simulation_steps_per_s": {k: round(v) for k, v in sim.items()}}
    print(json.dumps(row, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    new = not args.out.exists()
    with args.out.open("a") as f:
        if new:
            f.write("# Benchmark results\n\nWritten by `make bench` (scripts/bench.py); newest last. Wall times are "
                    "whole processes (imports included), best of the repeats.\n\n")
        f.write(f"## {row['date']} — {row['config']}\n\n- machine: {row['machine']}\n"
                f"- bare ML-Agents: {row['bare_s']} s ({row['bare_steps_per_s']:,} steps/s)\n"
                f"- pipeline train stage: {row['pipeline_s']} s\n- overhead ratio: **{row['overhead_ratio']}** (best of "
                f"{args.repeats}; each pair: {', '.join(map(str, row['pair_ratios']))})\n"
                + "".join(f"- simulation {k}: {v:,} steps/s (env stepping only, zero actions)\n"
                          for k, v in row["simulation_steps_per_s"].items()) + "\n")
    print(f"appended to {args.out}")


if __name__ == "__main__":
    main()
