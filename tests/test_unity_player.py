"""Training on a Unity player build over ML-Agents' real gRPC protocol, against the simulated player."""
from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import mlflow
import pytest

from pipeline.config.compose import compose_plan
from pipeline.config.errors import ConfigError
from pipeline.tracking.store import experiment_id
from pipeline.unity import ports
from tests.support.process import PYTHON, REPO, alive, child_env, command_line
from tests.support.training import TINY

PLAYER = REPO / "scripts" / "simulated_player"


def make_build(folder: Path, name: str = "Nav.x86_64") -> Path:
    """A directory laid out like a Linux player build whose executable is the simulated player."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{Path(name).stem}_Data").mkdir(exist_ok=True)
    exe = folder / name
    exe.write_text(f'#!/bin/sh\nexec "{PLAYER}" --executable "$0" "$@"\n')
    exe.chmod(0o755)
    return exe


def alive_with(marker: str) -> list[int]:
    """Live (not zombie) processes whose command line mentions marker."""
    return [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
            if marker in command_line(pid) and alive(pid)]


# --- the build path is checked before anything runs -------------------------------------------
def test_bad_player_paths_are_refused_naming_the_key(tmp_path):
    not_exec = tmp_path / "NotExec.x86_64"
    not_exec.write_text("#!/bin/sh\n")
    windows = tmp_path / "Nav.exe"
    windows.write_bytes(b"MZ\x90\x00rest")
    windows.chmod(0o755)
    cases = {
        str(tmp_path / "Missing.x86_64"): "no such file; give the path of a Unity player build",
        str(not_exec): "is not executable; run `chmod +x",
        str(tmp_path): "is a directory; give the player executable inside it",
        str(windows): "is a Windows player and this machine runs Linux; build the project for StandaloneLinux64",
    }
    for path, message in cases.items():
        with pytest.raises(ConfigError) as err:
            compose_plan([f"env_path={path}"])
        assert str(err.value).startswith(f"env_path={path}: ") and message in str(err.value)
    with pytest.raises(ConfigError, match="asset.source.build_path must name the player build"):
        compose_plan(["asset.source.kind=unity"])


def test_a_build_path_without_extension_finds_the_player_like_mlagents_learn(tmp_path):
    make_build(tmp_path / "build")
    plan = compose_plan([f"env_path={tmp_path / 'build' / 'Nav'}"])
    assert plan.behavior_name == "NavigationAgent" and plan.simulation == "nav"  # still evaluates in the simulation


# --- ports ----------------------------------------------------------------------------------
@pytest.mark.slow  # probes from child processes
def test_reserved_ports_are_never_handed_out_twice_and_busy_ports_are_skipped(tmp_path, monkeypatch):
    monkeypatch.setenv(ports.LOCK_DIR_ENV, str(tmp_path / "locks"))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    busy = listener.getsockname()[1]
    try:
        first = ports.reserve_port(busy)  # someone outside the pipeline listens on `busy`
        second = ports.reserve_port(busy)  # another training asks for the same base port
        assert busy not in (first.port, second.port) and first.port != second.port
        # Another process cannot take a held port; once the holder releases it, it can.
        probe = (f"from pipeline.unity import ports; print(ports.reserve_port({first.port}).port)")
        held = subprocess.run([PYTHON, "-c", probe], capture_output=True, text=True, cwd=REPO, env=child_env(),
                              timeout=60, check=True).stdout.strip()
        assert int(held) != first.port
        first.release()
        again = subprocess.run([PYTHON, "-c", probe], capture_output=True, text=True, cwd=REPO, env=child_env(),
                               timeout=60, check=True).stdout.strip()
        assert int(again) == first.port
        second.release()
    finally:
        listener.close()


# --- real trainings through UnityEnvironment --------------------------------------------------
@pytest.mark.slow
def test_two_trainings_on_one_base_port_and_one_in_process_all_train_and_evaluate_alike(store, tmp_path):
    build = make_build(tmp_path / "build")
    common = TINY + ["env.base_port=5005", "env.timeout_wait=30", "evaluation.episodes=60",
                     "evaluation.baselines=false", "stages=[build,train,evaluate]"]
    jobs = {
        "player-a": [f"env_path={build}", f"results_dir={tmp_path / 'a'}"],
        "player-b": [f"env_path={build}", f"results_dir={tmp_path / 'b'}"],
        "in-process": [f"results_dir={tmp_path / 'c'}"],
    }
    experiment_id("unity-mlagents")  # the children's experiment (the config's), made once, not raced by three
    procs = {
        name: subprocess.Popen([PYTHON, "-m", "pipeline.cli", "main", "--result-json", str(tmp_path / f"{name}.json"),
                                "--overrides", " ".join(common + extra)],
                               cwd=REPO, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for name, extra in jobs.items()
    }
    outputs = {name: p.communicate(timeout=600)[0] for name, p in procs.items()}
    for name, p in procs.items():
        assert p.returncode == 0, f"{name}:\n{outputs[name][-3000:]}"
    import json

    results = {name: json.loads((tmp_path / f"{name}.json").read_text()) for name in jobs}
    client = mlflow.MlflowClient()
    for name in ("player-a", "player-b"):
        train = results[name]["train"]
        run = client.get_run(train["run_id"])
        assert run.info.status == "FINISHED" and train["steps"] >= 3000
        artifacts = [a.path for a in client.list_artifacts(train["run_id"], "run_logs")]
        assert "run_logs/Player-0.log" in artifacts
        log = (Path(train["results_dir"]) / "run_logs" / "Player-0.log").read_text()
        # The engine-configuration side channel reached the player; the stats channel came back.
        assert "Engine configuration: time_scale=20" in log and "Quitting after" in log
        assert "Environment/Success Rate" in run.data.metrics
        assert results[name]["evaluate"]["metrics"]["eval/episodes"] == 60.0
    ports_used = {name: _port_of(Path(results[name]["train"]["results_dir"])) for name in ("player-a", "player-b")}
    assert ports_used["player-a"] != ports_used["player-b"]
    # Equal budget, equal seed: the protocol path learns like the in-process one (95% intervals overlap).
    m_player, m_inproc = results["player-a"]["evaluate"]["metrics"], results["in-process"]["evaluate"]["metrics"]
    assert m_player["eval/success_rate_ci_low"] <= m_inproc["eval/success_rate_ci_high"]
    assert m_inproc["eval/success_rate_ci_low"] <= m_player["eval/success_rate_ci_high"]
    assert m_player["eval/mean_reward_ci_low"] <= m_inproc["eval/mean_reward_ci_high"]
    assert m_inproc["eval/mean_reward_ci_low"] <= m_player["eval/mean_reward_ci_high"]
    assert alive_with(str(build)) == []


def _port_of(results_dir: Path) -> int:
    line = next(text for text in (results_dir / "run_logs" / "Player-0.log").read_text().splitlines()
                if text.startswith("Connected to trainer on port"))
    return int(line.split("port ")[1].split(":")[0])
