"""Guide API for 24/7 training: `TrainingSchedule` + `TrainingScheduler` (see pipeline/scheduling/ for how).

    scheduler = TrainingScheduler(orchestrator, max_concurrent_jobs=4, webhook_url="https://...")
    scheduler.add_schedule(TrainingSchedule("nightly", "0 2 * * *", [spec], RLTrainingConfig()))
    await scheduler.run_forever()      # until SIGTERM/SIGINT or scheduler.stop()

Fires are claimed in a sqlite file ($MLOPS_SCHEDULER_DB, default <repo>/scheduler.db) or a PostgreSQL
database (`state_path="postgresql://user@host/db"`, schedulers on several machines) before anything is
launched, so restarts or a second scheduler on the same state never train a fire twice.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from mlops_unity_pipeline import specs
from mlops_unity_pipeline.jobs import RLTrainingConfig, TrainingJob, UnityAssetSpec, UnityMLOpsOrchestrator
from pipeline.paths import REPO_ROOT
from pipeline.scheduling.claims import results_dir_for, state_location
from pipeline.scheduling.cron import CronSchedule
from pipeline.scheduling.launcher import PipelineLauncher, fire_job
from pipeline.scheduling.runner import Runner, RunnerSettings, say, utcnow
from pipeline.scheduling.schedule import Schedule


def default_state_path() -> Path | str:
    """$MLOPS_SCHEDULER_DB (a sqlite path or a postgresql:// URL), else <repo>/scheduler.db."""
    return state_location(os.environ.get("MLOPS_SCHEDULER_DB") or REPO_ROOT / "scheduler.db")


@dataclass
class TrainingSchedule:
    schedule_id: str
    cron_expression: str  # five cron fields, wall-clock time in time_zone
    asset_specs: list[UnityAssetSpec]
    rl_config: RLTrainingConfig = field(default_factory=RLTrainingConfig)
    time_zone: str = "UTC"
    overlap_policy: str = "forbid"  # allow | forbid | replace, as Kubernetes CronJob's concurrencyPolicy
    misfire_policy: str = "skip"  # skip | run_once (the newest missed fire, if at most misfire_grace_seconds late)
    misfire_grace_seconds: float = 3600.0
    enabled: bool = True
    resume_interrupted: bool = False  # continue a fire cut short (runner stopped, reboot) from its checkpoint
    max_resumes: int = 3

    def __post_init__(self) -> None:
        specs.check_schedule(self)


class TrainingScheduler:
    def __init__(self, orchestrator: UnityMLOpsOrchestrator, max_concurrent_jobs: int = 4,
                 webhook_url: str | None = None, *, webhook_secret: str | None = None,
                 state_path: str | os.PathLike | None = None, on_stop: str = "cancel",
                 clock: Callable[[], datetime] = utcnow, log: Callable[[str], None] = say, **settings):
        self.orchestrator = orchestrator
        max_concurrent_jobs = specs.whole_number("TrainingScheduler", "max_concurrent_jobs", max_concurrent_jobs, 1,
                                                 example="max_concurrent_jobs=4")
        state = state_location(state_path) if state_path else default_state_path()
        self.settings = RunnerSettings(
            state_path=state, max_concurrent_jobs=max_concurrent_jobs, webhook_url=webhook_url,
            webhook_secret=webhook_secret if webhook_secret is not None else os.environ.get("MLOPS_WEBHOOK_SECRET"),
            on_stop=on_stop, **settings)
        launcher = PipelineLauncher(orchestrator, results_dir_for(state, REPO_ROOT / "scheduler-results"), log=log)
        self.runner = Runner([], launcher, self.settings, clock=clock, log=log)

    @property
    def schedules(self) -> dict[str, Schedule]:
        return self.runner.schedules

    def add_schedule(self, schedule: TrainingSchedule) -> None:
        """Validate now (cron, time zone, policies, the full pipeline config) and add it."""
        cron = CronSchedule(schedule.cron_expression, schedule.time_zone)
        jobs = [TrainingJob(f"{schedule.schedule_id}-{spec.asset_id}", spec, schedule.rl_config)
                for spec in schedule.asset_specs]
        checked = Schedule(schedule.schedule_id, cron, jobs, overlap=schedule.overlap_policy,
                           misfire=schedule.misfire_policy, misfire_grace_seconds=schedule.misfire_grace_seconds,
                           enabled=schedule.enabled, resume_interrupted=schedule.resume_interrupted,
                           max_resumes=schedule.max_resumes)
        for job in jobs:
            self._validate(fire_job(job, schedule.schedule_id, "2000-01-01T00:00", cron.zone_name))
        self.runner.add(checked)

    def _validate(self, job: TrainingJob) -> None:
        """Compose the exact config a fire will run, so a bad one fails here rather than at 02:00."""
        from pipeline.launch.inprocess import plan_for

        plan_for(self.orchestrator.request(job, tags=getattr(job, "tags", None)))

    async def run_forever(self) -> None:
        """Fire schedules until SIGTERM/SIGINT (in the main thread) or `stop()`; then stop cleanly."""
        await self.runner.run_forever()

    def stop(self) -> None:
        self.runner.stop()

    async def tick(self) -> None:
        await self.runner.tick()

    def next_fires(self, count: int = 1):
        return self.runner.next_fires(count)
