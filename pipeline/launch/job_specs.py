"""The setup guide's spec dataclasses: what to train (`UnityAssetSpec`), how (`RLTrainingConfig`), as which job
(`TrainingJob`). Each checks its own fields when constructed, so a wrong value fails where it was written, with
the field's name and the fix, not minutes later inside a training job.

Numbers: a whole-valued float (1e5) is taken as the int it names; a bool is never a number; nothing is
truncated (observation_space={"raycast": 8.9} is an error).
"""
from __future__ import annotations

import math
import numbers
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.paths import CONF_DIR, REPO_ROOT

ALGORITHMS = ("PPO", "SAC", "POCA")  # as the guide writes them; the lowercase conf/algorithm names work too
TRAINING_MODES = ("online", "offline", "hybrid")
MAX_SEED = 2**31 - 1
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def whole_number(owner: str, name: str, value: Any, minimum: int, maximum: int | None = None,
                 example: str = "") -> int:
    """value as an int, or a TypeError/ValueError naming owner.name and the fix."""
    where = f"{owner}.{name}"
    hint = f" (e.g. {example})" if example else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):  # numpy numbers are Real too
        raise TypeError(f"{where} must be a whole number, got {type(value).__name__} {value!r}{hint}")
    if not isinstance(value, numbers.Integral):
        if not math.isfinite(value) or value != int(value):
            raise ValueError(f"{where} must be a whole number, got {value!r}; it would be truncated{hint}")
    value = int(value)
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise ValueError(f"{where} must be {bound}, got {value}{hint}")
    return value


def positive_real(owner: str, name: str, value: Any, example: str) -> float:
    where = f"{owner}.{name}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{where} must be a number, got {type(value).__name__} {value!r} (e.g. {example})")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{where} must be a finite number > 0, got {value!r} (e.g. {example})")
    return float(value)


def text(owner: str, name: str, value: Any, example: str, allow_empty: bool = False) -> str:
    where = f"{owner}.{name}"
    if not isinstance(value, str):
        raise TypeError(f"{where} must be a string, got {type(value).__name__} {value!r} (e.g. {example})")
    if not allow_empty and not value.strip():
        raise ValueError(f"{where} must not be empty (e.g. {example})")
    return value


def plain_name(owner: str, name: str, value: Any, example: str, max_length: int = 64) -> str:
    """A name that becomes part of paths, run names and registered models: no `/`, no `..`, no spaces.
    64 characters as the pipeline's asset.asset_id; a job id (schedule + minute + asset) may be longer."""
    text(owner, name, value, example)
    if not _PLAIN_NAME.match(value) or ".." in value or len(value) > max_length:
        raise ValueError(f"{owner}.{name} must be a plain name: 1-{max_length} letters, digits, '.', '_' or '-', "
                         f"starting with a letter or digit, no '/' or '..'; got {value!r} (e.g. {example})")
    return value


def one_of(owner: str, name: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{owner}.{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


def dataset_exists(path: str | os.PathLike) -> bool:
    """As the pipeline finds it: absolute, relative to the working directory, else to the repository."""
    p = Path(path).expanduser()
    return p.exists() or (not p.is_absolute() and (REPO_ROOT / p).exists())


def _algorithm_names() -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in (CONF_DIR / "algorithm").glob("*.yaml")))


@dataclass
class UnityAssetSpec:
    asset_id: str
    name: str  # the ML-Agents behavior name
    asset_type: str = "behavior"
    description: str = ""
    observation_space: dict[str, int] = field(default_factory=dict)  # sensor -> size; {} = the asset's own
    action_space: dict[str, Any] = field(default_factory=dict)  # {} = the asset's own
    env_path: str | None = None  # a Unity player build; None trains on the built-in simulation

    def __post_init__(self) -> None:
        owner = "UnityAssetSpec"
        plain_name(owner, "asset_id", self.asset_id, 'asset_id="nav-001"')
        text(owner, "name", self.name, 'name="NavigationAgent" (the Behavior Name in Unity)')
        text(owner, "asset_type", self.asset_type, 'asset_type="behavior"')
        text(owner, "description", self.description, 'description="Navigate to a target."', allow_empty=True)
        if not isinstance(self.observation_space, dict):
            raise TypeError(f"{owner}.observation_space must be a dict of sensor name -> size, got "
                            f"{type(self.observation_space).__name__} (e.g. {{\"raycast\": 8, \"velocity\": 2}})")
        self.observation_space = {
            text(owner, "observation_space key", sensor, '"raycast"'):
                whole_number(owner, f"observation_space[{sensor!r}]", size, 1, example=f'{{"{sensor}": 8}}')
            for sensor, size in self.observation_space.items()}
        self.action_space = _action_space(owner, self.action_space)
        if self.env_path is not None:
            if not isinstance(self.env_path, (str, os.PathLike)) or not str(self.env_path).strip():
                raise TypeError(f"{owner}.env_path must be the path of a Unity player build, or None for the "
                                f"built-in simulation; got {self.env_path!r}")
            self.env_path = os.fspath(self.env_path)


