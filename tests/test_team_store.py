"""The team store: a real PostgreSQL and `mlflow server` with proxied artifacts (started by the test session),
scheduler claims shared through PostgreSQL, resuming a killed training on another node from the artifacts
the tracking server holds, and concurrent first use of a brand-new sqlite store."""
from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import mlflow
import psycopg
import pytest
import sqlalchemy

from pipeline.paths import REPO_ROOT
from pipeline.scheduling.claims import SCHEMA, ClaimStore, to_postgres
from tests.support.postgres import fresh_database, unique_name
from tests.support.process import PYTHON, REPO, child_env
from tests.support.store import all_runs
from tests.support.training import TINY
from tests.test_scheduling import CLAIMER


# -- the store --------------------------------------------------------------------------------------
@pytest.mark.slow  # a real PostgreSQL server
def test_a_plain_postgresql_uri_reaches_the_server_through_psycopg3(postgres_server):
    engine = sqlalchemy.create_engine(postgres_server.url())
    assert engine.dialect.driver == "psycopg"  # SQLAlchemy 2 maps postgresql:// to psycopg 3, as locked
    with engine.connect() as conn:
        assert conn.execute(sqlalchemy.text("SELECT 1")).scalar() == 1
    engine.dispose()


@pytest.mark.slow  # a real PostgreSQL and mlflow server
def test_the_team_server_keeps_runs_in_postgres_and_proxies_artifacts(team_server):
    client = mlflow.MlflowClient(team_server.url)
    exp = client.create_experiment(unique_name("proxy"))
    run = client.create_run(exp)
    client.log_text(run.info.run_id, "from a node with no shared disk", "notes/hello.txt")
    client.set_terminated(run.info.run_id)
    # Clients are told an mlflow-artifacts: URI: every byte goes through the server's HTTP API.
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
    stored = list(team_server.artifacts.rglob("hello.txt"))
    assert len(stored) == 1 and stored[0].read_text() == "from a node with no shared disk"
    with psycopg.connect(team_server.backend_uri) as conn:
        status = conn.execute("SELECT status FROM runs WHERE run_uuid = %s", (run.info.run_id,)).fetchone()
    assert status == ("FINISHED",)


# -- scheduler claims on PostgreSQL ---------------------------------------------------------------------
def test_sqlite_flavoured_claims_sql_reads_as_postgresql():
    assert to_postgres("INSERT OR IGNORE INTO fires VALUES (?, ?)") == \
        "INSERT INTO fires VALUES (%s, %s) ON CONFLICT DO NOTHING"
    assert to_postgres("SELECT MIN(MAX(a, COALESCE(b, 0))) FROM t WHERE c LIKE 'x%'") == \
        "SELECT MIN(GREATEST(a, COALESCE(b, 0))) FROM t WHERE c LIKE 'x%%'"
    assert to_postgres("SELECT MAX(due_at) FROM fires") == "SELECT MAX(due_at) FROM fires"


@pytest.mark.slow  # a real PostgreSQL server, child processes
def test_postgres_claims_across_processes_are_won_exactly_once(postgres_server, tmp_path):
    url, go = fresh_database(postgres_server, "claims"), tmp_path / "go"
    ClaimStore(url).close()
    procs = [subprocess.Popen([PYTHON, "-c", CLAIMER, url, f"p{i}", str(go)], cwd=REPO, env=child_env(),
                              stdout=subprocess.PIPE, text=True) for i in range(4)]
    go.touch()  # all start claiming together, each in its own order
    won = [json.loads(p.communicate(timeout=300)[0]) for p in procs]
    flat = [k for w in won for k in w]
    assert len(flat) == 120 and len(set(flat)) == 120  # every minute claimed, none twice
    with psycopg.connect(url) as conn:
        owners = dict(conn.execute("SELECT scheduled_minute, claimed_by FROM fires").fetchall())
    assert all(owners[k] == f"p{i}" for i, w in enumerate(won) for k in w)


