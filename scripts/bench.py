"""Benchmark: the pipeline's train stage against bare upstream ML-Agents, the SB3 peer, the simulations' speed.

    make bench                                   # nav/ppo 100k x 5 pairs, patrol/ppo, nav/sac, nav/poca, SB3 peer
    python scripts/bench.py --configs nav/ppo --steps 40000 --pairs 3 --peer-steps 0    # quicker

Both trainings run as fresh processes on the same config, asset, seed and step budget:
  bare     = ML-Agents' TrainerController + SubprocessEnvManager + its default StatsWriters, wired as
             `mlagents.trainers.learn.run_training` does (our simulation is the only non-ML-Agents part);
  pipeline = `python -m pipeline.cli train` (config validation, MLflow run, streamed metrics,
             artifacts, ONNX model logging, learning-curve picture) with our hot-path replacements
             (pipeline/mlagents_patches/hot_paths.py), as users run it.
The bare side runs with MLOPS_MLAGENTS_FAST=0 and checks that no replacement is installed.
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
    from pipeline.mlagents_patches import FAST_ENV, hot_paths

    if os.environ.get(FAST_ENV) == "0":  # as compare() runs it (scripts/bench_profile.py reuses this wiring)
        assert not hot_paths.applied(), "the bare baseline must run ML-Agents' own hot paths"
    from mlagents.plugins.stats_writer import get_default_stats_writers
    from mlagents.trainers.environment_parameter_manager import EnvironmentParameterManager
    from mlagents.trainers.stats import StatsReporter
    from mlagents.trainers.subprocess_env_manager import SubprocessEnvManager
    from mlagents.trainers.trainer import TrainerFactory
    from mlagents.trainers.trainer_controller import TrainerController

    from pipeline.config.compose import compose_plan
    from pipeline.training.env_factory import SimulationEnvFactory
    try:
        from pipeline.training.session import run_options_for
    except ImportError:  # before training/session.py existed
        from pipeline.training.mlagents_trainer import run_options_for

    plan = compose_plan(overrides)
    options = run_options_for(plan, Path(results), "bare")
    for w in get_default_stats_writers(options):
        StatsReporter.add_writer(w)
    write_path = options.checkpoint_settings.write_path
    if hot_paths.applied():  # scripts/bench_profile.py's "ours" side: our env manager too
        from pipeline.training.env_factory import env_manager as our_env_manager

        env_manager = our_env_manager(plan, options, Path(options.checkpoint_settings.run_logs_dir))
    else:
        env_manager = SubprocessEnvManager(SimulationEnvFactory(plan.simulation, plan.config.env.num_areas,
                                                                plan.seed), options, plan.config.env.num_envs)
    params = EnvironmentParameterManager(options.environment_parameters, plan.seed, restore=False)
    factory = TrainerFactory(options.behaviors, write_path, True, False, plan.seed, params, None, False)
    try:
        TrainerController(factory, write_path, "bare", params, True, plan.seed).start_learning(env_manager)
    finally:
        env_manager.close()
        from mlagents.trainers.learn import write_timing_tree  # as run_training does: timers.json

        os.makedirs(options.checkpoint_settings.run_logs_dir, exist_ok=True)
        write_timing_tree(options.checkpoint_settings.run_logs_dir)


def timed(cmd: list[str], env: dict) -> float:
    return timed_cpu(cmd, env)[0]


def timed_cpu(cmd: list[str], env: dict) -> tuple[float, float]:
    """Wall seconds, and CPU seconds of the process and everything it waited for (its environment workers).

    On a shared machine the wall time mostly measures the neighbours; the CPU time measures our work.
    """
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def simulation_speed(seconds: float = 2.0, names: tuple[str, ...] = ("nav", "patrol")) -> dict[str, float]:
    import numpy as np
    from mlagents_envs.base_env import ActionTuple

    from pipeline.sim import SIMULATIONS
    from pipeline.sim.unity_env import SimulatedUnityEnv

    out = {}
    for name in names:
        world = SIMULATIONS[name]
        for areas in (16, 32, 256):
            env = SimulatedUnityEnv(world, num_areas=areas, seed=0)
            actions = np.zeros((env.num_agents, world.spec.action_size), np.float32)
            steps, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                env.set_actions(world.spec.behavior_name, ActionTuple(continuous=actions))
                env.step()
                env.get_steps(world.spec.behavior_name)
                steps += env.num_agents
            out[f"{name} ({areas} areas)"] = steps / (time.perf_counter() - start)
    return out


RESULTS = REPO / "bench" / "results.md"


def append_results(title: str, lines: list[str], out: Path = RESULTS, block: str = "") -> None:
    """One dated section of bench/results.md, with the machine it ran on; `block` (a table) goes in as is."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as f:
        f.write(f"\n## {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} — {title}\n\n- machine: {machine()}\n"
                + "".join(f"- {line}\n" for line in lines) + (f"\n{block}\n" if block else ""))
    print(f"appended to {out}")