def _action_space(owner: str, space: Any) -> dict[str, Any]:
    examples = '{"type": "continuous", "size": 2} or {"type": "discrete", "branches": [5, 3]}'
    if not isinstance(space, dict):
        raise TypeError(f"{owner}.action_space must be a dict, {examples}; got {type(space).__name__}")
    if not space:
        return {}
    kind = space.get("type")
    if kind == "continuous":
        if set(space) != {"type", "size"}:
            raise ValueError(f"{owner}.action_space: a continuous action space has exactly the keys type and size, "
                             f"got {sorted(space)} (e.g. {{\"type\": \"continuous\", \"size\": 2}})")
        return {"type": kind, "size": whole_number(owner, "action_space['size']", space["size"], 1, example="2")}
    if kind == "discrete":
        branches = space.get("branches")
        if set(space) != {"type", "branches"} or not isinstance(branches, (list, tuple)) or not branches:
            raise ValueError(f"{owner}.action_space: a discrete action space has exactly the keys type and branches, "
                             f"a non-empty list of branch sizes, got {space!r} "
                             f"(e.g. {{\"type\": \"discrete\", \"branches\": [5, 3]}})")
        return {"type": kind, "branches": [whole_number(owner, f"action_space['branches'][{i}]", b, 1, example="5")
                                           for i, b in enumerate(branches)]}
    raise ValueError(f"{owner}.action_space['type'] must be \"continuous\" or \"discrete\", got {kind!r} "
                     f"({examples})")


@dataclass
class RLTrainingConfig:
    algorithm: str | None = None  # None: the asset's default (conf/asset/<asset>.yaml; MA-POCA for push, else PPO)
    max_steps: int = 500_000
    num_envs: int = 2
    time_scale: float = 20.0
    training_mode: str = "online"
    offline_dataset_path: str | None = None
    seed: int = 0
    overrides: list[str] = field(default_factory=list)  # any further Hydra overrides

    def __post_init__(self) -> None:
        owner = "RLTrainingConfig"
        known = _algorithm_names()
        if self.algorithm is not None and (not isinstance(self.algorithm, str) or (
                self.algorithm not in ALGORITHMS and self.algorithm not in known)):
            raise ValueError(f"{owner}.algorithm must be one of {', '.join(ALGORITHMS)} (or lowercase: "
                             f"{', '.join(known)}); got {self.algorithm!r}")
        self.max_steps = whole_number(owner, "max_steps", self.max_steps, 1, example="max_steps=100_000")
        self.num_envs = whole_number(owner, "num_envs", self.num_envs, 1, example="num_envs=2")
        self.time_scale = positive_real(owner, "time_scale", self.time_scale, "time_scale=20.0")
        one_of(owner, "training_mode", self.training_mode, TRAINING_MODES)
        self.seed = whole_number(owner, "seed", self.seed, 0, MAX_SEED, example="seed=0")
        if isinstance(self.overrides, str) or not isinstance(self.overrides, (list, tuple)) or not all(
                isinstance(o, str) for o in self.overrides):
            raise TypeError(f"{owner}.overrides must be a list of Hydra overrides (strings), got {self.overrides!r} "
                            f"(e.g. overrides=[\"env.num_areas=8\"])")
        self.overrides = list(self.overrides)
        path = self.offline_dataset_path
        if path is not None and (not isinstance(path, (str, os.PathLike)) or not str(path).strip()):
            raise TypeError(f"{owner}.offline_dataset_path must be the path of a .jsonl or .demo dataset, "
                            f"got {path!r}")
        if self.training_mode in ("offline", "hybrid"):
            if path is None:
                raise ValueError(f"{owner}.offline_dataset_path is required for training_mode="
                                 f"{self.training_mode!r}: the .jsonl or Unity .demo dataset to learn from "
                                 f"(e.g. offline_dataset_path=\"data/demos/navigation_demo.jsonl\")")
            if not dataset_exists(path):
                raise ValueError(f"{owner}.offline_dataset_path={os.fspath(path)!r} does not exist (looked in "
                                 f"{Path.cwd()} and {REPO_ROOT}); record one with `scripts/record_demos.py "
                                 f"record` or give the path of an existing .jsonl/.demo file")
        if path is not None:
            self.offline_dataset_path = os.fspath(path)


