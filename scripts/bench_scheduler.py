"""Benchmark the cron runner: idle CPU, and fire to run: from the scheduled minute to the fire's MLflow run.

    python scripts/bench_scheduler.py                 # 60 s idle measurement + 5 pairs of real fires
    python scripts/bench_scheduler.py --idle 0 --pairs 3 --prestart-seconds 15

Fire to run is measured side by side: two runners up at once, one starting its fires' job processes
--prestart-seconds before the minute, one starting them at the minute (--prestart-seconds 0), firing on
alternating minutes (even / odd), so both see the same load; the medians and their ratio are reported
with the load average. Runs `scripts/cron_runner.py` exactly as deployed, each against a throw-away state
file and MLflow store (created before the runner starts, as a deployed store exists already).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TINY = ["max_steps=1000", "algorithm.summary_freq=500", "algorithm.hyperparameters.buffer_size=512",
        "algorithm.hyperparameters.batch_size=128", "env.num_envs=1", "env.num_areas=8", "evaluation.episodes=5",
        "evaluation.baselines=false"]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_runner(tmp: Path, cron: str, overrides: list[str], extra: tuple[str, ...] = ()) -> subprocess.Popen:
    tmp.mkdir(parents=True, exist_ok=True)
    sched = tmp / "schedule"
    sched.mkdir(exist_ok=True)
    (sched / "bench.yaml").write_text(json.dumps({
        "cron": cron, "assets": ["nav"], "overrides": overrides + [f"results_dir={tmp / 'results'}"],
        "overlap": "forbid", "misfire": {"policy": "skip"}}))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}", "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_RUN_ID", None)
    subprocess.run([sys.executable, "-c", "import mlflow; mlflow.search_experiments()"], env=env, cwd=REPO,
                   check=True, capture_output=True)  # the store exists before the first fire, as deployed
    proc = subprocess.Popen([sys.executable, "scripts/cron_runner.py", "--schedule-dir", str(sched),
                             "--state", str(tmp / "claims.db"), *extra], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=open(tmp / "runner.stderr", "w"), text=True)
    for line in proc.stdout:  # wait until it is up and sleeping
        if line.startswith("next: "):
            print("  runner:", line.strip())
            break
    proc.lines = []  # (arrival time, line): when a pre-started job said it was ready

    def read() -> None:
        for line in proc.stdout:
            proc.lines.append((time.time(), line.rstrip()))

    threading.Thread(target=read, daemon=True).start()
    proc.up_at = time.time()
    proc.tmp = tmp
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


def finished_fires(proc: subprocess.Popen) -> list[dict]:
    """The runner's ended fires due after it was up (the first-sight minute would time start-up, not firing)."""
    import mlflow

    tmp = proc.tmp
    db = sqlite3.connect(str(tmp / "claims.db"))
    rows = db.execute("SELECT f.scheduled_minute, f.due_at, f.claimed_at, j.started_at, j.state, j.result "
                      "FROM fires f JOIN jobs j USING (schedule_id, scheduled_minute) WHERE j.state IN "
                      "('succeeded','failed') AND f.due_at > ? ORDER BY f.due_at", (proc.up_at,)).fetchall()
    db.close()
    out = []
    client = mlflow.MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    exp = client.get_experiment_by_name("unity-mlagents")
    for minute, due, claimed, started, state, result in rows:
        runs = client.search_runs([exp.experiment_id], f"tags.scheduled_minute = '{minute}' "
                                                       "AND tags.`pipeline.stage` = 'main'")
        if not runs:
            print("  no run:", json.loads(result).get("error"))
            continue
        ready = [t for t, line in proc.lines if line.startswith(f"bench {minute}: nav-001 ready to go")]
        out.append({"scheduled_minute": minute, "state": state, "claim_s": claimed - due, "launch_s": started - due,
                    "mlflow_run_s": runs[0].info.start_time / 1000 - due, "load": os.getloadavg()[0],
                    "ready_s": ready[0] - due if ready else None})
    return out


