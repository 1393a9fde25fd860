"""`SimulatedUnityEnv`: a built-in simulation seen through ML-Agents' `BaseEnv`, exactly as a Unity scene is.

The trainers cannot tell it from `UnityEnvironment`: one behavior, many agents (one per training
area, or a MultiAgentGroup per area: `group_id` = area + 1, the group's reward in every member's
`group_reward`, and every member gets its terminal step in the same step when the group's episode
ends), DecisionSteps/TerminalSteps with `interrupted` for episodes cut by the step limit, agents
that reset and request a decision in the same step they end, discrete actions with action masks,
and custom stats reported through the real StatsSideChannel message path (so `Environment/Success
Rate` shows up like a Unity `Academy.Instance.StatsRecorder.Add`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

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
    reward: float  # the area's return: group reward plus the mean of its agents' own rewards
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
    return BehaviorSpec(obs, ActionSpec(spec.action_size, tuple(spec.action_branches)))


@dataclass
class SimulatedUnityEnv(BaseEnv):
    world_cls: type[World]
    num_areas: int = 16
    seed: int = 0
    stats_channel: StatsSideChannel | None = None
    max_episode_steps: int | None = None
    episodes: list[EpisodeRecord] = field(default_factory=list)  # every finished episode, in order
    # Discrete actions the trainer chose although they were masked (Unity would execute them; we count).
    masked_actions_taken: int = 0

    # BaseEnv in UnityEnvironment exposes these; SubprocessEnvManager reads academy_capabilities.
    academy_capabilities = None

    def __post_init__(self) -> None:
        spec = self.world_cls.spec
        self.behavior_name = spec.behavior_name
        self._spec = behavior_spec_for(self.world_cls)
        self._limit = self.max_episode_steps or spec.max_episode_steps
        self.agents_per_area = spec.agents_per_area
        self.num_agents = self.num_areas * self.agents_per_area
        self.world = self.world_cls(self.num_areas, np.random.default_rng(self.seed))
        self._ids = np.arange(self.num_agents, dtype=np.int32)
        # 0 is ML-Agents' "no group"; a group per area when the area holds several agents.
        self._group_ids = (self._ids // self.agents_per_area + 1 if spec.grouped
                           else np.zeros(self.num_agents, np.int32)).astype(np.int32)
        self._actions: np.ndarray | None = None
        self._begin_episodes()
        self._steps = (self._decision(np.zeros(self.num_agents, np.float32), np.zeros(self.num_agents, np.float32)),
                       self._no_terminal())

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
        self._steps = (self._decision(np.zeros(self.num_agents, np.float32), np.zeros(self.num_agents, np.float32)),
                       self._no_terminal())

    def set_actions(self, behavior_name: str, action: ActionTuple) -> None:
        self._check_behavior(behavior_name)
        self._actions = self._action_array(action, (self.num_agents, self._action_width()))

    def set_action_for_agent(self, behavior_name: str, agent_id: int, action: ActionTuple) -> None:
        self._check_behavior(behavior_name)
        if self._actions is None:
            self._actions = self._idle_actions()
        self._actions[int(agent_id)] = self._action_array(action, (1, self._action_width())).reshape(-1)

    def get_steps(self, behavior_name: str) -> tuple[DecisionSteps, TerminalSteps]:
        self._check_behavior(behavior_name)
        return self._steps

    def step(self) -> None:
        actions = self._actions if self._actions is not None else self._idle_actions()
        self._actions = None
        if self._spec.action_spec.discrete_size:
            self._count_masked(actions)
        out = self.world.act(actions)
        k = self.agents_per_area
        group = out.group_reward if out.group_reward is not None else np.zeros(self.num_areas)
        self._ep_reward += group + out.reward.reshape(self.num_areas, k).mean(axis=1)
        self._ep_len += 1
        interrupted = ~out.terminal & (self._ep_len >= self._limit)
        done = out.terminal | interrupted
        reward = out.reward.astype(np.float32)
        group_reward = np.repeat(group, k).astype(np.float32)
        terminal = self._no_terminal()
        if done.any():
            # The whole group ends together (SimpleMultiAgentGroup.EndGroupEpisode / GroupEpisodeInterrupted).
            agents = np.repeat(done, k)
            final_obs = [o[agents] for o in self.world.observe()]
            terminal = TerminalSteps(final_obs, reward[agents], np.repeat(interrupted, k)[agents], self._ids[agents],
                                     self._group_ids[agents], group_reward[agents])
            for i in np.nonzero(done)[0]:
                rec = EpisodeRecord(int(i), float(self._ep_reward[i]), int(self._ep_len[i]),
                                    bool(out.success[i] and out.terminal[i]), bool(interrupted[i]))
                self.episodes.append(rec)
                self._report_stat(SUCCESS_STAT, float(rec.success))
            self.world.reset(done)
            self._ep_reward[done] = 0.0
            self._ep_len[done] = 0
            # Agents that just ended start their next episode at once and ask for a decision, as in Unity.
            fresh = np.repeat(done, k)
            reward, group_reward = np.where(fresh, 0.0, reward), np.where(fresh, 0.0, group_reward)
        self._steps = (self._decision(reward.astype(np.float32), group_reward.astype(np.float32)), terminal)

    def close(self) -> None:
        pass

    # --- helpers -----------------------------------------------------------------------------
    def _check_behavior(self, behavior_name: str) -> None:
        if behavior_name != self.behavior_name:
            raise KeyError(f"unknown behavior {behavior_name!r}; this environment has {self.behavior_name!r}")

    def _action_width(self) -> int:
        spec = self._spec.action_spec
        return spec.discrete_size if spec.discrete_size else spec.continuous_size

    def _idle_actions(self) -> np.ndarray:
        dtype = np.int32 if self._spec.action_spec.discrete_size else np.float32
        return np.zeros((self.num_agents, self._action_width()), dtype)

    def _action_array(self, action: ActionTuple, shape: tuple[int, int]) -> np.ndarray:
        if self._spec.action_spec.discrete_size:
            kind, values = "discrete", np.asarray(action.discrete, dtype=np.int32)
        else:
            kind, values = "continuous", np.asarray(action.continuous, dtype=np.float32)
        if values.shape != shape:
            raise ValueError(f"{self.behavior_name}: expected {kind} actions of shape {shape}, got {values.shape}")
        if kind == "discrete":
            branches = np.asarray(self._spec.action_spec.discrete_branches)
            if np.any(values < 0) or np.any(values >= branches):
                raise ValueError(f"{self.behavior_name}: discrete actions must lie in 0..branch size-1 "
                                 f"(branches {list(branches)}); got {values.min()}..{values.max()}")
        return values

    def _count_masked(self, actions: np.ndarray) -> None:
        masks = self._steps[0].action_mask
        if masks is None:
            return
        rows = np.arange(len(actions))
        for b, mask in enumerate(masks):
            self.masked_actions_taken += int(mask[rows, actions[:, b]].sum())

    def _decision(self, reward: np.ndarray, group_reward: np.ndarray) -> DecisionSteps:
        return DecisionSteps(self.world.observe(), reward, self._ids, self.world.action_masks(),
                             self._group_ids, group_reward)

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
