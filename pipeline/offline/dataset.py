"""A demonstration dataset in memory, whatever file it came from, checked against the asset it is for.

Rows are agent decisions in recording order: the observations the agent saw, the action it took,
and what followed (reward, whether the episode ended). Two file formats hold them: JSONL
(`pipeline.offline.jsonl`, schema in data/demos/README.md) and Unity's `.demo`
(`pipeline.offline.unity_demo`, read by ML-Agents' own loader); `pipeline.offline.loader` finds the
file, picks the format and reads it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np

from pipeline.config.errors import ConfigError

if TYPE_CHECKING:
    from pipeline.config.schema import AssetConfig


class DatasetError(ConfigError):
    """The dataset cannot be used for this asset; the message names the file, the line and the fix."""


@dataclass(frozen=True)
class Layout:
    """What the policy sees and does: (sensor name, size) in policy input order, continuous action size."""

    behavior_name: str
    observations: tuple[tuple[str, int], ...]
    action_size: int  # continuous actions; for a discrete layout, the number of branches (one index each)
    asset_id: str = ""
    branches: tuple[int, ...] = ()  # discrete branch sizes; empty for continuous actions

    @property
    def sizes(self) -> dict[str, int]:
        return dict(self.observations)

    @property
    def discrete(self) -> bool:
        return bool(self.branches)

    def describe(self) -> str:
        sensors = ", ".join(f"{n}={s}" for n, s in self.observations)
        actions = (f"action_space.branches={list(self.branches)}" if self.discrete
                   else f"action_space.size={self.action_size}")
        return f"asset {self.asset_id or self.behavior_name} ({sensors}; {actions})"


@dataclass
class Dataset:
    layout: Layout
    obs: list[np.ndarray]  # one float32 (N, size) array per sensor, in layout order
    actions: np.ndarray  # (N, action_size) float32; discrete: the chosen index of each branch
    rewards: Optional[np.ndarray]  # (N,) reward after each action; None when the data has none
    done: np.ndarray  # (N,) bool: the episode ended after this action
    interrupted: np.ndarray  # (N,) bool: ...because of the step limit, not the task
    episode: np.ndarray  # (N,) int: episode index, unique over the whole dataset
    agent: np.ndarray  # (N,) int
    final_obs: dict[int, list[np.ndarray]] = field(default_factory=dict)  # done row -> observation after it
    path: Optional[Path] = None
    format: str = ""
    digest: str = ""  # sha256 of the file's bytes
    metadata: dict = field(default_factory=dict)
    group: np.ndarray | None = None  # (N,) int MultiAgentGroup id (0 = none); None when not recorded
    group_reward: np.ndarray | None = None  # (N,) the group's reward after each action

    def __len__(self) -> int:
        return len(self.actions)

    @property
    def has_rewards(self) -> bool:
        return self.rewards is not None

    @property
    def episodes(self) -> int:
        return int(len(np.unique(self.episode)))

    def total_rewards(self) -> np.ndarray:
        """What ML-Agents' extrinsic reward signal sees: the agent's own reward plus its group's."""
        assert self.rewards is not None
        return self.rewards if self.group_reward is None else self.rewards + self.group_reward

    def episode_returns(self) -> np.ndarray:
        """Undiscounted return of every episode, in first-seen order."""
        ids, first = np.unique(self.episode, return_index=True)
        sums = np.zeros(len(ids))
        np.add.at(sums, np.searchsorted(ids, self.episode), self.total_rewards())
        return sums[np.argsort(first)]

    def discounted_returns(self, gamma: float) -> np.ndarray:
        """Reward-to-go within each episode (rows of an episode in recording order)."""
        rewards = self.total_rewards()
        out = np.zeros(len(self), np.float32)
        running: dict[int, float] = {}
        for i in range(len(self) - 1, -1, -1):
            ep = int(self.episode[i])
            running[ep] = float(rewards[i]) + gamma * running.get(ep, 0.0)
            out[i] = running[ep]
        return out

    def split(self, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Row indices (train, validation), holding out whole episodes so no episode is in both."""
        ids = np.unique(self.episode)
        n_val = int(round(len(ids) * fraction)) if fraction > 0 else 0
        n_val = min(n_val, len(ids) - 1)
        held = np.random.default_rng(seed).choice(ids, size=n_val, replace=False) if n_val > 0 else np.array([], int)
        val = np.isin(self.episode, held)
        return np.nonzero(~val)[0], np.nonzero(val)[0]

    def summary(self) -> dict[str, float]:
        out = {"steps": float(len(self)), "episodes": float(self.episodes)}
        if self.rewards is not None:
            returns = self.episode_returns()
            out["mean_episode_return"] = float(returns.mean())
        if "success" in self.metadata.get("episode_stats", {}):
            out["success_rate"] = float(self.metadata["episode_stats"]["success"])
        return out


def layout_of_asset(asset: AssetConfig, observation_order: Optional[tuple[str, ...]] = None) -> Layout:
    """The Layout an asset config declares; `observation_order` is the simulation's sensor order when known."""
    sizes = dict(asset.observation_space)
    names = observation_order or tuple(sizes)
    action = asset.action_space
    branches = tuple(int(b) for b in action.branches or ()) if action.type == "discrete" else ()
    return Layout(behavior_name=asset.name, observations=tuple((n, int(sizes[n])) for n in names),
                  action_size=len(branches) if branches else int(action.size), asset_id=asset.asset_id or "",
                  branches=branches)


def check_finite(values: np.ndarray, what: str, where: str) -> None:
    if not np.all(np.isfinite(values)):
        bad = "NaN" if np.isnan(values).any() else "an infinite value"
        raise DatasetError(f"{where}: {what} contains {bad}; every value must be a finite number")
