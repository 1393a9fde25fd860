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
    action_size: int  # continuous actions (0 for a discrete-only behaviour)
    max_episode_steps: int
    description: str
    # Discrete action branches (ML-Agents ActionSpec.discrete_branches); the agent gets action masks.
    action_branches: tuple[int, ...] = ()
    # Agents per training area; more than one makes each area a MultiAgentGroup (group_id = area + 1).
    agents_per_area: int = 1

    @property
    def observation_space(self) -> dict[str, int]:
        return dict(self.observations)

    @property
    def discrete(self) -> bool:
        return bool(self.action_branches)

    @property
    def grouped(self) -> bool:
        """Each area's agents are one MultiAgentGroup (a group reward, a group episode end)."""
        return self.agents_per_area > 1

    @property
    def action_space(self) -> dict:
        """The asset config's `action_space` for this simulation."""
        if self.discrete:
            return {"type": "discrete", "branches": list(self.action_branches)}
        return {"type": "continuous", "size": self.action_size}

    def describe_actions(self) -> str:
        if self.discrete:
            return f"discrete branches {list(self.action_branches)}"
        return f"{self.action_size} continuous actions"


@dataclass
class StepOutcome:
    reward: np.ndarray  # (n_agents,) float: each agent's own reward
    terminal: np.ndarray  # (n_areas,) bool: the episode ended by the task itself (success or failure)
    success: np.ndarray  # (n_areas,) bool: the task was accomplished (only meaningful where terminal)
    # (n_areas,) float: the reward of the area's agent group (SimpleMultiAgentGroup.AddGroupReward), or None
    group_reward: np.ndarray | None = None


class World(ABC):
    """A batch of `n_areas` independent training areas of one task, `spec.agents_per_area` agents each.

    Agent arrays are (n_areas * agents_per_area, ...), area-major: agent j of area a is row a * k + j.
    """

    spec: ClassVar[SimSpec]

    def __init__(self, n_areas: int, rng: np.random.Generator):
        self.n = n_areas
        self.rng = rng

    @abstractmethod
    def reset(self, mask: np.ndarray) -> None:
        """Start a new episode in the areas where mask is True."""

    @abstractmethod
    def observe(self) -> list[np.ndarray]:
        """One float32 array (n_agents, size) per sensor of spec.observations."""

    @abstractmethod
    def act(self, actions: np.ndarray) -> StepOutcome:
        """Apply one decision step: continuous actions (n_agents, action_size) in [-1, 1], or for a
        discrete behaviour the chosen index of every branch (n_agents, len(action_branches))."""

    def action_masks(self) -> list[np.ndarray] | None:
        """Per branch, (n_agents, branch size) bools, True where the action is unavailable (as in
        ML-Agents' DecisionSteps.action_mask / Agent.WriteDiscreteActionMask); None: nothing masked."""
        return None

    @abstractmethod
    def layout(self, area: int) -> dict:
        """Obstacles, radii and goals of one area, for pictures of its episode."""

    @abstractmethod
    def positions(self) -> np.ndarray:
        """One position per area (n_areas, 2) to draw its episode's path: the agent's, or the block's."""

    @staticmethod
    @abstractmethod
    def heuristic(obs: list[np.ndarray]) -> np.ndarray:
        """Scripted baseline policy from observations alone, like an Agent's Heuristic() (discrete
        behaviours' heuristics also take the action masks as a second argument)."""