@pytest.mark.slow  # a real PostgreSQL server
def test_a_postgres_claims_database_from_before_resumes_is_upgraded_in_place(postgres_server):
    url = fresh_database(postgres_server, "old_claims")
    old = "\n".join(line for line in SCHEMA.splitlines() if not line.lstrip().startswith(("attempt ", "resume_")))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(old.replace(" REAL ", " DOUBLE PRECISION ").replace(" BLOB ", " BYTEA "))
        conn.execute("INSERT INTO fires VALUES ('nightly', '2025-01-01T02:00', 0, 0, 'r', 'done', NULL)")
        conn.execute("INSERT INTO jobs (schedule_id, scheduled_minute, asset_id, position, state) VALUES "
                     "('nightly', '2025-01-01T02:00', 'nav-001', 0, 'succeeded')")
    store = ClaimStore(url)
    (job,) = store.jobs()
    assert (job.state, job.attempt, job.resume_run_id) == ("succeeded", 0, None)
    with store.transaction():
        store.set_watermark("nightly", 5.0)
        store.set_watermark("nightly", 3.0)  # never moves back
    assert store.watermark("nightly") == 5.0
    store.close()


@pytest.mark.slow  # starts the cron runner
def test_an_unreachable_claims_database_is_one_error_line_without_the_password():
    done = subprocess.run([PYTHON, "scripts/cron_runner.py", "--schedule", "nightly", "--state",
                           "postgresql://mlops:s3cret@127.0.0.1:1/claims"], cwd=REPO, env=child_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr  # a service that is down, not bad input
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: state postgresql://mlops:***@127.0.0.1:1/claims: cannot open the claims "
                           "database (connection failed:")
    assert last.endswith("; check the host, port, database name and credentials in the URL")
    assert "s3cret" not in done.stderr + done.stdout


@pytest.mark.slow  # a real PostgreSQL server
def test_the_guides_scheduler_keeps_its_state_in_postgres(postgres_server):
    from mlops_unity_pipeline import TrainingSchedule, TrainingScheduler, UnityAssetSpec, UnityMLOpsOrchestrator

    url = fresh_database(postgres_server, "guide_claims")
    scheduler = TrainingScheduler(UnityMLOpsOrchestrator(), state_path=url, log=lambda m: None)
    scheduler.add_schedule(TrainingSchedule("nightly", "0 2 * * *", [UnityAssetSpec("nav-001", "NavigationAgent")]))

    async def briefly() -> None:
        task = asyncio.create_task(scheduler.run_forever())
        await asyncio.sleep(1.0)
        scheduler.stop()
        await asyncio.wait_for(task, 60)

    asyncio.run(briefly())
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT stopped_at IS NOT NULL, checked_through > 0 FROM runners "
                            "JOIN watermarks ON TRUE").fetchall() == [(True, True)]


# Each runner is scripts/cron_runner.py's own main(), with only its clock replaced by one shared fast clock
# (a scheduled minute every 60/SPEED real seconds) and a short heartbeat so it wakes for each minute.
FAST_RUNNER = """
import functools, importlib.util, sys, time
from datetime import datetime, timedelta, timezone
start, speed, argv = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3:]
t0 = datetime(2025, 1, 1, 0, 0, 30, tzinfo=timezone.utc)
clock = lambda: t0 + timedelta(seconds=(time.time() - start) * speed)
spec = importlib.util.spec_from_file_location("cron_runner", "scripts/cron_runner.py")
cron_runner = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cron_runner)
cron_runner.Runner = functools.partial(cron_runner.Runner, clock=clock)
cron_runner.RunnerSettings = functools.partial(cron_runner.RunnerSettings, heartbeat_seconds=0.5, lease_seconds=600)
cron_runner.main(argv)
"""
SPEED = 15.0  # 4 s per scheduled minute


