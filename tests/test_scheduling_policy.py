"""Fire policy on its own (pipeline/scheduling/policy.py): which fires run, which are skipped, when a runner
wakes; no clock, database or event loop. The same rules through a runner are in test_scheduling.py."""
from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from pipeline.launch.job_specs import RLTrainingConfig, TrainingJob, UnityAssetSpec
from pipeline.scheduling import policy
from pipeline.scheduling.cron import UTC, CronSchedule, Fire
from pipeline.scheduling.schedule import ON_TIME_SECONDS, Schedule

T0 = datetime(2025, 1, 1, 2, 0, tzinfo=UTC)  # a fire's minute


def fire(minutes_after_t0: float = 0) -> Fire:
    due = T0 + timedelta(minutes=minutes_after_t0)
    return Fire(due.strftime("%Y-%m-%dT%H:%M"), due)


def at(seconds_after_t0: float) -> float:
    return T0.timestamp() + seconds_after_t0


def sched(schedule_id="s", cron="0 2 * * *", enabled=True) -> Schedule:
    job = TrainingJob("j", UnityAssetSpec("nav-001", "NavigationAgent"), RLTrainingConfig())
    return Schedule(schedule_id, CronSchedule(cron, "UTC"), [job], enabled=enabled)


# -- on time or missed ---------------------------------------------------------------------------------------
def test_a_fire_due_while_the_runner_was_up_runs_even_if_the_tick_comes_late():
    run, missed = policy.split_due([fire()], now=at(45), up_at=at(-600), misfire="skip", grace_seconds=3600)
    assert (run, missed) == ([fire()], [])


def test_a_fire_due_before_the_runner_came_up_is_a_misfire_however_recent():
    run, missed = policy.split_due([fire()], now=at(45), up_at=at(30), misfire="skip", grace_seconds=3600)
    assert (run, missed) == ([], [fire()])


def test_a_fire_more_than_the_on_time_window_late_is_a_misfire():
    late = at(ON_TIME_SECONDS + 1)
    assert policy.split_due([fire()], late, up_at=at(-600), misfire="skip", grace_seconds=3600) == ([], [fire()])


def test_run_once_runs_only_the_newest_missed_fire_and_only_within_grace():
    outage = [fire(-3 * 1440), fire(-2 * 1440), fire(-1440), fire()]
    now = at(20 * 60)  # up 20 minutes after the last one
    run, missed = policy.split_due(outage, now, up_at=now, misfire="run_once", grace_seconds=3600)
    assert run == [fire()] and missed == outage[:-1]
    run, missed = policy.split_due(outage, now, up_at=now, misfire="run_once", grace_seconds=60)
    assert run == [] and missed == outage
    run, missed = policy.split_due(outage, now, up_at=now, misfire="skip", grace_seconds=3600)
    assert run == [] and missed == outage


def test_run_once_does_not_add_a_missed_fire_to_one_that_is_on_time():
    fires = [fire(-1440), fire()]
    run, missed = policy.split_due(fires, now=at(5), up_at=at(-60), misfire="run_once", grace_seconds=10 ** 6)
    assert run == [fire()] and missed == [fire(-1440)]


def test_claiming_starts_at_the_watermark_or_the_minute_just_gone():
    assert policy.first_mark(None, at(0)) == at(-ON_TIME_SECONDS)
    assert policy.first_mark(at(-5), at(0)) == at(-5)


@pytest.mark.parametrize("late,misfire,grace,launch", [
    (10, "skip", 0, True), (ON_TIME_SECONDS + 1, "skip", 3600, False),
    (600, "run_once", 3600, True), (7200, "run_once", 3600, False)])
def test_a_claimed_but_never_launched_fire_is_launched_only_while_the_policy_allows(late, misfire, grace, launch):
    assert policy.still_launchable(late, misfire, grace) is launch


# -- overlap, outcome, resume, liveness ---------------------------------------------------------------------
@pytest.mark.parametrize("overlap,running,action", [
    ("forbid", ["m1"], "skip"), ("replace", ["m1"], "replace"), ("allow", ["m1"], "claim"),
    ("forbid", [], "claim"), ("replace", [], "claim")])
def test_overlap_policies(overlap, running, action):
    assert policy.on_overlap(overlap, running) == action


