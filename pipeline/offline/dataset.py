"""A demonstration dataset in memory, whatever file it came from, checked against the asset it is for.

Rows are agent decisions in recording order: the observations the agent saw, the action it took,
and what followed (reward, whether the episode ended). Two file formats hold them: JSONL
(`pipeline.offline.jsonl`, schema in data/demos/README.md) and Unity's `.demo`
(`pipeline.offline.unity_demo`, read by ML-Agents' own loader).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from pipeline.config.errors import ConfigError
from pipeline.tracking.store import REPO_ROOT
from pipeline.digest import file_sha256

FORMATS = {".jsonl": "jsonl", ".demo": "demo"}


class DatasetError(ConfigError):
    """The dataset cannot be used for this asset; the message names the file, the line and the fix."""


@dataclass(frozen=True)
class Layout:
    """What the policy sees and does: (sensor name, size) in policy input order, continuous action size."""

    behavior_name: str
    observations: tuple[tuple[str, int], ...]
    action_size: int
    asset_id: str = ""

    @property
    def sizes(self) -> dict[str, int]:
        return dict(self.observations)

    def describe(self) -> str:
        sensors = ", ".join(f"{n}={s}" for n, s in self.observations)
        return f"asset {self.asset_id or self.behavior_name} ({sensors}; action_space.size={self.action_size})"


@dataclass
class Dataset:
    layout: Layout
    obs: list[np.ndarray]  # one float32 (N, size) array per sensor, in layout order
    actions: np.ndarray  # (N, action_size) float32
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

    def __len__(self) -> int:
        return len(self.actions)

    @property
    def has_rewards(self) -> bool:
        return self.rewards is not None

    @property
    def episodes(self) -> int:
        return int(len(np.unique(self.episode)))

    def episode_returns(self) -> np.ndarray:
        """Undiscounted return of every episode, in first-seen order."""
        assert self.rewards is not None
        ids, first = np.unique(self.episode, return_index=True)
        sums = np.zeros(len(ids))
        np.add.at(sums, np.searchsorted(ids, self.episode), self.rewards)
        return sums[np.argsort(first)]

    def discounted_returns(self, gamma: float) -> np.ndarray:
        """Reward-to-go within each episode (rows of an episode in recording order)."""
        assert self.rewards is not None
        out = np.zeros(len(self), np.float32)
        running: dict[int, float] = {}
        for i in range(len(self) - 1, -1, -1):
            ep = int(self.episode[i])
            running[ep] = float(self.rewards[i]) + gamma * running.get(ep, 0.0)
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


def resolve_path(path: str | os.PathLike) -> Path:
    """A dataset path as the user wrote it: absolute, or relative to the working directory, else to the repo.

    The repo fallback is what makes the guide's `data/demos/navigation_demo.jsonl` work from jobs and
    `mlflow run`, which do not start in the directory the user typed the path in.
    """
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p.resolve() if p.exists() else p
    in_repo = REPO_ROOT / p
    return in_repo.resolve() if in_repo.exists() else p


def dataset_format(path: Path, key: str = "mode.dataset_path") -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DatasetError(f"{key}={path}: unknown dataset format {path.suffix or '(no extension)'!r}; "
                           f"use a .jsonl file (data/demos/README.md) or a Unity .demo file")
    return fmt


_cache: dict[tuple, Dataset] = {}


def load(path: str | os.PathLike, layout: Layout, key: str = "mode.dataset_path") -> Dataset:
    """Read and validate a dataset for `layout`; the same unchanged file is parsed once per process."""
    p = resolve_path(path)
    if not p.exists():
        places = dict.fromkeys([str(Path.cwd()), str(REPO_ROOT)])
        where = "" if Path(path).is_absolute() else f" (looked in {' and '.join(places)})"
        raise DatasetError(f"{key}={path}: no such file{where}; record one with "
                           "`python scripts/record_demos.py record --asset nav --out <file>.jsonl`")
    if p.is_dir():
        raise DatasetError(f"{key}={path} is a directory; give one .jsonl or .demo file")
    fmt = dataset_format(p, key)
    stat = p.stat()
    cache_key = (str(p), stat.st_mtime_ns, stat.st_size, layout)
    if cache_key in _cache:
        return _cache[cache_key]
    if fmt == "jsonl":
        from pipeline.offline import jsonl

        data = jsonl.read(p, layout)
    else:
        from pipeline.offline import unity_demo

        data = unity_demo.read(p, layout)
    if len(data) == 0:
        raise DatasetError(f"{p}: no demonstration steps (the file is empty)")
    data.path, data.format, data.digest = p, fmt, file_sha256(p)
    _cache.clear()  # one dataset at a time is what a process trains on
    _cache[cache_key] = data
    return data


def layout_of_asset(asset: dict, observation_order: Optional[tuple[str, ...]] = None) -> Layout:
    """The Layout an asset config declares; `observation_order` is the simulation's sensor order when known."""
    sizes = dict(asset["observation_space"])
    names = observation_order or tuple(sizes)
    return Layout(behavior_name=asset["name"], observations=tuple((n, int(sizes[n])) for n in names),
                  action_size=int(asset["action_space"]["size"]), asset_id=asset.get("asset_id", ""))


def check_finite(values: np.ndarray, what: str, where: str) -> None:
    if not np.all(np.isfinite(values)):
        bad = "NaN" if np.isnan(values).any() else "an infinite value"
        raise DatasetError(f"{where}: {what} contains {bad}; every value must be a finite number")
