"""Typed schema of the pipeline's configuration; `conf/*.yaml` extends it.

Hydra checks types and unknown keys against these dataclasses when it composes the config.
The `algorithm` group is deliberately *not* re-typed here: it is an ML-Agents trainer-settings
block, verbatim, validated by ML-Agents' own `TrainerSettings` (see `validate.py`), so a saved
`trainer_config.yaml` goes straight to `mlagents-learn`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

# Sections owned by the part of the pipeline that reads them.
from pipeline.offline.settings import ModeConfig
from pipeline.registry.settings import RegistryConfig
from pipeline.unity.settings import BuildConfig


@dataclass
class ActionSpaceConfig:
    type: str = "continuous"  # continuous | discrete, as Unity's Behavior Parameters > Actions
    size: Optional[int] = None  # continuous actions (type=continuous)
    branches: List[int] = field(default_factory=list)  # discrete branch sizes (type=discrete), e.g. [5, 2]


@dataclass
class EnvSourceConfig:
    # simulation: a built-in vectorised simulation; unity: a Unity player build at build_path.
    kind: str = "simulation"
    simulation: Optional[str] = None
    build_path: Optional[str] = None


@dataclass
class AssetConfig:
    """The guide's UnityAssetSpec plus where its environment comes from."""

    asset_id: str = MISSING
    name: str = MISSING  # the ML-Agents behavior name (Behavior Parameters > Behavior Name in Unity)
    asset_type: str = "behavior"
    description: str = ""
    observation_space: Dict[str, int] = field(default_factory=dict)
    action_space: ActionSpaceConfig = field(default_factory=ActionSpaceConfig)
    source: EnvSourceConfig = field(default_factory=EnvSourceConfig)


@dataclass
class EnvConfig:
    """ML-Agents' env_settings / engine_settings, as `mlagents-learn` flags name them."""

    num_envs: int = 2
    num_areas: int = 16  # agents (training areas) per environment
    time_scale: float = 20.0
    no_graphics: bool = True
    timeout_wait: int = 60
    base_port: int = 5005
    env_args: List[str] = field(default_factory=list)


@dataclass
class TrackingConfig:
    experiment_name: str = "unity-mlagents"
    # None: $MLFLOW_TRACKING_URI, else sqlite:///<repo>/mlflow.db
    tracking_uri: Optional[str] = None


@dataclass
class EvaluationConfig:
    episodes: int = 100
    seed: int = 10_000  # fixed, so every policy of an asset faces the same episodes
    deterministic: bool = True  # the mean action; set Unity's "Deterministic Inference" to match
    baselines: bool = True  # also evaluate the random policy and the scripted heuristic


@dataclass
class PipelineConfig:
    asset: AssetConfig = MISSING
    algorithm: Dict[str, Any] = MISSING
    mode: ModeConfig = MISSING
    max_steps: Optional[int] = None  # overrides algorithm.max_steps when set
    seed: int = 0
    env_path: Optional[str] = None  # a Unity player build; overrides asset.source
    env: EnvConfig = field(default_factory=EnvConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    build: BuildConfig = field(default_factory=BuildConfig)
    results_dir: str = "results"
    run_tags: Dict[str, str] = field(default_factory=dict)  # extra MLflow tags on every stage's run
    resume: Optional[str] = None  # an interrupted training's run id, or "latest": continue it in place
    stages: List[str] = field(default_factory=lambda: ["build", "train", "evaluate", "register"])


def register_configs() -> None:
    cs = ConfigStore.instance()
    # Typing the root types every group under it (asset: AssetConfig, mode: ModeConfig ...).
    cs.store(name="pipeline_schema", node=PipelineConfig)


register_configs()
