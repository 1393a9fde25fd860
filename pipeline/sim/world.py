"""The contract every built-in simulation implements; `SimulatedUnityEnv` turns it into a BaseEnv."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np


@dataclass(frozen=True)
class SimSpec:
    behavior_name: str
    observations: tuple[tuple[str, int], ...]  # (sensor name, size), in the order the policy sees them
    action_size: int
    max_episode_steps: int
    description: str

    @property
    def observation_space(self) -> dict[str, int]:
        return dict(self.observations)


@dataclass
class StepOutcome:
    reward: np.ndarray  # (n,) float
    terminal: np.ndarray  # (n,) bool: the episode ended by the task itself (success or failure)
    success: np.ndarray  # (n,) bool: the task was accomplished (only meaningful where terminal)


class World(ABC):
    """A batch of `n_areas` independent training areas of one task, one agent each."""

    spec: ClassVar[SimSpec]

    def __init__(self, n_areas: int, rng: np.random.Generator):
        self.n = n_areas
        self.rng = rng

    @abstractmethod
    def reset(self, mask: np.ndarray) -> None:
        """Start a new episode in the areas where mask is True."""

    @abstractmethod
    def observe(self) -> list[np.ndarray]:
        """One float32 array (n, size) per sensor of spec.observations."""

    @abstractmethod
    def act(self, actions: np.ndarray) -> StepOutcome:
        """Apply continuous actions (n, action_size) in [-1, 1] and advance one decision step."""

    @abstractmethod
    def layout(self, area: int) -> dict:
        """Obstacles, radii and goals of one area, for pictures of its episode."""

    @abstractmethod
    def positions(self) -> np.ndarray:
        """Agent positions (n, 2)."""

    @staticmethod
    @abstractmethod
    def heuristic(obs: list[np.ndarray]) -> np.ndarray:
        """Scripted baseline policy from observations alone, like an Agent's Heuristic()."""
