"""Environment factories for ML-Agents' SubprocessEnvManager: `(worker_id, side_channels) -> BaseEnv`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

from mlagents_envs.side_channel import SideChannel
from mlagents_envs.side_channel.stats_side_channel import StatsSideChannel

from pipeline.sim import simulation
from pipeline.sim.unity_env import SimulatedUnityEnv


@dataclass(frozen=True)
class SimulationEnvFactory:
    """Picklable (it crosses into the worker processes); seeds worker i with seed + i like mlagents-learn."""

    simulation: str
    num_areas: int
    seed: int

    def __call__(self, worker_id: int, side_channels: List[SideChannel]) -> SimulatedUnityEnv:
        stats = next((c for c in side_channels if isinstance(c, StatsSideChannel)), None)
        return SimulatedUnityEnv(simulation(self.simulation), num_areas=self.num_areas,
                                 seed=self.seed + worker_id, stats_channel=stats)
