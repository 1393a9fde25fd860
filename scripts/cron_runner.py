"""Run training schedules 24/7: `conf/schedule/*.yaml` fires become MLflow runs of this project.

    python scripts/cron_runner.py                       # every schedule in conf/schedule/, until SIGTERM/SIGINT
    python scripts/cron_runner.py --schedule nightly --list 5     # what would run next, then exit
    python scripts/cron_runner.py --schedule nightly --set time_zone=Europe/Berlin --webhook-url https://...

The webhook secret comes from $MLOPS_WEBHOOK_SECRET (never from a config file). Fires are claimed in
--state (default $MLOPS_SCHEDULER_DB or <repo>/scheduler.db): one file = one set of fires, launched once.
--state postgresql://user@host/db shares the fires between runners on several machines.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlops_unity_pipeline.jobs import UnityMLOpsOrchestrator  # noqa: E402
from mlops_unity_pipeline.scheduling import default_state_path  # noqa: E402
from pipeline.cli import reported  # noqa: E402
from pipeline.paths import REPO_ROOT  # noqa: E402
from pipeline.redaction import redact_uri  # noqa: E402
from pipeline.scheduling.claims import results_dir_for, state_location  # noqa: E402
from pipeline.scheduling.launcher import PipelineLauncher  # noqa: E402
from pipeline.scheduling.runner import Runner, RunnerSettings, upcoming, utcnow  # noqa: E402
from pipeline.scheduling.settings import SCHEDULE_DIR, load_schedules  # noqa: E402


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scripts/cron_runner.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--schedule", action="append", default=[], metavar="NAME",
                   help="a conf/schedule/NAME.yaml to run (repeatable; default: all of them)")
    p.add_argument("--schedule-dir", type=Path, default=SCHEDULE_DIR)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="Hydra override applied to each schedule, e.g. --set time_zone=Europe/Berlin")
    p.add_argument("--state", type=state_location, default=None, metavar="PATH|URL",
                   help="claims database: a sqlite file, or postgresql://user@host/db shared by runners on "
                        "several machines (default: $MLOPS_SCHEDULER_DB or <repo>/scheduler.db)")
    p.add_argument("--max-concurrent-jobs", type=int, default=4)
    p.add_argument("--webhook-url", default=os.environ.get("MLOPS_WEBHOOK_URL"))
    p.add_argument("--webhook-timeout", type=float, default=10.0)
    p.add_argument("--on-stop", choices=("cancel", "finish"), default="cancel",
                   help="on SIGTERM/SIGINT: cancel running jobs (they save and end KILLED) or let them finish")
    p.add_argument("--prestart-seconds", type=float, default=45.0, metavar="S",
                   help="start a fire's local job processes this long before its minute, so each creates its MLflow "
                        "run right at the minute (0: start them at the minute)")
    p.add_argument("--experiment-name", default="unity-mlagents")
    p.add_argument("--list", type=int, nargs="?", const=5, metavar="N",
                   help="print the next N fires (default 5) and exit")
    return p


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    with reported():
        schedules = load_schedules(args.schedule, args.set, args.schedule_dir)
        try:
            settings = RunnerSettings(state_path=args.state or default_state_path(),
                                      max_concurrent_jobs=args.max_concurrent_jobs, webhook_url=args.webhook_url,
                                      webhook_secret=os.environ.get("MLOPS_WEBHOOK_SECRET"),
                                      webhook_timeout=args.webhook_timeout, on_stop=args.on_stop,
                                      prestart_seconds=args.prestart_seconds)
        except ValueError as exc:
            print(redact_uri(f"error: {exc}"), file=sys.stderr)
            sys.exit(2)
    if args.list is not None:
        for s in schedules:
            print(("" if s.enabled else "(disabled) ") + s.describe())
        for s, fire in upcoming(schedules, utcnow(), args.list):
            print(f"{fire.due_at.isoformat(timespec='minutes')}  {s.schedule_id}  {fire.scheduled_minute} "
                  f"{s.cron.zone_name}  {', '.join(s.asset_ids)}")
        return
    # A schedule with `executor: {kind: ray, ...}` sends its fires to that Ray cluster; the others run here.
    executors = {s.schedule_id: s.extra["executor"] for s in schedules if "executor" in s.extra}
    launcher = PipelineLauncher(UnityMLOpsOrchestrator(experiment_name=args.experiment_name),
                                results_dir_for(settings.state_path, REPO_ROOT / "scheduler-results"),
                                executors=executors)
    with reported():  # an unreachable claims database is one `error:` line
        runner = Runner(schedules, launcher, settings)
    asyncio.run(runner.run_forever())


if __name__ == "__main__":
    main()
