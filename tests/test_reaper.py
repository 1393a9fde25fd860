"""Nothing stays RUNNING forever: real `main`, `evaluate` and `register` processes are SIGKILLed mid-run, and
`python -m pipeline.cli reap` closes every run they left RUNNING (stage runs and the pipeline parent), FAILED,
with the reason; live runs and other hosts' runs are left alone."""
from __future__ import annotations

import os
import socket
import subprocess
import threading
import time

import mlflow
import pytest

from pipeline.tracking import reaper
from tests.support.process import PYTHON, REPO, child_env
from tests.support.store import all_runs
from tests.support.training import TINY

pytestmark = pytest.mark.slow


def start(stage: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([PYTHON, "-m", "pipeline.cli", stage, *args], cwd=REPO, env=child_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_runs(stages: set[str], proc: subprocess.Popen, timeout: float = 240) -> dict[str, str]:
    """Stage -> run id, once a RUNNING run of every one of these stages exists."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = {r.data.tags.get("pipeline.stage"): r.info.run_id for r in all_runs() if r.info.status == "RUNNING"}
        if stages <= set(found):
            return {s: found[s] for s in stages}
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        time.sleep(0.2)
    raise AssertionError(f"no RUNNING {stages} run appeared")


def kill_and_reap(proc: subprocess.Popen, runs: dict[str, str]) -> str:
    proc.kill()
    proc.wait(timeout=60)
    assert all(mlflow.get_run(r).info.status == "RUNNING" for r in runs.values())  # what MLflow alone leaves
    out = subprocess.run([PYTHON, "-m", "pipeline.cli", "reap"], cwd=REPO, env=child_env(), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    host = socket.gethostname()
    for stage, run_id in runs.items():
        run = mlflow.get_run(run_id)
        assert run.info.status == "FAILED", stage
        died = "the training process died" if stage == "train" else f"the {stage} process died"
        assert run.data.tags["pipeline.error"].startswith(f"{died}: process {proc.pid} on {host} is gone"), \
            run.data.tags["pipeline.error"]
        assert run_id in out.stdout
    return out.stdout


def test_sigkilled_main_leaves_no_run_running(store, tmp_path):
    proc = start("main", "--max_steps", "200000", "--overrides", " ".join(
        [t for t in TINY if not t.startswith("max_steps")] + [f"results_dir={tmp_path / 'results'}"]))
    runs = wait_for_runs({"main", "train"}, proc)
    out = kill_and_reap(proc, runs)
    assert "2 run(s) of dead processes marked FAILED" in out
    train = mlflow.get_run(runs["train"])
    assert train.data.tags["pipeline.error"].endswith(f"resume it with resume={runs['train']}")


@pytest.fixture
def trained(store, tmp_path) -> str:
    from pipeline.config.compose import compose_plan
    from pipeline.stages import train

    return train.train(compose_plan([*TINY, f"results_dir={tmp_path / 'results'}"])).run_id


def test_sigkilled_evaluate_is_reaped(trained):
    proc = start("evaluate", "--policy", trained, "--overrides", "evaluation.episodes=100000")
    kill_and_reap(proc, wait_for_runs({"evaluate"}, proc))


def black_hole() -> tuple[int, threading.Event]:
    """A TCP port that accepts connections and never answers: a registry endpoint that hangs."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    stop = threading.Event()
    held = []

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue
        for c in held:
            c.close()
        server.close()

    threading.Thread(target=accept, daemon=True).start()
    return server.getsockname()[1], stop


def test_sigkilled_register_is_reaped(trained):
    port, stop = black_hole()
    try:
        proc = start("register", "--run_id", trained, "--overrides", " ".join([
            "registry.vertex_project=my-unity-project", "registry.credentials=anonymous",
            f"registry.api_endpoint=http://127.0.0.1:{port}", f"registry.storage_endpoint=http://127.0.0.1:{port}",
            "registry.serving_container_image_uri=us-docker.pkg.dev/p/r/onnx:1", "registry.timeout_s=300"]))
        kill_and_reap(proc, wait_for_runs({"register"}, proc))
    finally:
        stop.set()


def test_live_runs_other_hosts_and_reused_pids(store):
    """In process, no training: what `why_dead` says for each kind of RUNNING run."""
    client = mlflow.MlflowClient()
    exp = client.create_experiment("reap-cases")
    mine = reaper.process_tags()

    def run(**tags: str) -> str:
        return client.create_run(exp, tags={"pipeline.stage": "evaluate", **tags}).info.run_id

    alive = run(**mine)
    reused = run(**{**mine, reaper.PID_START: "1"})  # this pid, but another process's start time
    rebooted = run(**{**mine, reaper.BOOT_ID: "another-boot"})
    gone = run(**{**mine, reaper.PID: str(2**22 + 12345)})  # above pid_max: never a live process
    elsewhere = run(**{**mine, reaper.HOST: "another-host"})
    untagged = run()
    closed = {r.run_id: r.reason for r in reaper.reap([exp])}
    assert set(closed) == {reused, rebooted, gone}
    assert closed[reused].endswith("(its pid now belongs to another process)")
    assert "was restarted since process" in closed[rebooted]
    assert closed[gone] == f"the evaluate process died: process {2**22 + 12345} on {socket.gethostname()} is gone"
    for run_id in (alive, elsewhere, untagged):
        assert client.get_run(run_id).info.status == "RUNNING"
    # --older-than closes what this host cannot check, once old enough; never a live run of this host.
    closed = {r.run_id: r.reason for r in reaper.reap([exp], older_than=1e-3)}
    assert set(closed) == {elsewhere, untagged}
    assert "on another-host, which this host cannot check" in closed[elsewhere]
    assert client.get_run(alive).info.status == "RUNNING"
    assert os.getpid() == int(mine[reaper.PID])


def test_bad_older_than_is_one_error_line(store):
    out = subprocess.run([PYTHON, "-m", "pipeline.cli", "reap", "--older-than", "soon"], cwd=REPO, env=child_env(),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip() == "error: --older-than 'soon' must be a positive duration such as 90s, 30m, 12h or 2d"
