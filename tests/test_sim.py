"""The built-in simulations look to ML-Agents exactly like a Unity scene does."""
from __future__ import annotations

import numpy as np
import pytest
from mlagents_envs.base_env import ActionTuple, BaseEnv
from mlagents_envs.side_channel.stats_side_channel import StatsAggregationMethod, StatsSideChannel

from pipeline.evaluation import rollout
from pipeline.sim import SIMULATIONS, NavWorld, PatrolWorld, arena
from pipeline.sim.unity_env import SUCCESS_STAT, SimulatedUnityEnv


@pytest.mark.parametrize("world", [NavWorld, PatrolWorld])
def test_behavior_spec_matches_the_declared_sensors(world):
    env = SimulatedUnityEnv(world, num_areas=4, seed=0)
    assert isinstance(env, BaseEnv)
    spec = env.behavior_specs[world.spec.behavior_name]
    assert [(o.name, o.shape) for o in spec.observation_specs] == [(n, (s,)) for n, s in world.spec.observations]
    assert spec.action_spec.continuous_size == 2 and spec.action_spec.discrete_size == 0
    decisions, terminals = env.get_steps(world.spec.behavior_name)
    assert len(decisions) == 4 and len(terminals) == 0
    assert [o.shape for o in decisions.obs] == [(4, s) for _, s in world.spec.observations]
    assert all(o.dtype == np.float32 for o in decisions.obs)


def test_episode_cut_by_the_step_limit_is_interrupted_and_the_agent_restarts_at_once():
    env = SimulatedUnityEnv(NavWorld, num_areas=3, seed=0, max_episode_steps=5)
    for _ in range(5):
        env.set_actions("NavigationAgent", ActionTuple(continuous=np.zeros((3, 2), np.float32)))
        env.step()
    decisions, terminals = env.get_steps("NavigationAgent")
    assert sorted(terminals.agent_id) == [0, 1, 2] and terminals.interrupted.all()
    # Same agent ids ask for their next decision in the same step, with a zero reward, as in Unity.
    assert sorted(decisions.agent_id) == [0, 1, 2] and (decisions.reward == 0).all()
    assert [e.interrupted for e in env.episodes] == [True] * 3


def test_reaching_the_target_is_a_terminal_success_with_the_bonus():
    env = SimulatedUnityEnv(NavWorld, num_areas=1, seed=3)
    env.world.target[0] = env.world.pos[0] + np.array([0.05, 0.0])
    env.set_actions("NavigationAgent", ActionTuple(continuous=np.zeros((1, 2), np.float32)))
    env.step()
    _, terminals = env.get_steps("NavigationAgent")
    assert len(terminals) == 1 and not terminals.interrupted[0] and terminals.reward[0] > 0.9
    assert env.episodes[-1].success


def test_patrol_collision_ends_the_episode_as_a_failure():
    env = SimulatedUnityEnv(PatrolWorld, num_areas=1, seed=0)
    w = env.world
    w.pos[0] = w.centers[0, 0] + np.array([w.radii[0, 0] + arena.AGENT_RADIUS + 0.01, 0.0])
    env.set_actions("PatrolAgent", ActionTuple(continuous=np.array([[-1.0, 0.0]], np.float32)))
    for _ in range(3):
        env.step()
        if env.episodes:
            break
    rec = env.episodes[0]
    assert not rec.success and not rec.interrupted and rec.reward < -0.5


def test_same_seed_same_episodes():
    def rollout_rewards(seed):
        env = SimulatedUnityEnv(PatrolWorld, num_areas=8, seed=seed)
        rng = np.random.default_rng(0)
        for _ in range(60):
            env.set_actions("PatrolAgent", ActionTuple(continuous=rng.uniform(-1, 1, (8, 2)).astype(np.float32)))
            env.step()
        return [(e.area, round(e.reward, 6), e.length) for e in env.episodes]

    assert rollout_rewards(7) == rollout_rewards(7)
    assert rollout_rewards(7) != rollout_rewards(8)


def test_success_is_reported_through_the_stats_side_channel_message_path():
    channel = StatsSideChannel()
    env = SimulatedUnityEnv(NavWorld, num_areas=2, seed=0, stats_channel=channel, max_episode_steps=2)
    for _ in range(2):
        env.step()
    stats = channel.get_and_reset_stats()
    assert stats[SUCCESS_STAT] == [(0.0, StatsAggregationMethod.AVERAGE)] * 2


def test_raycasts_see_walls_and_obstacles():
    pos = np.array([[0.0, 0.0]])
    rays = arena.raycast(pos, np.array([[[0.5, 0.0]]]), np.array([[0.1]]))
    # Ray 0 points along +x at an obstacle whose (sphere-cast) surface is 0.32 away; ray 4 at the wall 1.0 away.
    assert rays[0, 0] == pytest.approx((0.5 - 0.1 - arena.CAST_RADIUS - arena.AGENT_RADIUS) / arena.RAY_LENGTH)
    assert rays[0, 4] == pytest.approx((1.0 - arena.AGENT_RADIUS) / arena.RAY_LENGTH)


@pytest.mark.parametrize("name", sorted(SIMULATIONS))
def test_scripted_heuristic_is_a_strong_baseline_and_random_is_not(name):
    world = SIMULATIONS[name]
    heuristic = rollout.run_episodes(world, world.heuristic, 100, seed=10_000)
    random = rollout.run_episodes(world, rollout.random_policy_for(world, 0), 100, seed=10_000)
    assert heuristic.success_rate >= 0.85
    assert random.success_rate <= 0.05
    assert heuristic.success_ci95[0] <= heuristic.success_rate <= heuristic.success_ci95[1]


def test_evaluation_is_reproducible_and_counts_each_area_once():
    world = NavWorld
    a = rollout.run_episodes(world, world.heuristic, 30, seed=5)
    b = rollout.run_episodes(world, world.heuristic, 30, seed=5)
    assert a.rewards == b.rewards and a.episodes == len(a.rewards) == 30


def test_wilson_interval():
    assert rollout.wilson_interval(0, 10)[0] == 0.0
    lo, hi = rollout.wilson_interval(80, 100)
    assert lo == pytest.approx(0.711, abs=1e-3) and hi == pytest.approx(0.867, abs=1e-3)
