"""Typed schema of the pipeline's configuration, and the one place its defaults are written.

`conf/config.yaml` extends it (Hydra's structured-config pattern: the dataclasses sit in the ConfigStore as
`pipeline_schema`, first in the defaults list) and only chooses groups; `tests/test_config.py` fails if it
restates a default. Hydra checks types and unknown keys against these dataclasses when it composes the config;
`build_plan` turns the result into these same dataclasses (`structure`), and every section checks its own
values (`validate()`, errors naming `section.key` and the fix). Stages read attributes: `plan.config.env.num_areas`.

Two sections stay mappings, on purpose:
- `algorithm` is ML-Agents' own trainer-settings block, verbatim: it is validated by ML-Agents' own strict
  structuring (`TrainerSettings.structure`, in config/plan.py) and written as `trainer_config.yaml` straight to
  `mlagents-learn`; re-typing it here would be a second, drifting copy of ML-Agents' settings.py.
  The structured result is `plan.trainer_settings`.
- `asset.observation_space` and `run_tags`: names the user chooses (sensor names, tag names).
"""
from __future__ import annotations

import copy
import re
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from pipeline.config.errors import ConfigError
from pipeline.config.places import check_store
from pipeline.config.ranges import check_ranges

# Sections owned by the part of the pipeline that reads them.
from pipeline.offline.settings import ModeConfig
from pipeline.registry.settings import RegistryConfig
from pipeline.unity.settings import BuildConfig

ASSET_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


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

    def validate(self) -> None:
        """The asset's own rules; how it matches a simulation is checked with the simulation (config/plan.py)."""
        if not isinstance(self.asset_id, str) or not ASSET_ID.match(self.asset_id):
            raise ConfigError(f"asset.asset_id {self.asset_id!r} must be 1-64 letters, digits, '.', '_' or '-' "
                              "(it names result directories and registered models)")
        if self.source.kind not in ("simulation", "unity"):
            raise ConfigError(f"asset.source.kind must be 'simulation' or 'unity', got {self.source.kind!r}")


@dataclass
class EnvConfig:
    """ML-Agents' env_settings / engine_settings, as `mlagents-learn` flags name them."""

    # Environment workers (mlagents-learn --num-envs), one per core here; a built-in simulation runs all
    # their areas in the trainer's process instead (num_envs x num_areas areas, in_process_env).
    num_envs: int = 2
    num_areas: int = 16  # agents per environment, like the copies of a training area in a scene
    time_scale: float = 20.0  # Unity's time scale for builds (mlagents-learn's default); simulations ignore it
    no_graphics: bool = True
    timeout_wait: int = 60
    base_port: int = 5005
    env_args: List[str] = field(default_factory=list)

    def validate(self) -> None:
        _check_section_ranges("env", self)


@dataclass
class TrackingConfig:
    experiment_name: str = "unity-mlagents"
    # None: $MLFLOW_TRACKING_URI, else sqlite:///<repo>/mlflow.db
    tracking_uri: Optional[str] = None

    def validate(self) -> None:
        check_store(self.tracking_uri)


@dataclass
class EvaluationConfig:
    episodes: int = 100  # enough for a +-0.1 95% interval on success rate
    seed: int = 10_000  # fixed, so every policy of an asset faces the same episodes
    deterministic: bool = True  # the mean action; set Unity's "Deterministic Inference" to match
    baselines: bool = True  # also evaluate the random policy and the scripted heuristic

    def validate(self) -> None:
        _check_section_ranges("evaluation", self)


@dataclass
class PipelineConfig:
    asset: AssetConfig = MISSING
    algorithm: Dict[str, Any] = MISSING
    mode: ModeConfig = MISSING
    max_steps: Optional[int] = None  # overrides algorithm.max_steps when set; None keeps the algorithm's
    seed: int = 0  # training seed; environment worker i is seeded seed + i, as in mlagents-learn
    env_path: Optional[str] = None  # a Unity player build; overrides asset.source (None: the asset's simulation)
    env: EnvConfig = field(default_factory=EnvConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    build: BuildConfig = field(default_factory=BuildConfig)
    # ML-Agents results; each run gets its own subdirectory named by its MLflow run id
    results_dir: str = "results"
    run_tags: Dict[str, str] = field(default_factory=dict)  # extra MLflow tags on every stage's run
    resume: Optional[str] = None  # an interrupted training's run id, or "latest": continue it in place
    stages: List[str] = field(default_factory=lambda: ["build", "train", "evaluate", "register"])


def _check_section_ranges(section: str, values: Any) -> None:
    """The section's numbers against the one range table (config/ranges.py)."""
    check_ranges({section: asdict(values)}, sections=(section,))


def structure(cls: type, data: Any, path: str = "") -> Any:
    """`data` (the composed config as plain containers) as the schema's dataclasses.

    Types were checked by Hydra against the same dataclasses when it composed the config, and values by the
    sections' `validate()`: this only builds the objects (no interpolation: text stays text). A key the
    schema does not have is refused, naming its section."""
    if not is_dataclass(cls):
        return copy.deepcopy(data)  # the plan shares no list or mapping with the caller's config
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'} must be a mapping of {cls.__name__}'s options, got {data!r}")
    own = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(own))
    if unknown:
        raise ConfigError(f"{_key(path, unknown[0])} is not an option of the {path or 'top-level'} section; "
                          f"valid options: {', '.join(sorted(own))}")
    hints = typing.get_type_hints(cls)
    return cls(**{k: structure(_dataclass_in(hints[k]), v, _key(path, k)) for k, v in data.items()})


def _dataclass_in(hint: Any) -> Any:
    """The dataclass a field holds (Optional[X] included), or the hint itself."""
    if is_dataclass(hint):
        return hint
    inner = [a for a in typing.get_args(hint) if is_dataclass(a)]
    return inner[0] if inner else hint


def _key(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def register_configs() -> None:
    cs = ConfigStore.instance()
    # Typing the root types every group under it (asset: AssetConfig, mode: ModeConfig ...).
    cs.store(name="pipeline_schema", node=PipelineConfig)


register_configs()
