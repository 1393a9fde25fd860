"""A validated schedule: when it fires, what each fire trains, and its overlap and misfire policies."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pipeline.config.errors import ConfigError
from pipeline.scheduling.cron import CronSchedule

if TYPE_CHECKING:  # the guide API imports the scheduler, which imports this module
    from pipeline.launch.job_specs import TrainingJob

# As Kubernetes CronJob's concurrencyPolicy names them.
OVERLAP_POLICIES = ("allow", "forbid", "replace")
# What happens to fires missed while no runner was up (or the machine was asleep):
#   skip      every missed fire is skipped (one fire.skipped event says which)
#   run_once  the newest missed fire runs once if it is at most misfire_grace_seconds late; the rest are skipped
MISFIRE_POLICIES = ("skip", "run_once")
# A fire launched within this many seconds of its due time is on time, not a misfire.
ON_TIME_SECONDS = 60.0
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ScheduleError(ConfigError):
    """A schedule the runner refuses at load; the message names the field and the fix."""


def check_schedule_id(schedule_id: str) -> None:
    """Checked before anything is made from it (its jobs' ids start with it)."""
    if not _ID.match(schedule_id or ""):
        raise ScheduleError(f"schedule_id {schedule_id!r} must be 1-64 letters, digits, '_', '.' or '-', "
                            "starting with a letter or digit (it names MLflow tags and webhook events)")


@dataclass
class Schedule:
    schedule_id: str
    cron: CronSchedule
    jobs: list[TrainingJob]  # one per asset: the template every fire launches
    overlap: str = "forbid"
    misfire: str = "skip"
    misfire_grace_seconds: float = 3600.0
    enabled: bool = True
    # A fire cut short from outside (runner stopped or killed, machine rebooted, trainer killed) is launched
    # again to continue its own training run from the last checkpoint, at most max_resumes times.
    resume_interrupted: bool = False
    max_resumes: int = 3
    extra: dict = field(default_factory=dict)  # shown in `--list` (algorithm, mode, ...)

    def __post_init__(self) -> None:
        check_schedule_id(self.schedule_id)
        if self.overlap not in OVERLAP_POLICIES:
            raise ScheduleError(f"{self.schedule_id}: overlap {self.overlap!r} is not a policy; "
                                f"choose one of {', '.join(OVERLAP_POLICIES)}")
        if self.misfire not in MISFIRE_POLICIES:
            raise ScheduleError(f"{self.schedule_id}: misfire.policy {self.misfire!r} is not a policy; "
                                f"choose one of {', '.join(MISFIRE_POLICIES)}")
        if not self.misfire_grace_seconds >= 0:
            raise ScheduleError(f"{self.schedule_id}: misfire.grace_seconds must be >= 0, got "
                                f"{self.misfire_grace_seconds}")
        if isinstance(self.max_resumes, bool) or not isinstance(self.max_resumes, int) or self.max_resumes < 0:
            raise ScheduleError(f"{self.schedule_id}: resume.max_attempts must be an integer >= 0, got "
                                f"{self.max_resumes!r}")
        if not self.jobs:
            raise ScheduleError(f"{self.schedule_id}: a schedule needs at least one asset")
        ids = [j.asset_spec.asset_id for j in self.jobs]
        dupes = sorted({a for a in ids if ids.count(a) > 1})
        if dupes:
            raise ScheduleError(f"{self.schedule_id}: asset ids must be unique within a schedule; "
                                f"{', '.join(dupes)} appears more than once")

    @property
    def asset_ids(self) -> list[str]:
        return [j.asset_spec.asset_id for j in self.jobs]

    def describe(self) -> str:
        what = ", ".join(f"{j.asset_spec.asset_id} ({(j.rl_config.algorithm or 'asset default').lower()}, "
                         f"{j.rl_config.training_mode}, {j.rl_config.max_steps:,} steps)" for j in self.jobs)
        return (f"{self.schedule_id}: '{self.cron.expression}' {self.cron.zone_name}; overlap={self.overlap}, "
                f"misfire={self.misfire}" + (f", resumes interrupted fires (at most {self.max_resumes}x)"
                                             if self.resume_interrupted else "") + f"; trains {what}")
