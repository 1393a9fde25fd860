"""A built-in simulation stepped in the trainer's own process, instead of behind ML-Agents' worker pipes.

`mlagents-learn` always steps environments in `SubprocessEnvManager` workers: right for a Unity player (a
separate program anyway), pure overhead for our simulations, which are already vectorised numpy. Per step the
trainer pickles every worker's ActionInfo (actions, log-probs, values) into a pipe, the worker pickles the
DecisionSteps and that ActionInfo back, and the trainer waits for it: ~27% of nav PPO's training loop after
the hot-path fixes, against ~6% for the simulation itself.

Here the `num_envs` workers' areas become one environment of `num_envs x num_areas` areas in process, driven
by ML-Agents' own `SimpleEnvManager` (what its test suite trains with): the same agents, the same trainer and
the same policy, evaluated once per step for all of them instead of once per worker. What differs from the
workers, and why a seeded run's history differs from a SubprocessEnvManager run's (which is not reproducible
itself: which workers' steps arrive together depends on timing):
- one random generator seeded `seed` for all areas, where worker i had its own seeded `seed + i`;
- every step has every agent's decision (workers deliver them in whichever order they finish).
So the check is statistical: scripts/bench.py trains seed i on both sides in pair i and compares what they learned
(bench/results.md). `MLOPS_MLAGENTS_FAST=0` keeps the workers, as upstream.
"""
from __future__ import annotations

from typing import List

from mlagents.trainers.env_manager import EnvironmentStep
from mlagents.trainers.simple_env_manager import SimpleEnvManager
from mlagents_envs.side_channel.environment_parameters_channel import EnvironmentParametersChannel
from mlagents_envs.side_channel.stats_side_channel import StatsSideChannel

from pipeline.sim.unity_env import SimulatedUnityEnv


class InProcessEnvManager(SimpleEnvManager):
    """SimpleEnvManager that also delivers the environment's stats (e.g. success rate), as a worker does.

    ML-Agents' SimpleEnvManager hands the trainers an empty stats dict; SubprocessEnvManager's worker reads
    its StatsSideChannel after every step and sends it along. This does the same, in process.
    """

    def __init__(self, env: SimulatedUnityEnv, stats: StatsSideChannel):
        super().__init__(env, EnvironmentParametersChannel())
        self.stats_channel = stats  # the one `env` writes to

    def _step(self) -> List[EnvironmentStep]:
        return [step._replace(environment_stats=self.stats_channel.get_and_reset_stats()) for step in super()._step()]
