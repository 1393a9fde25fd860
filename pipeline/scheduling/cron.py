"""When a schedule fires: cron expressions (croniter) read as wall-clock minutes in the schedule's zone.

A fire is identified by its *scheduled minute*: the local wall-clock minute the expression names
("2025-03-09T02:30"), never by an instant. That makes DST transitions neither skip nor double a fire:

- minutes the clock jumps over (spring forward) fire at the first real minute after the jump; several
  jumped-over minutes collapse into that single fire (an every-15-minutes schedule does not fire 5x at 03:00);
- minutes the clock shows twice (fall back) fire once, at their first occurrence.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from croniter.croniter import CroniterError

from pipeline.config.errors import ConfigError

UTC = timezone.utc
MINUTE = timedelta(minutes=1)
MINUTE_FORMAT = "%Y-%m-%dT%H:%M"
MAX_YEARS = 8  # a schedule must fire within this many years (February 29th does, in at most 8)
ALIASES = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")


class CronError(ConfigError):
    """A schedule's expression or time zone is unusable; the message says which and why."""


@dataclass(frozen=True)
class Fire:
    scheduled_minute: str  # local wall-clock minute, MINUTE_FORMAT: the fire's identity
    due_at: datetime  # the UTC instant it becomes due


def parse_expression(expression: str, field: str = "cron") -> str:
    text = " ".join(str(expression).split())
    if text.startswith("@"):
        if text not in ALIASES:
            raise CronError(f"{field} {expression!r}: unknown alias; use one of {', '.join(ALIASES)} "
                            "or five fields 'minute hour day-of-month month day-of-week'")
    elif len(text.split()) != 5:
        why = ": fires are claimed per minute, so seconds are not supported" if len(text.split()) > 5 else ""
        raise CronError(f"{field} {expression!r} has {len(text.split())} fields; a schedule needs exactly five "
                        f"('minute hour day-of-month month day-of-week', e.g. '0 2 * * *' for 02:00 daily){why}")
    try:
        croniter(text, datetime(2000, 1, 1))
    except (CroniterError, ValueError, KeyError) as exc:
        raise CronError(f"{field} {expression!r} is not a valid cron expression: {exc}") from None
    # Valid but never due ('0 0 30 2 *': February 30th) would make croniter fail at every look-ahead.
    try:
        croniter(text, datetime.now(UTC).replace(tzinfo=None), max_years_between_matches=MAX_YEARS).get_next(datetime)
    except (CroniterError, ValueError, KeyError):
        raise CronError(f"{field} {expression!r} never fires: no minute matches it within {MAX_YEARS} years (a day "
                        "that does not exist in that month, such as February 30th or April 31st?); fix the "
                        "day-of-month and month fields, e.g. '0 0 28 2 *'") from None
    return text


def parse_zone(name: str, field: str = "time_zone") -> ZoneInfo:
    try:
        return ZoneInfo(str(name))
    except (ZoneInfoNotFoundError, ValueError):
        raise CronError(f"{field} {name!r} is not an IANA time zone; use a name like 'UTC', 'Europe/Berlin' "
                        "or 'America/New_York'") from None


class CronSchedule:
    def __init__(self, expression: str, time_zone: str = "UTC"):
        self.expression = parse_expression(expression)
        self.zone_name = str(time_zone)
        self.zone = parse_zone(time_zone)

    def __repr__(self) -> str:
        return f"CronSchedule({self.expression!r}, {self.zone_name!r})"

    def _instant(self, local: datetime) -> datetime:
        """The UTC instant a local wall-clock minute happens at (see the module docstring for DST)."""
        first = local.replace(tzinfo=self.zone, fold=0).astimezone(UTC)
        if first.astimezone(self.zone).replace(tzinfo=None) == local:
            return first  # exists; when it exists twice this is the first time
        # In a gap: the first minute after the jump. Gaps are whole minutes, a few hours at most.
        lo = local.replace(tzinfo=self.zone, fold=1).astimezone(UTC)
        lo, hi = min(lo, first), max(lo, first)
        while hi - lo > MINUTE:
            mid = lo + (hi - lo) // 2
            mid = mid.replace(second=0, microsecond=0)
            if mid.astimezone(self.zone).replace(tzinfo=None) > local:
                hi = mid
            else:
                lo = mid
        return hi

    def _candidates(self, start_local: datetime) -> Iterator[tuple[datetime, datetime]]:
        it = croniter(self.expression, start_local, max_years_between_matches=MAX_YEARS)
        while True:
            local = it.get_next(datetime)
            yield local, self._instant(local)

    def fires_after(self, after: datetime) -> Iterator[Fire]:
        """Fires due strictly after the UTC instant `after`, in order, forever."""
        after = after.astimezone(UTC)
        # Start a few hours early in wall-clock time so minutes moved by a DST jump are not lost.
        start = after.astimezone(self.zone).replace(tzinfo=None, second=0, microsecond=0) - timedelta(hours=4)
        pending: tuple[datetime, datetime] | None = None
        for local, instant in self._candidates(start):
            if pending is not None and instant != pending[1] and pending[1] > after:
                yield Fire(pending[0].strftime(MINUTE_FORMAT), pending[1])
            # Minutes that land on the same instant are one fire, named for the last (the real) minute.
            pending = (local, instant)

    def fires_between(self, after: datetime, until: datetime) -> list[Fire]:
        """Fires with after < due_at <= until."""
        out = []
        for fire in self.fires_after(after):
            if fire.due_at > until:
                break
            out.append(fire)
        return out

    def next_fire(self, after: datetime) -> Fire:
        return next(self.fires_after(after))