def machine() -> str:
    with open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), platform.processor())
    import torch

    return (f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, torch {torch.__version__}")


# (asset, algorithm) -> steps of `make bench`: the target config first, then the others the issue asks about
# (fewer steps for them: SAC updates every few steps and is ~10x slower per step than PPO here).
CONFIGS = {"nav/ppo": 100_000, "patrol/ppo": 50_000, "nav/sac": 10_000, "push/poca": 30_000}


def timers_of(results: Path) -> dict:
    return json.loads(next(results.rglob("run_logs/timers.json")).read_text())["children"][
        "TrainerController.start_learning"]


def loop_seconds(results: Path) -> float:
    """ML-Agents' own timer of its training loop (TrainerController.start_learning), from run_logs/timers.json."""
    return timers_of(results)["total"]


def stepping_seconds(results: Path) -> float:
    """The loop without building the trainers (TrainerController._reset_env: policy, optimizer - and torch 2.13's
    first Optimizer imports torch._dynamo, ~2 s idle). SB3's learn() starts with its model already built."""
    timers = timers_of(results)
    return timers["total"] - timers["children"]["TrainerController._reset_env"]["total"]


def final_stat(results: Path, tag: str) -> float:
    """A stat's value at the last summary, from ML-Agents' TensorBoard events (both sides write them)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = next(results.rglob("events.out.tfevents*")).parent
    acc = EventAccumulator(str(events))
    acc.Reload()
    scalars = acc.Scalars(tag) if tag in acc.Tags()["scalars"] else []
    return max(scalars, key=lambda e: e.step).value if scalars else float("nan")


def median(xs: list[float]) -> float:
    import statistics

    return statistics.median(xs)


def load() -> float:
    return os.getloadavg()[0]


def compare(asset: str, algorithm: str, steps: int, pairs: int, tmp: str, env: dict) -> dict:
    """Alternating pairs of fresh processes: bare upstream ML-Agents, then our train stage (order swapped each pair).

    Pair i trains seed i on both sides, so the pairs also compare what the two learned over `pairs` seeds.
    """
    rows = []
    for i in range(pairs):
        overrides = [f"asset={asset}", f"algorithm={algorithm}", f"max_steps={steps}", f"seed={i}"]
        tag = f"{asset}-{algorithm}-{i}"
        side = {"bare": ([sys.executable, __file__, "--bare-child", f"{tmp}/bare-{tag}", *overrides,
                          f"results_dir={tmp}/bare-{tag}"], {**env, "MLOPS_MLAGENTS_FAST": "0"}, f"{tmp}/bare-{tag}"),
                "pipeline": ([sys.executable, "-m", "pipeline.cli", "train", "--asset", asset, "--algorithm", algorithm,
                              "--max_steps", str(steps), "--seed", str(i),
                              "--overrides", f"results_dir={tmp}/pipe-{tag}"],
                             env, f"{tmp}/pipe-{tag}")}
        row = {}
        for name in (["bare", "pipeline"] if i % 2 == 0 else ["pipeline", "bare"]):
            cmd, child_env, results = side[name]
            load_before = load()
            wall, cpu = timed_cpu(cmd, child_env)
            row[name] = {"wall": wall, "cpu": cpu, "loop": loop_seconds(Path(results)),
                         "stepping": stepping_seconds(Path(results)), "load": (load_before, load()),
                         "success": final_stat(Path(results), SUCCESS_TAG),
                         "reward": final_stat(Path(results), REWARD_TAG[algorithm])}
            print(f"{asset}/{algorithm} pair {i + 1}/{pairs} {name}: {wall:.1f} s (training loop "
                  f"{row[name]['loop']:.1f} s, CPU {cpu:.1f} s, success {row[name]['success']:.2f}, load "
                  f"{load_before:.1f}-{load():.1f})", flush=True)
        rows.append(row)
    b, p = ([r[k] for r in rows] for k in ("bare", "pipeline"))
    return {
        "config": f"{asset}/{algorithm}", "steps": steps, "pairs": pairs,
        "wall_ratio": median([y["wall"] / x["wall"] for x, y in zip(b, p)]),
        "pair_wall_ratios": [round(y["wall"] / x["wall"], 3) for x, y in zip(b, p)],
        "steps_per_s_ratio": median([x["loop"] / y["loop"] for x, y in zip(b, p)]),
        "pair_steps_per_s_ratios": [round(x["loop"] / y["loop"], 2) for x, y in zip(b, p)],
        "cpu_ratio": median([y["cpu"] / x["cpu"] for x, y in zip(b, p)]),
        "pair_cpu_ratios": [round(y["cpu"] / x["cpu"], 3) for x, y in zip(b, p)],
        "bare_wall": median([x["wall"] for x in b]), "pipeline_wall": median([y["wall"] for y in p]),
        "bare_steps_per_s": median([steps / x["loop"] for x in b]),
        "pipeline_steps_per_s": median([steps / y["loop"] for y in p]),
        "pipeline_stepping_steps_per_s": median([steps / y["stepping"] for y in p]),
        # What a run costs besides its training loop (imports, config, MLflow, model logging), over bare's.
        "fixed_overhead": median([(y["wall"] - y["loop"]) - (x["wall"] - x["loop"]) for x, y in zip(b, p)]),
        "bare_fixed": median([x["wall"] - x["loop"] for x in b]),
        "pipeline_fixed": median([y["wall"] - y["loop"] for y in p]),
        "load": (min(min(r["load"]) for r in b + p), max(max(r["load"]) for r in b + p)),
        "learning": learning(b, p, "success") if algorithm != "poca" else learning(b, p, "reward"),
    }


SUCCESS_TAG = "Environment/Success Rate"
REWARD_TAG = {"ppo": "Environment/Cumulative Reward", "sac": "Environment/Cumulative Reward",
              "poca": "Environment/Group Cumulative Reward"}


def learning(bare: list[dict], ours: list[dict], key: str) -> dict:
    """What each side learned at the end, per seed, and whether the difference is more than seed noise (Welch's t)."""
    from scipy import stats

    x, y = [r[key] for r in bare], [r[key] for r in ours]
    p = float(stats.ttest_ind(x, y, equal_var=False).pvalue) if len(x) > 1 and (set(x) | set(y)) != {x[0]} else 1.0
    return {"metric": key, "bare": [round(v, 3) for v in x], "ours": [round(v, 3) for v in y], "p": p}


def peer(steps: int, tmp: str, env: dict) -> dict:
    """SB3 PPO and our train stage on nav, same hyperparameters and budget: speed and what each learned."""
    import mlflow

    out = Path(tmp) / "sb3.json"
    load_before = load()
    wall, cpu = timed_cpu([sys.executable, str(REPO / "scripts" / "bench_peer_sb3.py"), "--steps", str(steps),
                           "--out", str(out)], env)
    sb3 = {**json.loads(out.read_text()), "wall": wall, "cpu": cpu, "load": (load_before, load())}
    result = Path(tmp) / "peer-ours.json"
    load_before = load()
    wall, cpu = timed_cpu([sys.executable, "-m", "pipeline.cli", "train", "--max_steps", str(steps), "--seed", "0",
                           "--result-json", str(result), "--overrides", f"results_dir={tmp}/peer"], env)
    run_id = json.loads(result.read_text())["run_id"]
    history = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"]).get_metric_history(run_id, SUCCESS_TAG)
    ours = {"wall": wall, "cpu": cpu, "steps_per_s": steps / loop_seconds(Path(tmp) / "peer"),
            "stepping_steps_per_s": steps / stepping_seconds(Path(tmp) / "peer"), "load": (load_before, load()),
            "success": max(history, key=lambda m: m.step).value if history else float("nan")}
    return {"steps": steps, "sb3": sb3, "ours": ours}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="*", default=list(CONFIGS), help="asset/algorithm, e.g. nav/ppo patrol/ppo")
    ap.add_argument("--steps", type=int, help="one budget for every config (default: CONFIGS)")
    ap.add_argument("--pairs", type=int, default=5, help="alternating bare/pipeline pairs for nav/ppo")
    ap.add_argument("--other-pairs", type=int, default=3, help="pairs for the other configs")
    ap.add_argument("--peer-steps", type=int, default=150_000, help="SB3 peer comparison budget (0: skip)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--bare-child", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.bare_child is not None:
        bare_mlagents(args.bare_child[1:], args.bare_child[0])
        return

    if args.peer_steps:
        import importlib.util

        if importlib.util.find_spec("stable_baselines3") is None:  # found now, not after the long pairs
            ap.error("--peer-steps needs the bench-only peer: `make bench` installs requirements-bench.txt "
                     "(or pass --peer-steps 0)")
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db", "PYTHONUNBUFFERED": "1"}
        env.pop("MLFLOW_RUN_ID", None)
        env.pop("MLOPS_MLAGENTS_FAST", None)  # the pipeline side runs as users run it
        # The store exists before timing, as it does for every run but a store's first: creating its tables
        # (~2-3 s, once per store) is not a per-run cost.
        subprocess.run([sys.executable, "-c", "import mlflow; mlflow.MlflowClient().search_experiments()"],
                       check=True, env=env, cwd=REPO)
        results = []
        for config in args.configs:
            asset, algorithm = config.split("/")
            pairs = args.pairs if config == "nav/ppo" else args.other_pairs
            results.append(compare(asset, algorithm, args.steps or CONFIGS.get(config, 100_000), pairs, tmp, env))
            print(json.dumps(results[-1]), flush=True)
        peer_row = peer(args.peer_steps, tmp, env) if args.peer_steps else None
    sim = simulation_speed()
    lines = [(f"load average (1 min) during the runs: {min(r['load'][0] for r in results):.1f}-"
              f"{max(r['load'][1] for r in results):.1f}" if results else f"load average {load():.1f}")
             + f"; {os.cpu_count()} cores shared with other engineers' work",
             ("each config: median over alternating pairs of fresh processes, pair i on seed i: bare upstream "
              "ML-Agents "
              "(MLOPS_MLAGENTS_FAST=0: TrainerController + SubprocessEnvManager, 2 workers x 16 areas) / "
              "`python -m pipeline.cli train` (hot paths + the simulation's 32 areas in process); steps/s = steps / "
              "ML-Agents' own `TrainerController.start_learning` timer")]
    for r in results:
        learned = r["learning"]
        lines.append(
            f"{r['config']}, {r['steps']:,} steps, {r['pairs']} pairs (load {r['load'][0]:.1f}-{r['load'][1]:.1f}): "
            f"wall time pipeline/bare **{r['wall_ratio']:.3f}** (pairs {', '.join(map(str, r['pair_wall_ratios']))}; "
            f"{r['pipeline_wall']:.1f} s vs {r['bare_wall']:.1f} s); "
            f"training steps/s **{r['steps_per_s_ratio']:.2f}x** "
            f"upstream (pairs {', '.join(map(str, r['pair_steps_per_s_ratios']))}; {r['pipeline_steps_per_s']:,.0f} vs "
            f"{r['bare_steps_per_s']:,.0f}); fixed cost outside the training loop {r['pipeline_fixed']:.1f} s vs "
            f"{r['bare_fixed']:.1f} s bare (overhead **{r['fixed_overhead']:+.1f} s**); CPU time (process + its "
            f"environment workers) pipeline/bare **{r['cpu_ratio']:.3f}**; learned ({learned['metric']} at the last "
            f"summary, per seed): bare {learned['bare']}, ours {learned['ours']}, Welch p={learned['p']:.2f}")
    sim32 = sim.get("nav (32 areas)")
    nav_ppo = next((r for r in results if r["config"] == "nav/ppo"), None)
    if sim32 and nav_ppo:
        lines.append(f"simulation's share of a training step (nav/ppo): {nav_ppo['pipeline_steps_per_s'] / sim32:.1%} "
                     f"(training {nav_ppo['pipeline_steps_per_s']:,.0f} steps/s vs the simulation alone at the same "
                     f"32 areas {sim32:,.0f}: the ceiling)")
    if peer_row:
        sb3, ours = peer_row["sb3"], peer_row["ours"]
        lines.append(
            f"peer, nav PPO {peer_row['steps']:,} steps, seed 0, same hyperparameters, torch "
            f"{sb3.get('torch_threads', '?')} intra-op thread(s) on both sides (load {sb3['load'][0]:.1f}-"
            f"{ours['load'][1]:.1f}): stable-baselines3 {sb3['steps_per_s']:,.0f} steps/s in learn() (process "
            f"{sb3['wall']:.1f} s), success {sb3['success_last_10k']:.0%} over its last 10k steps; ours "
            f"{ours['steps_per_s']:,.0f} steps/s over ML-Agents' whole loop, "
            f"{ours['stepping_steps_per_s']:,.0f} without "
            f"building the trainer (as learn() starts) (process {ours['wall']:.1f} s), success {ours['success']:.0%} "
            f"at the last summary; ours/SB3 steps/s **{ours['steps_per_s'] / sb3['steps_per_s']:.2f}** (whole loop), "
            f"**{ours['stepping_steps_per_s'] / sb3['steps_per_s']:.2f}** (like for like); whole-process CPU seconds "
            f"ours/SB3 {ours['cpu']:.0f}/{sb3['cpu']:.0f} = **{ours['cpu'] / sb3['cpu']:.2f}**")
    lines += [f"simulation {k}: {v:,.0f} steps/s (env stepping only, zero actions)" for k, v in sim.items()]
    print("\n".join(lines))
    append_results("training speed: pipeline vs bare ML-Agents 1.1.0, and the SB3 peer", lines, args.out)


if __name__ == "__main__":
    main()