@pytest.mark.slow
def test_two_cron_runners_on_one_postgres_claims_database_fire_each_minute_once(postgres_server, team_server,
                                                                                 tmp_path):
    url = fresh_database(postgres_server, "shared_claims")
    schedule_id, experiment = unique_name("everyminute"), unique_name("cron")
    (tmp_path / "schedules").mkdir()
    tiny = [o for o in TINY if not o.startswith("max_steps")] + [f"results_dir={tmp_path / 'results'}"]
    (tmp_path / "schedules" / f"{schedule_id}.yaml").write_text(json.dumps(
        {"cron": "* * * * *", "assets": ["nav"], "max_steps": 2000, "overrides": tiny, "overlap": "forbid"}))
    env = child_env(MLFLOW_TRACKING_URI=team_server.url)
    start = time.time()
    runners = [subprocess.Popen([PYTHON, "-c", FAST_RUNNER, str(start), str(SPEED), "--schedule-dir",
                                 str(tmp_path / "schedules"), "--state", url, "--experiment-name", experiment,
                                 # Jobs run to their end at SIGTERM: this test is about claims, and a job cut
                                 # short mid-start-up is covered by the scheduler's own tests.
                                 "--on-stop", "finish"],
                                cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True) for _ in range(2)]
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and all(r.poll() is None for r in runners):
                alive = conn.execute("SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 'runners'")
                if alive.fetchone()[0] and conn.execute("SELECT COUNT(*) FROM runners").fetchone()[0] == 2 and \
                        conn.execute("SELECT COUNT(*) FROM fires WHERE claimed_at > (SELECT MAX(started_at) "
                                     "FROM runners)").fetchone()[0] >= 6:
                    break  # both up, and six minutes fired since the second one joined
                time.sleep(0.5)
        for r in runners:
            r.send_signal(signal.SIGTERM)
        outs = [r.communicate(timeout=120)[0] for r in runners]
    finally:
        for r in runners:
            if r.poll() is None:
                os.killpg(r.pid, signal.SIGKILL)
        shutil.rmtree(REPO_ROOT / "scheduler-results" / schedule_id, ignore_errors=True)
    assert [r.returncode for r in runners] == [0, 0], outs
    assert all("Traceback" not in out for out in outs), "\n".join(outs)

    with psycopg.connect(url) as conn:
        fires = conn.execute("SELECT scheduled_minute, claimed_by, state, reason FROM fires ORDER BY due_at").fetchall()
        jobs = conn.execute("SELECT scheduled_minute, state FROM jobs WHERE state <> 'skipped'").fetchall()
        runner_ids = [r[0] for r in conn.execute("SELECT runner_id FROM runners")]
    minutes = [f[0] for f in fires]
    print(f"\nclaims by runner: {dict(Counter(f[1] for f in fires))}; launched: {jobs}; "
          f"skipped: {dict(Counter(f[3] for f in fires if f[2] == 'skipped'))}")
    assert len(minutes) >= 6 and len(set(minutes)) == len(minutes)
    first, last = (int(m[-5:-3]) * 60 + int(m[-2:]) for m in (minutes[0], minutes[-1]))
    assert len(minutes) == last - first + 1, minutes  # every minute between, none lost either
    # Each minute was decided by exactly one runner: one "claimed" or "skipped" line in both logs together.
    decided = Counter(m for out in outs for m in re.findall(rf"^{schedule_id} (\S+): (?:claimed|skipped)", out, re.M))
    assert all(n == 1 for n in decided.values()), decided
    assert len(runner_ids) == 2 and {f[1] for f in fires} <= set(runner_ids)
    # ...and a launched minute has one pipeline run, whoever launched it.
    assert jobs and len({m for m, _ in jobs}) == len(jobs)
    mlflow.set_tracking_uri(team_server.url)
    exp = mlflow.get_experiment_by_name(experiment)
    mains = mlflow.MlflowClient().search_runs([exp.experiment_id], "tags.`pipeline.stage` = 'main'") if exp else []
    per_minute = Counter(r.data.tags["scheduled_minute"] for r in mains)
    assert all(n == 1 for n in per_minute.values()) and set(per_minute) <= {m for m, _ in jobs}, per_minute


# -- resume on another node ---------------------------------------------------------------------------
def train_cmd(experiment: str, results: Path, max_steps: int, resume: str = "") -> list[str]:
    budget = [o for o in TINY if not o.startswith(("max_steps", "algorithm.checkpoint_interval"))]
    return [PYTHON, "-m", "pipeline.cli", "train", "--asset", "nav", "--max_steps", str(max_steps),
            "--resume", resume, "--overrides", " ".join([*budget, "algorithm.checkpoint_interval=2000",
                                                         f"tracking.experiment_name={experiment}",
                                                         f"results_dir={results}"])]


