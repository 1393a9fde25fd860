"""Record demonstrations in a built-in simulation, seen through the same BaseEnv the trainers use.

The demonstrator is the asset's scripted heuristic (what an Agent's Heuristic() does in Unity), or
any ONNX policy; Gaussian action noise makes mixed-quality data (with `mixed`, each episode gets its
own noise level between 0 and `noise`); for discrete actions the noise is the chance of a uniformly
random allowed action instead (masked actions are never recorded). Only complete episodes are kept,
each contiguous; every agent of a MultiAgentGroup records its own episode, with the group's id and reward.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
from mlagents_envs.base_env import ActionTuple

from pipeline.offline.dataset import Dataset, Layout
from pipeline.sim import World
from pipeline.sim.unity_env import SimulatedUnityEnv

Policy = Callable[..., np.ndarray]  # obs -> actions; discrete behaviours: (obs, action masks) -> branch indices


@dataclass
class _Episode:
    obs: list[list[np.ndarray]]
    actions: list[np.ndarray]
    rewards: list[float]
    noise: float
    group_rewards: list[float] = field(default_factory=list)


def layout_of_world(world: type[World], asset_id: str = "") -> Layout:
    spec = world.spec
    if spec.discrete:
        return Layout(spec.behavior_name, tuple(spec.observations), len(spec.action_branches), asset_id,
                      tuple(spec.action_branches))
    return Layout(spec.behavior_name, tuple(spec.observations), spec.action_size, asset_id)


def record(world: type[World], policy: Policy, episodes: int, seed: int = 0, num_areas: int = 16,
           noise: float = 0.0, mixed: bool = False, progress: Optional[Callable[[int, int], None]] = None) -> Dataset:
    env = SimulatedUnityEnv(world, num_areas=num_areas, seed=seed)
    rng = np.random.default_rng(seed + 1)
    name = env.behavior_name
    n_obs = len(world.spec.observations)

    def level() -> float:
        return float(rng.uniform(0.0, noise)) if mixed else noise

    spec = world.spec
    per_area = spec.agents_per_area
    current = [_Episode([[] for _ in range(n_obs)], [], [], level()) for _ in range(env.num_agents)]
    rows: dict[str, list] = {k: [] for k in ("actions", "rewards", "done", "interrupted", "episode", "agent",
                                             "group", "group_reward")}
    obs_rows: list[list[np.ndarray]] = [[] for _ in range(n_obs)]
    final_obs: dict[int, list[np.ndarray]] = {}
    successes: list[bool] = []
    noises: list[float] = []
    while len(successes) < episodes:
        decisions, terminals = env.get_steps(name)
        # The environment recorded the areas' episodes that just ended, in the order of terminals.agent_id.
        ended = len(terminals) // per_area
        records = {r.area: r for r in env.episodes[len(env.episodes) - ended:]} if ended else {}
        for k, aid in enumerate(terminals.agent_id):
            ep = current[aid]
            ep.rewards[-1] = float(terminals.reward[k])
            ep.group_rewards[-1] = float(terminals.group_reward[k])
            start = len(rows["actions"])
            for j in range(n_obs):
                obs_rows[j].extend(ep.obs[j])
            n = len(ep.actions)
            rows["actions"].extend(ep.actions)
            rows["rewards"].extend(ep.rewards)
            rows["done"].extend([False] * (n - 1) + [True])
            rows["interrupted"].extend([False] * (n - 1) + [bool(terminals.interrupted[k])])
            rows["episode"].extend([len(successes)] * n)
            rows["agent"].extend([int(aid)] * n)
            rows["group"].extend([int(terminals.group_id[k])] * n)
            rows["group_reward"].extend(ep.group_rewards)
            final_obs[start + n - 1] = [o[k].copy() for o in terminals.obs]
            noises.append(ep.noise)
            successes.append(records[int(aid) // per_area].success)
            current[aid] = _Episode([[] for _ in range(n_obs)], [], [], level())
            if len(successes) == episodes:
                break
        if len(successes) >= episodes:
            break
        for k, aid in enumerate(decisions.agent_id):
            if current[aid].actions:  # reward for the previous action of an episode still running
                current[aid].rewards[-1] = float(decisions.reward[k])
                current[aid].group_rewards[-1] = float(decisions.group_reward[k])
        scale = np.array([current[a].noise for a in decisions.agent_id], np.float32)[:, None]
        if spec.discrete:
            actions = np.asarray(policy(decisions.obs, decisions.action_mask), np.int64)
            explore = rng.random(actions.shape) < scale
            random_actions = _random_allowed(rng, spec.action_branches, decisions.action_mask, len(actions))
            actions = np.where(explore, random_actions, actions)
            chosen = ActionTuple(discrete=actions.astype(np.int32))
        else:
            actions = np.asarray(policy(decisions.obs), np.float32)
            actions = np.clip(actions + rng.normal(size=actions.shape).astype(np.float32) * scale, -1.0, 1.0)
            chosen = ActionTuple(continuous=actions)
        for k, aid in enumerate(decisions.agent_id):
            ep = current[aid]
            for j in range(n_obs):
                ep.obs[j].append(decisions.obs[j][k].copy())
            ep.actions.append(actions[k])
            ep.rewards.append(0.0)
            ep.group_rewards.append(0.0)
        env.set_actions(name, chosen)
        env.step()
        if progress:
            progress(len(successes), episodes)

    n = len(rows["actions"])
    data = Dataset(
        layout=layout_of_world(world),
        obs=[np.asarray(o, np.float32).reshape(n, size) for o, (_, size) in zip(obs_rows, world.spec.observations)],
        actions=np.asarray(rows["actions"], np.float32).reshape(n, layout_of_world(world).action_size),
        rewards=np.asarray(rows["rewards"], np.float32), done=np.asarray(rows["done"], bool),
        interrupted=np.asarray(rows["interrupted"], bool), episode=np.asarray(rows["episode"], np.int64),
        agent=np.asarray(rows["agent"], np.int64), final_obs=final_obs,
        group=np.asarray(rows["group"], np.int64) if per_area > 1 else None,
        group_reward=np.asarray(rows["group_reward"], np.float32) if per_area > 1 else None)
    data.metadata = {"episode_stats": {"episodes": len(successes), "success": float(np.mean(successes)),
                                       "mean_return": float(data.episode_returns().mean()),
                                       "mean_length": n / max(len(successes), 1),
                                       "mean_noise": float(np.mean(noises)) if noises else 0.0}}
    return data


def _random_allowed(rng: np.random.Generator, branches: tuple[int, ...], masks: list[np.ndarray] | None,
                    n: int) -> np.ndarray:
    out = np.zeros((n, len(branches)), np.int64)
    for b, size in enumerate(branches):
        allowed = np.ones((n, size), bool) if masks is None else ~masks[b]
        out[:, b] = np.argmax(rng.random((n, size)) * allowed, axis=1)
    return out
