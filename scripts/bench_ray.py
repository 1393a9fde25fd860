"""Sweep of 8 small jobs (4 configs x 2 seeds) three ways: one at a time, the local parallel launcher, and the
Ray launcher on a 2-worker cluster. Wall time, and per-job launch overhead:

    overhead per job = (wall time x jobs at a time - sum of the jobs' own pipeline-run durations) / jobs

i.e. what a job costs besides its own MLflow pipeline run: process or Ray-task start, imports, composing,
waiting for a free slot at the end. With RAY_ADDRESS set it uses that cluster (its worker count as the
concurrency, --ray-slots), else it starts a local head (no CPUs) + 2 one-CPU workers (tests/support).

The box is shared, so those figures move with its load; what Ray itself adds per job is measured side by
side instead (`--pairs N`, default 3): the same one-job training request through the local child-process
executor and through the Ray Jobs executor, alternating, one at a time; a job's overhead is its wall time
minus its MLflow run's duration, and Ray's share is the median over pairs of (Ray's - local's).

    .venv/bin/python scripts/bench_ray.py [--max-steps 2000] [--modes sequential parallel ray] [--pairs 3]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.bench import append_results  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SWEEP = ["asset=nav,patrol", "algorithm=ppo,sac", "seed=0,1"]
LAUNCHERS = {"sequential": [], "parallel": ["hydra/launcher=parallel", "hydra.launcher.n_jobs=2"],
             "ray": ["hydra/launcher=ray"]}


def small(max_steps: int, results: Path) -> list[str]:
    return [f"max_steps={max_steps}", "algorithm.summary_freq=1000", f"algorithm.checkpoint_interval={max_steps}",
            "algorithm.hyperparameters.buffer_size=1024", "algorithm.hyperparameters.batch_size=256",
            "env.num_envs=1", "env.num_areas=8", "stages=[build,train]", f"results_dir={results}",
            "tracking.experiment_name=bench-ray"]


def run_sweep(mode: str, max_steps: int, tmp: Path, env: dict) -> tuple[float, list[float]]:
    import mlflow

    store = f"sqlite:///{tmp / mode / 'mlflow.db'}"
    (tmp / mode).mkdir(parents=True)
    env = {**env, "MLFLOW_TRACKING_URI": store, "MLFLOW_EXPERIMENT_NAME": "bench-ray"}
    cmd = [sys.executable, "-m", "pipeline.run", "-m", *LAUNCHERS[mode], *SWEEP,
           *small(max_steps, tmp / mode / "results"), f"hydra.sweep.dir={tmp / mode / 'sweep'}"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{mode} sweep failed:\n{proc.stderr[-3000:]}")
    mlflow.set_tracking_uri(store)
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name("bench-ray")
    mains = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("pipeline.stage") == "main"]
    durations = [(r.info.end_time - r.info.start_time) / 1000 for r in mains]
    assert len(durations) == 8 and all(r.info.status == "FINISHED" for r in mains), [r.info.status for r in mains]
    return wall, durations


def side_by_side(pairs: int, max_steps: int, tmp: Path, dashboard_url: str) -> list[str]:
    """Ray's own cost per job: one-job training requests, local child process vs Ray job, alternating."""
    import mlflow

    from pipeline.launch.local import LocalProcessExecutor
    from pipeline.launch.ray_jobs import RayJobExecutor
    from pipeline.launch.request import LaunchRequest

    store = f"sqlite:///{tmp / 'pairs' / 'mlflow.db'}"
    (tmp / "pairs").mkdir(parents=True)
    os.environ.update({"MLFLOW_TRACKING_URI": store, "MLFLOW_EXPERIMENT_NAME": "bench-ray"})
    mlflow.set_tracking_uri(store)
    client = mlflow.MlflowClient()
    executors = {"local": LocalProcessExecutor(echo=None), "ray": RayJobExecutor(address=dashboard_url, echo=None)}
    overheads: dict[str, list[float]] = {"local": [], "ray": []}
    for i in range(pairs):
        for name in (("local", "ray") if i % 2 == 0 else ("ray", "local")):
            overrides = [o for o in small(max_steps, tmp / "pairs" / f"{name}{i}") if not o.startswith("stages=")]
            request = LaunchRequest(groups={"asset": "nav"}, stage="train", overrides=overrides)
            start = time.perf_counter()
            outcome = asyncio.run(executors[name].run(request))
            wall = time.perf_counter() - start
            if outcome.status != "FINISHED":
                raise SystemExit(f"{name} job failed: {outcome.error}")
            run = client.get_run(outcome.result["run_id"]).info
            overheads[name].append(wall - (run.end_time - run.start_time) / 1000)
            print(f"pair {i + 1} {name}: wall {wall:.1f} s, overhead {overheads[name][-1]:.1f} s", flush=True)
    added = [r - loc for loc, r in zip(overheads["local"], overheads["ray"])]
    fmt = ", ".join
    return [f"one job at a time, {pairs} alternating pairs (train stage, same request): overhead besides the MLflow "
            f"run, local child process {fmt(f'{x:.1f}' for x in overheads['local'])} s, Ray job "
            f"{fmt(f'{x:.1f}' for x in overheads['ray'])} s; **Ray adds {statistics.median(added):.1f} s/job** "
            f"(median of pairs; {fmt(f'{x:.1f}' for x in added)})"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--max-steps", type=int, default=2000)
    p.add_argument("--modes", nargs="+", default=["sequential", "parallel", "ray"], choices=sorted(LAUNCHERS))
    p.add_argument("--ray-slots", type=int, default=2, help="jobs the cluster runs at a time (its worker CPUs)")
    p.add_argument("--pairs", type=int, default=3, help="alternating local/Ray single-job pairs (0: none)")
    p.add_argument("--dashboard", default="http://127.0.0.1:8265",
                   help="the Jobs API of the cluster in RAY_ADDRESS (for --pairs)")
    args = p.parse_args()
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_RUN_ID",)}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    cluster = None
    lines = []
    with tempfile.TemporaryDirectory(prefix="bench-ray-", dir="/tmp") as tmp:
        try:
            lines.append(f"load average at the start: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
            if ("ray" in args.modes or args.pairs) and not os.environ.get("RAY_ADDRESS"):
                from tests.support.ray_cluster import RayCluster

                started = time.perf_counter()
                cluster = RayCluster(Path(tmp) / "cluster").start()
                env["RAY_ADDRESS"] = cluster.address
                lines.append(f"local cluster (head without CPUs + 2 one-CPU workers, separate `ray start` "
                             f"processes) up in {time.perf_counter() - started:.0f} s (not counted below)")
            for mode in args.modes:
                slots = {"sequential": 1, "parallel": 2, "ray": args.ray_slots}[mode]
                wall, durations = run_sweep(mode, args.max_steps, Path(tmp), env)
                overhead = (wall * slots - sum(durations)) / len(durations)
                line = (f"{mode} ({slots} at a time): wall **{wall:.1f} s**, pipeline runs {min(durations):.1f}-"
                        f"{max(durations):.1f} s, launch overhead **{overhead:.1f} s/job**")
                print(line, flush=True)
                lines.append(line)
            if args.pairs:
                lines += side_by_side(args.pairs, args.max_steps, Path(tmp),
                                      cluster.dashboard_url if cluster is not None else args.dashboard)
            lines.append(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        finally:
            if cluster is not None:
                cluster.stop()
    lines.append(f"8 jobs = {' '.join(SWEEP)}, max_steps={args.max_steps}, stages build+train, 1 env worker x 8 areas; "
                 "the box was shared with other work while measuring: numbers are indicative")
    append_results("Ray launcher vs local parallel vs one at a time: 8 small sweep jobs", lines)


if __name__ == "__main__":
    main()
