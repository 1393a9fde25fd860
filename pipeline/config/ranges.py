"""One table of the allowed range of every number the pipeline owns or passes to ML-Agents.

Checked on the composed config (`build_plan`), before any run, directory or environment worker exists.
Types first: an integer key takes an integer (not 1.5, not true), a float key any finite number (nan and inf
are refused everywhere). The ML-Agents keys follow ML-Agents' own settings classes
(mlagents/trainers/settings.py, ppo|sac|poca/optimizer_torch.py): their types, and the ranges under which its
trainers work at all (a summary_freq or checkpoint_interval of 0 divides by zero, a batch of 0 trains nothing,
a seed above 2**32-1 is refused by numpy after the environment workers started). Keys absent from a config are
ML-Agents' defaults, which are in range.

Each error is one line naming the key, the value, the allowed range and an example:
    env.num_envs must be >= 1, got 0 (allowed: an integer from 1 to 256; e.g. env.num_envs=2)
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pipeline.config.errors import ConfigError

INT32_MAX = 2**31 - 1  # Unity's seeds and ports are C# ints; numpy's legacy seed stops at 2**32 - 1
BIG = 10**12  # "practically unbounded" for step counts


@dataclass(frozen=True)
class Range:
    kind: type  # int or float
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself not allowed
    high_open: bool = False
    example: Any = None
    optional: bool = False  # null allowed (then a default applies)

    def problem(self, value: Any) -> str | None:
        """None if the value is allowed, else the broken rule (">= 1", "an integer", ...)."""
        if value is None:
            return None if self.optional else ("an integer" if self.kind is int else "a number")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "an integer" if self.kind is int else "a number"
        if self.kind is int and not isinstance(value, int):
            return "an integer"
        if isinstance(value, float) and not math.isfinite(value):
            return "a finite number"
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return f"{'>' if self.low_open else '>='} {_num(self.low)}"
        if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
            return f"{'<' if self.high_open else '<='} {_num(self.high)}"
        return None

    def describe(self) -> str:
        what = "an integer" if self.kind is int else "a number"
        if self.low is not None and self.high is not None:
            lo, hi = ("(" if self.low_open else "["), (")" if self.high_open else "]")
            span = (f"from {_num(self.low)} to {_num(self.high)}" if self.kind is int else
                    f"in {lo}{_num(self.low)}, {_num(self.high)}{hi}")
        elif self.low is not None:
            span = f"{'>' if self.low_open else '>='} {_num(self.low)}"
        elif self.high is not None:
            span = f"{'<' if self.high_open else '<='} {_num(self.high)}"
        else:
            span = "(finite)"
        return f"{what} {span}" + (", or null" if self.optional else "")


def _num(x: float) -> str:
    if isinstance(x, float) and x.is_integer() and abs(x) < 1e15:
        x = int(x)
    return str(x)


def Int(low=None, high=None, example=None, **kw) -> Range:
    return Range(int, low, high, example=example, **kw)


def Num(low=None, high=None, example=None, **kw) -> Range:
    return Range(float, low, high, example=example, **kw)


PROBABILITY = Num(0.0, 1.0, 0.5)
NETWORK = {
    "hidden_units": Int(1, 4096, 128),
    "num_layers": Int(1, 32, 2),
    "memory.sequence_length": Int(1, 10_000, 64),
    "memory.memory_size": Int(2, 4096, 128),  # ML-Agents also wants it even
}

# Dotted keys of the composed config; "*" stands for any one key (a reward signal's name).
TABLE: dict[str, Range] = {
    # -- the pipeline's own keys ----------------------------------------------------------------------
    "max_steps": Int(1, BIG, 150000, optional=True),
    "seed": Int(0, INT32_MAX, 0),
    "env.num_envs": Int(1, 256, 2),
    "env.num_areas": Int(1, 4096, 16),
    "env.time_scale": Num(0.0, 100.0, 20.0, low_open=True),  # Unity caps Time.timeScale at 100
    "env.timeout_wait": Int(1, 86_400, 60),
    "env.base_port": Int(1024, 65_535, 5005),  # below 1024 needs root
    "evaluation.episodes": Int(1, 100_000, 100),
    "evaluation.seed": Int(0, INT32_MAX, 10000),
    "registry.margin": Num(0.0, None, 0.0),
    "registry.tiebreak_margin": Num(0.0, None, 0.0),
    "registry.timeout_s": Num(0.0, 86_400.0, 120.0, low_open=True),
    "build.timeout_s": Int(1, 7 * 86_400, 3600),
    "mode.validation_fraction": Num(0.0, 1.0, 0.1, high_open=True),
    "mode.batch_size": Int(1, 1 << 20, 256),
    "mode.learning_rate": Num(0.0, 1.0, 0.0003, low_open=True, optional=True),
    "mode.awr_temperature": Num(0.0, 1e6, 1.0, low_open=True),
    "mode.awr_max_weight": Num(0.0, 1e6, 20.0, low_open=True),
    "mode.pretrain_steps": Int(1, BIG, 200000, optional=True),
    "mode.bc_strength": Num(0.0, 1e6, 0.5),
    "mode.bc_steps": Int(0, BIG, 0),
    # -- ML-Agents' TrainerSettings (algorithm.*), as mlagents-learn's YAML names them ----------------
    "algorithm.max_steps": Int(1, BIG, 150000),
    "algorithm.summary_freq": Int(1, BIG, 10000),
    "algorithm.checkpoint_interval": Int(1, BIG, 50000),
    "algorithm.keep_checkpoints": Int(1, 10_000, 3),
    "algorithm.time_horizon": Int(1, 1_000_000, 64),
    "algorithm.hyperparameters.batch_size": Int(1, 1 << 24, 512),
    "algorithm.hyperparameters.buffer_size": Int(1, 1 << 30, 8192),
    "algorithm.hyperparameters.learning_rate": Num(0.0, 1.0, 0.0003, low_open=True),
    "algorithm.hyperparameters.num_epoch": Int(1, 1000, 3),  # PPO, POCA
    "algorithm.hyperparameters.beta": Num(0.0, 1.0, 0.005),  # entropy bonus
    "algorithm.hyperparameters.epsilon": Num(0.0, 1.0, 0.2, low_open=True),  # policy-update clip
    "algorithm.hyperparameters.lambd": Num(0.0, 1.0, 0.95),  # GAE lambda
    "algorithm.hyperparameters.buffer_init_steps": Int(0, BIG, 0),  # SAC
    "algorithm.hyperparameters.tau": Num(0.0, 1.0, 0.005, low_open=True),
    "algorithm.hyperparameters.steps_per_update": Num(0.0, 1e6, 16.0, low_open=True),
    "algorithm.hyperparameters.reward_signal_steps_per_update": Num(0.0, 1e6, 16.0, low_open=True),
    "algorithm.hyperparameters.init_entcoef": Num(0.0, 1e3, 0.2, low_open=True),
    **{f"algorithm.network_settings.{k}": r for k, r in NETWORK.items()},
    "algorithm.reward_signals.*.gamma": Num(0.0, 1.0, 0.99, low_open=True),
    "algorithm.reward_signals.*.strength": Num(0.0, 1e6, 1.0),
    "algorithm.reward_signals.*.learning_rate": Num(0.0, 1.0, 0.0003, low_open=True),
    "algorithm.reward_signals.*.encoding_size": Int(1, 4096, 64, optional=True),
    **{f"algorithm.reward_signals.*.network_settings.{k}": r for k, r in NETWORK.items()},
    "algorithm.behavioral_cloning.steps": Int(0, BIG, 0),
    "algorithm.behavioral_cloning.strength": Num(0.0, 1e6, 0.5),
    "algorithm.behavioral_cloning.samples_per_update": Int(0, BIG, 0),
    "algorithm.behavioral_cloning.num_epoch": Int(1, 1000, 3, optional=True),
    "algorithm.behavioral_cloning.batch_size": Int(1, 1 << 24, 512, optional=True),
    "algorithm.self_play.save_steps": Int(1, BIG, 20000),
    "algorithm.self_play.team_change": Int(1, BIG, 100000),
    "algorithm.self_play.swap_steps": Int(1, BIG, 2000),
    "algorithm.self_play.window": Int(1, 100_000, 10),
    "algorithm.self_play.play_against_latest_model_ratio": PROBABILITY,
    "algorithm.self_play.initial_elo": Num(-1e9, 1e9, 1200.0),
}


def check_value(key: str, value: Any, rule: Range | None = None) -> None:
    """Refuse `value` for `key` (a TABLE key, or any key with its own rule) with the one-line error."""
    rule = rule or TABLE[key]
    problem = rule.problem(value)
    if problem is not None:
        raise ConfigError(f"{key} must be {problem}, got {value!r} (allowed: {rule.describe()}; "
                          f"e.g. {key}={rule.example})")


def check_ranges(cfg: dict, sections: tuple[str, ...] | None = None, skip: tuple[str, ...] = ()) -> None:
    """Every number of a composed config (plain containers) against TABLE, then the rules that tie keys.

    sections / skip: only / not the table keys under these top-level keys."""
    for pattern, rule in TABLE.items():
        top = pattern.split(".", 1)[0]
        if (sections is not None and top not in sections) or top in skip:
            continue
        for key, value in _lookup(cfg, pattern.split("."), ()):
            check_value(key, value, rule)
    check_together(cfg)


def _lookup(node: Any, parts: list[str], seen: tuple) -> Iterator[tuple[str, Any]]:
    if not parts:
        yield ".".join(seen), node
        return
    if not isinstance(node, dict):
        return
    head, rest = parts[0], parts[1:]
    keys = [k for k in node if isinstance(node[k], dict)] if head == "*" else ([head] if head in node else [])
    for k in keys:
        yield from _lookup(node[k], rest, (*seen, str(k)))


def check_together(cfg: dict) -> None:
    """The rules that tie keys of two sections."""
    hyper = (cfg.get("algorithm") or {}).get("hyperparameters") or {}
    batch, buffer = hyper.get("batch_size"), hyper.get("buffer_size")
    if isinstance(batch, int) and isinstance(buffer, int) and buffer < batch:
        raise ConfigError(f"algorithm.hyperparameters.buffer_size must be >= batch_size ({batch}), got {buffer} "
                          "(a buffer is split into batches: a smaller one trains nothing; e.g. "
                          f"algorithm.hyperparameters.buffer_size={batch * 16})")
    env, seed = cfg.get("env") or {}, cfg.get("seed")
    num_envs = env.get("num_envs")
    if isinstance(seed, int) and isinstance(num_envs, int) and seed + num_envs - 1 > INT32_MAX:
        raise ConfigError(f"seed + env.num_envs - 1 must be <= {INT32_MAX} (environment worker i is seeded "
                          f"seed + i), got seed={seed} with env.num_envs={num_envs} "
                          f"(e.g. seed={INT32_MAX - num_envs + 1})")
