"""Hardening against careless or hostile input, through real invocations: one `error:` line and exit code 2
with nothing created; env workers never outlive a failed training; a huge dataset line costs 1 MiB, not its
size; a read-only results location is found before any stage runs; one failing schedule never stops the others.
"""
from __future__ import annotations

import os
import socket
import subprocess
import textwrap
from datetime import datetime, timezone

import pytest

import mlops_unity_pipeline  # noqa: F401  (first: the guide API and pipeline.scheduling.runner import each other)
from pipeline.scheduling.cron import CronSchedule
from pipeline.scheduling.runner import upcoming
from tests.support.process import PYTHON, REPO, child_env
from tests.support.store import all_runs
from tests.test_scheduling import Clock, ScriptedLauncher, events, runner, sched, settle

CLI_CASES = [
    # (argv after `python -m pipeline.cli` or `python -m pipeline.run`, the exact last stderr line)
    (["pipeline.cli", "train", "--seed", "4294967296", "--overrides", "results_dir={tmp}/r"],
     "error: seed must be <= 2147483647, got 4294967296 (allowed: an integer from 0 to 2147483647; e.g. seed=0)"),
    (["pipeline.cli", "train", "--overrides", "asset=../../../tmp/evil results_dir={tmp}/r"],
     "error: asset='../../../tmp/evil' is not allowed: a config-group choice must be the plain name of a config in "
     "conf/asset/ (letters, digits, '_', '-' or '.'; no '/' or '..'), never a path: a path would load a YAML from "
     "outside conf/; e.g. asset=nav"),
    pytest.param(  # slow: through a Hydra multirun hand-off
        ["pipeline.cli", "main", "--overrides",
         "-m seed=0,1 +hydra.job.env_set.LD_PRELOAD=/tmp/x.so results_dir={tmp}/r"],
        "error: hydra.job.env_set.LD_PRELOAD='/tmp/x.so' is not allowed: env_set sets the environment of the run's "
        "processes (LD_PRELOAD, PYTHONPATH and the like load code into them); set environment variables in the shell "
        "that starts the pipeline instead (see pipeline/config/hydra_settings.py)", marks=pytest.mark.slow),
    pytest.param(  # slow: through the Hydra app
        ["pipeline.run", "hydra.run.dir=/etc/pipeline-outputs", "results_dir={tmp}/r"],
        "error: hydra.run.dir='/etc/pipeline-outputs' is not allowed: /etc/pipeline-outputs is outside "
        f"{REPO} and /tmp; Hydra (or the sweep callback) writes there, so it may only be a directory inside the "
        "working directory or the temporary directory, e.g. hydra.run.dir=outputs/my-run "
        "(see pipeline/config/hydra_settings.py)", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("argv,line", CLI_CASES, ids=["seed", "asset path", "env_set via main -m", "run dir"])
def test_refused_on_the_real_command_line(argv, line, store, tmp_path):
    proc = subprocess.run([PYTHON, "-m", *(a.replace("{tmp}", str(tmp_path)) for a in argv)], cwd=REPO,
                          env=child_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == line
    assert all_runs() == [] and all_runs("tests") == []
    assert not (tmp_path / "r").exists() and not os.path.exists("/etc/pipeline-outputs")


def test_read_only_results_location_is_refused_before_the_build_stage(store, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)],
                             capture_output=True).returncode == 0
    if not mounted:
        if os.geteuid() == 0:
            pytest.skip("cannot mount a read-only file system here")
        ro.chmod(0o555)
    try:
        proc = subprocess.run([PYTHON, "-m", "pipeline.cli", "main", "--overrides", f"results_dir={ro}/results"],
                              cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=300)
    finally:
        if mounted:
            subprocess.run(["umount", str(ro)], check=True)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: results_dir={ro}/results: {ro} is not writable (read-only file system or no permission); "
        "choose a writable location, e.g. results_dir=/tmp/results")
    assert all_runs() == []  # not even the build stage's run


@pytest.mark.slow  # a training starts its workers
def test_env_workers_never_outlive_a_training_that_fails_before_it_starts(store, tmp_path):
    """Past validation (a plan built by hand), ML-Agents refuses seed 2**32 after the workers started: the
    training must fail and its process exit, not wait for ever on its non-daemon workers."""
    script = textwrap.dedent(f"""
        import dataclasses, sys
        from pipeline.config.compose import compose_plan
        from pipeline.training import mlagents_trainer
        from tests.support.training import TINY
        plan = dataclasses.replace(compose_plan(TINY), seed=2**32)
        try:
            mlagents_trainer.train(plan, __import__("pathlib").Path({str(tmp_path)!r}), "seed-too-big")
        except ValueError as exc:
            print("refused:", exc)
            sys.exit(3)
    """)
    proc = subprocess.run([PYTHON, "-c", script], cwd=REPO, env=child_env(), capture_output=True, text=True,
                          timeout=120)  # without the fix: never returns
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "refused: Seed must be between 0 and 2**32 - 1" in proc.stdout