@pytest.mark.slow
def test_a_training_killed_with_its_node_resumes_on_another_node_from_the_team_server(team_server, tmp_path):
    experiment = unique_name("resume")
    env = child_env(MLFLOW_TRACKING_URI=team_server.url)
    client = mlflow.MlflowClient(team_server.url)
    node_a, node_b = tmp_path / "node-a" / "results", tmp_path / "node-b" / "results"
    first = subprocess.Popen(train_cmd(experiment, node_a, 6000), cwd=REPO, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline, run = time.monotonic() + 400, None
        while time.monotonic() < deadline and first.poll() is None:
            exp = client.get_experiment_by_name(experiment)
            runs = client.search_runs([exp.experiment_id]) if exp else []
            run = runs[0] if runs else None
            if run is not None and "pipeline.checkpoint_step" in run.data.tags:
                break  # the first checkpoint is on the tracking server
            time.sleep(0.2)
        assert first.poll() is None, first.communicate()[0]
        os.killpg(first.pid, signal.SIGKILL)  # the node dies: trainer and env workers at once, nothing saved
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    run_id = run.info.run_id
    killed = client.get_run(run_id)
    uploaded = int(killed.data.tags["pipeline.checkpoint_step"])
    killed_at = max(m.step for m in client.get_metric_history(run_id, "Policy/Extrinsic Value Estimate"))
    assert killed.info.status == "RUNNING" and 0 < uploaded < 6000 and killed_at - uploaded <= 2000  # <= 1 interval
    shutil.rmtree(node_a.parent)  # another node: no results directory, no lock file

    second = subprocess.run(train_cmd(experiment, node_b, 6000, resume=run_id), cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=600)
    out = second.stdout + second.stderr
    assert second.returncode == 0, out
    assert f"train: restored the checkpoint of step {uploaded:,} from the tracking server into {node_b / run_id}" in out
    assert f"train: resuming run {run_id} from its last checkpoint (resume #1)" in out
    train = client.get_run(run_id)
    assert train.info.status == "FINISHED" and train.data.tags["pipeline.resumed"] == "1"
    assert train.data.tags["results_dir"] == str(node_b / run_id)
    assert len(client.search_runs([train.info.experiment_id])) == 1  # the same run, continued
    history = sorted(client.get_metric_history(run_id, "Policy/Extrinsic Value Estimate"), key=lambda m: m.timestamp)
    steps = [m.step for m in history]
    assert steps == sorted(set(steps)) and killed_at in steps and steps[-1] >= 6000, steps
    assert (node_b / run_id / "NavigationAgent" / "checkpoint.pt").exists()


# -- concurrent first use of a store ----------------------------------------------------------------------
@pytest.mark.slow  # starts the command line in child processes
def test_two_processes_on_a_brand_new_sqlite_store_both_finish(tmp_path):
    uri = f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"
    env = child_env(MLFLOW_TRACKING_URI=uri)
    procs = [subprocess.Popen([PYTHON, "-m", "pipeline.cli", "build", "--asset", asset], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for asset in ("nav", "patrol")]  # started together: both find no store and create it
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert not any("already exists" in o or "duplicate column" in o for o in outs), outs
    mlflow.set_tracking_uri(uri)
    runs = all_runs()
    assert sorted((r.data.tags["asset"], r.info.status) for r in runs) == [("agent-1", "FINISHED"),
                                                                          ("nav-001", "FINISHED")]


FIRST_USE = ("import sys, mlflow; from pipeline.tracking import store; store.configure(sys.argv[1]); "
             "print(sorted(e.name for e in mlflow.MlflowClient().search_experiments()))")


@pytest.mark.slow  # a real PostgreSQL server, child processes
def test_two_processes_on_a_brand_new_postgres_store_both_start(postgres_server):
    uri = fresh_database(postgres_server, "direct_store")  # MLFLOW_TRACKING_URI=postgresql://..., no server
    env = child_env(MLFLOW_TRACKING_URI=uri)  # `make test` exports the repo's own store: the variable wins
    procs = [subprocess.Popen([PYTHON, "-c", FIRST_USE, uri], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    with psycopg.connect(uri) as conn:  # created once: one schema version, one Default experiment
        assert conn.execute("SELECT COUNT(*) FROM alembic_version").fetchone() == (1,)
        assert conn.execute("SELECT COUNT(*) FROM experiments WHERE name = 'Default'").fetchone() == (1,)


@pytest.mark.slow  # a child process
def test_a_ready_store_is_recognised_without_building_mlflows_store_or_locking(tmp_path):
    from pipeline.tracking import store

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    store.prepare(uri)  # creates it, under the lock
    assert uri in store._ready and store._created(tmp_path / "mlflow.db")
    (tmp_path / "mlflow.db.init-lock").unlink()
    code = ("import sys; from pipeline.tracking import store; store.prepare(sys.argv[1]); "
            "print('mlflow.store.tracking.sqlalchemy_store' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code, uri], cwd=REPO, env=child_env(), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    # Another process starting on it reads the stamped schema version only: no store built, no migration,
    # no lock taken (MLflow itself builds its store later, when the process first logs).
    assert done.stdout.strip() == "False" and not (tmp_path / "mlflow.db.init-lock").exists()
