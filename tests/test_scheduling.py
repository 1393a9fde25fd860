"""Scheduler policies on a controllable clock: cron/DST, claims, overlap, misfire, crashes, webhooks.

The training child is the one stand-in here (`ScriptedLauncher`: a job ends when the test says so);
claims, webhooks (a real HTTP server checking HMAC signatures) and sqlite are real. Real launches are
in test_scheduling_e2e.py.
"""
from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import subprocess
import threading
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mlops_unity_pipeline import RLTrainingConfig, TrainingJob, TrainingJobResult, UnityAssetSpec
from pipeline.config.errors import ConfigError
from pipeline.scheduling import webhooks
from pipeline.scheduling.claims import ClaimStore
from pipeline.scheduling.cron import UTC, CronError, CronSchedule
from pipeline.scheduling.runner import Runner, RunnerSettings
from pipeline.scheduling.schedule import Schedule
from pipeline.scheduling.settings import load_schedules
from tests.support.process import PYTHON, REPO, child_env
from tests.support.scheduling import KillableRunner

SECRET = "s3cret"


# -- helpers -------------------------------------------------------------------------------------
class Clock:
    def __init__(self, t: datetime):
        self.t = t

    def __call__(self) -> datetime:
        return self.t

    def set(self, t: datetime) -> None:
        self.t = t

    def advance(self, **kw) -> None:
        self.t += timedelta(**kw)


class ScriptedLauncher:
    """Stands in for the training child process: records launches; a job ends when the test says."""

    def __init__(self):
        self.launched: list[tuple[str, str, str]] = []
        self.running: dict[tuple[str, str, str], asyncio.Future] = {}
        self.recovered: list[tuple[str, str, str]] = []
        self.resumed: list[str] = []
        self.max_running = 0

    async def run(self, job, schedule_id, minute, on_spawn, cancel):
        key = (schedule_id, minute, job.asset_spec.asset_id)
        resume = [job.resume_run_id] if job.resume_run_id else []  # a FireJob (scheduling/launcher.py)
        assert key not in self.launched or resume, f"launched twice: {key}"
        self.launched.append(key)
        self.resumed += resume
        fut = asyncio.get_running_loop().create_future()
        self.running[key] = fut
        self.max_running = max(self.max_running, len(self.running))
        stopper = asyncio.ensure_future(cancel.wait())
        try:
            await asyncio.wait([fut, stopper], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            self.running.pop(key, None)
        if not fut.done():
            return TrainingJobResult(job.job_id, "KILLED", key[2], run_id=f"run-{minute}-{key[2]}",
                                     run_ids={"train": f"train-{minute}-{key[2]}"}, error="cancelled")
        status = fut.result()
        return TrainingJobResult(job.job_id, status, key[2], run_id=f"run-{minute}-{key[2]}",
                                 run_ids={"train": f"train-{minute}-{key[2]}"},
                                 training_metrics={"Environment/Cumulative Reward": 0.9},
                                 eval_metrics={"eval/success_rate": 0.8},
                                 registry={"model_name": "m", "version": "3", "decision": "promoted"},
                                 error=None if status == "FINISHED" else "boom")

    def recover(self, record, job, why):
        self.recovered.append(record.key)
        return TrainingJobResult(job.job_id, "KILLED", record.asset_id, error=why,
                                 run_ids={"train": f"train-{record.scheduled_minute}-{record.asset_id}"})

    def resume_point(self, record, result):
        """As PipelineLauncher: a training stopped from outside continues; one that failed on its own does not."""
        if result.status == "FAILED":
            return None, "it failed on its own error (boom)"
        return result.run_ids["train"], ""

    def finish(self, key=None, status="FINISHED"):
        for k in ([key] if key else list(self.running)):
            self.running[k].set_result(status)

    def crash(self):
        """The runner was killed: its children die with it (PR_SET_PDEATHSIG)."""
        self.running.clear()


def template(asset_id: str, behavior: str = "NavigationAgent") -> TrainingJob:
    return TrainingJob(asset_id, UnityAssetSpec(asset_id, behavior), RLTrainingConfig())


def sched(schedule_id="nightly", cron="0 2 * * *", zone="UTC", assets=("nav-001",), **kw) -> Schedule:
    return Schedule(schedule_id, CronSchedule(cron, zone), [template(a) for a in assets], **kw)


async def settle():
    for _ in range(10):
        await asyncio.sleep(0)


def events(db_path, kind=None) -> list[dict]:
    con = sqlite3.connect(str(db_path))
    rows = [json.loads(b) for (b,) in con.execute("SELECT body FROM outbox ORDER BY created_at, rowid")]
    con.close()
    return [e for e in rows if kind is None or e["event"] == kind]


def runner(tmp_path, schedules, launcher, clock, url="http://127.0.0.1:9/unused", **kw) -> Runner:
    settings = RunnerSettings(state_path=tmp_path / "claims.db", webhook_url=url, webhook_secret=SECRET, **kw)
    return KillableRunner(schedules, launcher, settings, clock=clock, log=lambda m: None)


class Receiver:
    """A real webhook receiver on localhost that checks every signature."""

    def __init__(self, secret=SECRET):
        self.secret, self.got, self.status = secret, [], 200
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.got.append({"headers": dict(self.headers), "body": json.loads(body),
                                  "verified": webhooks.verify(outer.secret, self.headers, body)})
                self.send_response(outer.status)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def delivered(self):
        return [g for g in self.got if 200 <= self.status < 300]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


# -- cron --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("expr,zone,message", [
    ("0 2 * *", "UTC", "cron '0 2 * *' has 4 fields; a schedule needs exactly five"),
    ("0 0 2 * * *", "UTC", "fires are claimed per minute, so seconds are not supported"),
    ("61 2 * * *", "UTC", "cron '61 2 * * *' is not a valid cron expression"),
    ("0 2 * * mon-xyz", "UTC", "cron '0 2 * * mon-xyz' is not a valid cron expression"),
    ("@sometimes", "UTC", "cron '@sometimes': unknown alias"),
    ("0 2 * * *", "Mars/Olympus", "time_zone 'Mars/Olympus' is not an IANA time zone"),
])
def test_bad_cron_or_zone_is_refused_with_the_reason(expr, zone, message):
    with pytest.raises(CronError) as err:
        CronSchedule(expr, zone)
    assert message in str(err.value)


