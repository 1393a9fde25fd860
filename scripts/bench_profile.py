"""Where an ML-Agents training spends its time, with and without our hot-path replacements (py-spy).

    python scripts/bench_profile.py --steps 40000          # nav PPO, 2 workers x 16 areas

Both sides run bench.py's bare ML-Agents wiring (TrainerController + SubprocessEnvManager + the
simulation); the "fast" side installs pipeline/mlagents_patches/hot_paths first. py-spy samples the
trainer process (not the environment workers); shares are of the samples inside
`TrainerController.start_learning`, so start-up does not dilute them. The table goes to bench/results.md.
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
    ("update_policy", "OnPolicyTrainer._update_policy"),
    ("  shuffle", "AgentBuffer.shuffle|shuffle@hot_paths.py"),
    ("  make_mini_batch", "AgentBuffer.make_mini_batch|make_mini_batch@hot_paths.py"),
    ("  optimizer update (torch)", "TorchPPOOptimizer.update"),
    ("process_trajectory", "PPOTrainer._process_trajectory"),
    ("  to_agentbuffer", "Trajectory.to_agentbuffer|to_agentbuffer@hot_paths.py"),
    ("  value estimates (torch)", "TorchOptimizer.get_trajectory_value_estimates"),
    ("  normalisation", "SimpleActor.update_normalization|ValueNetwork.update_normalization"),
    ("  get_gae", "get_gae"),
    ("env steps (SubprocessEnvManager._step)", "SubprocessEnvManager._step"),
    ("  policy get_action (torch)", "TorchPolicy.get_action"),
    ("  send to workers", "UnityEnvWorker.send"),
    ("  wait for workers", "Queue.get|Queue.get_nowait|_poll"),
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=40_000)
    ap.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    ap.add_argument("--no-record", action="store_true", help="print only; do not append to bench/results.md")
    args = ap.parse_args()
    if args.child is not None:
        child(args.child[0] == "1", args.child[1], args.child[2:])
        return
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        before, after = profile(False, args.steps, tmp), profile(True, args.steps, tmp)
    table = ["| share of the training loop (inclusive) | upstream | ours |", "|---|---|---|",
             f"| samples in `start_learning` (100/s) | {before[0]} | {after[0]} |"]
    for label, _ in ROWS:
        table.append(f"| {label.strip() if not label.startswith('  ') else '&nbsp;&nbsp;' + label.strip()} | "
                     f"{100 * before[1][label] / before[0]:.1f}% | {100 * after[1][label] / after[0]:.1f}% |")
    ratio = after[0] / before[0]
    summary = f"training loop time ours / upstream: **{ratio:.2f}** (one run each, wall-clock samples)"
    print("\n".join([*table, summary]))
    if not args.no_record:
        append_results(f"profile: nav/ppo, {args.steps:,} steps, 2 workers x 16 areas (py-spy, trainer process)",
                       [summary], block="\n".join(table))


if __name__ == "__main__":
    main()
