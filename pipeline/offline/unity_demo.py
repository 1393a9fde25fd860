"""Unity `.demo` files, as the DemonstrationRecorder component writes them, through ML-Agents' own code.

Reading uses `mlagents.trainers.demo_loader.load_demonstration` and `mlagents_envs.rpc_utils.steps_from_proto`
(what `mlagents-learn` uses for GAIL and behavioral_cloning); writing uses `demo_loader.write_demo` with the
real protobuf messages, so a file written here is one ML-Agents' trainers accept.

A .demo is a stream of (AgentInfo, action) pairs per agent: each AgentInfo carries the reward earned
since the agent's previous decision, and the AgentInfo that ends an episode (done) carries the last
reward and the final observation, with the last action repeated (as Unity stores it).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.offline.dataset import Dataset, DatasetError, Layout, check_finite

META_BYTES = 32  # demo_loader.INITIAL_POS - 1: the metadata block is padded to this size


def read(path: Path, layout: Layout) -> Dataset:
    from google.protobuf.message import DecodeError
    from mlagents.trainers.demo_loader import load_demonstration
    from mlagents_envs.rpc_utils import steps_from_proto

    try:
        spec, pairs, _ = load_demonstration(str(path))
    except (RuntimeError, ValueError, DecodeError, IndexError) as exc:
        raise DatasetError(f"{path}: not a readable Unity .demo file ({exc})") from None
    action = spec.action_spec
    if layout.discrete:
        wrong = action.continuous_size or tuple(action.discrete_branches) != layout.branches
        takes = f"discrete branches {layout.branches}"
    else:
        wrong = action.discrete_size or action.continuous_size != layout.action_size
        takes = f"{layout.action_size} continuous action values"
    if wrong:
        raise DatasetError(f"{path}: the demonstrations' actions are continuous={action.continuous_size}, "
                           f"discrete branches={tuple(action.discrete_branches)}, but {layout.describe()} takes "
                           f"{takes}")
    order = _observation_order(path, spec.observation_specs, layout)
    try:
        decisions, terminals = steps_from_proto([p.agent_info for p in pairs], spec)
    except Exception as exc:  # ML-Agents raises its own exception types for NaN rewards, bad shapes
        raise DatasetError(f"{path}: {exc}") from None

    n_obs = len(layout.observations)
    rows_obs: list[list[np.ndarray]] = [[] for _ in range(n_obs)]
    actions, rewards, done, interrupted, episode, agent = [], [], [], [], [], []
    group: list[int] = []
    group_reward: list[float] = []
    final_obs: dict[int, list[np.ndarray]] = {}
    open_row: dict[int, int] = {}  # agent id -> its latest decision row in an open episode
    open_episode: dict[int, int] = {}
    n_episodes = 0
    d = t = 0
    for k, pair in enumerate(pairs):
        info = pair.agent_info
        aid = int(info.id)
        if aid in open_row:
            rewards[open_row[aid]] = float(info.reward)
            group_reward[open_row[aid]] = float(info.group_reward)
        if info.done:
            if aid in open_row:
                row = open_row.pop(aid)
                done[row], interrupted[row] = True, bool(info.max_step_reached)
                final_obs[row] = [terminals.obs[order[j]][t].astype(np.float32) for j in range(n_obs)]
                open_episode.pop(aid, None)
            t += 1
            continue
        if layout.discrete:
            values = (list(pair.action_info.discrete_actions)
                      or [int(v) for v in pair.action_info.vector_actions_deprecated])
        else:
            values = list(pair.action_info.continuous_actions) or list(pair.action_info.vector_actions_deprecated)
        if len(values) != layout.action_size:
            raise DatasetError(f"{path}: step record {k + 1} has {len(values)} action values but "
                               f"{layout.describe()} takes {layout.action_size}")
        check_finite(np.asarray(values, float), "action", f"{path}: step record {k + 1}")
        for j in range(n_obs):
            o = decisions.obs[order[j]][d]
            check_finite(o, f"observation {layout.observations[j][0]!r}", f"{path}: step record {k + 1}")
            rows_obs[j].append(o)
        if aid not in open_episode:
            open_episode[aid] = n_episodes
            n_episodes += 1
        open_row[aid] = len(actions)
        actions.append(values)
        rewards.append(0.0)
        group.append(int(info.group_id))
        group_reward.append(0.0)
        done.append(False)
        interrupted.append(False)
        episode.append(open_episode[aid])
        agent.append(aid)
        d += 1

    n = len(actions)
    return Dataset(
        layout=layout,
        obs=[np.asarray(o, np.float32).reshape(n, size) for o, (_, size) in zip(rows_obs, layout.observations)],
        actions=np.asarray(actions, np.float32).reshape(n, layout.action_size),
        rewards=np.asarray(rewards, np.float32), done=np.asarray(done, bool),
        interrupted=np.asarray(interrupted, bool), episode=np.asarray(episode, np.int64),
        agent=np.asarray(agent, np.int64), final_obs=final_obs,
        group=np.asarray(group, np.int64) if any(group) else None,
        group_reward=np.asarray(group_reward, np.float32) if any(group) or any(group_reward) else None)


def _observation_order(path: Path, specs, layout: Layout) -> list[int]:
    """For each layout sensor, the index of the .demo observation holding it (by name when names are recorded)."""
    shapes = [tuple(s.shape) for s in specs]
    names = [s.name for s in specs]
    if len(specs) != len(layout.observations):
        raise DatasetError(f"{path}: the demonstrations have {len(specs)} observations {shapes}, but "
                           f"{layout.describe()} has {len(layout.observations)} sensors")
    by_name = {n: i for i, n in enumerate(names)}
    use_names = all(n in by_name for n, _ in layout.observations)
    order = []
    for j, (name, size) in enumerate(layout.observations):
        i = by_name[name] if use_names else j
        if shapes[i] != (size,):
            label = names[i] or f"#{i}"
            raise DatasetError(f"{path}: observation {label!r} has shape {shapes[i]} but {layout.describe()} "
                               f"declares {name}={size} (asset.observation_space.{name})")
        order.append(i)
    return order


def write(path: Path, data: Dataset, name: str = "demo") -> Path:
    from mlagents.trainers.demo_loader import write_demo
    from mlagents_envs.communicator_objects.agent_action_pb2 import AgentActionProto
    from mlagents_envs.communicator_objects.agent_info_action_pair_pb2 import AgentInfoActionPairProto
    from mlagents_envs.communicator_objects.agent_info_pb2 import AgentInfoProto
    from mlagents_envs.communicator_objects.brain_parameters_pb2 import ActionSpecProto, BrainParametersProto
    from mlagents_envs.communicator_objects.demonstration_meta_pb2 import DemonstrationMetaProto
    from mlagents_envs.communicator_objects.observation_pb2 import NONE, ObservationProto

    layout = data.layout
    names = [n for n, _ in layout.observations]
    rewards = data.rewards if data.rewards is not None else np.zeros(len(data), np.float32)
    groups = data.group if data.group is not None else np.zeros(len(data), np.int64)
    group_rewards = data.group_reward if data.group_reward is not None else np.zeros(len(data), np.float32)

    def observations(values: list[np.ndarray]) -> list:
        return [ObservationProto(shape=[len(v)], compression_type=NONE, name=n, dimension_properties=[1],
                                 float_data=ObservationProto.FloatData(data=np.asarray(v, np.float32).tolist()))
                for n, v in zip(names, values)]

    def pair(obs: list[np.ndarray], action: np.ndarray, reward: float, aid: int, done: bool = False,
             max_step: bool = False, group: int = 0, group_reward: float = 0.0):
        act = np.asarray(action, np.float32).tolist()
        info = AgentInfoProto(reward=reward, done=done, max_step_reached=max_step, id=aid,
                              observations=observations(obs), group_id=group, group_reward=group_reward)
        if layout.discrete:
            chosen = AgentActionProto(discrete_actions=[int(a) for a in act], vector_actions_deprecated=act)
        else:
            chosen = AgentActionProto(continuous_actions=act, vector_actions_deprecated=act)
        return AgentInfoActionPairProto(agent_info=info, action_info=chosen)

    pairs = []
    # Episodes one after another: ML-Agents' make_demo_buffer pairs each record with the next one.
    for ep in _episodes_in_order(data.episode):
        rows = np.nonzero(data.episode == ep)[0]
        for k, i in enumerate(rows):
            prev_reward = float(rewards[rows[k - 1]]) if k else 0.0
            prev_group = float(group_rewards[rows[k - 1]]) if k else 0.0
            pairs.append(pair([o[i] for o in data.obs], data.actions[i], prev_reward, int(data.agent[i]),
                              group=int(groups[i]), group_reward=prev_group))
        last = rows[-1]
        if data.done[last]:
            final = data.final_obs.get(int(last), [o[last] for o in data.obs])
            pairs.append(pair(final, data.actions[last], float(rewards[last]), int(data.agent[last]),
                              done=True, max_step=bool(data.interrupted[last]), group=int(groups[last]),
                              group_reward=float(group_rewards[last])))

    n_eps = int(data.done.sum())
    mean_return = float(data.episode_returns().mean()) if data.rewards is not None and len(data) else 0.0
    meta = DemonstrationMetaProto(api_version=1, demonstration_name=name[:12], number_steps=len(pairs),
                                  number_episodes=n_eps, mean_reward=mean_return)
    if meta.ByteSize() + 1 > META_BYTES:  # cannot happen with a 12-character name; guard the file layout
        raise ValueError("demonstration metadata does not fit the .demo header")
    if layout.discrete:  # vector_action_space_type 0 = discrete, 1 = continuous (SpaceTypeProto)
        brain = BrainParametersProto(
            brain_name=layout.behavior_name, is_training=True,
            vector_action_size_deprecated=list(layout.branches), vector_action_space_type_deprecated=0,
            action_spec=ActionSpecProto(num_continuous_actions=0, num_discrete_actions=len(layout.branches),
                                        discrete_branch_sizes=list(layout.branches)))
    else:
        brain = BrainParametersProto(
            brain_name=layout.behavior_name, is_training=True,
            vector_action_size_deprecated=[layout.action_size], vector_action_space_type_deprecated=1,
            action_spec=ActionSpecProto(num_continuous_actions=layout.action_size, num_discrete_actions=0))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_demo(str(path), meta, brain, pairs)
    return path


def _episodes_in_order(episode: np.ndarray) -> list[int]:
    _, first = np.unique(episode, return_index=True)
    return [int(episode[i]) for i in sorted(first)]
