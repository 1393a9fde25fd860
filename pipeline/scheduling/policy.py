"""Fire policy: which fires a runner launches, skips or leaves alone, and when it next wakes.

Pure functions of times and a schedule's policies (no clock, no database, no event loop); the runner asks
them and writes what they decide to the claims database. The rules:

- A fire is *on time* if it became due after the runner came up and is at most ON_TIME_SECONDS late (a
  runner that was up but ticked late still launches it). Any other due fire is a *misfire*.
- Misfires are skipped; with `misfire: run_once` the newest one still runs if nothing is on time and it is
  at most `misfire_grace_seconds` late.
- A fire that finds its schedule's earlier fire still running: `forbid` skips it, `replace` cancels the
  running one, `allow` runs both.
- A runner is dead when it said it stopped, when its process is gone, or when its heartbeat is older than
  the lease.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Literal, Optional

from pipeline.scheduling.cron import Fire
from pipeline.scheduling.schedule import ON_TIME_SECONDS, Schedule

STOPPING = "runner stopping"  # cancel reasons starting so are interruptions, not decisions about the fire
STATES = {"FINISHED": "succeeded", "KILLED": "killed"}  # a job's end in the claims database; anything else: failed


def first_mark(watermark: Optional[float], now: float) -> float:
    """Where claiming starts: after the schedule's watermark; at first sight, the minute just gone still counts."""
    return now - ON_TIME_SECONDS if watermark is None else watermark


def split_due(fires: list[Fire], now: float, up_at: float, misfire: str,
              grace_seconds: float) -> tuple[list[Fire], list[Fire]]:
    """Due fires (oldest first) -> (to run, missed). `up_at`: when this runner came up."""
    on_time = [f for f in fires if f.due_at.timestamp() >= up_at and now - f.due_at.timestamp() <= ON_TIME_SECONDS]
    missed = [f for f in fires if f not in on_time]
    if missed and not on_time and misfire == "run_once" and now - missed[-1].due_at.timestamp() <= grace_seconds:
        return [missed[-1]], missed[:-1]
    return on_time, missed


def on_overlap(policy: str, running: list[str]) -> Literal["claim", "skip", "replace"]:
    """What a new fire does while earlier fires of its schedule are still running."""
    if running and policy == "forbid":
        return "skip"
    if running and policy == "replace":
        return "replace"
    return "claim"


def still_launchable(late: float, misfire: str, grace_seconds: float) -> bool:
    """A fire claimed by a runner that died before launching it: launched if still on time (per misfire policy)."""
    return late <= ON_TIME_SECONDS or (misfire == "run_once" and late <= grace_seconds)


def end_state(status: str) -> str:
    """A job's end state in the claims database from its result's status."""
    return STATES.get(status, "failed")


def why_not_resumed(resume_interrupted: bool, job_state: str, cancel_reason: Optional[str], attempt: int,
                    max_resumes: int) -> Optional[str]:
    """None if an ended job may continue its training run (if it has one to continue), else why not ("" when
    there is nothing worth saying: the schedule does not resume, or it was cancelled on purpose)."""
    if not resume_interrupted or job_state != "started":
        return ""
    if cancel_reason and not cancel_reason.startswith(STOPPING):
        return ""  # cancelled on purpose (overlap policy replace): that is a decision, not an interruption
    if attempt >= max_resumes:
        return f"already resumed {attempt} time(s), the schedule's maximum"
    return None


def runner_dead(stopped_at: Optional[float], heartbeat_at: float, now: float, lease_seconds: float,
                process_gone: bool = False) -> bool:
    """process_gone: the runner is on this host and its process no longer exists."""
    return stopped_at is not None or process_gone or now - heartbeat_at > lease_seconds


def upcoming(schedules: Iterable[Schedule], now: datetime, count: int = 1,
             on_error: Optional[Callable[[Schedule, Exception], None]] = None) -> list[tuple[Schedule, Fire]]:
    """The next `count` fires across enabled schedules, soonest first. A schedule whose fires cannot be
    computed is left out (and handed to `on_error`): one bad schedule never hides the others."""
    out: list[tuple[Schedule, Fire]] = []
    for s in schedules:
        if s.enabled:
            try:
                it = s.cron.fires_after(now)
                out += [(s, next(it)) for _ in range(count)]
            except Exception as exc:  # noqa: BLE001 (croniter's failures have no common base)
                if on_error is not None:
                    on_error(s, exc)
    return sorted(out, key=lambda p: p[1].due_at)[:count]


def next_of_each(schedules: Iterable[Schedule], now: datetime,
                 on_error: Optional[Callable[[Schedule, Exception], None]] = None) -> list[tuple[Schedule, Fire]]:
    """Each enabled schedule's next fire (a schedule whose fires cannot be computed goes to `on_error`)."""
    out = []
    for s in schedules:
        out += upcoming([s], now, 1, on_error)
    return out


def to_prestart(fires: Iterable[tuple[Schedule, Fire]], now: float,
                lead_seconds: float) -> list[tuple[Schedule, Fire]]:
    """Fires whose jobs' processes start now, ahead of their minute: due within the lead, not yet due."""
    if lead_seconds <= 0:
        return []
    return [(s, f) for s, f in fires if now < f.due_at.timestamp() <= now + lead_seconds]


def wake_in(now: float, next_due: Optional[float], heartbeat_seconds: float, lead_seconds: float = 0.0) -> float:
    """Seconds to sleep: until the next fire is due, or its lead before to pre-start its jobs, at most a heartbeat."""
    wait = heartbeat_seconds
    if next_due is not None:
        until = next_due - now
        if lead_seconds > 0 and until > lead_seconds:
            until -= lead_seconds
        wait = min(wait, until)
    return max(0.05, wait)


def humanize(seconds: float) -> str:
    s = int(max(0, seconds))
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return (f"{d}d" if d else "") + (f"{h}h" if h or d else "") + f"{m}m{s:02d}s"
