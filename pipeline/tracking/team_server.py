"""Start a team MLflow server on this machine to try the multi-node setup: PostgreSQL + `mlflow server`.

    python -m pipeline.tracking.team_server --dir team-server --port 5001      # or: make team-server

PostgreSQL (this machine's packages) keeps its data in `<dir>/pgdata` and listens on 127.0.0.1:`--pg-port`;
`mlflow server` stores runs there and keeps artifacts in `<dir>/artifacts`, serving them to clients over
HTTP (`--artifacts-destination`), so worker machines need no shared filesystem. Two databases:
`mlflow` (the tracking store) and `scheduler` (claims of `scripts/cron_runner.py --state`). The directory
persists: starting again continues the same store. Ctrl-C (or SIGTERM) stops both servers.
A production team server is the same `mlflow server` command pointed at the team's own PostgreSQL.
"""
from __future__ import annotations

import argparse
import signal
import socket
import sys
import threading
from pathlib import Path

from pipeline.tracking.local_postgres import LocalPostgres, PostgresUnavailable
from pipeline.tracking.tracking_server import TrackingServer

DATABASES = ("mlflow", "scheduler")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline.tracking.team_server", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", type=Path, default=Path("team-server"),
                   help="where PostgreSQL's data, the artifacts and the logs live (default: team-server)")
    p.add_argument("--port", type=int, default=5001, help="the MLflow server's port (default: 5001)")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface the MLflow server listens on; 0.0.0.0 lets other machines in (default: 127.0.0.1)")
    p.add_argument("--pg-port", type=int, default=5433, help="PostgreSQL's port on 127.0.0.1 (default: 5433)")
    p.add_argument("--workers", type=int, default=2, help="MLflow server worker processes (default: 2)")
    return p


def port_taken(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    root = args.dir.resolve()
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(root.stat().st_mode | 0o011)  # PostgreSQL's own user must be able to enter it
    for what, host, port in (("--port", args.host, args.port), ("--pg-port", "127.0.0.1", args.pg_port)):
        if port_taken(host, port):
            print(f"error: {what} {port} is already in use on {host} (another team server?); "
                  f"stop it or choose another {what}", file=sys.stderr)
            return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        pg = LocalPostgres(root / "pgdata", port=args.pg_port, log_path=root / "postgres.log")
    except PostgresUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"team-server: PostgreSQL in {pg.data_dir} on 127.0.0.1:{pg.port} (log {pg.log_path})", flush=True)
    pg.start()
    try:
        urls = {db: pg.create_database(db) for db in DATABASES}
        server = TrackingServer(urls["mlflow"], log_path=root / "mlflow-server.log", port=args.port,
                                artifacts_destination=root / "artifacts", host=args.host, workers=args.workers)
        print(f"team-server: mlflow server on {args.host}:{args.port} (log {server.log_path})", flush=True)
        with server:
            print(f"team-server: ready. Ctrl-C stops it.\n"
                  f"  export MLFLOW_TRACKING_URI={server.url}\n"
                  f"  scheduler claims: --state {urls['scheduler']}", flush=True)
            stop.wait()
            print("team-server: stopping", flush=True)
    finally:
        pg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
