"""Config-time checks of the `mode:` section: for offline and hybrid, the dataset is read and checked here,
before any MLflow run exists, so a bad dataset leaves nothing behind."""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from pipeline.config.errors import ConfigError
from pipeline.offline.dataset import Dataset, layout_of_asset
from pipeline.offline.loader import load
from pipeline.offline.settings import METHODS

if TYPE_CHECKING:
    from pipeline.config.schema import PipelineConfig


def check_mode(config: PipelineConfig, simulation_order: Optional[tuple[str, ...]]) -> Optional[Dataset]:
    mode = config.mode
    name = mode.name
    if name == "online":
        return None
    if mode.method not in METHODS:
        raise ConfigError(f"mode.method must be one of {', '.join(METHODS)}, got {mode.method!r} "
                          "(bc: behavioural cloning; awr: advantage-weighted regression, needs rewards)")
    if not 0 <= mode.validation_fraction < 1:
        raise ConfigError(f"mode.validation_fraction must be in [0, 1), got {mode.validation_fraction}")
    if mode.batch_size < 1:
        raise ConfigError(f"mode.batch_size must be >= 1, got {mode.batch_size}")
    if mode.learning_rate is not None and mode.learning_rate <= 0:
        raise ConfigError(f"mode.learning_rate must be > 0 (or null for the algorithm's), got {mode.learning_rate}")
    if mode.awr_temperature <= 0 or mode.awr_max_weight <= 0:
        raise ConfigError("mode.awr_temperature and mode.awr_max_weight must be > 0")
    if name == "hybrid":
        steps = mode.pretrain_steps
        if not isinstance(steps, int) or isinstance(steps, bool) or steps <= 0:
            raise ConfigError(f"mode.pretrain_steps must be a positive number of demonstration samples for "
                              f"mode=hybrid, got {steps!r} (e.g. mode.pretrain_steps=200000)")
        if mode.bc_strength < 0 or mode.bc_steps < 0:
            raise ConfigError("mode.bc_strength and mode.bc_steps must be >= 0")
    elif mode.bc_strength:
        raise ConfigError("mode.bc_strength keeps a behavioural-cloning term during online fine-tuning; "
                          "it only applies to mode=hybrid")
    if (config.algorithm.get("network_settings") or {}).get("memory"):
        raise ConfigError(f"mode={name} trains feed-forward policies only; remove algorithm.network_settings.memory")
    path = mode.dataset_path
    if not path:
        raise ConfigError(f"mode.dataset_path is required for mode={name}: the .jsonl or Unity .demo dataset to "
                          "learn from (e.g. mode.dataset_path=data/demos/navigation_demo.jsonl)")
    data = load(path, layout_of_asset(config.asset, simulation_order))
    if mode.method == "awr" and not data.has_rewards:
        raise ConfigError(f"mode.method=awr needs rewards, but {data.path} has no \"reward\" field; "
                          "use mode.method=bc or record the dataset with rewards")
    return data
