"""Where a run's environments come from: factories for ML-Agents' SubprocessEnvManager
(`(worker_id, side_channels) -> BaseEnv`), and the env manager that runs them (`env_manager`).

A run trains on a Unity player when one is configured (env_path, an asset whose source is a build, or the
editor build's output), through `UnityEnvironment` in SubprocessEnvManager workers exactly as
`mlagents-learn --env` does; otherwise on the asset's built-in simulation, stepped in the trainer's process
(pipeline/mlagents_patches/in_process_env.py; in workers with MLOPS_MLAGENTS_FAST=0).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List

from mlagents.trainers.env_manager import EnvManager
from mlagents.trainers.settings import RunOptions
from mlagents.trainers.subprocess_env_manager import SubprocessEnvManager
from mlagents_envs.base_env import BaseEnv
from mlagents_envs.side_channel import SideChannel
from mlagents_envs.side_channel.stats_side_channel import StatsSideChannel

from pipeline.mlagents_patches import fast_paths_enabled, in_process_env
from pipeline.processes import die_with_parent
from pipeline.sim import simulation
from pipeline.sim.unity_env import SimulatedUnityEnv

EnvFactory = Callable[[int, List[SideChannel]], BaseEnv]


@dataclass(frozen=True)
class SimulationEnvFactory:
    """Picklable (it crosses into the worker processes); seeds worker i with seed + i like mlagents-learn."""

    simulation: str
    num_areas: int
    seed: int

    def __call__(self, worker_id: int, side_channels: List[SideChannel]) -> SimulatedUnityEnv:
        die_with_parent()
        stats = next((c for c in side_channels if isinstance(c, StatsSideChannel)), None)
        return self.environment(stats, worker_id)

    def environment(self, stats: StatsSideChannel | None, worker_id: int = 0,
                    num_areas: int | None = None) -> SimulatedUnityEnv:
        return SimulatedUnityEnv(simulation(self.simulation), num_areas=num_areas or self.num_areas,
                                 seed=self.seed + worker_id, stats_channel=stats)


def env_manager(plan, options: RunOptions, log_folder: Path) -> EnvManager:
    """The run's env manager; a Unity player's workers start here, `log_folder` receives the player logs."""
    factory = for_plan(plan, log_folder)
    num_envs = plan.config.env.num_envs
    if isinstance(factory, SimulationEnvFactory) and fast_paths_enabled():
        stats = StatsSideChannel()  # the workers' areas as one environment, in this process
        return in_process_env.InProcessEnvManager(factory.environment(stats, num_areas=num_envs * factory.num_areas),
                                                  stats)
    return SubprocessEnvManager(factory, options, num_envs)


def for_plan(plan, log_folder: Path) -> EnvFactory:
    """The factory for this run; `log_folder` (ML-Agents' run_logs) receives the player logs."""
    from pipeline.unity.player import PlayerPathError, check_player, player_path

    path = player_path(plan.config)
    env = plan.config.env
    if path is None:
        return SimulationEnvFactory(plan.simulation, env.num_areas, plan.seed)
    from pipeline.config.errors import ConfigError
    from pipeline.unity.environment import Expectation, PlayerEnvFactory

    try:
        player = check_player(path)
    except PlayerPathError as exc:  # e.g. the editor build's output before `-e build` has run
        raise ConfigError(f"Unity player {path}: {exc}; run the build stage first if it comes from "
                          "build.unity_project (mlflow run . -e build)") from None
    asset = plan.config.asset
    declared = asset.observation_space or {}
    action = asset.action_space
    discrete = action.type == "discrete"
    expect = Expectation(plan.behavior_name, None if discrete else action.size,
                         sum(declared.values()) if declared else None,
                         tuple(action.branches or ()) if discrete else None)
    return PlayerEnvFactory(str(player), expect, plan.seed, env.num_areas, env.no_graphics,
                            env.timeout_wait, env.base_port, tuple(env.env_args),
                            str(Path(log_folder).absolute()))
