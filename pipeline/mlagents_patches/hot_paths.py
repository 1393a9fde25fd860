"""Faster replacements for ML-Agents 1.1.0's hot paths (see pipeline/mlagents_patches/__init__.py).

Chosen from py-spy profiles of nav PPO training (scripts/bench_profile.py; bench/results.md has the
before/after tables). Each one returns what ML-Agents' own function returns on the same inputs and random
state - equal elements, bit for bit, in the same order, in the same container types, drawing the same random
numbers - so a seeded training is unchanged; tests/test_hot_paths.py calls `originals()` and the
replacement side by side, and trains with and without them.

ML-Agents keeps every buffer field as a Python list of small NumPy arrays, and its versions index that
list one element (or one one-element slice) at a time through `AgentBufferField.__getitem__`, a Python
method that wraps every slice in a new AgentBufferField. The replacements index a plain copy of the list
once per field instead. The rest of a training step is torch, the environment workers' pipes, and
Python's cyclic garbage collector, which traversed every object of the (large) update buffer and of the
start-up imports over and over (~15% of the loop): see `start_learning`.

Measured and left alone (under 1% of a training step each): `get_gae`/`discount_rewards` (a loop over at
most time_horizon floats; a vectorised filter would round differently), observation normalisation
(`Normalizer.update`, already one torch op per trajectory).
"""
from __future__ import annotations

import gc
import itertools
from collections.abc import Callable
from typing import Any

import numpy as np

# "Class.attribute" -> ML-Agents' own function, filled by apply(); the tests compare against these.
ORIGINALS: dict[str, Callable[..., Any]] = {}


