"""Where an ML-Agents training spends its time, with and without our hot-path replacements (py-spy).

    python scripts/bench_profile.py --steps 40000          # nav PPO, 2 workers x 16 areas

Both sides run bench.py's bare ML-Agents wiring (TrainerController + the simulation); upstream steps it in
SubprocessEnvManager workers, the "fast" side installs pipeline/mlagents_patches (hot paths, and the simulation
in process: in_process_env.py). py-spy samples the trainer process (not the environment workers); shares are of
the samples inside `TrainerController.start_learning`, so start-up does not dilute them; "building the
trainer" (TrainerController._reset_env: policy, optimizer, torch 2.13 importing torch._dynamo) is one row.
    python scripts/bench_profile.py --tables upstream.txt ours.txt   # tables of two earlier py-spy raw files
The table goes to bench/results.md.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO))

from bench import append_results

# What the table reports: ML-Agents' functions (and ours standing in for them) worth naming. A pattern is a
# function's qualified name, or name@file for ours.
ROWS = [
    ("building the trainer (once)", "TrainerController._reset_env"),
    ("update_policy", "OnPolicyTrainer._update_policy"),
    ("  shuffle", "AgentBuffer.shuffle|shuffle@hot_paths.py"),
    ("  make_mini_batch", "AgentBuffer.make_mini_batch|make_mini_batch@hot_paths.py"),
    ("  optimizer update (torch)", "TorchPPOOptimizer.update"),
    ("process_trajectory", "PPOTrainer._process_trajectory"),
    ("  to_agentbuffer", "Trajectory.to_agentbuffer|to_agentbuffer@hot_paths.py"),
    ("  value estimates (torch)", "TorchOptimizer.get_trajectory_value_estimates"),
    ("  normalisation", "SimpleActor.update_normalization|ValueNetwork.update_normalization"),
    ("  get_gae", "get_gae"),
    ("env steps (EnvManager._step)", "SubprocessEnvManager._step|SimpleEnvManager._step"),
    ("  policy get_action (torch)", "TorchPolicy.get_action"),
    ("  send to workers", "UnityEnvWorker.send"),
    ("  wait for workers", "Queue.get|Queue.get_nowait|_poll"),
    ("  simulation step (in process)", "SimulatedUnityEnv.step"),
    ("AgentProcessor.add_experiences", "AgentProcessor.add_experiences"),
]
FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:)]*)")


def profile(fast: bool, steps: int, tmp: str) -> tuple[int, Counter]:
    raw = Path(tmp) / f"prof-{int(fast)}.txt"
    env = {**os.environ, "MLOPS_MLAGENTS_FAST": "1" if fast else "0", "PYTHONUNBUFFERED": "1"}
    py_spy = Path(sys.executable).with_name("py-spy")
    subprocess.run([str(py_spy), "record", "--format", "raw", "--rate", "100", "-o", str(raw), "--",
                    sys.executable, __file__, "--child", str(int(fast)), f"{tmp}/r{int(fast)}",
                    "asset=nav", "algorithm=ppo", f"max_steps={steps}", "seed=0", f"results_dir={tmp}/r{int(fast)}"],
                   check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return shares(raw)


def shares(raw: Path) -> tuple[int, Counter]:
    """Samples inside start_learning, and per ROWS label the samples with that function on the stack."""
    patterns = [(label, set(pattern.split("|"))) for label, pattern in ROWS]
    total, counts = 0, Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if "TrainerController.start_learning" not in stack:
            continue
        total += int(n)
        names = set()
        for frame in stack.split(";"):
            m = FRAME.match(frame)
            if m:
                names |= {m["func"], f"{m['func']}@{Path(m['file']).name}"}
        for label, wanted in patterns:
            if wanted & names:
                counts[label] += int(n)
    return total, counts


def child(fast: bool, results: str, overrides: list[str]) -> None:
    import bench

    if fast:
        from pipeline import mlagents_patches

        mlagents_patches.apply()
    bench.bare_mlagents(overrides, results)


def table(columns: list[tuple[str, tuple[int, Counter]]]) -> list[str]:
    rows = ["| share of the training loop (inclusive) | " + " | ".join(name for name, _ in columns) + " |",
            "|---|" + "---|" * len(columns),
            "| samples in `start_learning` (100/s) | " + " | ".join(str(total) for _, (total, _) in columns) + " |"]
    for label, _ in ROWS:
        name = label.strip() if not label.startswith("  ") else "&nbsp;&nbsp;" + label.strip()
        rows.append(f"| {name} | " + " | ".join(f"{100 * c[label] / total:.1f}%" for _, (total, c) in columns) + " |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=40_000)
    ap.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    ap.add_argument("--tables", nargs="+", type=Path, help="py-spy raw files to tabulate instead of profiling")
    ap.add_argument("--labels", nargs="+", help="column names for --tables")
    ap.add_argument("--no-record", action="store_true", help="print only; do not append to bench/results.md")
    args = ap.parse_args()
    if args.child is not None:
        child(args.child[0] == "1", args.child[1], args.child[2:])
        return
    if args.tables:
        labels = args.labels or [p.stem for p in args.tables]
        print("\n".join(table([(name, shares(p)) for name, p in zip(labels, args.tables)])))
        return
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        before, after = profile(False, args.steps, tmp), profile(True, args.steps, tmp)
    rows = table([("upstream", before), ("ours", after)])
    ratio = after[0] / before[0]
    summary = f"training loop time ours / upstream: **{ratio:.2f}** (one run each, wall-clock samples)"
    print("\n".join([*rows, summary]))
    if not args.no_record:
        append_results(f"profile: nav/ppo, {args.steps:,} steps, upstream 2 workers x 16 areas, ours 32 areas in "
                       f"process (py-spy, trainer process)", [summary], block="\n".join(rows))


if __name__ == "__main__":
    main()