def fires(expr, zone, start, end):
    return [(f.scheduled_minute, f.due_at.strftime("%m-%d %H:%M"))
            for f in CronSchedule(expr, zone).fires_between(start, end)]


def test_dst_neither_skips_nor_doubles_a_daily_fire():
    ny = "America/New_York"
    spring = fires("30 2 * * *", ny, datetime(2024, 3, 9, tzinfo=UTC), datetime(2024, 3, 12, tzinfo=UTC))
    # 02:30 does not exist on 10 March: that day's fire is at 03:00 EDT (07:00 UTC), once.
    assert spring == [("2024-03-09T02:30", "03-09 07:30"), ("2024-03-10T02:30", "03-10 07:00"),
                      ("2024-03-11T02:30", "03-11 06:30")]
    autumn = fires("30 1 * * *", ny, datetime(2024, 11, 2, tzinfo=UTC), datetime(2024, 11, 5, tzinfo=UTC))
    # 01:30 happens twice on 3 November: it fires at the first (EDT), not again an hour later.
    assert autumn == [("2024-11-02T01:30", "11-02 05:30"), ("2024-11-03T01:30", "11-03 05:30"),
                      ("2024-11-04T01:30", "11-04 06:30")]


def test_dst_jumped_minutes_collapse_into_one_fire():
    got = fires("*/30 * * * *", "Europe/Berlin", datetime(2024, 3, 31, 0, 0, tzinfo=UTC),
                datetime(2024, 3, 31, 2, 0, tzinfo=UTC))
    # Berlin jumps 02:00 -> 03:00 at 01:00 UTC: 02:00 and 02:30 join the 03:00 fire instead of tripling it.
    assert got == [("2024-03-31T01:30", "03-31 00:30"), ("2024-03-31T03:00", "03-31 01:00"),
                   ("2024-03-31T03:30", "03-31 01:30"), ("2024-03-31T04:00", "03-31 02:00")]


# -- config ------------------------------------------------------------------------------------------
def test_shipped_schedule_configs_load_and_compose():
    schedules = {s.schedule_id: s for s in load_schedules()}
    nightly = schedules["nightly"]
    assert nightly.cron.expression == "0 2 * * *" and nightly.asset_ids == ["agent-1", "nav-001"]
    assert nightly.jobs[0].asset_spec.name == "PatrolAgent" and nightly.jobs[0].rl_config.max_steps == 500_000
    assert schedules["weekly_sac"].enabled is False
    assert (nightly.resume_interrupted, nightly.max_resumes) == (True, 3)
    assert schedules["weekly_sac"].resume_interrupted is False  # opt-in


def test_a_state_file_from_before_resumes_is_upgraded_in_place(tmp_path):
    from pipeline.scheduling.claims import SCHEMA

    old_schema = "\n".join(line for line in SCHEMA.splitlines()
                           if not line.lstrip().startswith(("attempt ", "resume_")))
    db = sqlite3.connect(str(tmp_path / "old.db"))
    db.executescript(old_schema + "INSERT INTO fires VALUES ('nightly', '2025-01-01T02:00', 0, 0, 'r', 'done', NULL);"
                     "INSERT INTO jobs (schedule_id, scheduled_minute, asset_id, position, state) VALUES "
                     "('nightly', '2025-01-01T02:00', 'nav-001', 0, 'succeeded');")
    db.close()
    (job,) = ClaimStore(tmp_path / "old.db").jobs()
    assert (job.state, job.attempt, job.resume_run_id) == ("succeeded", 0, None)