def fire_to_run(pairs: int, lead: float) -> dict[str, list[dict]]:
    """Two runners side by side: `ahead` (prestart `lead` s) on even minutes, `cold` (prestart 0) on odd ones."""
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        procs = {"ahead": start_runner(tmp / "ahead", "*/2 * * * *", TINY, ("--prestart-seconds", str(lead))),
                 "cold": start_runner(tmp / "cold", "1-59/2 * * * *", TINY, ("--prestart-seconds", "0"))}
        seen: dict[str, list[dict]] = {k: [] for k in procs}
        try:
            while min(len(v) for v in seen.values()) < pairs:
                time.sleep(5)
                for name, proc in procs.items():
                    for f in finished_fires(proc)[len(seen[name]):]:  # each fire's load: when it was first seen
                        ready = "" if f["ready_s"] is None else f", process ready {f['ready_s']:+.1f}s"
                        print(f"  {name} fire {f['scheduled_minute']}: claimed +{f['claim_s']:.3f}s, job started "
                              f"+{f['launch_s']:.3f}s{ready}, MLflow run created +{f['mlflow_run_s']:.2f}s "
                              f"({f['state']}, load {f['load']:.1f})")
                        seen[name].append(f)
        finally:
            for proc in procs.values():
                stop(proc)
    return {k: v[:pairs] for k, v in seen.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--idle", type=float, default=60.0, help="seconds of idle CPU measurement (0: skip)")
    p.add_argument("--pairs", type=int, default=5, help="fires timed per runner (one pair: one fire of each)")
    p.add_argument("--prestart-seconds", type=float, default=45.0, help="the lead of the runner that starts ahead")
    args = p.parse_args()
    lines = []
    load0 = os.getloadavg()
    if args.idle > 0:
        print(f"idle runner for {args.idle:.0f}s ...")
        cpu = idle_cpu(args.idle)
        print(f"idle CPU: {cpu:.3f}% of one core")
        lines.append(f"idle runner: **{cpu:.3f}%** of one core over {args.idle:.0f} s")
    print(f"timing {args.pairs} pair(s) of real fires (a runner starting jobs {args.prestart_seconds:.0f} s ahead, "
          "one starting them at the minute) ...")
    fires = fire_to_run(args.pairs, args.prestart_seconds)
    ahead = statistics.median(f["mlflow_run_s"] for f in fires["ahead"])
    cold = statistics.median(f["mlflow_run_s"] for f in fires["cold"])
    loads = [f["load"] for v in fires.values() for f in v] + [load0[0], os.getloadavg()[0]]
    print(json.dumps(fires, indent=2))
    lines += [f"fire to run (scheduled minute -> the fire's MLflow `main` run created), median of {args.pairs} fires "
              f"each, two runners side by side on alternating minutes, load average {min(loads):.1f}-{max(loads):.1f}:"
              f" job process started {args.prestart_seconds:.0f} s ahead **{ahead:.2f} s**, started at the minute "
              f"{cold:.2f} s (ratio {ahead / cold:.2f})",
              "ahead, each fire (its process ready at): " + ", ".join(
                  f"{f['mlflow_run_s']:+.2f} s ({f['ready_s']:+.1f} s)" if f["ready_s"] is not None else
                  f"{f['mlflow_run_s']:+.2f} s" for f in fires["ahead"])
              + "; at the minute: " + ", ".join(f"{f['mlflow_run_s']:+.2f} s" for f in fires["cold"]),
              "claimed +{:.3f} s, job started +{:.3f} s after the minute (medians, both runners)".format(
                  statistics.median(f["claim_s"] for v in fires.values() for f in v),
                  statistics.median(f["launch_s"] for v in fires.values() for f in v))]
    after_ready = [max(0.0, f["mlflow_run_s"] - max(0.0, f["ready_s"])) for f in fires["ahead"]
                   if f["ready_s"] is not None]
    if after_ready:
        lines.append(f"ahead, from the later of the minute and its process's `ready to go` line to its run: median "
                     f"{statistics.median(after_ready):.2f} s (what the lead buys once it covers getting ready)")
    in_time = [f["mlflow_run_s"] for f in fires["ahead"] if f["ready_s"] is not None and f["ready_s"] <= 0]
    if in_time:
        lines.append(f"ahead, fires whose process was ready by the minute ({len(in_time)} of {args.pairs}): "
                     f"median **{statistics.median(in_time):.2f} s**" + ("" if len(in_time) == args.pairs else
                                                                            "; the others were still getting ready"))
    from bench import append_results  # scripts/ is this script's import path

    append_results("scheduler: idle cost and fire to run", lines)


if __name__ == "__main__":
    main()
