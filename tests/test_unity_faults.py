"""A player that never connects, crashes, or has another behavior: a clear error, a FAILED run, no orphan player."""
from __future__ import annotations

import time

import mlflow
import pytest
from mlagents_envs.exception import UnityEnvironmentException, UnityTimeOutException

from pipeline.config.compose import compose_plan
from pipeline.stages import train
from pipeline.unity.environment import BehaviorMismatchError
from tests.support.process import command_line, parent_of
from tests.support.store import all_runs
from tests.test_unity_player import alive_with, make_build


def _failed_train(overrides: list[str], error: type) -> tuple[str, mlflow.entities.Run]:
    plan = compose_plan(overrides)
    with pytest.raises(error) as err:
        train.train(plan)
    [run] = [r for r in all_runs() if r.data.tags.get("pipeline.stage") == "train"]
    assert run.info.status == "FAILED"
    return str(err.value), run


def _artifacts(run) -> list[str]:
    return [a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "run_logs")]


@pytest.mark.slow
def test_a_player_that_never_connects_fails_within_timeout_wait_and_is_killed(store, tiny, tmp_path):
    build = tmp_path / "build" / "Nav.x86_64"
    build.parent.mkdir()
    build.write_text("#!/bin/sh\necho 'Loading scene...' >&2\nexec sleep 300\n")  # a player that never connects
    build.chmod(0o755)
    message, run = _failed_train(tiny + [f"env_path={build}", "env.timeout_wait=3"], UnityTimeOutException)
    assert f"the Unity player {build} did not connect to the trainer on port" in message
    assert "within env.timeout_wait=3s" in message
    assert "env.timeout_wait" in run.data.tags["pipeline.error"]
    # The player (exec'd into `sleep 300`) is killed with its worker: gone within seconds, not 300 s later.
    deadline = time.monotonic() + 10
    while alive_with("sleep 300") and time.monotonic() < deadline:
        time.sleep(0.2)
    left = alive_with(str(build)) + alive_with("sleep 300")
    assert left == [], [_who(pid) for pid in left]  # whose child it is says which path left it (once in CI)


def _who(pid: int) -> str:
    parent = parent_of(pid)
    return f"pid {pid} ({command_line(pid)[:200]}), parent {parent} ({command_line(parent)[:200] if parent else '?'})"


@pytest.mark.slow
def test_a_player_crashing_mid_training_is_restarted_then_fails_the_run_with_its_logs(store, tiny, tmp_path):
    build = make_build(tmp_path / "build")
    message, run = _failed_train(tiny + [f"env_path={build}", "env.timeout_wait=10",
                                         "env.env_args=[--crash-after-steps,40]"], UnityEnvironmentException)
    # mlagents-learn's restart limit (one restart a minute) restarts the worker once; the second crash ends the run.
    assert f"the Unity player {build} exited: Environment shut down with return code -11 (SIGSEGV)" in message
    assert "Caught fatal signal - signo:11" in message  # the log's tail is in the error
    assert {"run_logs/Player-0.log", "run_logs/Player-0.restart1.log"} <= set(_artifacts(run))
    assert alive_with(str(build)) == []


@pytest.mark.slow
def test_a_build_with_another_behavior_name_is_an_error_naming_both(store, tiny, tmp_path):
    build = make_build(tmp_path / "build")
    message, run = _failed_train(tiny + [f"env_path={build}", "env.env_args=[--behavior-name,Walker]"],
                                 BehaviorMismatchError)
    assert message.startswith(f"the Unity player {build} has behavior(s) Walker but asset.name is 'NavigationAgent'")
    assert "run_logs/Player-0.log" in _artifacts(run)
    assert alive_with(str(build)) == []
