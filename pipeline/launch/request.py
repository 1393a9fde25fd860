"""One pipeline run, asked for in typed values: what every way of starting a run hands to an executor.

A request crosses process and cluster boundaries as JSON (`to_json`/`from_json`), never as a command
line: user text (a description with commas, quotes, `=`, `${...}`, newlines) reaches the run's config
exactly as given, with no joining, re-splitting, sweep syntax or OmegaConf interpolation on the way.

    LaunchRequest(groups={"asset": "nav", "algorithm": "ppo"},
                  values={"max_steps": 3000, "asset.description": "Don't touch the walls, then stop."},
                  tags={"schedule_id": "nightly"})
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from pipeline.config.errors import ConfigError

STAGES = ("main", "build", "train", "evaluate", "register")
GROUPS = ("asset", "algorithm", "mode")  # conf/ groups a request chooses by name
NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")  # a conf/<group>/<name>.yaml, nothing Hydra parses
KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")  # dotted config key


class RequestError(ConfigError):
    """A request that cannot be carried out as written; the message names the field."""


@dataclass
class LaunchRequest:
    groups: dict[str, str] = field(default_factory=dict)  # conf group -> option name (asset -> nav)
    values: dict[str, Any] = field(default_factory=dict)  # dotted config key -> typed value, set after compose
    overrides: list[str] = field(default_factory=list)  # Hydra overrides a person wrote (config files, -P overrides)
    tags: dict[str, str] = field(default_factory=dict)  # MLflow tags on every run of the pipeline
    stage: str = "main"  # the entry point: main | build | train | evaluate | register
    stage_args: dict[str, str] = field(default_factory=dict)  # evaluate: policy; register: run_id
    resume: str | None = None  # an interrupted training run id, or "latest"
    run_id: str | None = None  # an existing MLflow run the top run of this request continues (mlflow run's)
    parent_run_id: str | None = None  # or: make the top run a child of this one (a sweep's parent)
    result_json: str | None = None  # where the result goes (a path on the node that runs it)
    env: dict[str, str] = field(default_factory=dict)  # environment variables for the process that runs it
    # Started ahead of its time (a scheduled fire's child): check the config, import, open the tracking store,
    # then create runs only on a "go" line on stdin; at end of input, exit having created none.
    hold: bool = False

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        if self.stage not in STAGES:
            raise RequestError(f"stage {self.stage!r} is not an entry point; choose one of {', '.join(STAGES)}")
        for group, name in self.groups.items():
            if group not in GROUPS:
                raise RequestError(f"groups.{group}: not a config group a request chooses; "
                                   f"choose from {', '.join(GROUPS)} (other keys go in values)")
            if not isinstance(name, str) or not NAME.match(name):
                raise RequestError(f"groups.{group}={name!r} is not the name of a conf/{group}/*.yaml "
                                   "(letters, digits, '_', '.', '-'); a sweep is a Hydra multirun, not a request")
        for key in self.values:
            if not isinstance(key, str) or not KEY.match(key) or key in GROUPS or key.split(".")[0] == "hydra":
                raise RequestError(f"values: {key!r} is not a dotted pipeline config key (e.g. env.num_envs); "
                                   "config groups go in groups")
        for name in ("tags", "env", "stage_args"):
            mapping = getattr(self, name)
            bad = [k for k, v in mapping.items() if not isinstance(k, str) or not isinstance(v, str)]
            if bad:
                raise RequestError(f"{name}: keys and values must be strings; {bad[0]!r} is not")
        if not isinstance(self.hold, bool):
            raise RequestError(f"hold must be true or false, got {self.hold!r}")
        if not all(isinstance(o, str) for o in self.overrides):
            raise RequestError("overrides must be a list of strings")
        need = {"evaluate": "policy", "register": "run_id"}.get(self.stage)
        if need and not self.stage_args.get(need):
            raise RequestError(f"stage {self.stage} needs stage_args.{need}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> LaunchRequest:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RequestError(f"a launch request must be JSON: {exc}") from None
        if not isinstance(data, dict):
            raise RequestError("a launch request must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise RequestError(f"unknown launch request field(s): {', '.join(unknown)}; "
                               f"known: {', '.join(sorted(known))}")
        return cls(**data)


def yield_to_overrides(groups: dict[str, str], values: dict[str, Any],
                       overrides: list[str]) -> tuple[dict[str, str], dict[str, Any]]:
    """Groups and values minus what the person-written overrides set: an override someone typed (a site-wide
    MLOPS_PIPELINE_OVERRIDES, a job's own overrides, `-P overrides=`) wins over a field's typed value, as it
    did when both were override text and the override came last."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        given = {o.key_or_group for o in OverridesParser.create().parse_overrides(overrides=list(overrides))}
    except HydraException:
        return groups, values  # composing says what is wrong with them
    kept: dict[str, Any] = {}
    for key, value in values.items():
        if key in given:
            continue
        if isinstance(value, dict):  # asset.observation_space={...} yields the sensors an override sets
            value = {k: v for k, v in value.items() if f"{key}.{k}" not in given}
        kept[key] = value
    return {g: n for g, n in groups.items() if g not in given}, kept
