"""Our replacements of ML-Agents' hot paths against ML-Agents' own functions, on the same inputs and RNG state."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from mlagents.trainers.buffer import AgentBuffer, AgentBufferField, BufferKey, ObservationKeyPrefix
from mlagents.trainers.torch_entities.action_log_probs import LogProbsTuple
from mlagents.trainers.trajectory import AgentExperience, AgentStatus, Trajectory
from mlagents_envs.base_env import ActionTuple

from pipeline.mlagents_patches import FAST_ENV, hot_paths
from tests.support.process import PYTHON, REPO

ORIGINAL = hot_paths.originals()
FAST = {name: fast for name, (_, _, fast) in hot_paths._targets().items()}


def assert_same_buffer(a: AgentBuffer, b: AgentBuffer) -> None:
    """Same keys in the same order, and per field the same padding and the same elements, bit for bit."""
    assert list(a.keys()) == list(b.keys())
    for key in a:
        fa, fb = a[key], b[key]
        assert type(fa) is type(fb) is AgentBufferField, key
        assert fa.padding_value == fb.padding_value, key
        assert len(fa) == len(fb), key
        for x, y in zip(list.copy(fa), list.copy(fb)):
            assert_same_entry(x, y, key)


def assert_same_entry(x, y, key) -> None:
    assert type(x) is type(y), key
    if isinstance(x, list):
        assert len(x) == len(y), key
        for u, v in zip(x, y):
            assert_same_entry(u, v, key)
    elif isinstance(x, np.ndarray):
        assert x.dtype == y.dtype and x.shape == y.shape, key
        assert x.tobytes() == y.tobytes(), key
    else:
        assert x == y or (np.isnan(x) and np.isnan(y)), key


def random_buffer(rng: np.random.Generator, length: int, with_groups: bool = False) -> AgentBuffer:
    buf = AgentBuffer()
    for _ in range(length):
        buf[(ObservationKeyPrefix.OBSERVATION, 0)].append(rng.standard_normal(12).astype(np.float32))
        buf[BufferKey.CONTINUOUS_ACTION].append(rng.standard_normal(2).astype(np.float32))
        buf[BufferKey.ACTION_MASK].append(np.ones(0, np.float32), padding_value=1)
        buf[BufferKey.ENVIRONMENT_REWARDS].append(float(rng.standard_normal()))
        buf[BufferKey.DONE].append(bool(rng.integers(2)))
        if with_groups:
            mates = int(rng.integers(0, 3))
            buf[BufferKey.GROUPMATE_REWARDS].append([float(r) for r in rng.standard_normal(mates)])
    return buf


@pytest.mark.parametrize("length,sequence_length,with_groups",
                         [(2048, 1, False), (1000, 1, True), (1024, 16, False), (1003, 8, True), (5, 16, False)])
def test_shuffle_is_the_same_permutation_as_mlagents(length, sequence_length, with_groups):
    buf = random_buffer(np.random.default_rng(length), length, with_groups)
    theirs, ours = copy.deepcopy(buf), copy.deepcopy(buf)
    np.random.seed(7)
    ORIGINAL["AgentBuffer.shuffle"](theirs, sequence_length=sequence_length)
    state_after_theirs = np.random.get_state()[1].copy()
    np.random.seed(7)
    FAST["AgentBuffer.shuffle"](ours, sequence_length=sequence_length)
    assert_same_buffer(theirs, ours)
    assert (np.random.get_state()[1] == state_after_theirs).all()  # the same random draws, no more
    if length >= 1000:
        assert_same_entry_order_changed(buf, ours)


def assert_same_entry_order_changed(before: AgentBuffer, after: AgentBuffer) -> None:
    key = BufferKey.ENVIRONMENT_REWARDS
    assert sorted(before[key]) == sorted(after[key][:len(before[key])]) or len(after[key]) < len(before[key])
    assert list(before[key]) != list(after[key])


def test_shuffle_of_selected_keys_and_unequal_lengths_behaves_like_mlagents():
    from mlagents.trainers.buffer import BufferException

    buf = random_buffer(np.random.default_rng(0), 64)
    theirs, ours = copy.deepcopy(buf), copy.deepcopy(buf)
    keys = [BufferKey.DONE, BufferKey.CONTINUOUS_ACTION]
    np.random.seed(3)
    ORIGINAL["AgentBuffer.shuffle"](theirs, 1, keys)
    np.random.seed(3)
    FAST["AgentBuffer.shuffle"](ours, 1, keys)
    assert_same_buffer(theirs, ours)
    ours[BufferKey.DONE].append(True)
    with pytest.raises(BufferException, match="Unable to shuffle if the fields are not of same length"):
        FAST["AgentBuffer.shuffle"](ours, 1)


@pytest.mark.parametrize("start,end", [(0, 512), (512, 1024), (1000, 1100), (0, 0)])
def test_make_mini_batch_matches_mlagents(start, end):
    buf = random_buffer(np.random.default_rng(1), 1024, with_groups=True)
    assert_same_buffer(ORIGINAL["AgentBuffer.make_mini_batch"](buf, start, end),
                       FAST["AgentBuffer.make_mini_batch"](buf, start, end))


@pytest.mark.parametrize("length,batch,sequence_length", [(4096, 256, 1), (1000, 64, 8), (100, 64, 1), (10, 32, 4)])
def test_sample_mini_batch_matches_mlagents(length, batch, sequence_length):
    buf = random_buffer(np.random.default_rng(2), length, with_groups=True)
    np.random.seed(11)
    theirs = ORIGINAL["AgentBuffer.sample_mini_batch"](buf, batch, sequence_length)
    np.random.seed(11)
    ours = FAST["AgentBuffer.sample_mini_batch"](buf, batch, sequence_length)
    assert_same_buffer(theirs, ours)
    assert ours.num_experiences == min(batch // sequence_length, length // sequence_length) * sequence_length \
        or sequence_length > 1


@pytest.mark.parametrize("index", [0, -1, 3, slice(2, 9), slice(None), slice(5, 2), slice(0, 100, 3)])
def test_field_getitem_matches_mlagents(index):
    rng = np.random.default_rng(4)
    flat = AgentBufferField([rng.standard_normal(3).astype(np.float32) for _ in range(20)])
    grouped = AgentBufferField([[rng.standard_normal(3).astype(np.float32)] * (i % 3) for i in range(20)])
    for field in (flat, grouped):
        theirs, ours = ORIGINAL["AgentBufferField.__getitem__"](field, index), FAST["AgentBufferField.__getitem__"](
            field, index)
        assert type(theirs) is type(ours)
        assert_same_entry(list(theirs) if isinstance(theirs, list) else theirs,
                          list(ours) if isinstance(ours, list) else ours, index)


def trajectory(rng: np.random.Generator, steps: int, *, mates: int = 0, memory: bool = False,
               masks: bool = False, n_obs: int = 2) -> Trajectory:
    def obs():
        return [rng.standard_normal(12).astype(np.float32), rng.standard_normal((3, 2)).astype(np.float32)][:n_obs]

    def action():
        return ActionTuple(continuous=rng.standard_normal(2).astype(np.float32),
                           discrete=rng.integers(0, 3, 2).astype(np.int32))

    exps = []
    for t in range(steps):
        status = [AgentStatus(obs=obs(), reward=float(rng.standard_normal()), action=action(),
                              done=bool(rng.integers(2))) for _ in range(mates)]
        exps.append(AgentExperience(
            obs=obs(), reward=float(rng.standard_normal()), done=t == steps - 1, action=action(),
            action_probs=LogProbsTuple(continuous=rng.standard_normal(2).astype(np.float32),
                                       discrete=rng.standard_normal(2).astype(np.float32)),
            action_mask=[rng.integers(0, 2, 3).astype(bool), rng.integers(0, 2, 3).astype(bool)] if masks else None,
            prev_action=rng.integers(0, 3, 2).astype(np.int32), interrupted=False,
            memory=rng.standard_normal(8).astype(np.float32) if memory else None,
            group_status=status, group_reward=float(rng.standard_normal())))
    return Trajectory(steps=exps, next_obs=obs(), next_group_obs=[obs() for _ in range(mates)],
                      agent_id="agent-0", behavior_id="B?team=0")


@pytest.mark.parametrize("kind", [
    {"steps": 64}, {"steps": 1}, {"steps": 17, "mates": 2}, {"steps": 5, "memory": True, "masks": True, "n_obs": 1},
    {"steps": 9, "mates": 3, "masks": True}])
def test_to_agentbuffer_matches_mlagents(kind):
    traj = trajectory(np.random.default_rng(5), **kind)
    assert_same_buffer(ORIGINAL["Trajectory.to_agentbuffer"](traj), FAST["Trajectory.to_agentbuffer"](traj))


def test_apply_installs_every_replacement_once_and_keeps_the_originals():
    hot_paths.apply()
    hot_paths.apply()
    assert hot_paths.applied()
    assert AgentBuffer.shuffle is hot_paths.shuffle
    assert hot_paths.originals()["AgentBuffer.shuffle"].__module__ == "mlagents.trainers.buffer"
    assert all(f.__module__.split(".")[0] in ("mlagents", "mlagents_envs") for f in hot_paths.originals().values())


def seeded_training(tmp_path, fast: str, algorithm: str, seed: int = 3, asset: str = "nav",
                    steps: int = 2000) -> dict:
    """scripts/seeded_training.py: one in-process environment, fixed seed; metric history and final weights."""
    out = tmp_path / f"{asset}-{algorithm}-{seed}-fast{fast}.json"
    subprocess.run([PYTHON, str(REPO / "scripts" / "seeded_training.py"), "--algorithm", algorithm, "--asset", asset,
                    "--steps", str(steps), "--seed", str(seed), "--out", str(out)],
                   check=True, env={**os.environ, FAST_ENV: fast}, cwd=REPO, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["ppo", "sac"])
def test_a_seeded_training_is_the_same_with_and_without_the_replacements(tmp_path, algorithm):
    upstream, ours = seeded_training(tmp_path, "0", algorithm), seeded_training(tmp_path, "1", algorithm)
    assert (upstream["hot_paths"], ours["hot_paths"]) == (False, True)  # MLOPS_MLAGENTS_FAST=0 is upstream
    assert {"Environment/Cumulative Reward", "Losses/Policy Loss", "Losses/Value Loss"} <= ours["history"].keys()
    assert upstream["history"] == ours["history"]  # every summary: step, mean and each value behind it
    assert upstream["weights"] == ours["weights"]  # the trained policy, byte for byte
    # ...and that comparison would notice a different training
    assert seeded_training(tmp_path, "1", algorithm, seed=4)["weights"] != ours["weights"]


@pytest.mark.slow
def test_a_seeded_poca_training_with_agent_groups_is_the_same_with_and_without_the_replacements(tmp_path):
    """push: three agents per area in one group - group observations, actions and rewards in every buffer."""
    upstream, ours = (seeded_training(tmp_path, fast, "poca", seed=1, asset="push", steps=5000) for fast in "01")
    assert {"Environment/Group Cumulative Reward", "Losses/Baseline Loss"} <= ours["history"].keys()
    assert upstream["history"] == ours["history"]
    assert upstream["weights"] == ours["weights"]


def test_a_simulation_steps_in_the_trainer_process_unless_the_fast_paths_are_off(tmp_path, monkeypatch):
    """The workers' areas become one in-process environment (same agents); MLOPS_MLAGENTS_FAST=0 keeps ML-Agents'
    SubprocessEnvManager workers, as upstream."""
    from mlagents.plugins.trainer_type import register_trainer_plugins
    from mlagents.trainers.settings import RunOptions
    from mlagents.trainers.subprocess_env_manager import SubprocessEnvManager

    from pipeline.config.compose import compose_plan
    from pipeline.mlagents_patches.in_process_env import InProcessEnvManager
    from pipeline.training import env_factory
    from tests.support.training import TINY

    plan = compose_plan([*TINY, "env.num_envs=3", "env.num_areas=4", "seed=5"])
    register_trainer_plugins()
    options = RunOptions.from_dict({**plan.trainer_config(), "env_settings": {"num_envs": 1}})
    monkeypatch.delenv(FAST_ENV, raising=False)
    manager = env_factory.env_manager(plan, options, tmp_path)
    assert type(manager) is InProcessEnvManager
    assert (manager.env.num_areas, manager.env.seed, manager.env.behavior_name) == (12, 5, "NavigationAgent")
    manager.close()
    monkeypatch.setenv(FAST_ENV, "0")
    upstream = env_factory.env_manager(plan, options, tmp_path)
    try:
        assert type(upstream) is SubprocessEnvManager and len(upstream.env_workers) == 3
    finally:
        upstream.close()


@pytest.mark.slow  # a real training
def test_an_in_process_training_reports_the_simulations_stats_and_starts_no_worker(tmp_path, monkeypatch):
    """ML-Agents' SimpleEnvManager drops environment stats; ours delivers them as a worker does (success rate)."""
    import multiprocessing

    from mlagents.trainers.stats import StatsWriter

    from pipeline.config.compose import compose_plan
    from pipeline.training import mlagents_trainer
    from tests.support.training import TINY

    seen: dict = {}

    class Recorder(StatsWriter):
        def write_stats(self, category, values, step):
            seen.setdefault("children", set()).update(p.name for p in multiprocessing.active_children())
            for name, summary in values.items():
                seen.setdefault(name, []).append((step, summary.num))

    monkeypatch.delenv(FAST_ENV, raising=False)
    outcome = mlagents_trainer.train(compose_plan([*TINY, "env.num_envs=2", "env.num_areas=4"]), tmp_path, "inproc",
                                     writers=[Recorder()])
    assert outcome.steps >= 3000 and not outcome.interrupted and outcome.onnx_path.exists()
    assert seen["children"] == set()  # no environment worker process
    # every finished episode's success (the first summary may come before any episode ends)
    assert sum(n for _, n in seen["Environment/Success Rate"]) == sum(n for _, n in seen["Environment/Episode Length"])
    assert seen["Environment/Success Rate"][-1][0] == 3000


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_plain_mlagents_learn_trains_with_the_replacements(tmp_path):
    """mlagents-learn itself loads our trainer_type plugin, which installs the replacements; its timers.json says so."""
    build = tmp_path / "Nav.x86_64"
    build.symlink_to(REPO / "scripts" / "simulated_player")
    config = tmp_path / "nav.yaml"
    config.write_text(
        "behaviors:\n  NavigationAgent:\n    trainer_type: ppo\n    max_steps: 1500\n    summary_freq: 500\n"
        "    checkpoint_interval: 1500\n    hyperparameters: {buffer_size: 512, batch_size: 128, num_epoch: 1}\n"
        "    network_settings: {hidden_units: 32, num_layers: 1}\n")
    env = {**os.environ, "PATH": f"{os.path.dirname(PYTHON)}:{os.environ['PATH']}"}
    env.pop(FAST_ENV, None)
    subprocess.run([os.path.join(os.path.dirname(PYTHON), "mlagents-learn"), str(config), f"--env={build}",
                    "--run-id=fast", f"--results-dir={tmp_path / 'results'}", "--no-graphics",
                    f"--base-port={free_port()}", "--torch-device=cpu"],
                   check=True, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, timeout=120)
    timers = json.loads((tmp_path / "results" / "fast" / "run_logs" / "timers.json").read_text())
    assert timers["metadata"]["mlops_hot_paths"] == ",".join(sorted(FAST))
    assert (tmp_path / "results" / "fast" / "NavigationAgent.onnx").exists()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
