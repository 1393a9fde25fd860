"""Benchmark the cron runner: idle CPU, and trigger latency from the scheduled minute to the MLflow run.

    python scripts/bench_scheduler.py                 # 60 s idle measurement + 1 real every-minute fire
    python scripts/bench_scheduler.py --idle 300 --fires 2

Runs `scripts/cron_runner.py` exactly as deployed, against a throw-away state file and MLflow store.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TINY = ["max_steps=1000", "algorithm.summary_freq=500", "algorithm.hyperparameters.buffer_size=512",
        "algorithm.hyperparameters.batch_size=128", "env.num_envs=1", "env.num_areas=8", "evaluation.episodes=5",
        "evaluation.baselines=false"]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_runner(tmp: Path, cron: str, overrides: list[str]) -> subprocess.Popen:
    sched = tmp / "schedule"
    sched.mkdir(exist_ok=True)
    (sched / "bench.yaml").write_text(json.dumps({
        "cron": cron, "assets": ["nav"], "overrides": overrides + [f"results_dir={tmp / 'results'}"],
        "overlap": "forbid", "misfire": {"policy": "skip"}}))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}", "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_RUN_ID", None)
    proc = subprocess.Popen([sys.executable, "scripts/cron_runner.py", "--schedule-dir", str(sched),
                             "--state", str(tmp / "claims.db")], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=open(tmp / "runner.stderr", "w"), text=True)
    for line in proc.stdout:  # wait until it is up and sleeping
        if line.startswith("next: "):
            print("  runner:", line.strip())
            break
    proc.up_at = time.time()
    return proc


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()


def idle_cpu(seconds: float) -> float:
    with tempfile.TemporaryDirectory() as d:
        proc = start_runner(Path(d), "0 2 1 1 *", [])  # far away: the runner only heartbeats
        c0, t0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(seconds)
        used, wall = cpu_seconds(proc.pid) - c0, time.monotonic() - t0
        stop(proc)
    return 100.0 * used / wall


def trigger_latency(fires: int) -> list[dict]:
    import mlflow

    out = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        proc = start_runner(tmp, "* * * * *", TINY)
        try:
            while len(out) < fires:
                time.sleep(1)
                db = sqlite3.connect(str(tmp / "claims.db"))
                # Only fires due after the runner was up: the first-sight minute would time startup, not triggering.
                rows = db.execute("SELECT f.scheduled_minute, f.due_at, f.claimed_at, j.started_at, j.state, j.result "
                                  "FROM fires f JOIN jobs j USING (schedule_id, scheduled_minute) WHERE j.state IN "
                                  "('succeeded','failed') AND f.due_at > ? ORDER BY f.due_at", (proc.up_at,)).fetchall()
                db.close()
                if len(rows) > len(out):
                    minute, due, claimed, started, state, result = rows[len(out)]
                    if state != "succeeded":
                        print("  failed:", json.loads(result).get("error"))
                    mlflow.set_tracking_uri(f"sqlite:///{tmp / 'mlflow.db'}")
                    runs = mlflow.search_runs(experiment_names=["unity-mlagents"], output_format="list",
                                              filter_string=f"tags.scheduled_minute = '{minute}' "
                                                            "AND tags.`pipeline.stage` = 'main'")
                    created = runs[0].info.start_time / 1000
                    out.append({"scheduled_minute": minute, "state": state, "claim_s": claimed - due,
                                "launch_s": started - due, "mlflow_run_s": created - due})
                    print(f"  fire {minute}: claimed +{claimed - due:.3f}s, child launched +{started - due:.3f}s, "
                          f"MLflow run created +{created - due:.2f}s ({state})")
        finally:
            stop(proc)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--idle", type=float, default=60.0, help="seconds of idle CPU measurement")
    p.add_argument("--fires", type=int, default=1, help="real every-minute fires to time")
    args = p.parse_args()
    print(f"idle runner for {args.idle:.0f}s ...")
    cpu = idle_cpu(args.idle)
    print(f"idle CPU: {cpu:.3f}% of one core")
    print(f"waiting for {args.fires} real fire(s) at the next minute boundary ...")
    fires = trigger_latency(args.fires)
    print(json.dumps({"idle_cpu_percent": round(cpu, 4), "fires": fires}, indent=2))
    from bench import append_results  # scripts/ is this script's import path

    append_results("scheduler: idle cost and trigger latency", [
        f"idle runner: **{cpu:.3f}%** of one core over {args.idle:.0f} s"]
        + [f"fire {f['scheduled_minute']}: claimed +{f['claim_s']:.3f} s, child launched +{f['launch_s']:.3f} s, "
           f"MLflow run created +{f['mlflow_run_s']:.2f} s after the scheduled minute" for f in fires])


if __name__ == "__main__":
    main()