def test_a_job_ends_succeeded_killed_or_failed():
    assert [policy.end_state(s) for s in ("FINISHED", "KILLED", "FAILED", "RUNNING")] == \
        ["succeeded", "killed", "failed", "failed"]


def test_only_an_interruption_of_a_started_job_under_its_attempt_limit_is_resumed():
    ok = dict(resume_interrupted=True, job_state="started", cancel_reason=None, attempt=0, max_resumes=2)
    assert policy.why_not_resumed(**ok) is None
    assert policy.why_not_resumed(**{**ok, "cancel_reason": "runner stopping (on_stop=cancel)"}) is None
    assert policy.why_not_resumed(**{**ok, "resume_interrupted": False}) == ""
    assert policy.why_not_resumed(**{**ok, "job_state": "pending"}) == ""
    assert policy.why_not_resumed(**{**ok, "cancel_reason": "replaced by the 03:00 fire"}) == ""  # a decision
    assert policy.why_not_resumed(**{**ok, "attempt": 2}) == "already resumed 2 time(s), the schedule's maximum"


def test_a_runner_is_dead_when_stopped_gone_or_silent_past_its_lease():
    assert not policy.runner_dead(None, heartbeat_at=100, now=150, lease_seconds=60)
    assert policy.runner_dead(None, heartbeat_at=100, now=161, lease_seconds=60)
    assert policy.runner_dead(120, heartbeat_at=100, now=121, lease_seconds=60)
    assert policy.runner_dead(None, heartbeat_at=100, now=101, lease_seconds=60, process_gone=True)


# -- what comes next, and when to wake ----------------------------------------------------------------------
def test_upcoming_lists_the_soonest_fires_of_enabled_schedules_and_reports_a_broken_one():
    class Broken(CronSchedule):
        def fires_after(self, after):
            raise RuntimeError("no next date")

    broken = sched("broken")
    broken.cron = Broken("0 2 * * *")
    hourly, nightly, off = sched("hourly", "0 * * * *"), sched("nightly"), sched("off", "* * * * *", enabled=False)
    failed = []
    got = policy.upcoming([broken, nightly, hourly, off], T0, 3, on_error=lambda s, e: failed.append(s.schedule_id))
    assert [(s.schedule_id, f.scheduled_minute) for s, f in got] == [
        ("hourly", "2025-01-01T03:00"), ("hourly", "2025-01-01T04:00"), ("hourly", "2025-01-01T05:00")]
    assert failed == ["broken"]
    each = policy.next_of_each([nightly, hourly, off], T0)
    assert [(s.schedule_id, f.scheduled_minute) for s, f in each] == [
        ("nightly", "2025-01-02T02:00"), ("hourly", "2025-01-01T03:00")]


def test_only_fires_due_within_the_lead_and_not_yet_due_are_started_ahead():
    s = sched()
    fires = [(s, fire()), (s, fire(1))]
    assert policy.to_prestart(fires, now=at(-10), lead_seconds=15) == [(s, fire())]
    assert policy.to_prestart(fires, now=at(-20), lead_seconds=15) == []
    assert policy.to_prestart(fires, now=at(0), lead_seconds=15) == []  # due: claimed and started, not pre-started
    assert policy.to_prestart(fires, now=at(-10), lead_seconds=0) == []


def test_a_runner_wakes_for_the_lead_then_for_the_minute_and_at_least_every_heartbeat():
    due = at(0)
    assert policy.wake_in(at(-8), due, heartbeat_seconds=10) == 8
    assert policy.wake_in(at(-8), due, heartbeat_seconds=10, lead_seconds=5) == 3  # to start jobs ahead
    assert policy.wake_in(at(-4), due, heartbeat_seconds=10, lead_seconds=5) == 4  # started: now the minute
    assert policy.wake_in(at(-600), due, heartbeat_seconds=10, lead_seconds=5) == 10
    assert policy.wake_in(at(-600), None, heartbeat_seconds=10) == 10
    assert policy.wake_in(at(1), due, heartbeat_seconds=10) == 0.05  # overdue: at once, without spinning


@pytest.mark.parametrize("seconds,text", [(0, "0m00s"), (59.9, "0m59s"), (3661, "1h1m01s"), (90061, "1d1h1m01s"),
                                          (-5, "0m00s")])
def test_humanize(seconds, text):
    assert policy.humanize(seconds) == text
