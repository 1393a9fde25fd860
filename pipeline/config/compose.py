"""Compose the Hydra config outside `@hydra.main` (MLflow entry points, the Python API, tests)."""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

import pipeline.config.schema  # noqa: F401  (registers the schema in Hydra's ConfigStore)
from pipeline.config.errors import ConfigError
from pipeline.config.hydra_settings import check_overrides as check_hydra_settings
from pipeline.config.plan import RunPlan, build_plan
from pipeline.paths import CONF_DIR

# Hydra's global state allows one composition at a time per process (executors compose from threads).
_HYDRA = threading.Lock()


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    # Group choices that are paths, process environment, output locations: refused as on the Hydra app.
    check_hydra_settings(overrides)
    try:
        with _HYDRA, initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose("config", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(describe(exc)) from None


def compose_plan(overrides: Sequence[str] = ()) -> RunPlan:
    return build_plan(compose_config(overrides))


def describe(exc: BaseException) -> str:
    """Hydra's message plus its cause (which holds the key and the bad value), minus search-path noise."""
    text = str(exc).split("\nConfig search path:")[0].strip()
    cause = exc.__cause__
    if cause is not None and str(cause) not in text:
        text += f"\n{str(cause).strip()}"
    return text


def compose_typed(choices: Mapping[str, str] = {}, values: Mapping[str, Any] = {},
                  overrides: Sequence[str] = (), tags: Mapping[str, str] = {}) -> dict[str, Any]:
    """The config of a launch request (pipeline/launch/): group `choices` go to Hydra as plain names, the
    person-written `overrides` as Hydra overrides; then the typed `values` (dotted key -> value) and run `tags`
    are set on the composed config, never as override text and never interpolated: a description
    "${oc.env:SECRET}" is stored as those 17 characters. Types and keys are still checked against the schema
    (a new key is only accepted inside a free-form mapping such as asset.observation_space or algorithm)."""
    cfg = compose_config([f"{group}={name}" for group, name in choices.items()] + list(overrides))
    try:
        OmegaConf.resolve(cfg)  # the config's own interpolations, before any user text is in it
        for key, value in values.items():
            _set_typed(cfg, key, value)
        raw = OmegaConf.to_container(cfg, resolve=False, throw_on_missing=True)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(_literal(describe(exc))) from None
    for key, value in values.items():  # the exact text, where the schema stored text
        _restore_text(raw, key.split("."), value)
    for name, text in tags.items():
        raw.setdefault("run_tags", {})[name] = text
    return raw


def compose_typed_plan(choices: Mapping[str, str] = {}, values: Mapping[str, Any] = {},
                       overrides: Sequence[str] = (), tags: Mapping[str, str] = {},
                       algorithm_check: Callable[[dict, int], Any] | None = None) -> RunPlan:
    return build_plan(compose_typed(choices, values, overrides, tags), algorithm_check)


# OmegaConf treats any string holding "${" as an interpolation: user text is set with this inert stand-in
# (so the schema still checks its type), then the exact text is put back in the plain container.
_STAND_IN = "$\x00{"


def _inert(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("${", _STAND_IN)
    if isinstance(value, Mapping):
        return {k: _inert(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_inert(v) for v in value]
    return value


def _literal(text: str) -> str:
    return text.replace(_STAND_IN, "${")


def _free_form(node: Any) -> bool:
    """A mapping typed Dict[...] (or untyped) rather than a schema dataclass: new keys are fine in it."""
    return isinstance(node, DictConfig) and node._metadata.object_type in (dict, None)


def _set_typed(cfg: DictConfig, key: str, value: Any) -> None:
    parent_key, _, _ = key.rpartition(".")
    opened = [n for n in (OmegaConf.select(cfg, key, default=None), OmegaConf.select(cfg, parent_key, default=None)
                          if parent_key else None) if _free_form(n)]
    with contextlib.ExitStack() as stack:
        for node in opened:
            stack.enter_context(open_dict(node))
        OmegaConf.update(cfg, key, _inert(value), merge=True)


def _restore_text(raw: Any, path: list[str], value: Any) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _restore_text(raw, [*path, str(k)], v)
        return
    node = raw
    for part in path[:-1]:
        node = node[part]
    stored = node[path[-1]]
    if isinstance(value, str) and isinstance(stored, str):
        node[path[-1]] = value
    elif isinstance(value, (list, tuple)) and isinstance(stored, list):
        node[path[-1]] = [v if isinstance(v, str) and isinstance(s, str) else s for v, s in zip(value, stored)]