@pytest.mark.parametrize("override,message", [
    ("cron='0 2 * *'", "schedule 'nightly': cron '0 2 * *' has 4 fields"),
    ("time_zone=Moon/Base", "schedule 'nightly': time_zone 'Moon/Base' is not an IANA time zone"),
    ("overlap=maybe", "nightly: overlap 'maybe' is not a policy; choose one of allow, forbid, replace"),
    ("misfire.policy=catch_up", "nightly: misfire.policy 'catch_up' is not a policy; choose one of skip, run_once"),
    ("+retries=3", "Key 'retries' not in 'ScheduleConfig'"),
    ("assets=[nav,tank]", "schedule 'nightly', asset 'tank': In 'config': Could not find 'asset/tank'"),
    ("assets=[nav,nav]", "asset ids must be unique within a schedule; nav-001 appears more than once"),
    ("overrides=['env.num_envs=0']", "schedule 'nightly', asset 'patrol': env.num_envs must be >= 1, got 0"),
    ("schedule_id=a/b", "schedule_id 'a/b' must be 1-64 letters, digits"),
    ("resume.max_attempts=-1", "nightly: resume.max_attempts must be an integer >= 0, got -1"),
    ("resume.interrupted=maybe", "Value 'maybe' is not a valid bool"),
])
def test_bad_schedule_config_is_refused_at_load(override, message):
    with pytest.raises(ConfigError) as err:
        load_schedules(["nightly"], [override])
    assert message in str(err.value)


