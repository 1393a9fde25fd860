"""Turn a composed Hydra config into a validated `RunPlan` before anything runs or is written.

Errors name the offending key (as a Hydra override would spell it) and what to do instead.
The algorithm block is checked by ML-Agents' own strict structuring, so its messages are the
ones `mlagents-learn` would give for the same YAML.
"""
from __future__ import annotations

import copy
import typing
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional

import attr
from omegaconf import DictConfig, OmegaConf

from pipeline.config.errors import ConfigError
from pipeline.config.places import check_results_dir, check_store  # noqa: F401  (check_store: cli.py)
from pipeline.config.ranges import check_ranges, check_together
from pipeline.config.run_ids import check_resume_value
from pipeline.config.schema import AssetConfig, PipelineConfig, structure
from pipeline.config.targets import check_config
from pipeline.sim import SIMULATIONS, World
from pipeline.unity.player import player_path

MODES_AVAILABLE = ("online", "offline", "hybrid")  # offline/hybrid: pipeline/offline/


@dataclass(frozen=True)
class RunPlan:
    """Everything a stage needs, validated. `config` is the typed config (config/schema.py): stages read
    `plan.config.env.num_areas`; `algorithm` stays ML-Agents' own mapping (schema.py says why)."""

    config: PipelineConfig
    behavior_name: str
    simulation: Optional[str]  # built-in simulation name, or None for a Unity build
    trainer_settings: Any  # mlagents.trainers.settings.TrainerSettings; None when a trainer process checked it
    max_steps: int
    seed: int
    # The MLflow run made for this plan's top stage run before it started (`mlflow run`'s, a sweep job's, a launch
    # request's): that stage run continues it instead of creating one. Set by the entry point, never read from the
    # environment below it.
    adopted_run_id: Optional[str] = None

    @property
    def cfg(self) -> dict[str, Any]:
        """The config as plain containers: what a run records (config.yaml, its params), not what stages read."""
        return asdict(self.config)

    @property
    def asset_id(self) -> str:
        return self.config.asset.asset_id

    @property
    def algorithm(self) -> str:
        return self.config.algorithm["trainer_type"]

    @property
    def mode(self) -> str:
        return self.config.mode.name

    @property
    def world(self) -> type[World]:
        assert self.simulation is not None
        return SIMULATIONS[self.simulation]

    def trainer_config(self) -> dict[str, Any]:
        """mlagents-learn's configuration file: `mlagents-learn trainer_config.yaml --env=<build>`."""
        env = self.config.env
        return {
            "behaviors": {self.behavior_name: self.algorithm_settings()},
            "env_settings": {
                "env_path": player_path(self.config),
                "env_args": list(env.env_args) or None,
                "base_port": env.base_port,
                "num_envs": env.num_envs,
                "num_areas": env.num_areas,
                "timeout_wait": env.timeout_wait,
                "seed": self.seed,
            },
            "engine_settings": {"time_scale": env.time_scale, "no_graphics": env.no_graphics},
            "torch_settings": {"device": "cpu"},
        }

    def algorithm_settings(self) -> dict[str, Any]:
        settings = copy.deepcopy(self.config.algorithm)
        settings["max_steps"] = self.max_steps
        return settings


def build_plan(cfg: DictConfig | dict, algorithm_check: Callable[[dict, int], Any] | None = None) -> RunPlan:
    """algorithm_check: checks the algorithm section in place of `check_algorithm` (a trainer process does, which
    has ML-Agents' trainers imported: training/trainer_process.py); what it returns is the plan's trainer_settings."""
    if isinstance(cfg, DictConfig):
        try:
            raw = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
        except Exception as exc:  # missing mandatory values, bad interpolations
            raise ConfigError(f"config: {exc}") from None
    else:
        raw = cfg
    assert isinstance(raw, dict)
    check_config(raw)  # the pipeline config instantiates nothing: any _target_ in it is refused
    config: PipelineConfig = structure(PipelineConfig, raw)

    max_steps = config.max_steps
    if max_steps is None:
        max_steps = config.algorithm.get("max_steps", 500_000)
    if not isinstance(max_steps, int) or isinstance(max_steps, bool) or max_steps <= 0:
        raise ConfigError(f"max_steps must be a positive number of agent steps, got {max_steps!r} "
                          "(e.g. max_steps=150000, or leave it unset to use the algorithm's max_steps)")
    seed = config.seed
    if not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    if config.mode.name not in MODES_AVAILABLE:
        raise ConfigError(f"mode={config.mode.name} is not available yet; available modes: "
                          f"{', '.join(MODES_AVAILABLE)}")

    # Each section checks itself: every number against the range table (nan/inf included), after the
    # section's own more specific rules (the registry's say why a negative margin is refused).
    config.registry.validate()
    check_ranges({"max_steps": config.max_steps, "seed": seed}, sections=("max_steps", "seed"))
    config.env.validate()
    config.evaluation.validate()
    config.build.validate()
    check_together(raw)  # rules that tie keys of two sections (seed + env.num_envs; batch vs buffer)
    check_resume_value(config.resume)
    config.tracking.validate()
    check_results_dir(config.results_dir)
    config.asset.validate()
    behavior, simulation = _check_asset(config.asset, config.env_path)
    # offline/hybrid: the dataset is read and checked against the asset now, before any run exists.
    from pipeline.offline.validate import check_mode

    check_mode(config, tuple(n for n, _ in SIMULATIONS[simulation].spec.observations) if simulation else None)
    config.mode.validate()
    # Last: it may be checked in a trainer process, which answers once it has imported ML-Agents' trainers.
    settings = (algorithm_check or check_algorithm)(config.algorithm, max_steps)
    return RunPlan(config=config, behavior_name=behavior, simulation=simulation,
                   trainer_settings=settings, max_steps=max_steps, seed=seed)