def test_a_40_mb_single_line_dataset_is_refused_reading_1_mib_of_it(tmp_path):
    path = tmp_path / "huge.jsonl"
    with open(path, "wb") as f:
        f.write(b'{"episode": 0, "pad": "')
        f.write(b"x" * (40 << 20))
        f.write(b'"}\n')
    script = textwrap.dedent(f"""
        import tracemalloc
        from pipeline.offline.dataset import DatasetError, Layout
        from pipeline.offline.jsonl import read
        layout = Layout("NavigationAgent", (("raycast", 8), ("velocity", 2), ("target", 2)), 2)
        tracemalloc.start()
        try:
            read(__import__("pathlib").Path({str(path)!r}), layout)
        except DatasetError as exc:
            print(exc)
        print(tracemalloc.get_traced_memory()[1])
    """)
    proc = subprocess.run([PYTHON, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120, check=True)
    message, peak = proc.stdout.strip().splitlines()
    assert message == (f"{path}: line 1 is longer than 1048576 bytes (1 MiB), the limit for one step; a JSONL "
                       "dataset has one JSON object per line (data/demos/README.md)")
    assert int(peak) < 3 << 20, f"peak {int(peak) >> 20} MiB for a 40 MiB line"


class BrokenCron(CronSchedule):
    """A schedule whose next fire cannot be computed at run time (what a croniter failure looks like)."""

    def fires_after(self, after):
        raise RuntimeError("croniter failed to find next date")


def test_a_schedule_failing_at_run_time_is_reported_disabled_and_the_others_keep_running(tmp_path):
    import asyncio

    async def scenario():
        clock = Clock(datetime(2026, 3, 1, 1, 59, 30, tzinfo=timezone.utc))
        bad = sched("broken", assets=("patrol-001",))
        bad.cron = BrokenCron("0 2 * * *")
        good = sched("nightly")
        launcher = ScriptedLauncher()
        lines: list[str] = []
        r = runner(tmp_path, [bad, good], launcher, clock)
        r.log = lines.append
        await r.tick()
        clock.advance(seconds=40)  # 02:00:10: the good schedule is due
        await r.tick()
        await settle()
        return r, launcher, lines

    r, launcher, lines = asyncio.run(scenario())
    assert [k[0] for k in launcher.launched] == ["nightly"]
    assert not r.schedules["broken"].enabled and r.schedules["nightly"].enabled
    assert ("error: schedule broken disabled: RuntimeError: croniter failed to find next date; the other schedules "
            "keep running (fix it and restart the runner)") in lines
    (event,) = events(tmp_path / "claims.db", "schedule.failed")
    assert event["schedule_id"] == "broken" and event["disabled"] is True
    assert event["error"] == "RuntimeError: croniter failed to find next date"
    # `--list` (scripts/cron_runner.py) lists the others instead of crashing.
    broken = sched("broken2")
    broken.cron = BrokenCron("0 2 * * *")
    failed: list[str] = []
    listed = upcoming([broken, sched("nightly")], datetime(2026, 3, 1, tzinfo=timezone.utc), 1,
                      on_error=lambda s, exc: failed.append(s.schedule_id))
    assert [s.schedule_id for s, _ in listed] == ["nightly"] and failed == ["broken2"]


def test_cron_runner_list_refuses_a_never_firing_schedule_naming_the_file(tmp_path):
    (tmp_path / "feb30.yaml").write_text("cron: '0 0 30 2 *'\nassets: [nav]\n")
    (tmp_path / "ok.yaml").write_text("cron: '0 2 * * *'\nassets: [nav]\n")
    proc = subprocess.run([PYTHON, "scripts/cron_runner.py", "--schedule-dir", str(tmp_path), "--list", "3"],
                          cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: schedule 'feb30': cron '0 0 30 2 *' never fires: no minute matches it within 8 years (a day that "
        "does not exist in that month, such as February 30th or April 31st?); fix the day-of-month and month "
        f"fields, e.g. '0 0 28 2 *' (in {tmp_path}/feb30.yaml)")
    assert proc.stdout == ""


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("kind", ["team server", "database"])
def test_a_store_that_does_not_answer_is_one_error_line_exit_1_and_nothing_written(kind, tmp_path):
    port = _closed_port()  # nothing listens there
    if kind == "team server":
        uri = f"http://mlflow:s3cret@127.0.0.1:{port}"
        start = (f"error: tracking server http://mlflow:***@127.0.0.1:{port}: connection refused; start it "
                 "(e.g. `make team-server`) or set MLFLOW_TRACKING_URI to a running one")
        end = "running one"
    else:
        uri = f"postgresql://mlops:s3cret@127.0.0.1:{port}/runs"
        start = f"error: tracking store postgresql://mlops:***@127.0.0.1:{port}/runs: cannot open the database ("
        end = "; check the host, port, database name and credentials in MLFLOW_TRACKING_URI"
    proc = subprocess.run([PYTHON, "-m", "pipeline.cli", "train", "--max_steps", "1000", "--overrides",
                           f"results_dir={tmp_path / 'r'}"], cwd=REPO, env=child_env(MLFLOW_TRACKING_URI=uri),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr  # a service that is down, not bad input
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(start) and last.endswith(end), proc.stderr
    assert "Traceback" not in proc.stderr and "s3cret" not in proc.stderr + proc.stdout
    assert not (tmp_path / "r").exists()
