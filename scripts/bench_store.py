"""Soak benchmark: N processes logging metrics into one embedded sqlite MLflow store at once.

    .venv/bin/python scripts/bench_store.py                 # 8 writers x 1000 points (issue target)
    .venv/bin/python scripts/bench_store.py --writers 4 --points 200

Counts lost points and errors ("database is locked" and the like) and appends to bench/results.md.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

WRITER = """
import sys, mlflow
mlflow.set_tracking_uri(sys.argv[1]); mlflow.set_experiment("soak")
errors = []
with mlflow.start_run() as run:
    for i in range(int(sys.argv[2])):
        try:
            mlflow.log_metric("soak", float(i), step=i)
        except Exception as exc:  # counted, not hidden: the point of the benchmark
            errors.append(repr(exc)[:200])
print(run.info.run_id, len(errors), errors[:1])
"""


def soak(writers: int, points: int, store: Path) -> dict:
    uri = f"sqlite:///{store}"
    subprocess.run([sys.executable, "-c", "import mlflow,sys; mlflow.set_tracking_uri(sys.argv[1]); "
                    "mlflow.set_experiment('soak')", uri], check=True)  # schema migration once, not 8 times
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, uri, str(points)], stdout=subprocess.PIPE, text=True)
             for _ in range(writers)]
    outs = [p.communicate()[0].split(maxsplit=2) for p in procs]
    seconds = time.perf_counter() - start
    import mlflow

    client = mlflow.MlflowClient(uri)
    stored = {run_id: len(client.get_metric_history(run_id, "soak")) for run_id, _, _ in outs}
    return {"writers": writers, "points_each": points, "seconds": round(seconds, 1),
            "errors": sum(int(e) for _, e, _ in outs), "lost": sum(points - n for n in stored.values()),
            "exit_codes": [p.returncode for p in procs]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--writers", type=int, default=8)
    ap.add_argument("--points", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results.md")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        row = soak(args.writers, args.points, Path(tmp) / "mlflow.db")
    print(json.dumps(row))
    from bench import append_results  # scripts/ is this script's import path

    append_results(f"store soak: {row['writers']} writers x {row['points_each']} metric points, one sqlite store",
                   [f"lost points: **{row['lost']}**, errors: **{row['errors']}**, wall time {row['seconds']} s"],
                   args.out)


if __name__ == "__main__":
    main()
