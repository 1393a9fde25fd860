"""Fires whose job processes start ahead of their minute (RunnerSettings.prestart_seconds), with real child
processes and a real MLflow store: the claims database still decides at the minute, the run is created only
after the fire is claimed and never before its minute, and a process whose job does not start creates no run.
How soon after the minute the run exists is a benchmark (scripts/bench_scheduler.py), not a test."""
from __future__ import annotations

import asyncio
import sqlite3
import time
from datetime import datetime, timedelta

import pytest

from mlops_unity_pipeline import RLTrainingConfig, TrainingJob, UnityAssetSpec, UnityMLOpsOrchestrator
from pipeline.scheduling.claims import ClaimStore
from pipeline.scheduling.cron import UTC, CronSchedule
from pipeline.scheduling.launcher import PipelineLauncher
from pipeline.scheduling.runner import Runner, RunnerSettings
from pipeline.scheduling.schedule import Schedule
from tests.support.store import all_runs
from tests.test_scheduling import Clock
from tests.test_scheduling_e2e import tiny_overrides


def schedule(schedule_id: str, tmp_path, max_steps: int = 3000) -> Schedule:
    config = RLTrainingConfig(max_steps=max_steps, num_envs=1, overrides=tiny_overrides(tmp_path))
    return Schedule(schedule_id, CronSchedule("0 3 * * *", "UTC"),
                    [TrainingJob("nav-001", UnityAssetSpec("nav-001", "NavigationAgent"), config)])


def make_runner(tmp_path, name: str, schedules, clock, lines: list[str], **settings) -> Runner:
    launcher = PipelineLauncher(UnityMLOpsOrchestrator(), tmp_path / f"{name}-results", log=lines.append)
    return Runner(schedules, launcher, RunnerSettings(state_path=tmp_path / f"{name}.db", **settings),
                  clock=clock, log=lines.append)


class JumpClock:
    """Real time, shifted by an offset the test moves: to just before the minute, then to the minute."""

    def __init__(self):
        self.offset = 0.0

    def jump_to(self, t: datetime) -> None:
        self.offset = t.timestamp() - time.time()

    def __call__(self) -> datetime:
        return datetime.fromtimestamp(time.time() + self.offset, UTC)


def main_runs():
    return [r for r in all_runs() if r.data.tags.get("pipeline.stage") == "main"]


@pytest.mark.slow  # a real training starts (and is cancelled once its run exists)
def test_a_prestarted_fire_creates_its_run_after_its_claim_and_not_before_its_minute(store, tmp_path):
    due = datetime(2025, 1, 1, 3, 0, tzinfo=UTC)
    clock, lines = JumpClock(), []
    clock.jump_to(due - timedelta(seconds=10))

    async def go():
        runner = make_runner(tmp_path, "claims", [schedule("early", tmp_path, max_steps=500_000)], clock, lines,
                             prestart_seconds=15, on_stop="cancel")
        await runner.tick()  # 10 s before the minute: the job's process starts, nothing is claimed
        ((child, _),) = runner.prestarted.values()
        await asyncio.wait_for(child.ready.wait(), 600)  # however long the box takes to get it ready
        await asyncio.sleep(1)
        assert main_runs() == [] and runner.store.fires() == []  # ready, and still nothing created
        clock.jump_to(due + timedelta(seconds=0.2))
        await runner.tick()  # the minute: claimed, started, told to go
        assert runner.prestarted == {} and len(runner.tasks) == 1
        while not main_runs() and runner.tasks:
            await asyncio.sleep(0.2)
        runner.stop()
        await runner._shutdown()  # cancelled as on SIGTERM: its runs end KILLED
        return clock.offset

    offset = asyncio.run(go())
    (main,) = main_runs()
    assert main.data.tags["schedule_id"] == "early" and main.data.tags["scheduled_minute"] == "2025-01-01T03:00"
    created = main.info.start_time / 1000 + offset  # on the runner's clock
    con = sqlite3.connect(str(tmp_path / "claims.db"))
    (claimed_at, due_at), = con.execute("SELECT claimed_at, due_at FROM fires").fetchall()
    (started_at, state), = con.execute("SELECT started_at, state FROM jobs").fetchall()
    assert due_at == due.timestamp()
    assert due_at <= claimed_at <= started_at <= created, (due_at, claimed_at, started_at, created)
    assert state == "killed"
    assert any(line.startswith("early 2025-01-01T03:00: nav-001 ready to go (") for line in lines), lines
    assert not [line for line in lines if "released before creating any run" in line]


@pytest.mark.slow  # starts two pipeline processes ahead
def test_prestarted_jobs_whose_fire_does_not_start_them_end_without_a_run(store, tmp_path):
    """One fire is claimed by another runner at its minute, the other runner stops before its minute: both
    processes were started ahead and both end having created no MLflow run."""
    due = datetime(2025, 1, 1, 3, 0, tzinfo=UTC)
    clock, lines = Clock(due - timedelta(seconds=10)), []

    async def go():
        taken = make_runner(tmp_path, "taken", [schedule("taken", tmp_path)], clock, lines, prestart_seconds=15)
        stopped = make_runner(tmp_path, "stopped", [schedule("stopped", tmp_path)], clock, lines,
                              prestart_seconds=15)
        await taken.tick()
        await stopped.tick()
        children = [held for held, _ in [*taken.prestarted.values(), *stopped.prestarted.values()]]
        assert len(children) == 2, lines
        other = ClaimStore(tmp_path / "taken.db")
        with other.transaction():  # another runner on the same database is first at the minute, and starts it
            other.claim_fire("taken", "2025-01-01T03:00", due.timestamp(), ["nav-001"], "other-runner",
                             due.timestamp())
            other.start_job(("taken", "2025-01-01T03:00", "nav-001"), "other-runner", due.timestamp())
        clock.set(due + timedelta(seconds=1))
        await taken.tick()
        stopped.stop()
        await stopped._shutdown()
        await asyncio.gather(*taken._releases)
        return children

    children = asyncio.run(go())
    assert all(child.proc.returncode is not None for child in children)
    assert [r.data.tags for r in all_runs()] == []
    released = [line for line in lines if "released before creating any run" in line]
    assert released == [
        "taken 2025-01-01T03:00: nav-001 released before creating any run (its fire did not start it here)",
        "stopped 2025-01-01T03:00: nav-001 released before creating any run (runner stopping)"]
    con = sqlite3.connect(str(tmp_path / "taken.db"))
    assert con.execute("SELECT claimed_by, state FROM fires").fetchall() == [("other-runner", "active")]
    assert con.execute("SELECT owner, state FROM jobs").fetchall() == [("other-runner", "started")]
