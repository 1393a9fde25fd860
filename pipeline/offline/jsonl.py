"""JSONL demonstrations: one JSON object per agent decision (schema: data/demos/README.md).

    {"schema": "mlagents-demo-jsonl/1", "behavior_name": "NavigationAgent", ...}     <- optional header
    {"episode": 0, "agent": 0, "step": 0, "obs": {"raycast": [...], "velocity": [...], "target": [...]},
     "action": [0.41, -0.9], "reward": 0.012, "done": false, "interrupted": false}

`reward` is what the agent received after taking `action`; `done` says the episode ended after it,
`interrupted` that it ended by the step limit rather than the task. `final_obs` (optional, on done
lines) is the observation after the last action, kept so `.demo` conversion is lossless.
A discrete behaviour's `action` is the chosen index of every branch (`[2, 0]` for branches [5, 2]);
agents of a MultiAgentGroup carry `group` (its id, 0 = none) and `group_reward` (the group's reward
after the action), as Unity's AgentInfo does.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

import numpy as np

from pipeline.offline.dataset import Dataset, DatasetError, Layout, check_finite

SCHEMA = "mlagents-demo-jsonl/1"
MAX_LINE_BYTES = 1 << 20  # one step per line: a longer line is not a demonstration step (stated in the README)
STEP_KEYS = {"episode", "agent", "step", "obs", "action", "reward", "done", "interrupted", "final_obs", "group",
             "group_reward"}


def read(path: Path, layout: Layout) -> Dataset:
    obs: list[list[list[float]]] = [[] for _ in layout.observations]
    actions: list[list[float]] = []
    rewards: list[float] = []
    done: list[bool] = []
    interrupted: list[bool] = []
    episode: list[int] = []
    agent: list[int] = []
    group: list[int] = []
    group_reward: list[float] = []
    final_obs: dict[int, list[np.ndarray]] = {}
    metadata: dict = {}
    has_reward: Optional[bool] = None
    episode_ids: dict[tuple[int, int], int] = {}
    ended: dict[tuple[int, int], int] = {}  # (agent, episode) -> line it ended on
    next_auto: dict[int, int] = {}  # agent -> episode counter when lines carry no "episode"

    with open_lines(path) as numbered:  # streamed, at most MAX_LINE_BYTES per line
        for lineno, line in numbered:
            if not line.strip():
                continue
            where = f"{path}: line {lineno}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
            except (ValueError, RecursionError) as exc:  # an integer of 5000 digits, arrays nested 100000 deep
                raise DatasetError(f"{where}: not a usable JSON step ({str(exc)[:120]})") from None
            if not isinstance(rec, dict):
                raise DatasetError(f"{where}: expected a JSON object, got {type(rec).__name__}")
            if "schema" in rec:
                if actions or metadata:
                    raise DatasetError(f"{where}: a header line (with \"schema\") may only be the first line")
                metadata = _check_header(rec, layout, where)
                continue
            unknown = set(rec) - STEP_KEYS
            if unknown:
                raise DatasetError(f"{where}: unknown key(s) {sorted(unknown)}; a step has {sorted(STEP_KEYS)}")
            for k, values in enumerate(_observations(rec.get("obs"), layout, where, "obs")):
                obs[k].append(values)
            if layout.discrete:
                actions.append(_branch_indices(rec.get("action"), layout, where))
            else:
                actions.append(_numbers(rec.get("action"), layout.action_size, where, "action",
                                        f"{layout.describe()} takes {layout.action_size} action values"))
            group.append(_int(rec, "group", where, 0))
            gr = rec.get("group_reward", 0.0)
            if not isinstance(gr, (int, float)) or isinstance(gr, bool):
                raise DatasetError(f"{where}: group_reward must be a number, got {gr!r}")
            check_finite(np.array([gr], float), "group_reward", where)
            group_reward.append(float(gr))
            if has_reward is None:
                has_reward = "reward" in rec
            if ("reward" in rec) != has_reward:
                raise DatasetError(f"{where}: {'has' if 'reward' in rec else 'has no'} \"reward\" unlike the lines "
                                   "before it; give a reward on every line or on none")
            if has_reward:
                r = rec["reward"]
                if not isinstance(r, (int, float)) or isinstance(r, bool):
                    raise DatasetError(f"{where}: reward must be a number, got {r!r}")
                check_finite(np.array([r], float), "reward", where)
                rewards.append(float(r))
            d, intr = _flag(rec, "done", where), _flag(rec, "interrupted", where)
            if intr and not d:
                raise DatasetError(f"{where}: interrupted is true but done is false; an interrupted episode is done")
            _int(rec, "step", where, None)  # not used for training, but a wrong one means a wrong file
            a = _int(rec, "agent", where, 0)
            e = _int(rec, "episode", where, None)
            if e is None:
                e = next_auto.get(a, 0)
            key = (a, e)
            if key in ended:
                raise DatasetError(f"{where}: episode {e} of agent {a} already ended on line {ended[key]}")
            row = len(actions) - 1
            if d:
                ended[key] = lineno
                next_auto[a] = e + 1
                if rec.get("final_obs") is not None:
                    final_obs[row] = [np.asarray(v, np.float32) for v in
                                      _observations(rec["final_obs"], layout, where, "final_obs")]
            elif "final_obs" in rec:
                raise DatasetError(f"{where}: final_obs is only allowed on the last step of an episode (done: true)")
            episode.append(episode_ids.setdefault(key, len(episode_ids)))
            agent.append(a)
            done.append(d)
            interrupted.append(intr)

    return Dataset(
        layout=layout,
        obs=[np.asarray(o, np.float32).reshape(len(actions), size) for o, (_, size) in zip(obs, layout.observations)],
        actions=np.asarray(actions, np.float32).reshape(len(actions), layout.action_size),
        rewards=np.asarray(rewards, np.float32) if has_reward else None,
        done=np.asarray(done, bool), interrupted=np.asarray(interrupted, bool),
        episode=np.asarray(episode, np.int64), agent=np.asarray(agent, np.int64),
        final_obs=final_obs, metadata=metadata,
        group=np.asarray(group, np.int64) if any(group) else None,
        group_reward=np.asarray(group_reward, np.float32) if any(group) or any(group_reward) else None)


@contextlib.contextmanager
def open_lines(path: Path) -> Iterator[Iterator[tuple[int, str]]]:
    """(line number, text) of a JSONL file, streamed: at most MAX_LINE_BYTES are read for any one line, so a
    huge single-line file is refused after reading 1 MiB of it, not all of it; bytes must be UTF-8."""
    with open(path, "rb") as f:
        yield _numbered(f, path)


def _numbered(f, path: Path) -> Iterator[tuple[int, str]]:
    lineno = 0
    while True:
        raw = f.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        lineno += 1
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            raise DatasetError(f"{path}: line {lineno} is longer than {MAX_LINE_BYTES} bytes (1 MiB), the limit "
                               "for one step; a JSONL dataset has one JSON object per line (data/demos/README.md)")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DatasetError(f"{path}: line {lineno}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at column "
                               f"{exc.start + 1}); save the dataset as UTF-8 JSON lines") from None
        yield lineno, (text.lstrip("\ufeff") if lineno == 1 else text)  # a byte-order mark is not JSON


def _check_header(rec: dict, layout: Layout, where: str) -> dict:
    if rec["schema"] != SCHEMA:
        raise DatasetError(f"{where}: schema {rec['schema']!r} is not {SCHEMA!r}")
    behavior = rec.get("behavior_name")
    if behavior is not None and behavior != layout.behavior_name:
        raise DatasetError(f"{where}: recorded for behavior {behavior!r}, but {layout.describe()} "
                           f"has behavior {layout.behavior_name!r}")
    return rec


def _observations(value: Any, layout: Layout, where: str, key: str) -> list[list[float]]:
    if not isinstance(value, dict):
        raise DatasetError(f"{where}: \"{key}\" must be an object mapping sensor name to values, got {value!r:.60}")
    sizes = layout.sizes
    unknown = [n for n in value if n not in sizes]
    if unknown:
        raise DatasetError(f"{where}: {key} {unknown[0]!r} is not a sensor of {layout.describe()}")
    missing = [n for n in sizes if n not in value]
    if missing:
        raise DatasetError(f"{where}: {key} has no {missing[0]!r}, a sensor of {layout.describe()}")
    return [_numbers(value[name], size, where, f"{key} {name!r}",
                     f"{layout.describe()} declares {name}={size} (asset.observation_space.{name})")
            for name, size in layout.observations]


def _numbers(value: Any, size: int, where: str, what: str, expected: str) -> list[float]:
    if not isinstance(value, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value):
        raise DatasetError(f"{where}: {what} must be a list of numbers, got {value!r:.60}")
    if len(value) != size:
        raise DatasetError(f"{where}: {what} has {len(value)} values but {expected}")
    check_finite(np.asarray(value, float), what, where)
    return value


def _branch_indices(value: Any, layout: Layout, where: str) -> list[int]:
    branches = list(layout.branches)
    if not isinstance(value, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in value):
        raise DatasetError(f"{where}: action must be a list of branch indices (integers) for {layout.describe()}, "
                           f"got {value!r:.60}")
    if len(value) != len(branches):
        raise DatasetError(f"{where}: action has {len(value)} values but {layout.describe()} takes one index per "
                           f"branch ({len(branches)})")
    for b, (x, size) in enumerate(zip(value, branches)):
        if not 0 <= x < size:
            raise DatasetError(f"{where}: action index {x} of branch {b} is outside 0..{size - 1} "
                               f"({layout.describe()})")
    return value


def _flag(rec: dict, key: str, where: str) -> bool:
    v = rec.get(key, False)
    if not isinstance(v, bool):
        raise DatasetError(f"{where}: {key} must be true or false, got {v!r}")
    return v


def _int(rec: dict, key: str, where: str, default: Optional[int]) -> Optional[int]:
    v = rec.get(key, default)
    if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
        raise DatasetError(f"{where}: {key} must be a non-negative integer, got {v!r}")
    return v


def header(layout: Layout, **extra: Any) -> dict:
    actions = {"action_branches": list(layout.branches)} if layout.discrete else {"action_size": layout.action_size}
    return {"schema": SCHEMA, "behavior_name": layout.behavior_name,
            "observations": dict(layout.observations), **actions, **extra}


def _round(a: np.ndarray) -> list[float]:
    return [float(f"{x:.5g}") for x in a.tolist()]


def write(path: Path, data: Dataset, extra_header: Optional[dict] = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    names = [n for n, _ in data.layout.observations]
    steps = _step_numbers(data.episode)
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(header(data.layout, **(extra_header or {}))) + "\n")
        for i in range(len(data)):
            rec: dict[str, Any] = {"episode": int(data.episode[i]), "agent": int(data.agent[i]), "step": steps[i],
                                   "obs": {n: _round(o[i]) for n, o in zip(names, data.obs)},
                                   "action": ([int(a) for a in data.actions[i]] if data.layout.discrete
                                              else _round(data.actions[i]))}
            if data.rewards is not None:
                rec["reward"] = float(f"{data.rewards[i]:.6g}")
            if data.group is not None:
                rec["group"] = int(data.group[i])
            if data.group_reward is not None:
                rec["group_reward"] = float(f"{data.group_reward[i]:.6g}")
            rec["done"] = bool(data.done[i])
            rec["interrupted"] = bool(data.interrupted[i])
            if i in data.final_obs:
                rec["final_obs"] = {n: _round(o) for n, o in zip(names, data.final_obs[i])}
            f.write(json.dumps(rec, separators=(",", ":")) + "\n")
    return path


def _step_numbers(episode: Iterable[int]) -> list[int]:
    count: dict[int, int] = {}
    out = []
    for e in episode:
        out.append(count.get(int(e), 0))
        count[int(e)] = out[-1] + 1
    return out