def _check_asset(asset: AssetConfig, env_path: Optional[str]) -> tuple[str, Optional[str]]:
    """The asset against its environment: the player build, or the built-in simulation it declares."""
    source = asset.source
    if env_path or source.kind == "unity":
        from pipeline.unity.player import PlayerPathError, check_player

        key, path = ("env_path", env_path) if env_path else ("asset.source.build_path", source.build_path)
        if not path:
            raise ConfigError("asset.source.build_path must name the player build when asset.source.kind=unity "
                              "(e.g. asset.source.build_path=builds/Nav.x86_64), or give env_path=<player>")
        try:
            check_player(path)
        except PlayerPathError as exc:
            raise ConfigError(f"{key}={path}: {exc}") from None
        if not source.simulation:
            return asset.name, None  # the build's own behavior is checked when the player connects
        # A declared built-in simulation of the same asset still evaluates the policy trained on the build.
    name = source.simulation
    if name not in SIMULATIONS:
        raise ConfigError(f"asset.source.simulation {name!r} is not a built-in simulation; "
                          f"choose one of: {', '.join(sorted(SIMULATIONS))}")
    spec = SIMULATIONS[name].spec
    if asset.name != spec.behavior_name:
        raise ConfigError(f"asset.name {asset.name!r} is not the behavior of simulation {name!r}; "
                          f"set asset.name={spec.behavior_name}")
    sensors = spec.observation_space
    for sensor, size in asset.observation_space.items():
        if sensor not in sensors:
            raise ConfigError(f"asset.observation_space.{sensor}: simulation {name!r} has no sensor {sensor!r}; "
                              f"its sensors are {sensors}")
        if size != sensors[sensor]:
            raise ConfigError(f"asset.observation_space.{sensor}={size} but simulation {name!r} gives "
                              f"{sensors[sensor]} values for it")
    action = asdict(asset.action_space)
    if not _same_actions(action, spec.action_space):
        want = spec.action_space
        detail = ", ".join(f"{k} {v}" for k, v in want.items() if k != "type")
        raise ConfigError(f"asset.action_space {_shown(action)} does not match simulation {name!r}: "
                          f"{want['type']}, {detail}")
    return spec.behavior_name, name


def _shown(action: dict) -> dict:
    """The action space as the user wrote it (unset branches/size left out)."""
    return {k: v for k, v in action.items() if v not in (None, [])}


def _same_actions(action: dict, want: dict) -> bool:
    if action.get("type") != want["type"]:
        return False
    if want["type"] == "discrete":
        return list(action.get("branches") or []) == want["branches"] and not action.get("size")
    return action.get("size") == want["size"] and not action.get("branches")


def check_algorithm(algorithm: dict, max_steps: int) -> Any:
    """The algorithm section, structured by ML-Agents (its TrainerSettings), or a ConfigError naming the key."""
    from mlagents.plugins import all_trainer_settings
    from mlagents.plugins.trainer_type import register_trainer_plugins
    from mlagents.trainers.exception import TrainerConfigError
    from mlagents.trainers.settings import NetworkSettings, TrainerSettings

    register_trainer_plugins()
    trainer_type = algorithm.get("trainer_type")
    if trainer_type not in all_trainer_settings:
        raise ConfigError(f"algorithm.trainer_type {trainer_type!r} is not an ML-Agents trainer; "
                          f"choose one of: {', '.join(sorted(all_trainer_settings))}")
    # cattrs' own messages for a wrong type do not say where; check scalar types first, by key.
    _check_types(algorithm, TrainerSettings, "algorithm",
                 {"hyperparameters": all_trainer_settings[trainer_type], "network_settings": NetworkSettings})
    # Ranges before ML-Agents structures it: keep_checkpoints=0 with even_checkpoints divides by zero there.
    check_ranges({"algorithm": algorithm}, sections=("algorithm",))
    try:
        return TrainerSettings.structure({**algorithm, "max_steps": max_steps}, TrainerSettings)
    except (TrainerConfigError, TypeError, ValueError) as exc:
        raise ConfigError(f"algorithm ({trainer_type}): {exc}") from None


_SCALARS = {int: (int,), float: (int, float), bool: (bool,), str: (str,)}


def _check_types(values: dict, cls: type, path: str, nested: dict[str, type]) -> None:
    fields = attr.fields_dict(cls)
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"{path}.{key} is not an option of ML-Agents' {cls.__name__}; "
                              f"valid options: {', '.join(sorted(fields))}")
        if key in nested and isinstance(value, dict):
            _check_types(value, nested[key], f"{path}.{key}", {})
            continue
        expected = hints.get(key)
        ok = _SCALARS.get(expected)
        wrong = not isinstance(value, ok) or (expected is not bool and isinstance(value, bool)) if ok else False
        if value is not None and wrong:
            raise ConfigError(f"{path}.{key} must be {expected.__name__}, got {value!r}")
