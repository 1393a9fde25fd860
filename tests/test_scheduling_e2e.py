"""The scheduler for real: the guide's 24/7 example, and fires that launch real trainings into MLflow."""
from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import subprocess
from datetime import datetime, timedelta

import mlflow
import pytest

from mlops_unity_pipeline import (
    RLTrainingConfig,
    TrainingSchedule,
    TrainingScheduler,
    UnityAssetSpec,
    UnityMLOpsOrchestrator,
)
from pipeline.scheduling.cron import UTC
from tests.support.process import PYTHON, REPO, child_env
from tests.support.store import all_runs
from tests.support.training import TINY
from tests.test_scheduling import SECRET, Receiver

GUIDE = REPO / "docs" / "unity_mlops_setup_guide.md"


def output_until_stopped(proc: subprocess.Popen, prompt: str, sig: signal.Signals) -> str:
    """The runner's whole output, sending `sig` once it has printed a line starting with `prompt`."""
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line.rstrip())
            if line.startswith(prompt):
                proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return "\n".join(lines)


def guide_example() -> str:
    source = GUIDE if GUIDE.exists() else REPO.parent.parent / "shared/seed/unity_mlops_setup_guide.md"
    text = source.read_text()
    section = text.split("## 24/7 Scheduling", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow  # runs the guide's example as a process
def test_guide_24_7_example_runs_as_written_and_stops_cleanly_on_sigterm(tmp_path):
    env = child_env(MLOPS_SCHEDULER_DB=str(tmp_path / "scheduler.db"), MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/m.db")
    proc = subprocess.Popen([PYTHON, "-c", guide_example()], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    out = output_until_stopped(proc, "next: nightly at ", signal.SIGTERM)
    assert proc.returncode == 0, out
    assert "nightly: '0 2 * * *' UTC; overlap=forbid, misfire=skip; trains agent-1 (ppo, online, 500,000 steps)" in out
    assert re.search(r"next: nightly at \d{4}-\d\d-\d\dT02:00 UTC \(in \d", out)
    assert "SIGTERM: no new launches; cancelling 0 running job(s)" in out
    assert re.search(r"runner \S+ stopped$", out)
    con = sqlite3.connect(str(tmp_path / "scheduler.db"))
    assert con.execute("SELECT COUNT(*) FROM runners WHERE stopped_at IS NOT NULL").fetchone()[0] == 1


class ShiftedClock:
    """Real time, shifted so that it is `target` at `start()`: a real fire without waiting for 03:00."""

    def __init__(self):
        self.offset = timedelta(0)

    def start(self, target: datetime) -> None:
        self.offset = target - datetime.now(UTC)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


def tiny_overrides(tmp_path) -> list[str]:
    return [o for o in TINY if not o.startswith("max_steps")] + [f"results_dir={tmp_path / 'results'}"]


async def run_until(scheduler: TrainingScheduler, done, timeout: float = 900) -> None:
    async def watch():
        while not done():
            await asyncio.sleep(0.2)
        scheduler.stop()

    watcher = asyncio.create_task(watch())
    try:
        await asyncio.wait_for(scheduler.run_forever(), timeout)
    finally:
        watcher.cancel()


def tagged_runs(schedule_id: str):
    return [r for r in all_runs() if r.data.tags.get("schedule_id") == schedule_id]


@pytest.mark.slow
def test_a_fire_trains_for_real_with_tagged_runs_and_signed_webhooks(store, tmp_path):
    receiver = Receiver()
    due = datetime.now(UTC).replace(hour=3, minute=0, second=0, microsecond=0)
    clock = ShiftedClock()
    try:
        scheduler = TrainingScheduler(UnityMLOpsOrchestrator(), max_concurrent_jobs=1, webhook_url=receiver.url,
                                      webhook_secret=SECRET, state_path=tmp_path / "scheduler.db", clock=clock)
        scheduler.add_schedule(TrainingSchedule(
            "e2e", "0 3 * * *",
            [UnityAssetSpec(asset_id="nav-001", name="NavigationAgent", description="Reach the goal.")],
            RLTrainingConfig(algorithm="PPO", max_steps=2000, num_envs=1, overrides=tiny_overrides(tmp_path))))
        clock.start(due - timedelta(seconds=2))
        ended = lambda: any(g["body"]["event"] in ("fire.succeeded", "fire.failed") for g in receiver.got)  # noqa: E731
        asyncio.run(run_until(scheduler, ended))
    finally:
        receiver.close()

    minute = due.strftime("%Y-%m-%dT%H:%M")
    events = [g["body"] for g in receiver.got]
    assert [e["event"] for e in events] == ["fire.started", "fire.succeeded"], events
    assert all(g["verified"] for g in receiver.got)
    assert len({g["headers"]["X-Mlops-Delivery"] for g in receiver.got}) == 2
    done = events[1]
    assert (done["schedule_id"], done["scheduled_minute"], done["asset_id"], done["status"]) == \
        ("e2e", minute, "nav-001", "FINISHED")

    runs = {r.data.tags["pipeline.stage"]: r for r in tagged_runs("e2e")}
    assert set(runs) == {"main", "build", "train", "evaluate", "register"}
    assert all(r.data.tags["scheduled_minute"] == minute and r.info.status == "FINISHED" for r in runs.values())
    assert done["run_id"] == runs["main"].info.run_id and done["run_ids"]["train"] == runs["train"].info.run_id
    assert "eval/success_rate" in done["eval_metrics"] and done["registry"]["version"]
    assert runs["train"].data.params["max_steps"] == "2000"
    latency = runs["main"].info.start_time / 1000 - (due - clock.offset).timestamp()
    print(f"\ntrigger latency (scheduled minute -> MLflow run created): {latency:.2f}s")
    assert latency > 0


@pytest.mark.slow
def test_sigterm_cancels_a_running_fire_and_its_runs_end_killed(store, tmp_path):
    receiver = Receiver()
    due = datetime.now(UTC).replace(hour=3, minute=0, second=0, microsecond=0)
    clock = ShiftedClock()
    client = mlflow.MlflowClient()

    def training_started() -> bool:
        train = [r for r in tagged_runs("stopme") if r.data.tags.get("pipeline.stage") == "train"]
        if train and client.get_metric_history(train[0].info.run_id, "Environment/Cumulative Reward"):
            os.kill(os.getpid(), signal.SIGTERM)  # what systemd sends on `systemctl stop`
            return True
        return False

    try:
        scheduler = TrainingScheduler(UnityMLOpsOrchestrator(), webhook_url=receiver.url, webhook_secret=SECRET,
                                      state_path=tmp_path / "scheduler.db", clock=clock, on_stop="cancel")
        scheduler.add_schedule(TrainingSchedule(
            "stopme", "0 3 * * *", [UnityAssetSpec("nav-001", "NavigationAgent")],
            RLTrainingConfig(max_steps=500_000, num_envs=1, overrides=tiny_overrides(tmp_path))))
        clock.start(due - timedelta(seconds=1))

        async def go():
            task = asyncio.create_task(scheduler.run_forever())
            while not task.done() and not await asyncio.to_thread(training_started):
                await asyncio.sleep(0.5)
            await asyncio.wait_for(task, 300)

        asyncio.run(go())
    finally:
        receiver.close()

    events = [g["body"] for g in receiver.got]
    assert [e["event"] for e in events] == ["fire.started", "fire.failed"], events
    assert events[1]["status"] == "KILLED" and events[1]["reason"] == "runner stopping (on_stop=cancel)"
    runs = tagged_runs("stopme")
    assert {r.data.tags["pipeline.stage"] for r in runs} >= {"main", "train"}
    assert not [r for r in runs if r.info.status == "RUNNING"]
    for r in runs:
        if r.data.tags["pipeline.stage"] in ("main", "train"):
            # Known race outside the scheduler: ML-Agents' SubprocessEnvManager.close() can unpickle a
            # half-written worker message after SIGTERM (EOFError); those runs then end FAILED with it.
            assert r.info.status == "KILLED" or "EOFError" in r.data.tags.get("pipeline.error", ""), \
                (r.data.tags["pipeline.stage"], r.info.status, r.data.tags.get("pipeline.error"))
    con = sqlite3.connect(str(tmp_path / "scheduler.db"))
    assert con.execute("SELECT state FROM jobs").fetchall() == [("killed",)]


@pytest.mark.slow  # starts the cron runner's command
def test_cron_runner_command_prints_its_plan_and_stops_on_sigint(tmp_path):
    proc = subprocess.Popen([PYTHON, "scripts/cron_runner.py", "--schedule", "nightly", "--state",
                             str(tmp_path / "claims.db"), "--max-concurrent-jobs", "2"], cwd=REPO,
                            env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = output_until_stopped(proc, "next: ", signal.SIGINT)
    assert proc.returncode == 0, out
    assert "1 schedule(s)" in out and "max 2 concurrent job(s), on stop: cancel, webhook: none" in out
    assert re.search(r"^next: nightly at \d{4}-\d\d-\d\dT02:00 UTC \(in .*\): agent-1 \(ppo, online, 500,000 steps\), "
                     r"nav-001 \(ppo, online, 500,000 steps\)$", out, re.M)
    assert "SIGINT: no new launches" in out and "Traceback" not in out


@pytest.mark.slow
def test_an_interrupted_fire_resumes_into_its_own_runs_when_the_runner_is_back(store, tmp_path):
    """The box reboots mid-training: the runner is stopped (its job gets SIGTERM, saves, ends KILLED); the next
    runner on the same state file continues that fire's training run from its checkpoint, and the fire ends
    as one FINISHED main run with one training run, as if nothing had happened, but saying it did."""
    receiver = Receiver()
    due = datetime.now(UTC).replace(hour=3, minute=0, second=0, microsecond=0)
    schedule = TrainingSchedule(
        "reboot", "0 3 * * *", [UnityAssetSpec("nav-001", "NavigationAgent")],
        RLTrainingConfig(max_steps=8000, num_envs=1,
                         overrides=tiny_overrides(tmp_path) + ["algorithm.checkpoint_interval=2000"]),
        resume_interrupted=True)

    def scheduler(clock) -> TrainingScheduler:
        s = TrainingScheduler(UnityMLOpsOrchestrator(), webhook_url=receiver.url, webhook_secret=SECRET,
                              state_path=tmp_path / "scheduler.db", clock=clock, on_stop="cancel")
        s.add_schedule(schedule)
        return s

    checkpointed = lambda: any((tmp_path / "results").glob("*/NavigationAgent/NavigationAgent-*.pt"))  # noqa: E731
    ended = lambda: any(g["body"]["event"] in ("fire.succeeded", "fire.failed") for g in receiver.got)  # noqa: E731
    try:
        clock = ShiftedClock()
        first = scheduler(clock)
        clock.start(due - timedelta(seconds=1))
        asyncio.run(run_until(first, checkpointed))  # stop() as on SIGTERM, once a checkpoint exists
        (interrupted,) = [r for r in tagged_runs("reboot") if r.data.tags["pipeline.stage"] == "train"]
        assert interrupted.info.status == "KILLED", interrupted.data.tags.get("pipeline.error")
        killed_at = max(m.step for m in mlflow.MlflowClient().get_metric_history(
            interrupted.info.run_id, "Policy/Extrinsic Value Estimate"))

        clock = ShiftedClock()
        second = scheduler(clock)
        clock.start(due + timedelta(minutes=7))  # back up a few minutes later
        asyncio.run(run_until(second, ended))
    finally:
        receiver.close()

    events = [g["body"] for g in receiver.got]
    assert [e["event"] for e in events] == ["fire.started", "fire.interrupted", "fire.started", "fire.succeeded"]
    assert all(g["verified"] for g in receiver.got)
    train_id = interrupted.info.run_id
    assert events[1]["resume_run_id"] == train_id and events[1]["reason"] == "runner stopping (on_stop=cancel)"
    assert events[2]["resume_of"] == train_id and events[3]["resumes"] == 1
    runs = tagged_runs("reboot")
    mains = [r for r in runs if r.data.tags["pipeline.stage"] == "main"]
    trains = [r for r in runs if r.data.tags["pipeline.stage"] == "train"]
    assert [r.info.run_id for r in trains] == [train_id] and len(mains) == 1  # continued, not restarted
    assert events[3]["run_id"] == mains[0].info.run_id and events[3]["run_ids"]["train"] == train_id
    train = mlflow.get_run(train_id)
    assert (train.info.status, mains[0].info.status) == ("FINISHED", "FINISHED")
    assert train.data.tags["pipeline.resumed"] == "1" and "pipeline.error" not in train.data.tags
    assert train.data.tags["pipeline.last_interruption"].startswith("interrupted: training stopped at step")
    steps = [m.step for m in sorted(mlflow.MlflowClient().get_metric_history(train_id, "Policy/Extrinsic Value "
                                                                               "Estimate"), key=lambda m: m.timestamp)]
    assert steps == sorted(set(steps)) and killed_at in steps and 8000 in steps and steps[-1] >= 8000, steps
    assert "eval/success_rate" in events[3]["eval_metrics"]
    con = sqlite3.connect(str(tmp_path / "scheduler.db"))
    assert con.execute("SELECT state, attempt FROM jobs").fetchall() == [("succeeded", 1)]
