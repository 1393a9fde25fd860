"""Seeded evaluation episodes in a built-in simulation, with 95% intervals.

Each of the N areas plays exactly one episode from the same seeded start, so every policy of an
asset is judged on the same N episodes, and short (successful) episodes are not over-counted as
they would be by "the first N episodes to finish".
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from mlagents_envs.base_env import ActionTuple

from pipeline.sim import World
from pipeline.sim.unity_env import SimulatedUnityEnv

Policy = Callable[[list[np.ndarray]], np.ndarray]


@dataclass(frozen=True)
class EvalResult:
    episodes: int
    mean_reward: float
    reward_ci95: tuple[float, float]
    success_rate: float
    success_ci95: tuple[float, float]  # Wilson score interval
    mean_episode_length: float
    rewards: tuple[float, ...]
    successes: tuple[bool, ...]
    traces: tuple[dict, ...] = ()  # layouts and paths of the first areas' episodes, for pictures

    def metrics(self, prefix: str) -> dict[str, float]:
        return {
            f"{prefix}/mean_reward": self.mean_reward,
            f"{prefix}/mean_reward_ci_low": self.reward_ci95[0],
            f"{prefix}/mean_reward_ci_high": self.reward_ci95[1],
            f"{prefix}/success_rate": self.success_rate,
            f"{prefix}/success_rate_ci_low": self.success_ci95[0],
            f"{prefix}/success_rate_ci_high": self.success_ci95[1],
            f"{prefix}/mean_episode_length": self.mean_episode_length,
            f"{prefix}/episodes": float(self.episodes),
        }


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def run_episodes(world: type[World], policy: Policy, episodes: int, seed: int, trace: int = 0) -> EvalResult:
    env = SimulatedUnityEnv(world, num_areas=episodes, seed=seed)
    first: dict[int, object] = {}
    env_episodes_seen = 0
    traces = [{**env.world.layout(a), "path": []} for a in range(min(trace, episodes))]
    while len(first) < episodes:
        for a, tr in enumerate(traces):
            if a not in first:
                tr["path"].append(env.world.positions()[a].tolist())
        decisions, _ = env.get_steps(env.behavior_name)
        env.set_actions(env.behavior_name, ActionTuple(continuous=np.asarray(policy(decisions.obs), dtype=np.float32)))
        env.step()
        for rec in env.episodes[env_episodes_seen:]:
            first.setdefault(rec.area, rec)
        env_episodes_seen = len(env.episodes)
    recs = [first[a] for a in range(episodes)]
    rewards = np.array([r.reward for r in recs])
    successes = [r.success for r in recs]
    half = 1.96 * rewards.std(ddof=1) / math.sqrt(episodes) if episodes > 1 else float("inf")
    return EvalResult(
        episodes=episodes,
        mean_reward=float(rewards.mean()),
        reward_ci95=(float(rewards.mean() - half), float(rewards.mean() + half)),
        success_rate=float(np.mean(successes)),
        success_ci95=wilson_interval(int(sum(successes)), episodes),
        mean_episode_length=float(np.mean([r.length for r in recs])),
        rewards=tuple(float(r) for r in rewards),
        successes=tuple(bool(s) for s in successes),
        traces=tuple({**tr, "success": successes[a]} for a, tr in enumerate(traces)),
    )


def onnx_policy(path: Path, deterministic: bool = True) -> Policy:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # small MLP: threads cost more than they give
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    outputs = {o.name for o in session.get_outputs()}
    output = "deterministic_continuous_actions" if deterministic and "deterministic_continuous_actions" in outputs \
        else "continuous_actions"
    names = sorted((i.name for i in session.get_inputs()), key=lambda n: int(n.split("_")[1]))

    def act(obs: list[np.ndarray]) -> np.ndarray:
        return session.run([output], {name: o.astype(np.float32) for name, o in zip(names, obs)})[0]

    return act


def random_policy(action_size: int, seed: int) -> Policy:
    rng = np.random.default_rng(seed)
    return lambda obs: rng.uniform(-1.0, 1.0, size=(len(obs[0]), action_size))
