"""Benchmark: the fixed cost of one `train` stage over bare upstream ML-Agents, on a budget small enough that
start-up and tear-down dominate, and what the instant commands cost.

    python scripts/bench_startup.py                            # this checkout vs bare, 5 rounds of 2k nav PPO steps
    python scripts/bench_startup.py --tree before=/tmp/old --tree after=.   # two checkouts side by side
    python scripts/bench_startup.py --tree after=. --components-tree before=/tmp/old   # old one: components only

Each round runs, as fresh processes in rotating order, bare ML-Agents (`scripts/bench.py --bare-child` of the
first tree: ML-Agents' own wiring, MLOPS_MLAGENTS_FAST=0) and `python -m pipeline.cli train` of each tree
(a tree is a checkout of this repository: `git archive <commit> | tar -x -C <dir>`; it runs on this venv).
Reported per tree, median over rounds of the per-round differences to bare:
  wall      whole process wall time (imports, config, MLflow run, training, model logging, picture, exit);
  fixed     wall minus ML-Agents' own `TrainerController.start_learning` timer (what scripts/bench.py reports);
  cpu       CPU seconds of the process and the children it waited for.
Then the components of a stage's start-up and tear-down, each timed in a fresh process per tree (`--components`),
and `--help` / config-error wall times. Results go to bench/results.md with the machine and the load average.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable


def timed(cmd: list[str], env: dict, cwd: Path) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def loop_seconds(results: Path) -> float:
    timers = json.loads(next(results.rglob("run_logs/timers.json")).read_text())
    return timers["children"]["TrainerController.start_learning"]["total"]


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def rounds(trees: dict[str, Path], steps: int, n: int, tmp: str, env: dict) -> dict[str, list[dict]]:
    """n rounds of bare + every tree, the order rotated each round; per side its wall, cpu, loop and load."""
    first = next(iter(trees.values()))
    overrides = ["asset=nav", "algorithm=ppo", f"max_steps={steps}", "seed=0"]
    sides = ["bare", *trees]
    out: dict[str, list[dict]] = {s: [] for s in sides}
    for i in range(n):
        order = sides[i % len(sides):] + sides[:i % len(sides)]
        for side in order:
            results = Path(tmp) / f"{side}-{i}"
            if side == "bare":
                cmd = [PY, "scripts/bench.py", "--bare-child", str(results), *overrides, f"results_dir={results}"]
                cwd, child_env = first, {**env, "MLOPS_MLAGENTS_FAST": "0"}
            else:
                cmd = [PY, "-m", "pipeline.cli", "train", "--asset", "nav", "--algorithm", "ppo", "--max_steps",
                       str(steps), "--seed", "0", "--overrides", f"results_dir={results}"]
                cwd, child_env = trees[side], env
            la = os.getloadavg()[0]
            wall, cpu = timed(cmd, child_env, cwd)
            row = {"wall": wall, "cpu": cpu, "loop": loop_seconds(results), "load": la}
            out[side].append(row)
            print(f"round {i + 1}/{n} {side}: wall {wall:.1f} s, loop {row['loop']:.1f} s, cpu {cpu:.1f} s, "
                  f"load {la:.1f}", flush=True)
    return out


def differences(out: dict[str, list[dict]]) -> dict[str, dict[str, float]]:
    bare = out["bare"]
    med = statistics.median
    res = {"bare": {"wall": med(r["wall"] for r in bare), "fixed": med(r["wall"] - r["loop"] for r in bare),
                    "cpu": med(r["cpu"] for r in bare)}}
    for side, rows in out.items():
        if side == "bare":
            continue
        res[side] = {
            "wall": med(r["wall"] for r in rows), "fixed": med(r["wall"] - r["loop"] for r in rows),
            "cpu": med(r["cpu"] for r in rows),
            "d_wall": med(r["wall"] - b["wall"] for r, b in zip(rows, bare)),
            "d_fixed": med((r["wall"] - r["loop"]) - (b["wall"] - b["loop"]) for r, b in zip(rows, bare)),
            "d_cpu": med(r["cpu"] - b["cpu"] for r, b in zip(rows, bare)),
            "pairs_d_wall": [round(r["wall"] - b["wall"], 1) for r, b in zip(rows, bare)],
        }
    return res


# --- components: one fresh process per tree, phases in the order a train stage meets them -----------------------

def components_child(onnx: str, uri: str) -> None:
    """Times each phase (wall, CPU) in this process; prints one JSON line. Runs with cwd = the tree."""
    sys.path.insert(0, os.getcwd())
    T, P = time.perf_counter, time.process_time
    phases: dict[str, tuple[float, float]] = {}

    def phase(name, fn):
        t, p = T(), P()
        value = fn()
        phases[name] = (T() - t, P() - p)
        return value

    startup_gc = None
    if Path("pipeline/startup_gc.py").exists():  # the tree pauses the collector during start-up
        # (checked on the tree: the venv's editable install would find this checkout's module for any tree)
        from pipeline import startup_gc
    if startup_gc:
        startup_gc.pause()
    phase("import torch + ML-Agents trainers (both sides)", lambda: __import__("mlagents.plugins.trainer_type"))
    phase("import mlflow (pandas, genai, gateway, ...)", lambda: __import__("mlflow"))
    phase("import MLflow's SQL store (sqlalchemy, alembic)",
          lambda: __import__("mlflow.store.tracking.sqlalchemy_store"))

    def open_store():
        from pipeline.tracking import store

        store.configure(uri)
        return store.experiment_id("bench-startup")

    experiment = phase("open the store, find the experiment", open_store)

    def run_start():

        from pipeline.tracking import runs

        ctx = runs.stage_run("train", experiment, "bench-startup", {"asset": "nav"})
        ctx.__enter__()
        runs.log_params({f"p{i}": i for i in range(120)})
        return ctx

    ctx = phase("start the run, log params", run_start)
    phase("import torch._dynamo (first optimizer; both sides)", lambda: __import__("torch._dynamo"))

    def log_model():
        from pipeline.registry import policy_model

        policy_model.log_policy_model(Path(onnx), "NavigationAgent", {"raycast": 8, "velocity": 2, "target": 2})

    phase("log the ONNX policy model", log_model)

    def picture():
        from pipeline.reporting import plots

        with tempfile.TemporaryDirectory() as d:
            plots.learning_curve({"Environment/Cumulative Reward": [(5000, 0.1), (10000, 0.3)],
                                  "Environment/Success Rate": [(5000, 0.0), (10000, 0.2)]}, "t", Path(d) / "c.png")

    phase("draw the learning curve (matplotlib)", picture)
    phase("end the run", lambda: ctx.__exit__(None, None, None))
    print(json.dumps(phases))


def components(trees: dict[str, Path], repeats: int, onnx: Path, tmp: str, env: dict) -> dict[str, dict]:
    out: dict[str, list[dict]] = {name: [] for name in trees}
    for i in range(repeats):
        for name, tree in (list(trees.items()) if i % 2 == 0 else list(trees.items())[::-1]):
            uri = f"sqlite:///{tmp}/components.db"
            proc = subprocess.run([PY, str(Path(__file__).resolve()), "--components-child", str(onnx), uri],
                                  cwd=tree, env={**env, "MLFLOW_TRACKING_URI": uri}, capture_output=True, text=True,
                                  check=True)
            out[name].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return {name: {k: (statistics.median(r[k][0] for r in rows), statistics.median(r[k][1] for r in rows))
                   for k in rows[0]} for name, rows in out.items()}


def instant(tree: Path, env: dict, repeats: int = 3) -> dict[str, float]:
    cases = {"`python -m pipeline.cli --help`": ["--help"],
             "config error (`train --max_steps -5`)": ["train", "--max_steps", "-5"],
             "algorithm error (`train --overrides algorithm.hyperparameters.batch_size=abc`)":
                 ["train", "--overrides", "algorithm.hyperparameters.batch_size=abc"]}
    out = {}
    for name, args in cases.items():
        walls = []
        for _ in range(repeats):
            start = time.perf_counter()
            subprocess.run([PY, "-m", "pipeline.cli", *args], cwd=tree, env=env, capture_output=True)
            walls.append(time.perf_counter() - start)
        out[name] = statistics.median(walls)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", action="append", default=[], metavar="NAME=DIR", help="a checkout to measure")
    ap.add_argument("--components-tree", action="append", default=[], metavar="NAME=DIR",
                    help="a checkout whose components (not whole trainings) are measured too")
    ap.add_argument("--steps", type=int, default=2_000, help="nav PPO steps per training")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--component-repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results.md")
    ap.add_argument("--json", type=Path, help="also save the measurements here")
    ap.add_argument("--onnx", type=Path, help="with --rounds 0: a nav policy for the components (no trainings)")
    ap.add_argument("--report-from", type=Path, help="append the results of a saved --json run; measure nothing")
    ap.add_argument("--no-append", action="store_true")
    ap.add_argument("--note", action="append", default=[], help="a line added to the results (what the trees are)")
    ap.add_argument("--components-child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.components_child:
        components_child(*args.components_child)
        return
    if args.report_from:
        report(json.loads(args.report_from.read_text()), args.note, args.out)
        return
    trees = {k: str(Path(v).resolve()) for k, v in (t.split("=", 1) for t in args.tree)} or {"pipeline": str(REPO)}
    all_trees = {**{k: str(Path(v).resolve()) for k, v in (t.split("=", 1) for t in args.components_tree)}, **trees}
    data = {"steps": args.steps, "rounds_n": args.rounds, "repeats": args.component_repeats, "trees": trees,
            "all_trees": all_trees, "load_start": load()}
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db", "PYTHONUNBUFFERED": "1"}
        for key in ("MLFLOW_RUN_ID", "MLOPS_MLAGENTS_FAST"):
            env.pop(key, None)
        # The store exists before timing, as for every run but a store's first (creating tables is once per store).
        subprocess.run([PY, "-c", "import mlflow; mlflow.MlflowClient().search_experiments()"], check=True, env=env)
        if args.rounds:
            data["rounds"] = rounds({k: Path(v) for k, v in trees.items()}, args.steps, args.rounds, tmp, env)
            data["summary"] = differences(data["rounds"])
        onnx = args.onnx or next(Path(tmp).glob(f"{next(iter(trees))}-0/*/NavigationAgent.onnx"))
        data["components"] = components({k: Path(v) for k, v in all_trees.items()}, args.component_repeats, onnx,
                                        tmp, env)
        data["instant"] = {name: instant(Path(tree), env) for name, tree in all_trees.items()}
    data["load_end"] = load()
    print(json.dumps(data, indent=1))
    if args.json:
        args.json.write_text(json.dumps(data, indent=1))
    if not args.no_append:
        report(data, args.note, args.out)


def report(data: dict, notes: list[str], out: Path) -> None:
    sys.path.insert(0, str(REPO / "scripts"))
    from bench import append_results

    diff, comp, fast = data.get("summary") or {}, data["components"], data["instant"]
    loads = f"load average (1/5/15 min) {data['load_start']} at the start, {data['load_end']} at the end"
    if diff:
        b = diff["bare"]
        lines = [f"nav PPO, {data['steps']:,} steps, {data['rounds_n']} rounds of fresh processes in rotating order "
                 f"(bare upstream ML-Agents with MLOPS_MLAGENTS_FAST=0 / `python -m pipeline.cli train`); {loads}",
                 f"bare: wall {b['wall']:.1f} s, outside its training loop {b['fixed']:.1f} s, CPU {b['cpu']:.1f} s"]
    else:
        lines = [f"components only (no trainings); {loads}"]
    for side, d in diff.items():
        if side != "bare":
            lines.append(f"{side}: wall {d['wall']:.1f} s, over bare **{d['d_wall']:+.1f} s** (rounds "
                         f"{', '.join(f'{x:+.1f}' for x in d['pairs_d_wall'])}); outside the training loop "
                         f"{d['fixed']:.1f} s, over bare **{d['d_fixed']:+.1f} s**; CPU over bare "
                         f"**{d['d_cpu']:+.1f} s**")
    lines += notes
    names = list(data["all_trees"])
    table = f"| component (fresh process, wall / CPU s, median of {data['repeats']}) | " + " | ".join(names) + \
        " |\n|---|" + "---|" * len(names) + "\n"
    for k in comp[names[0]]:
        table += f"| {k} | " + " | ".join(f"{comp[n][k][0]:.2f} / {comp[n][k][1]:.2f}" for n in names) + " |\n"
    table += "| **instant commands (wall s, median of 3)** |" + " |" * len(names) + "\n"
    for k in fast[names[0]]:
        table += f"| {k} | " + " | ".join(f"{fast[n][k]:.2f}" for n in names) + " |\n"
    append_results("fixed cost per run: train stage vs bare ML-Agents on a tiny budget", lines, out, table)


if __name__ == "__main__":
    main()
