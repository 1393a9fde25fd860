"""Compose the Hydra config outside `@hydra.main` (MLflow entry points, the Python API, tests)."""
from __future__ import annotations

from typing import Sequence

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

import pipeline.config.schema  # noqa: F401  (registers the schema in Hydra's ConfigStore)
from pipeline.config.errors import ConfigError
from pipeline.config.plan import RunPlan, build_plan
from pipeline.tracking.store import REPO_ROOT

CONF_DIR = REPO_ROOT / "conf"


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
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
