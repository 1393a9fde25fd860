"""Seeded evaluation episodes in a built-in simulation, with 95% intervals.

Each of the N areas plays exactly one episode from the same seeded start, so every policy of an
asset is judged on the same N episodes, and short (successful) episodes are not over-counted as
they would be by "the first N episodes to finish".
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from mlagents_envs.base_env import ActionTuple

from pipeline.sim import World
from pipeline.sim.unity_env import SimulatedUnityEnv

# obs -> actions; a discrete behaviour's policies are also given the action masks: policy(obs, masks),
# masks being DecisionSteps.action_mask (per branch, True where the action is unavailable).
Policy = Callable[..., np.ndarray]


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
    # Rounding can put an end a hair past p (e.g. 1e-17 above 0 successes); the interval always holds p.
    return (min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half)))


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
        env.set_actions(env.behavior_name, decide(world, policy, decisions))
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


def decide(world: type[World], policy: Policy, decisions) -> ActionTuple:
    """The policy's ActionTuple for one DecisionSteps of `world`."""
    if world.spec.discrete:
        return ActionTuple(discrete=np.asarray(policy(decisions.obs, decisions.action_mask), dtype=np.int32))
    return ActionTuple(continuous=np.asarray(policy(decisions.obs), dtype=np.float32))


def onnx_policy(path: Path, deterministic: bool = True) -> Policy:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # small MLP: threads cost more than they give
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    outputs = {o.name for o in session.get_outputs()}
    inputs = {i.name for i in session.get_inputs()}
    names = sorted((n for n in inputs if n.startswith("obs_")), key=lambda n: int(n.split("_")[1]))
    if "discrete_actions" in outputs:
        # Unity feeds `action_masks` as 1 = allowed, 0 = masked, all branches side by side.
        output = "deterministic_discrete_actions" if deterministic and "deterministic_discrete_actions" in outputs \
            else "discrete_actions"

        def act_discrete(obs: list[np.ndarray], masks: list[np.ndarray] | None = None) -> np.ndarray:
            feed = {name: o.astype(np.float32) for name, o in zip(names, obs)}
            if "action_masks" in inputs:
                shape = session.get_inputs()[[i.name for i in session.get_inputs()].index("action_masks")].shape
                width = shape[-1] if isinstance(shape[-1], int) else sum(m.shape[1] for m in masks or ())
                allowed = (np.ones((len(obs[0]), width), np.float32) if masks is None
                           else 1.0 - np.concatenate(masks, axis=1).astype(np.float32))
                feed["action_masks"] = allowed
            return session.run([output], feed)[0].astype(np.int64)

        return act_discrete
    output = "deterministic_continuous_actions" if deterministic and "deterministic_continuous_actions" in outputs \
        else "continuous_actions"

    def act(obs: list[np.ndarray]) -> np.ndarray:
        return session.run([output], {name: o.astype(np.float32) for name, o in zip(names, obs)})[0]

    return act


def random_policy(action_size: int, seed: int, branches: tuple[int, ...] = ()) -> Policy:
    """Uniform actions; for discrete branches, uniform over the actions the masks allow."""
    rng = np.random.default_rng(seed)
    if branches:
        def act_discrete(obs: list[np.ndarray], masks: list[np.ndarray] | None = None) -> np.ndarray:
            n = len(obs[0])
            out = np.zeros((n, len(branches)), np.int64)
            for b, size in enumerate(branches):
                allowed = np.ones((n, size), bool) if masks is None else ~masks[b]
                score = rng.random((n, size)) * allowed
                out[:, b] = np.argmax(score, axis=1)
            return out

        return act_discrete
    return lambda obs: rng.uniform(-1.0, 1.0, size=(len(obs[0]), action_size))


def random_policy_for(world: type[World], seed: int) -> Policy:
    return random_policy(world.spec.action_size, seed, world.spec.action_branches)
