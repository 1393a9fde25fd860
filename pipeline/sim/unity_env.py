"""`SimulatedUnityEnv`: a built-in simulation seen through ML-Agents' `BaseEnv`, exactly as a Unity scene is.

The trainers cannot tell it from `UnityEnvironment`: one behavior, many agents (one per training
area), DecisionSteps/TerminalSteps with `interrupted` for episodes cut by the step limit, agents
that reset and request a decision in the same step they end, and custom stats reported through the
real StatsSideChannel message path (so `Environment/Success Rate` shows up like a Unity
`Academy.Instance.StatsRecorder.Add`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from mlagents_envs.base_env import (
    ActionSpec,
    ActionTuple,
    BaseEnv,
    BehaviorMapping,
    BehaviorSpec,
    DecisionSteps,
    DimensionProperty,
    ObservationSpec,
    ObservationType,
    TerminalSteps,
)
from mlagents_envs.side_channel import IncomingMessage, OutgoingMessage
from mlagents_envs.side_channel.stats_side_channel import StatsAggregationMethod, StatsSideChannel

from pipeline.sim.world import World

SUCCESS_STAT = "Environment/Success Rate"


@dataclass
class EpisodeRecord:
    area: int
    reward: float
    length: int
    success: bool
    interrupted: bool


def behavior_spec_for(world_cls: type[World]) -> BehaviorSpec:
    spec = world_cls.spec
    obs = [
        ObservationSpec(name=name, shape=(size,), dimension_property=(DimensionProperty.NONE,),
                        observation_type=ObservationType.DEFAULT)
        for name, size in spec.observations
    ]
    return BehaviorSpec(obs, ActionSpec.create_continuous(spec.action_size))


@dataclass
class SimulatedUnityEnv(BaseEnv):
    world_cls: type[World]
    num_areas: int = 16
    seed: int = 0
    stats_channel: Optional[StatsSideChannel] = None
    max_episode_steps: Optional[int] = None
    episodes: list[EpisodeRecord] = field(default_factory=list)  # every finished episode, in order

    # BaseEnv in UnityEnvironment exposes these; SubprocessEnvManager reads academy_capabilities.
    academy_capabilities = None

    def __post_init__(self) -> None:
        self.behavior_name = self.world_cls.spec.behavior_name
        self._spec = behavior_spec_for(self.world_cls)
        self._limit = self.max_episode_steps or self.world_cls.spec.max_episode_steps
        self.world = self.world_cls(self.num_areas, np.random.default_rng(self.seed))
        self._ids = np.arange(self.num_areas, dtype=np.int32)
        self._actions: Optional[np.ndarray] = None
        self._begin_episodes()
        self._steps = (self._decision(np.zeros(self.num_areas, np.float32)), self._no_terminal())

    def _begin_episodes(self) -> None:
        self._ep_reward = np.zeros(self.num_areas)
        self._ep_len = np.zeros(self.num_areas, dtype=int)

    # --- BaseEnv -----------------------------------------------------------------------------
    @property
    def behavior_specs(self) -> BehaviorMapping:
        return BehaviorMapping({self.behavior_name: self._spec})

    def reset(self) -> None:
        self.world.reset(np.ones(self.num_areas, dtype=bool))
        self._begin_episodes()
        self._actions = None
        self._steps = (self._decision(np.zeros(self.num_areas, np.float32)), self._no_terminal())

    def set_actions(self, behavior_name: str, action: ActionTuple) -> None:
        self._check_behavior(behavior_name)
        cont = np.asarray(action.continuous, dtype=np.float32)
        if cont.shape != (self.num_areas, self._spec.action_spec.continuous_size):
            raise ValueError(f"{behavior_name}: expected continuous actions of shape "
                             f"{(self.num_areas, self._spec.action_spec.continuous_size)}, got {cont.shape}")
        self._actions = cont

    def set_action_for_agent(self, behavior_name: str, agent_id: int, action: ActionTuple) -> None:
        self._check_behavior(behavior_name)
        if self._actions is None:
            self._actions = np.zeros((self.num_areas, self._spec.action_spec.continuous_size), np.float32)
        self._actions[int(agent_id)] = np.asarray(action.continuous, dtype=np.float32).reshape(-1)

    def get_steps(self, behavior_name: str) -> tuple[DecisionSteps, TerminalSteps]:
        self._check_behavior(behavior_name)
        return self._steps

    def step(self) -> None:
        actions = self._actions if self._actions is not None else np.zeros(
            (self.num_areas, self._spec.action_spec.continuous_size), np.float32)
        self._actions = None
        out = self.world.act(actions)
        self._ep_reward += out.reward
        self._ep_len += 1
        interrupted = ~out.terminal & (self._ep_len >= self._limit)
        done = out.terminal | interrupted
        reward = out.reward.astype(np.float32)
        terminal = self._no_terminal()
        if done.any():
            final_obs = [o[done] for o in self.world.observe()]
            terminal = TerminalSteps(final_obs, reward[done], interrupted[done], self._ids[done],
                                     np.zeros(done.sum(), np.int32), np.zeros(done.sum(), np.float32))
            for i in np.nonzero(done)[0]:
                rec = EpisodeRecord(int(i), float(self._ep_reward[i]), int(self._ep_len[i]),
                                    bool(out.success[i] and out.terminal[i]), bool(interrupted[i]))
                self.episodes.append(rec)
                self._report_stat(SUCCESS_STAT, float(rec.success))
            self.world.reset(done)
            self._ep_reward[done] = 0.0
            self._ep_len[done] = 0
        # Agents that just ended start their next episode at once and ask for a decision, as in Unity.
        self._steps = (self._decision(np.where(done, 0.0, reward).astype(np.float32)), terminal)

    def close(self) -> None:
        pass

    # --- helpers -----------------------------------------------------------------------------
    def _check_behavior(self, behavior_name: str) -> None:
        if behavior_name != self.behavior_name:
            raise KeyError(f"unknown behavior {behavior_name!r}; this environment has {self.behavior_name!r}")

    def _decision(self, reward: np.ndarray) -> DecisionSteps:
        n = self.num_areas
        return DecisionSteps(self.world.observe(), reward, self._ids, None,
                             np.zeros(n, np.int32), np.zeros(n, np.float32))

    def _no_terminal(self) -> TerminalSteps:
        return TerminalSteps.empty(self._spec)

    def _report_stat(self, key: str, value: float) -> None:
        if self.stats_channel is None:
            return
        # Serialise exactly as Unity's StatsRecorder does, then hand it to the channel's own parser.
        msg = OutgoingMessage()
        msg.write_string(key)
        msg.write_float32(value)
        msg.write_int32(StatsAggregationMethod.AVERAGE.value)
        self.stats_channel.on_message_received(IncomingMessage(msg.buffer))