@pytest.mark.slow  # starts the cron runner's command
def test_runner_lists_next_fires_and_refuses_bad_config_with_exit_2(tmp_path):
    ok = subprocess.run([PYTHON, "scripts/cron_runner.py", "--schedule", "nightly", "--set", "time_zone=Asia/Tokyo",
                         "--list", "2"], cwd=REPO, capture_output=True, text=True, env=child_env(), timeout=120)
    assert ok.returncode == 0, ok.stderr
    lines = ok.stdout.strip().splitlines()
    assert lines[0].startswith("nightly: '0 2 * * *' Asia/Tokyo; overlap=forbid, misfire=run_once, resumes interrupted "
                               "fires (at most 3x); trains agent-1")
    assert lines[1].endswith("+00:00  nightly  " + lines[1].split()[2] + " Asia/Tokyo  agent-1, nav-001")
    assert lines[1].split()[0].endswith("T17:00+00:00")  # 02:00 in Tokyo
    bad = subprocess.run([PYTHON, "scripts/cron_runner.py", "--schedule", "nightly", "--set", "cron='0 25 * * *'",
                          "--list"], cwd=REPO, capture_output=True, text=True, env=child_env(), timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith(
        "error: schedule 'nightly': cron '0 25 * * *' is not a valid cron expression")


# -- claims --------------------------------------------------------------------------------------------
CLAIMER = """
import json, random, sys, time
from pathlib import Path
from pipeline.scheduling.claims import ClaimStore
path, me, go = sys.argv[1], sys.argv[2], Path(sys.argv[3])
keys = [f"2025-01-01T{h:02d}:{m:02d}" for h in range(2) for m in range(60)]
random.Random(me).shuffle(keys)
store = ClaimStore(path)
while not go.exists():
    time.sleep(0.01)
won = []
for k in keys:
    with store.transaction():
        if store.claim_fire("s", k, 0.0, ["a"], me, 0.0):
            won.append(k)
print(json.dumps(won))
"""


def test_claims_across_processes_are_won_exactly_once(tmp_path):
    path, go = tmp_path / "claims.db", tmp_path / "go"
    ClaimStore(path).close()
    procs = [subprocess.Popen([PYTHON, "-c", CLAIMER, str(path), f"p{i}", str(go)], cwd=REPO, env=child_env(),
                              stdout=subprocess.PIPE, text=True) for i in range(4)]
    go.touch()  # all start claiming together, each in its own order
    won = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    flat = [k for w in won for k in w]
    assert len(flat) == 120 and len(set(flat)) == 120  # every minute claimed, none twice
    con = sqlite3.connect(str(path))
    owners = dict(con.execute("SELECT scheduled_minute, claimed_by FROM fires"))
    assert all(owners[k] == f"p{i}" for i, w in enumerate(won) for k in w)


# -- runner policies ------------------------------------------------------------------------------------
def test_due_fire_launches_once_and_reports_signed_events(tmp_path, receiver):
    async def go():
        clock, launcher = Clock(datetime(2025, 1, 1, 1, 59, 30, tzinfo=UTC)), ScriptedLauncher()
        r = runner(tmp_path, [sched(assets=("agent-1", "nav-001"))], launcher, clock, url=receiver.url)
        await r.tick()
        assert launcher.launched == []
        clock.set(datetime(2025, 1, 1, 2, 0, 4, tzinfo=UTC))
        await r.tick()
        await r.tick()  # a second pass in the same minute changes nothing
        await settle()
        assert launcher.launched == [("nightly", "2025-01-01T02:00", "agent-1"),
                                     ("nightly", "2025-01-01T02:00", "nav-001")]
        launcher.finish(("nightly", "2025-01-01T02:00", "agent-1"))
        launcher.finish(("nightly", "2025-01-01T02:00", "nav-001"), status="FAILED")
        await settle()
        assert await r.delivery.deliver_due() == 4
        return r

    r = asyncio.run(go())
    got = receiver.got
    assert [g["body"]["event"] for g in got] == ["fire.started", "fire.started", "fire.succeeded", "fire.failed"]
    assert all(g["verified"] for g in got)
    assert all(g["headers"]["X-Mlops-Delivery"] == g["body"]["delivery_id"] for g in got)
    ok, failed = got[2]["body"], got[3]["body"]
    assert (ok["schedule_id"], ok["scheduled_minute"], ok["asset_id"], ok["due_at"]) == \
        ("nightly", "2025-01-01T02:00", "agent-1", "2025-01-01T02:00:00+00:00")
    assert ok["run_id"] == "run-2025-01-01T02:00-agent-1"
    assert ok["run_ids"] == {"train": "train-2025-01-01T02:00-agent-1"}
    assert ok["eval_metrics"] == {"eval/success_rate": 0.8} and ok["registry"]["decision"] == "promoted"
    assert failed["status"] == "FAILED" and failed["reason"] == "boom"
    assert [f["state"] for f in r.store.fires()] == ["done"]


def test_signature_check_rejects_tampering_and_replays():
    body, ts = b'{"event": "fire.started"}', "1700000000"
    headers = {webhooks.TIMESTAMP_HEADER: ts, webhooks.SIGNATURE_HEADER: webhooks.sign(SECRET, ts, body)}
    assert webhooks.verify(SECRET, headers, body, now=1700000010)
    assert not webhooks.verify(SECRET, headers, body + b" ", now=1700000010)
    assert not webhooks.verify("other", headers, body, now=1700000010)
    assert not webhooks.verify(SECRET, headers, body, now=1700000000 + 3600)  # an old delivery replayed


def test_two_runners_on_one_database_never_double_fire(tmp_path):
    async def go():
        clock, launcher = Clock(datetime(2025, 1, 1, 0, 0, 30, tzinfo=UTC)), ScriptedLauncher()
        def schedules():
            return [sched("often", "*/10 * * * *", assets=("a", "b")), sched("hourly", "0 * * * *")]

        a, b = (runner(tmp_path, schedules(), launcher, clock, sqlite_synchronous="NORMAL") for _ in range(2))
        rng = random.Random(1)
        for _ in range(6 * 12):  # half a day of 10-minute fires
            clock.advance(minutes=10)
            for r in rng.sample([a, b], 2):
                await r.tick()
            await settle()
            assert a.store.running_count() <= 4
            launcher.finish()
            await settle()
        return a, b

    a, b = asyncio.run(go())
    owners = {f["claimed_by"] for f in a.store.fires()}
    assert len(a.store.fires("often")) == 72 and len(a.store.fires("hourly")) == 12
    assert owners == {a.runner_id, b.runner_id}  # both did real work, and ScriptedLauncher saw no key twice
    assert events(tmp_path / "claims.db", "fire.skipped") == []


def test_overlap_policies(tmp_path):
    async def go(policy):
        clock, launcher = Clock(datetime(2024, 12, 31, 23, 59, 50, tzinfo=UTC)), ScriptedLauncher()
        r = runner(tmp_path / policy, [sched("hourly", "0 * * * *", overlap=policy)], launcher, clock)
        await r.tick()  # up before the first fire (one due before the runner came up would be a misfire)
        clock.set(datetime(2025, 1, 1, 0, 0, 10, tzinfo=UTC))
        await r.tick()
        await settle()
        clock.advance(hours=1)  # the first fire is still running
        await r.tick()
        await settle()
        await r.tick()  # the replaced job's end is recorded
        await settle()
        return r, launcher

    r, launcher = asyncio.run(go("forbid"))
    assert [k[1] for k in launcher.launched] == ["2025-01-01T00:00"]
    skipped = events(tmp_path / "forbid" / "claims.db", "fire.skipped")
    assert [(e["scheduled_minute"], e["reason"], e["running_fires"]) for e in skipped] == \
        [("2025-01-01T01:00", "overlap", ["2025-01-01T00:00"])]

    r, launcher = asyncio.run(go("allow"))
    assert [k[1] for k in launcher.launched] == ["2025-01-01T00:00", "2025-01-01T01:00"]

    r, launcher = asyncio.run(go("replace"))
    assert [k[1] for k in launcher.launched] == ["2025-01-01T00:00", "2025-01-01T01:00"]
    failed = events(tmp_path / "replace" / "claims.db", "fire.failed")
    assert [(e["scheduled_minute"], e["status"], e["reason"]) for e in failed] == \
        [("2025-01-01T00:00", "KILLED", "replaced by the 2025-01-01T01:00 fire (overlap policy replace)")]


def test_concurrency_cap_queues_jobs_in_order(tmp_path):
    async def go():
        clock, launcher = Clock(datetime(2025, 1, 1, 1, 59, tzinfo=UTC)), ScriptedLauncher()
        r = runner(tmp_path, [sched(assets=("a", "b", "c"))], launcher, clock, max_concurrent_jobs=2)
        await r.tick()
        clock.set(datetime(2025, 1, 1, 2, 0, 1, tzinfo=UTC))
        await r.tick()
        await settle()
        first = [k[2] for k in launcher.launched]
        launcher.finish(("nightly", "2025-01-01T02:00", "a"))
        await settle()
        clock.advance(hours=3)  # waiting for a slot is not a misfire
        await r.tick()
        await settle()
        return first, [k[2] for k in launcher.launched], launcher.max_running

    first, after, peak = asyncio.run(go())
    assert first == ["a", "b"] and after == ["a", "b", "c"] and peak == 2


@pytest.mark.parametrize("policy,grace,launched,skipped_count", [
    ("skip", 3600, [], 5),
    ("run_once", 3600, ["2025-01-05T02:00"], 4),  # only the newest missed fire, once
    ("run_once", 60, [], 5),  # ... and only if it is within the grace period
])
def test_misfires_after_downtime(tmp_path, policy, grace, launched, skipped_count):
    async def go():
        clock, launcher = Clock(datetime(2025, 1, 1, 0, 0, tzinfo=UTC)), ScriptedLauncher()
        s = lambda: sched(misfire=policy, misfire_grace_seconds=grace)  # noqa: E731
        await runner(tmp_path, [s()], launcher, clock).tick()
        clock.set(datetime(2025, 1, 5, 2, 20, tzinfo=UTC))  # down for four and a half days
        r = runner(tmp_path, [s()], launcher, clock)
        await r.tick()
        await settle()
        await r.tick()
        return launcher

    launcher = asyncio.run(go())
    assert [k[1] for k in launcher.launched] == launched
    skipped = events(tmp_path / "claims.db", "fire.skipped")
    assert len(skipped) == 1  # one event for the whole outage, not a herd
    assert skipped[0]["reason"] == "misfire" and skipped[0]["missed"] == skipped_count
    assert skipped[0]["scheduled_minutes"][0] == "2025-01-01T02:00"


def test_crash_between_claim_and_launch(tmp_path):
    """A runner claimed fires, then died before launching them: launched once if still on time, else skipped."""
    async def go():
        clock, launcher = Clock(datetime(2025, 1, 1, 2, 0, 5, tzinfo=UTC)), ScriptedLauncher()
        dead = runner(tmp_path, [sched("a", "0 2 * * *"), sched("b", "0 1 * * *")], launcher, clock)
        with dead.store.transaction():
            dead.store.claim_fire("a", "2025-01-01T02:00", clock().timestamp() - 5, ["nav-001"], dead.runner_id, 0)
            dead.store.claim_fire("b", "2025-01-01T01:00", clock().timestamp() - 3605, ["nav-001"], dead.runner_id, 0)
            dead.store.set_watermark("a", clock().timestamp())  # as its claiming transaction did
            dead.store.set_watermark("b", clock().timestamp())
        dead.store.register_runner(dead.runner_id, clock().timestamp())
        dead.crash()
        clock.advance(seconds=30)
        r = runner(tmp_path, [sched("a", "0 2 * * *"), sched("b", "0 1 * * *")], launcher, clock, lease_seconds=25,
                   heartbeat_seconds=5)
        await r.tick()
        await settle()
        await r.tick()
        await settle()
        return launcher

    launcher = asyncio.run(go())
    assert launcher.launched == [("a", "2025-01-01T02:00", "nav-001")]
    skipped = events(tmp_path / "claims.db", "fire.skipped")
    assert [(e["schedule_id"], e["reason"]) for e in skipped] == [("b", "misfire")]
    assert "stopped before launching it" in skipped[0]["detail"]


def test_crash_while_running_is_recovered_never_relaunched(tmp_path, receiver):
    async def go():
        clock, launcher = Clock(datetime(2025, 1, 1, 1, 59, tzinfo=UTC)), ScriptedLauncher()
        a = runner(tmp_path, [sched()], launcher, clock, url=receiver.url)
        await a.tick()
        clock.set(datetime(2025, 1, 1, 2, 0, 1, tzinfo=UTC))
        await a.tick()
        await settle()
        a.crash()
        launcher.crash()
        clock.advance(seconds=10)
        b = runner(tmp_path, [sched()], launcher, clock, url=receiver.url)
        await b.tick()  # a's lease has not expired: its job is not touched yet
        assert launcher.recovered == []
        clock.advance(minutes=2)
        await b.tick()
        await settle()
        await b.delivery.deliver_due()
        return launcher

    launcher = asyncio.run(go())
    assert launcher.launched == [("nightly", "2025-01-01T02:00", "nav-001")]
    assert launcher.recovered == [("nightly", "2025-01-01T02:00", "nav-001")]
    got = [g["body"] for g in receiver.got]
    assert [e["event"] for e in got] == ["fire.started", "fire.failed"]
    assert got[1]["status"] == "KILLED" and got[1]["reason"].endswith("stopped while this job ran")


def test_interrupted_fires_continue_their_own_training_run_when_the_schedule_says_so(tmp_path, receiver):
    """Stopped with SIGTERM (on_stop=cancel: a reboot), then killed outright: each time the next runner on the
    file continues the same training run; after max_attempts it gives up; a job failing on its own error and
    a schedule without the policy are not resumed."""
    resuming = dict(resume_interrupted=True, max_resumes=2)

    async def go():
        clock, launcher = Clock(datetime(2025, 1, 1, 1, 59, tzinfo=UTC)), ScriptedLauncher()
        schedules = lambda: [sched(**resuming), sched("plain", "0 2 * * *")]  # noqa: E731
        a = runner(tmp_path, schedules(), launcher, clock, url=receiver.url)
        await a.tick()
        clock.set(datetime(2025, 1, 1, 2, 0, 1, tzinfo=UTC))
        await a.tick()
        await settle()
        a.stop()
        await a._shutdown()  # what run_forever does on SIGTERM: running jobs are cancelled
        assert [j.state for j in a.store.jobs()] == ["pending", "killed"]  # nightly waits to resume, plain ended
        assert a.store.jobs()[0].resume_run_id == "train-2025-01-01T02:00-nav-001"
        a.store.runner_stopped(a.runner_id, a.now())

        clock.advance(hours=3)  # far past any misfire grace: the continuation is owed regardless
        b = runner(tmp_path, schedules(), launcher, clock, url=receiver.url)
        await b.tick()
        await settle()
        assert launcher.resumed == ["train-2025-01-01T02:00-nav-001"]
        b.crash()  # kill -9 of the runner; its child dies with it
        launcher.crash()

        clock.advance(minutes=2)
        c = runner(tmp_path, schedules(), launcher, clock, url=receiver.url)
        await c.tick()  # b's job is recovered (KILLED) and queued to resume a second time
        await settle()
        await c.tick()
        await settle()
        assert len(launcher.resumed) == 2 and len(launcher.running) == 1
        c.stop()
        await c._shutdown()  # a third interruption: max_attempts=2 reached, the job ends KILLED
        await c.delivery.deliver_due()
        return c

    c = asyncio.run(go())
    (nightly,) = c.store.jobs("j.schedule_id='nightly'")
    assert (nightly.state, nightly.attempt) == ("killed", 2)
    got = [(g["body"]["event"], g["body"]["schedule_id"]) for g in receiver.got]
    assert [e for e, sid in got if sid == "nightly"] == [
        "fire.started", "fire.interrupted", "fire.started", "fire.interrupted", "fire.started", "fire.failed"]
    assert [e for e, sid in got if sid == "plain"] == ["fire.started", "fire.failed"]
    bodies = [g["body"] for g in receiver.got if g["body"]["schedule_id"] == "nightly"]
    assert bodies[1]["reason"] == "runner stopping (on_stop=cancel)" and bodies[1]["attempt"] == 1
    assert bodies[2]["resume_of"] == "train-2025-01-01T02:00-nav-001" and bodies[2]["attempt"] == 1
    assert bodies[3]["reason"].endswith("stopped while this job ran") and bodies[3]["max_attempts"] == 2
    assert bodies[5]["status"] == "KILLED" and bodies[5]["resumes"] == 2


def test_a_job_failing_on_its_own_error_is_not_resumed(tmp_path, receiver):
    async def go():
        clock, launcher = Clock(datetime(2025, 1, 1, 1, 59, tzinfo=UTC)), ScriptedLauncher()
        a = runner(tmp_path, [sched(resume_interrupted=True)], launcher, clock, url=receiver.url)
        await a.tick()
        clock.set(datetime(2025, 1, 1, 2, 0, 1, tzinfo=UTC))
        await a.tick()
        await settle()
        launcher.finish(status="FAILED")
        await settle()
        await a.tick()
        await a.delivery.deliver_due()
        return launcher, a

    launcher, a = asyncio.run(go())
    assert launcher.resumed == [] and [j.state for j in a.store.jobs()] == ["failed"]
    assert [g["body"]["event"] for g in receiver.got] == ["fire.started", "fire.failed"]


def test_undelivered_events_survive_a_restart_with_the_same_delivery_id(tmp_path, receiver):
    async def go():
        clock, launcher = Clock(datetime(2025, 1, 1, 1, 59, tzinfo=UTC)), ScriptedLauncher()
        receiver.status = 503
        a = runner(tmp_path, [sched()], launcher, clock, url=receiver.url)
        await a.tick()
        clock.set(datetime(2025, 1, 1, 2, 0, 1, tzinfo=UTC))
        await a.tick()
        assert await a.delivery.deliver_due() == 0  # receiver failing: recorded, scheduling unaffected
        await settle()
        assert len(launcher.launched) == 1
        a.crash()
        receiver.status = 200
        clock.advance(minutes=5)  # past the backoff
        b = runner(tmp_path, [sched()], launcher, clock, url=receiver.url)
        assert await b.delivery.deliver_due() == 1

    asyncio.run(go())
    first, second = receiver.got
    assert first["headers"]["X-Mlops-Delivery"] == second["headers"]["X-Mlops-Delivery"]
    assert first["body"] == second["body"] and first["verified"] and second["verified"]
    con = sqlite3.connect(str(tmp_path / "claims.db"))
    assert con.execute("SELECT attempts, last_error FROM outbox").fetchall() == [(2, None)]


def test_unreachable_or_slow_receiver_is_retried_with_backoff(tmp_path):
    store = ClaimStore(tmp_path / "claims.db")
    with store.transaction():
        webhooks.enqueue(store, "fire.skipped", {"schedule_id": "s"}, 1000.0)
    clock = [1000.0]
    d = webhooks.WebhookDelivery(store, "http://127.0.0.1:9/closed", SECRET, timeout=0.5, max_attempts=3,
                                 clock=lambda: clock[0], log=lambda m: None)
    for attempt in (1, 2, 3):
        assert asyncio.run(d.deliver_due()) == 0
        row = store.db.execute("SELECT attempts, next_attempt_at, gave_up_at, last_error FROM outbox").fetchone()
        assert row[0] == attempt and "ConnectionRefusedError" in row[3] or "Connection refused" in row[3]
        if attempt < 3:
            assert 5 * 2 ** (attempt - 1) <= row[1] - clock[0] <= 1.25 * 5 * 2 ** (attempt - 1)
            clock[0] = row[1]
    assert row[2] is not None  # gave up after max_attempts, kept for inspection


def test_simulated_week_with_random_restarts(tmp_path, receiver):
    """Every due fire launches exactly once or is skipped with an event; the cap always holds."""
    cap = 3
    def make():
        return [sched("often", "15 */2 * * *", assets=("a", "b"), misfire="run_once", misfire_grace_seconds=1800,
                      overlap="allow"),
                sched("hourly", "0 * * * *", assets=("c",), overlap="forbid"),
                sched("nightly", "0 2 * * *", zone="Europe/Berlin", assets=("d", "e", "f"), overlap="replace")]

    start, end = datetime(2025, 3, 27, tzinfo=UTC), datetime(2025, 4, 3, tzinfo=UTC)  # spans Berlin's DST change
    rng = random.Random(7)

    async def go():
        clock, launcher = Clock(start), ScriptedLauncher()
        r = runner(tmp_path, make(), launcher, clock, url=receiver.url, max_concurrent_jobs=cap,
                   sqlite_synchronous="NORMAL")  # kill -9 safe; FULL's fsyncs would only slow the test down
        ends: dict = {}
        restarts = 0
        while clock() < end:
            last_tick = clock()
            await r.tick()
            await settle()
            assert r.store.running_count() <= cap and len(launcher.running) <= cap
            for key in launcher.running:
                ends.setdefault(key, clock() + timedelta(minutes=rng.choice([5, 30, 70, 150])))
            if rng.random() < 0.04:  # kill -9 at a random point, down for up to 3 hours
                r.crash()
                launcher.crash()
                ends.clear()
                restarts += 1
                clock.advance(minutes=rng.choice([0, 1, 30, 180]))
                r = runner(tmp_path, make(), launcher, clock, url=receiver.url, max_concurrent_jobs=cap,
                           sqlite_synchronous="NORMAL")
                continue
            nxt = min([f.due_at for _, f in r.next_fires(1)] + [t for k, t in ends.items() if k in launcher.running])
            clock.set(max(nxt, clock() + timedelta(seconds=1)) + timedelta(seconds=rng.choice([0, 2, 20])))
            for key, t in list(ends.items()):
                if t <= clock() and key in launcher.running:
                    launcher.finish(key, rng.choice(["FINISHED", "FINISHED", "FAILED"]))
            await settle()
        for s in r.schedules.values():  # wind down: no new fires; queued jobs run, the last crash is recovered
            s.enabled = False
        for _ in range(12):
            clock.advance(minutes=30)
            await r.tick()
            await settle()
            launcher.finish()
            await settle()
        await r.delivery.deliver_due()
        return r, launcher, restarts, last_tick

    r, launcher, restarts, last_tick = asyncio.run(go())
    assert restarts >= 3
    evs = [g["body"] for g in receiver.got]
    assert all(g["verified"] for g in receiver.got)
    assert len({e["delivery_id"] for e in evs}) == len(evs)
    skipped_minutes = {(e["schedule_id"], m) for e in evs if e["event"] == "fire.skipped"
                       for m in e.get("scheduled_minutes", [e["scheduled_minute"]])}
    for s in make():
        due = {f.scheduled_minute for f in s.cron.fires_between(start, last_tick)}
        rows = {f["scheduled_minute"]: f for f in r.store.fires(s.schedule_id)}
        assert due <= set(rows), f"{s.schedule_id}: fires never dealt with: {sorted(due - set(rows))[:5]}"
        for minute in due:
            row = rows[minute]
            launched = [k for k in launcher.launched if k[:2] == (s.schedule_id, minute)]
            if row["state"] == "skipped":
                assert launched == [] and (s.schedule_id, minute) in skipped_minutes, (s.schedule_id, minute)
            else:
                jobs = r.store.jobs("j.schedule_id=? AND j.scheduled_minute=?", (s.schedule_id, minute))
                for job in jobs:  # each asset: launched once, or skipped with an event
                    n = launched.count(job.key)
                    assert n == 1 or (n == 0 and job.state == "skipped"), (job.key, job.state, n)
    assert len(launcher.launched) == len(set(launcher.launched))
    assert launcher.max_running <= cap
    # every started job got exactly one ending event
    started = {(e["schedule_id"], e["scheduled_minute"], e["asset_id"]) for e in evs if e["event"] == "fire.started"}
    ended = [(e["schedule_id"], e["scheduled_minute"], e["asset_id"]) for e in evs
             if e["event"] in ("fire.succeeded", "fire.failed")]
    assert sorted(ended) == sorted(started) and len(started) == len(launcher.launched)


def test_recovery_closes_runs_a_killed_runner_left_running(store, tmp_path):
    """kill -9 of runner and child leaves MLflow runs RUNNING: the next runner ends them KILLED."""
    import mlflow

    from mlops_unity_pipeline import UnityMLOpsOrchestrator
    from pipeline.scheduling.claims import JobRecord
    from pipeline.scheduling.launcher import PipelineLauncher, fire_job
    from pipeline.tracking import store as tracking

    tracking.configure()
    exp = tracking.experiment_id("unity-mlagents")
    client = mlflow.MlflowClient()
    tags = {"schedule_id": "nightly", "scheduled_minute": "2025-01-01T02:00", "asset": "nav-001"}
    main = client.create_run(exp, tags={**tags, "pipeline.stage": "main"}).info.run_id
    train = client.create_run(exp, tags={**tags, "pipeline.stage": "train"}).info.run_id
    gone = subprocess.Popen([PYTHON, "-c", "pass"])
    gone.wait()
    record = JobRecord("nightly", "2025-01-01T02:00", "nav-001", 0, "started", "dead-runner", gone.pid, None,
                       0.0, None, None, None)
    launcher = PipelineLauncher(UnityMLOpsOrchestrator(), tmp_path / "results")
    job = fire_job(template("nav-001"), "nightly", "2025-01-01T02:00", "UTC")
    result = launcher.recover(record, job, "runner dead-runner stopped while this job ran")
    assert (result.status, result.run_id, result.run_ids) == ("KILLED", main, {"train": train})
    assert result.error == "runner dead-runner stopped while this job ran"
    assert [client.get_run(r).info.status for r in (main, train)] == ["KILLED", "KILLED"]