@dataclass
class TrainingJob:
    job_id: str
    asset_spec: UnityAssetSpec
    rl_config: RLTrainingConfig

    def __post_init__(self) -> None:
        plain_name("TrainingJob", "job_id", self.job_id, 'job_id="nav-nightly"', max_length=255)
        if not isinstance(self.asset_spec, UnityAssetSpec):
            raise TypeError(f"TrainingJob.asset_spec must be a UnityAssetSpec, got {type(self.asset_spec).__name__}")
        if not isinstance(self.rl_config, RLTrainingConfig):
            raise TypeError(f"TrainingJob.rl_config must be an RLTrainingConfig, got {type(self.rl_config).__name__}")


OVERLAP_POLICIES = ("allow", "forbid", "replace")
MISFIRE_POLICIES = ("skip", "run_once")


def check_schedule(schedule: Any) -> None:
    """TrainingSchedule's own fields (mlops_unity_pipeline/scheduling.py), checked when it is constructed."""
    from pipeline.scheduling.cron import parse_expression, parse_zone

    owner = "TrainingSchedule"
    plain_name(owner, "schedule_id", schedule.schedule_id, 'schedule_id="nightly"')
    text(owner, "cron_expression", schedule.cron_expression, 'cron_expression="0 2 * * *"')
    text(owner, "time_zone", schedule.time_zone, 'time_zone="UTC"')
    parse_expression(schedule.cron_expression, f"{owner}.cron_expression")  # five fields that fire
    parse_zone(schedule.time_zone, f"{owner}.time_zone")  # an IANA zone
    specs_list = schedule.asset_specs
    if not isinstance(specs_list, (list, tuple)) or not specs_list or not all(
            isinstance(a, UnityAssetSpec) for a in specs_list):
        raise TypeError(f"{owner}.asset_specs must be a non-empty list of UnityAssetSpec, got {specs_list!r}")
    schedule.asset_specs = list(specs_list)
    if not isinstance(schedule.rl_config, RLTrainingConfig):
        raise TypeError(f"{owner}.rl_config must be an RLTrainingConfig, got {type(schedule.rl_config).__name__}")
    one_of(owner, "overlap_policy", schedule.overlap_policy, OVERLAP_POLICIES)
    one_of(owner, "misfire_policy", schedule.misfire_policy, MISFIRE_POLICIES)
    grace = schedule.misfire_grace_seconds
    if isinstance(grace, bool) or not isinstance(grace, numbers.Real) or not math.isfinite(grace) or grace < 0:
        raise ValueError(f"{owner}.misfire_grace_seconds must be a finite number of seconds >= 0, got {grace!r} "
                         f"(e.g. misfire_grace_seconds=3600)")
    for flag in ("enabled", "resume_interrupted"):
        if not isinstance(getattr(schedule, flag), bool):
            raise TypeError(f"{owner}.{flag} must be True or False, got {getattr(schedule, flag)!r}")
    schedule.max_resumes = whole_number(owner, "max_resumes", schedule.max_resumes, 0, example="max_resumes=3")


@dataclass
class TrainingJobResult:
    job_id: str
    status: str  # FINISHED, FAILED or KILLED
    asset_id: str
    run_id: str | None = None  # the pipeline's parent MLflow run
    run_ids: dict[str, str] = field(default_factory=dict)  # stage -> MLflow run id
    onnx_uri: str | None = None  # runs:/<train run>/unity/<Behavior>.onnx
    onnx_path: str | None = None  # the same file in the local ML-Agents results directory
    training_metrics: dict[str, float] = field(default_factory=dict)
    eval_metrics: dict[str, float] = field(default_factory=dict)
    registry: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def __str__(self) -> str:
        lines = [f"TrainingJobResult {self.job_id}: {self.status} (asset {self.asset_id})"]
        if self.error:
            lines.append(f"  error: {self.error}")
        if self.run_ids:
            lines.append("  MLflow runs: " + ", ".join(f"{k}={v}" for k, v in self.run_ids.items()))
        if self.onnx_uri:
            lines.append(f"  ONNX policy: {self.onnx_uri}  (local: {self.onnx_path})")
        for title, metrics in (("training", self.training_metrics), ("evaluation", self.eval_metrics)):
            if metrics:
                lines.append(f"  {title}: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())))
        if self.registry:
            lines.append(f"  registry: {self.registry}")
        return "\n".join(lines)
