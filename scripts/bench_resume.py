"""Soak benchmark: kill a training again and again, resume it each time, and check the final run.

    .venv/bin/python scripts/bench_resume.py                  # 20 SIGKILLs, then 20 SIGTERMs
    .venv/bin/python scripts/bench_resume.py --kills 5 --terms 5

SIGKILL cycles: kill at a random moment after the first checkpoint, `reap`, `--resume latest`.
SIGTERM cycles: each must end the run KILLED with a checkpoint logged. At the end the training
finishes and the single MLflow run must have monotone, duplicate-free steps with no gap larger
than one checkpoint interval, and a valid ONNX policy. Results are appended to bench/results.md.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CHECKPOINT = 2000
BUDGET = (f"algorithm.summary_freq=1000 algorithm.checkpoint_interval={CHECKPOINT} "
          "algorithm.hyperparameters.buffer_size=1024 algorithm.hyperparameters.batch_size=256 "
          "env.num_envs=1 env.num_areas=8")


def start(tmp: Path, env: dict, max_steps: int, resume: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipeline.cli", "train", "--max_steps", str(max_steps),
                             "--resume", resume, "--overrides", f"{BUDGET} results_dir={tmp / 'results'}"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_checkpoint(tmp: Path, proc: subprocess.Popen, newer_than: float) -> bool:
    while proc.poll() is None:
        if any(p.stat().st_mtime > newer_than for p in (tmp / "results").glob("*/NavigationAgent/checkpoint.pt")):
            return True
        time.sleep(0.2)
    return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--terms", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results.md")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    max_steps = 1000 * (4 * (args.kills + args.terms) + 20)  # enough left to be killed every cycle
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp_s:
        tmp = Path(tmp_s)
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_RUN_ID"}
        env.update(MLFLOW_TRACKING_URI=f"sqlite:///{tmp / 'mlflow.db'}")
        import mlflow

        mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
        killed_ok = terms_ok = 0
        resume = ""
        for cycle in range(args.kills + args.terms):
            sig = signal.SIGKILL if cycle < args.kills else signal.SIGTERM
            since = time.time()
            proc = start(tmp, env, max_steps, resume)
            if not wait_checkpoint(tmp, proc, since):
                raise SystemExit(f"cycle {cycle}: training ended before a checkpoint (exit {proc.returncode})")
            time.sleep(rng.uniform(0.0, 3.0))  # a random point between checkpoints
            proc.send_signal(sig)
            proc.wait(timeout=180)
            run = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                     filter_string="tags.`pipeline.stage` = 'train'")
            assert len(run) == 1, f"cycle {cycle}: {len(run)} training runs"
            run = run[0]
            if sig == signal.SIGKILL:
                subprocess.run([sys.executable, "-m", "pipeline.cli", "reap"], cwd=REPO, env=env, check=True,
                               stdout=subprocess.DEVNULL)
                killed_ok += mlflow.get_run(run.info.run_id).info.status == "FAILED"
            else:
                arts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
                terms_ok += run.info.status == "KILLED" and "checkpoint" in arts
            resume = "latest"
            print(f"cycle {cycle + 1}: {sig.name} -> {mlflow.get_run(run.info.run_id).info.status}", flush=True)
        proc = start(tmp, env, max_steps, resume)
        proc.wait(timeout=1800)
        client = mlflow.MlflowClient()
        (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                    filter_string="tags.`pipeline.stage` = 'train'")
        steps = [m.step for m in sorted(client.get_metric_history(run.info.run_id, "Environment/Episode Length"),
                                        key=lambda m: m.timestamp)]
        from pipeline.evaluation.onnx_contract import check_policy

        check_policy(Path(run.data.tags["results_dir"]) / "NavigationAgent.onnx", (8, 2, 2), 2)
        row = {"kills": args.kills, "reaped_failed": killed_ok, "terms": args.terms,
               "terms_killed_with_checkpoint": terms_ok,
               "final_status": mlflow.get_run(run.info.run_id).info.status, "points": len(steps),
               "monotone": steps == sorted(steps), "duplicates": len(steps) - len(set(steps)),
               "max_gap": max(b - a for a, b in zip(steps, steps[1:])), "last_step": steps[-1]}
    print(json.dumps(row))
    with args.out.open("a") as f:
        f.write(f"## {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} — crash soak (nav, PPO, checkpoint every "
                f"{CHECKPOINT} steps)\n\n- {row['kills']} SIGKILLs at random points: {row['reaped_failed']} reaped "
                f"FAILED and resumed; {row['terms']} SIGTERMs: {row['terms_killed_with_checkpoint']} ended KILLED "
                f"with a checkpoint\n- final run: {row['final_status']}, one MLflow run, {row['points']} points, "
                f"monotone={row['monotone']}, duplicates={row['duplicates']}, largest step gap {row['max_gap']}, "
                f"last step {row['last_step']}, ONNX valid\n\n")


if __name__ == "__main__":
    main()
