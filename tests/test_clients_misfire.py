"""The cron runner's start-up follows its misfire policy: a fire whose minute had begun before the runner came up
is a misfire, however recent (issue: a runner started at 09:01:45 with `misfire: skip` launched the 09:01 fire)."""
from __future__ import annotations

import asyncio
from datetime import datetime

import pytest

from pipeline.scheduling.cron import UTC
from tests.test_scheduling import Clock, ScriptedLauncher, events, runner, sched, settle

UP = datetime(2025, 3, 3, 9, 1, 45, tzinfo=UTC)  # 45 s into the 09:01 fire's minute


def start_at(tmp_path, when: datetime, **policy):
    async def go():
        clock, launcher = Clock(when), ScriptedLauncher()
        r = runner(tmp_path, [sched("morning", "1 9 * * *", **policy)], launcher, clock)
        await r.tick()
        await settle()
        return launcher

    launcher = asyncio.run(go())
    return [k[1] for k in launcher.launched], events(tmp_path / "claims.db", "fire.skipped")


def test_skip_skips_a_fire_due_before_the_runner_came_up_and_says_so(tmp_path):
    launched, skipped = start_at(tmp_path, UP, misfire="skip")
    assert launched == []
    assert [(e["scheduled_minute"], e["reason"], e["missed"]) for e in skipped] == [("2025-03-03T09:01", "misfire", 1)]
    assert skipped[0]["detail"] == "1 fire(s) were due while no runner was up; misfire policy 'skip'"


@pytest.mark.parametrize("grace,launched", [(3600, ["2025-03-03T09:01"]), (30, [])])
def test_run_once_runs_it_only_within_grace_seconds(tmp_path, grace, launched):
    got, skipped = start_at(tmp_path, UP, misfire="run_once", misfire_grace_seconds=grace)
    assert got == launched  # 45 s late: inside a 3600 s grace, outside a 30 s one
    assert len(skipped) == (0 if launched else 1)


def test_a_runner_that_was_up_still_launches_a_fire_it_ticks_for_late(tmp_path):
    async def go():
        clock, launcher = Clock(datetime(2025, 3, 3, 9, 0, 50, tzinfo=UTC)), ScriptedLauncher()
        r = runner(tmp_path, [sched("morning", "1 9 * * *", misfire="skip")], launcher, clock)
        await r.tick()
        clock.set(UP)  # a busy machine: the tick for 09:01 comes 45 s late
        await r.tick()
        await settle()
        return launcher

    assert [k[1] for k in asyncio.run(go()).launched] == ["2025-03-03T09:01"]
    assert events(tmp_path / "claims.db", "fire.skipped") == []
