"""Demonstration datasets: JSONL and Unity .demo round-trip through ML-Agents' own loader; bad data is refused
at configuration time with the file, the line and both sizes named, and no MLflow run is created."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pipeline.config.compose import compose_plan
from pipeline.config.errors import ConfigError
from pipeline.offline import jsonl, recorder, unity_demo
from pipeline.offline.loader import load
from pipeline.sim import SIMULATIONS
from tests.support.process import PYTHON, REPO, child_env
from tests.support.store import all_runs

NAV = SIMULATIONS["nav"]
LAYOUT = recorder.layout_of_world(NAV, "nav-001")


@pytest.fixture(scope="module")
def demos():
    return recorder.record(NAV, NAV.heuristic, episodes=6, seed=3, num_areas=4)


def test_recorder_keeps_whole_episodes_with_rewards_and_success(demos):
    assert demos.episodes == 6 and demos.done.sum() == 6 and demos.has_rewards
    ends = np.nonzero(demos.done)[0]
    assert all(demos.episode[i] != demos.episode[i + 1] for i in ends[:-1]) and ends[-1] == len(demos) - 1
    assert set(demos.final_obs) == set(ends.tolist())
    assert 0.0 <= demos.metadata["episode_stats"]["success"] <= 1.0


def test_jsonl_and_demo_round_trip_and_mlagents_reads_the_demo(demos, tmp_path):
    from mlagents.trainers.buffer import BufferKey
    from mlagents.trainers.demo_loader import demo_to_buffer

    first = load(jsonl.write(tmp_path / "d.jsonl", demos), LAYOUT)
    demo = unity_demo.write(tmp_path / "d.demo", first, name="nav")
    again = load(demo, LAYOUT)
    assert again.format == "demo" and len(again) == len(first) and again.episodes == first.episodes
    for a, b in zip(again.obs, first.obs):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(again.actions, first.actions)
    np.testing.assert_array_equal(again.rewards, first.rewards)
    np.testing.assert_array_equal(again.done, first.done)
    np.testing.assert_array_equal(again.interrupted, first.interrupted)

    # What mlagents-learn's behavioral_cloning / GAIL would read from it.
    spec, buffer = demo_to_buffer(str(demo), 1)
    assert [o.name for o in spec.observation_specs] == ["raycast", "velocity", "target"]
    assert spec.action_spec.continuous_size == 2
    # every record but the last (make_demo_buffer pairs each with the next), terminal records included
    assert buffer.num_experiences == len(first) + first.episodes - 1
    np.testing.assert_allclose(buffer[BufferKey.CONTINUOUS_ACTION][0], first.actions[0])


def test_shipped_dataset_is_heuristic_navigation_demonstrations():
    path = REPO / "data/demos/navigation_demo.jsonl"
    assert path.stat().st_size < 4_000_000
    data = load(path, LAYOUT)
    assert data.has_rewards and data.episodes >= 200
    assert data.metadata["source"]["policy"] == "heuristic"
    assert data.metadata["episode_stats"]["success"] > 0.9


def _write_lines(path: Path, lines: list) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def _step(**changes) -> dict:
    step = {"episode": 0, "agent": 0, "obs": {"raycast": [0.5] * 8, "velocity": [0.0, 0.0], "target": [0.1, 0.2]},
            "action": [0.1, -0.2], "reward": 0.01, "done": False, "interrupted": False}
    step.update(changes)
    return step


@pytest.mark.parametrize("lines,message", [
    ([], "no demonstration steps (the file is empty)"),
    ([_step(), '{"episode": 0, "obs": '], "line 2: not valid JSON"),
    ([_step(), _step(obs={"raycast": [0.5] * 6, "velocity": [0, 0], "target": [0, 0]})],
     "line 2: obs 'raycast' has 6 values but asset nav-001 (raycast=8, velocity=2, target=2; action_space.size=2) "
     "declares raycast=8 (asset.observation_space.raycast)"),
    ([_step(action=[0.1, 0.2, 0.3])], "line 1: action has 3 values but asset nav-001"),
    ([_step(), _step(), _step(obs={"raycast": [0.5] * 8, "velocity": [float("nan"), 0], "target": [0, 0]})],
     "line 3: obs 'velocity' contains NaN"),
    ([_step(reward=float("inf"))], "line 1: reward contains an infinite value"),
    ([_step(obs={"raycast": [0.5] * 8, "velocity": [0, 0], "lidar": [0, 0]})],
     "line 1: obs 'lidar' is not a sensor of asset nav-001"),
    ([_step(), {k: v for k, v in _step().items() if k != "reward"}],
     "line 2: has no \"reward\" unlike the lines before it"),
    ([_step(done=True), _step()], "line 2: episode 0 of agent 0 already ended on line 1"),
    ([{"schema": "mlagents-demo-jsonl/1", "behavior_name": "PatrolAgent"}, _step()],
     "line 1: recorded for behavior 'PatrolAgent'"),
])
def test_malformed_jsonl_is_refused_at_configuration(tmp_path, lines, message):
    path = _write_lines(tmp_path / "bad.jsonl", lines)
    with pytest.raises(ConfigError) as err:
        compose_plan(["mode=offline", f"mode.dataset_path={path}"])
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_demo_with_other_observation_sizes_names_both(tmp_path, demos):
    patrol = SIMULATIONS["patrol"]
    other = recorder.record(patrol, patrol.heuristic, episodes=1, seed=0, num_areas=1)
    path = unity_demo.write(tmp_path / "patrol.demo", other)
    with pytest.raises(ConfigError) as err:
        compose_plan(["mode=offline", f"mode.dataset_path={path}"])
    assert f"{path}: " in str(err.value) and "asset nav-001 (raycast=8, velocity=2, target=2" in str(err.value)


@pytest.mark.parametrize("overrides,message", [
    (["mode=offline"], "mode.dataset_path is required for mode=offline"),
    (["mode=hybrid", "mode.dataset_path=data/demos/missing.jsonl"],
     "mode.dataset_path=data/demos/missing.jsonl: no such file"),
    (["mode=offline", "mode.dataset_path=data/demos/navigation_demo.csv"],
     "mode.dataset_path=data/demos/navigation_demo.csv: no such file"),
    (["mode=offline", "mode.dataset_path=data/demos/navigation_demo.jsonl", "mode.method=cql"],
     "mode.method must be one of bc, awr, got 'cql'"),
    (["mode=hybrid", "mode.dataset_path=data/demos/navigation_demo.jsonl", "mode.pretrain_steps=0"],
     "mode.pretrain_steps must be a positive number of demonstration samples for mode=hybrid"),
    (["mode=offline", "mode.dataset_path=data/demos/navigation_demo.jsonl", "mode.bc_strength=0.5"],
     "it only applies to mode=hybrid"),
])
def test_bad_mode_settings_are_refused(overrides, message):
    with pytest.raises(ConfigError) as err:
        compose_plan(overrides)
    assert message in str(err.value)


def test_awr_needs_rewards(tmp_path):
    path = _write_lines(tmp_path / "no_reward.jsonl", [{k: v for k, v in _step().items() if k != "reward"}])
    assert compose_plan(["mode=offline", f"mode.dataset_path={path}"]).mode == "offline"
    with pytest.raises(ConfigError, match="mode.method=awr needs rewards"):
        compose_plan(["mode=offline", f"mode.dataset_path={path}", "mode.method=awr"])


def test_guide_offline_config_composes_with_repo_relative_dataset():
    plan = compose_plan(["mode=offline", "mode.dataset_path=data/demos/navigation_demo.jsonl", "max_steps=1000000"])
    assert plan.mode == "offline" and plan.max_steps == 1_000_000


@pytest.mark.slow  # starts the command line in child processes
def test_bad_dataset_on_the_command_line_exits_2_and_writes_no_run(store, tmp_path):
    path = _write_lines(tmp_path / "bad.jsonl", [_step(), _step(action=[1.0])])
    proc = subprocess.run([PYTHON, "-m", "pipeline.cli", "main", "--mode", "offline", "--overrides",
                           f"mode.dataset_path={path} results_dir={tmp_path / 'results'}"],
                          cwd=REPO, capture_output=True, text=True, env=child_env(), timeout=180)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: {path}: line 2: action has 1 values but asset nav-001 (raycast=8, velocity=2, target=2; "
        "action_space.size=2) takes 2 action values")
    assert all_runs() == [] and all_runs("tests") == []
    assert not (tmp_path / "results").exists()


@pytest.mark.slow  # runs the conversion script and ML-Agents' demo reader
def test_convert_script_writes_a_demo_mlagents_reads(tmp_path):
    out = tmp_path / "nav.demo"
    proc = subprocess.run([PYTHON, "scripts/record_demos.py", "convert", "data/demos/navigation_demo.jsonl", str(out)],
                          cwd=REPO, capture_output=True, text=True, env=child_env(), timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert load(out, LAYOUT).episodes == load(REPO / "data/demos/navigation_demo.jsonl", LAYOUT).episodes