def shuffle(self, sequence_length: int, key_list: list[Any] | None = None) -> None:
    """AgentBuffer.shuffle: one index permutation applied to each field in one pass.

    ML-Agents draws the permutation of sequence starts with `np.random.shuffle(np.arange(n))`, then
    concatenates one slice per sequence; we draw it the same way and gather the same elements.
    """
    from mlagents.trainers.buffer import BufferException

    if key_list is None:
        key_list = list(self._fields.keys())
    if not self.check_length(key_list):
        raise BufferException("Unable to shuffle if the fields are not of same length")
    s = np.arange(len(self[key_list[0]]) // sequence_length)
    np.random.shuffle(s)
    if sequence_length == 1:
        order = s.tolist()
    else:
        order = (s[:, None] * sequence_length + np.arange(sequence_length)).ravel().tolist()
    for key in key_list:
        field = self[key]
        items = list.copy(field)  # a plain list: indexing it skips AgentBufferField.__getitem__
        field[:] = [items[i] for i in order]


def make_mini_batch(self, start: int, end: int):
    """AgentBuffer.make_mini_batch without a Python-level __getitem__ per field."""
    from mlagents.trainers.buffer import AgentBuffer, AgentBufferField

    mini_batch = AgentBuffer()
    fields = mini_batch._fields
    for key, field in self._fields.items():
        fields[key] = AgentBufferField(list.__getitem__(field, slice(start, end)))
    return mini_batch


def sample_mini_batch(self, batch_size: int, sequence_length: int = 1):
    """AgentBuffer.sample_mini_batch (SAC): the same random sequence starts, gathered per field at once."""
    from mlagents.trainers.buffer import AgentBuffer

    num_seq_to_sample = batch_size // sequence_length
    mini_batch = AgentBuffer()
    buff_len = self.num_experiences
    num_sequences_in_buffer = buff_len // sequence_length
    start_idxes = np.random.randint(num_sequences_in_buffer, size=num_seq_to_sample) * sequence_length
    starts = start_idxes.tolist()
    for key in self:
        items = list.copy(self[key])
        if sequence_length == 1:
            # ML-Agents' one-element slices past the end are empty; an index there would raise instead.
            picked = [items[i] for i in starts if i < len(items)]
        else:
            picked = list(itertools.chain.from_iterable(items[i:i + sequence_length] for i in starts))
        mini_batch[key].set(picked)
    return mini_batch


def agent_buffer_field_getitem(self, index, _get=list.__getitem__):
    """AgentBufferField.__getitem__ without `super()`: slices (and list elements) come back as a field."""
    data = _get(self, index)
    if isinstance(data, list):
        return _FIELD_CLASS[0](data)
    return data


_NO_GROUP: list = []  # see to_agentbuffer; never written to
_FIELD_CLASS: list = []  # [AgentBufferField], set by _targets(); no import on this hot path


def to_agentbuffer(self):
    """Trajectory.to_agentbuffer, built a field at a time (list comprehensions) instead of a step at a time.

    Same fields in the same insertion order, the same array objects, the same padding values; the
    per-step arrays ML-Agents creates itself (zeros for the last step's next action, ones for an
    absent action mask, the concatenated mask) are created the same way, one per step.
    """
    from mlagents.trainers.buffer import AgentBuffer, AgentBufferField, BufferKey
    from mlagents.trainers.trajectory import GroupObsUtil, ObsUtil

    steps = self.steps
    n = len(steps)
    buf = AgentBuffer()
    fields = buf._fields

    def put(key, values, padding_value=0.0):
        f = AgentBufferField(values)
        if values:
            f.padding_value = padding_value  # AgentBufferField.append sets it on every append
        fields[key] = f

    obs_seq = [e.obs for e in steps]  # obs_seq[t] is step t's observation list
    next_seq = obs_seq[1:] + [self.next_obs]
    num_obs = len(steps[0].obs)
    for i in range(num_obs):
        # ML-Agents uses step 0's obs list length throughout (obs = next_obs at each step)
        put(ObsUtil.get_name_at(i), [o[i] for o in obs_seq])
        put(ObsUtil.get_name_at_next(i), [o[i] for o in next_seq])

    statuses = [e.group_status for e in steps]
    # A behaviour without agent groups (most) stores an empty list per step in eleven group fields. One shared
    # empty list instead of 11 x buffer_size new ones: the update buffer then holds ~100k fewer objects for
    # Python's cyclic GC to traverse (its full collections were ~15% of nav PPO's training loop). Nothing
    # writes to these entries; ML-Agents only reads them (padded_to_batch, get_batch).
    solo = not self.next_group_obs and not any(statuses)

    def mates(pick, seq):
        return [_NO_GROUP] * len(seq) if solo else [[pick(g) for g in st] for st in seq]

    put(BufferKey.GROUP_CONTINUOUS_ACTION, mates(lambda g: g.action.continuous, statuses))
    put(BufferKey.GROUP_DISCRETE_ACTION, mates(lambda g: g.action.discrete, statuses))
    put(BufferKey.GROUPMATE_REWARDS, mates(lambda g: g.reward, statuses))
    put(BufferKey.GROUP_REWARD, [e.group_reward for e in steps])
    next_statuses = statuses[1:] + statuses[-1:]  # the last step repeats its own group's actions
    put(BufferKey.GROUP_NEXT_CONT_ACTION, mates(lambda g: g.action.continuous, next_statuses))
    put(BufferKey.GROUP_NEXT_DISC_ACTION, mates(lambda g: g.action.discrete, next_statuses))
    for i in range(num_obs):
        put(GroupObsUtil.get_name_at(i), mates(lambda g, i=i: g.obs[i], statuses))
        put(GroupObsUtil.get_name_at_next(i), mates(lambda g, i=i: g.obs[i], statuses[1:])
            + [[o[i] for o in self.next_group_obs] if not solo else _NO_GROUP])

    memories = [e.memory for e in steps if e.memory is not None]
    if memories:
        put(BufferKey.MEMORY, memories)
    put(BufferKey.MASKS, [1.0] * n)
    put(BufferKey.DONE, [e.done for e in steps])
    put(BufferKey.GROUP_DONES, mates(lambda g: g.done, statuses))
    actions = [e.action for e in steps]
    put(BufferKey.CONTINUOUS_ACTION, [a.continuous for a in actions])
    put(BufferKey.DISCRETE_ACTION, [a.discrete for a in actions])
    last = actions[-1]
    put(BufferKey.NEXT_CONT_ACTION, [a.continuous for a in actions[1:]] + [np.zeros_like(last.continuous)])
    put(BufferKey.NEXT_DISC_ACTION, [a.discrete for a in actions[1:]] + [np.zeros_like(last.discrete)])
    put(BufferKey.CONTINUOUS_LOG_PROBS, [e.action_probs.continuous for e in steps])
    put(BufferKey.DISCRETE_LOG_PROBS, [e.action_probs.discrete for e in steps])
    shapes = {a.discrete.shape for a in actions}
    if len(shapes) == 1 and all(e.action_mask is None for e in steps):
        # ML-Agents allocates an all-ones mask per step; rows of one array are equal and nobody writes to them
        masks = list(np.ones((n, *shapes.pop()), dtype=np.float32))
    else:
        masks = [1 - np.concatenate(e.action_mask) if e.action_mask is not None
                 else np.ones(e.action.discrete.shape, dtype=np.float32) for e in steps]
    put(BufferKey.ACTION_MASK, masks, padding_value=1)
    put(BufferKey.PREV_ACTION, [e.prev_action for e in steps])
    put(BufferKey.ENVIRONMENT_REWARDS, [e.reward for e in steps])
    return buf


def start_learning(self, env_manager) -> None:
    """TrainerController.start_learning with the start-up's objects out of the cyclic GC's way.

    Python's full collections traverse every container alive, and a trainer process holds ~1M of them
    from torch, ML-Agents and MLflow before its first step; they live until exit. gc.freeze() sets them
    aside for the run (unfrozen after, so a later run in the same process starts clean). Training does
    exactly the same work; only the collector scans less, and less often.
    """
    thresholds = gc.get_threshold()
    gc.freeze()
    # A young generation of 10k objects instead of 700: a PPO buffer of nav is ~10^5 small objects, so
    # at 700 the collector runs thousands of times per update, and every 10th young collection can cascade
    # into a full one.
    gc.set_threshold(max(thresholds[0], 10_000), *thresholds[1:])
    try:
        return ORIGINALS["TrainerController.start_learning"](self, env_manager)
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def _targets():
    from mlagents.trainers.buffer import AgentBuffer, AgentBufferField
    from mlagents.trainers.trainer_controller import TrainerController
    from mlagents.trainers.trajectory import Trajectory

    _FIELD_CLASS[:] = [AgentBufferField]
    return {
        "AgentBuffer.shuffle": (AgentBuffer, "shuffle", shuffle),
        "AgentBuffer.make_mini_batch": (AgentBuffer, "make_mini_batch", make_mini_batch),
        "AgentBuffer.sample_mini_batch": (AgentBuffer, "sample_mini_batch", sample_mini_batch),
        "AgentBufferField.__getitem__": (AgentBufferField, "__getitem__", agent_buffer_field_getitem),
        "Trajectory.to_agentbuffer": (Trajectory, "to_agentbuffer", to_agentbuffer),
        "TrainerController.start_learning": (TrainerController, "start_learning", start_learning),
    }


def apply() -> None:
    """Install the replacements; idempotent."""
    for name, (owner, attr, fast) in _targets().items():
        current = owner.__dict__[attr]
        if current is fast:
            continue
        ORIGINALS.setdefault(name, current)
        setattr(owner, attr, fast)
    from mlagents_envs.timers import add_metadata

    # Lands in run_logs/timers.json, so a run (mlagents-learn's too) shows it trained with them.
    add_metadata("mlops_hot_paths", ",".join(sorted(_targets())))


def applied() -> bool:
    """Whether this process trains with the replacements (a marker plugins and tests can read)."""
    return all(owner.__dict__[attr] is fast for owner, attr, fast in _targets().values())


def originals() -> dict[str, Callable[..., Any]]:
    """ML-Agents' own functions, whether or not apply() ran."""
    out = dict(ORIGINALS)
    for name, (owner, attr, fast) in _targets().items():
        if name not in out and owner.__dict__[attr] is not fast:
            out[name] = owner.__dict__[attr]
    return out
