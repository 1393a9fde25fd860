"""Schedules from Hydra config: `conf/schedule/<name>.yaml`, typed by `ScheduleConfig`.

Every asset of a schedule is composed into a full pipeline plan at load, so a typo in an override is
refused when the runner starts, not at 02:00 the next night.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pipeline.config.compose import CONF_DIR, compose_plan, describe
from pipeline.config.errors import ConfigError
from pipeline.launch.job_specs import RLTrainingConfig, TrainingJob, UnityAssetSpec
from pipeline.scheduling.cron import CronError, CronSchedule
from pipeline.scheduling.schedule import Schedule, ScheduleError, check_schedule_id

SCHEDULE_DIR = CONF_DIR / "schedule"


@dataclass
class MisfireConfig:
    policy: str = "skip"  # skip | run_once
    grace_seconds: float = 3600.0  # run_once: how late the newest missed fire may be and still run


@dataclass
class ResumeConfig:
    interrupted: bool = False  # continue a fire cut short from outside in its own MLflow run, from its checkpoint
    max_attempts: int = 3  # resumes per job; then it is reported failed/killed as it ended


@dataclass
class ExecutorConfig:
    kind: str = "local"  # local: a child process of the runner | ray: a Ray job on a cluster
    address: str | None = None  # ray: the cluster's Jobs API (http://<head>:8265); null: $RAY_ADDRESS
    num_cpus: float | None = None  # ray: CPUs per job; null: one per environment worker (env.num_envs)


@dataclass
class ScheduleConfig:
    schedule_id: str | None = None  # default: the file name
    cron: str = MISSING  # five fields, e.g. "0 2 * * *"
    time_zone: str = "UTC"  # IANA name; cron fields are wall-clock time there
    enabled: bool = True
    assets: list[str] = field(default_factory=lambda: ["nav"])  # conf/asset groups, one run each
    algorithm: str | None = None  # conf/algorithm group; null: each asset's default (MA-POCA for push, else PPO)
    mode: str = "online"  # conf/mode group
    max_steps: int | None = None  # null: the algorithm's own
    seed: int = 0
    overrides: list[str] = field(default_factory=list)  # further pipeline Hydra overrides
    overlap: str = "forbid"  # allow | forbid | replace
    misfire: MisfireConfig = field(default_factory=MisfireConfig)
    resume: ResumeConfig = field(default_factory=ResumeConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)  # where fires run (README: Beyond one machine)


def schedule_names(directory: Path = SCHEDULE_DIR) -> list[str]:
    return sorted(p.stem for p in Path(directory).glob("*.yaml"))


def load_config(name: str, overrides: Sequence[str] = (), directory: Path = SCHEDULE_DIR) -> ScheduleConfig:
    where = Path(directory) / f"{name}.yaml"
    if not where.exists():
        known = ", ".join(schedule_names(directory)) or "none"
        raise ConfigError(f"schedule {name!r}: no {where}; available schedules: {known}")
    try:
        # Typed by the schema before overrides apply, so every field can be overridden and a typo is
        # refused by name; overrides use Hydra's grammar (quoting, lists).
        cfg = OmegaConf.merge(OmegaConf.structured(ScheduleConfig), OmegaConf.load(where))
        for ov in OverridesParser.create().parse_overrides(list(overrides)):
            if ov.is_delete():
                raise ConfigError(f"schedule {name!r}: {ov.input_line}: deleting a key is not supported")
            OmegaConf.update(cfg, ov.key_or_group, ov.value(), merge=False)
    except (HydraException, OmegaConfBaseException, yaml.YAMLError) as exc:
        raise ConfigError(f"schedule {name!r} ({where}): {describe(exc)}") from None
    out: ScheduleConfig = OmegaConf.to_object(cfg)
    if out.schedule_id is None:
        out.schedule_id = name
    return out


def job_for(cfg: ScheduleConfig, asset: str) -> TrainingJob:
    base = [f"asset={asset}", *([f"algorithm={cfg.algorithm}"] if cfg.algorithm else []), f"mode={cfg.mode}",
            f"seed={cfg.seed}"]
    if cfg.max_steps is not None:
        base.append(f"max_steps={cfg.max_steps}")
    try:
        plan = compose_plan(base + list(cfg.overrides))
    except ConfigError as exc:
        raise ConfigError(f"schedule {cfg.schedule_id!r}, asset {asset!r}: {exc}") from None
    a = plan.config.asset
    spec = UnityAssetSpec(asset_id=plan.asset_id, name=plan.behavior_name, asset_type=a.asset_type,
                          description=a.description)
    rl = RLTrainingConfig(algorithm=cfg.algorithm or plan.algorithm, max_steps=plan.max_steps,
                          num_envs=plan.config.env.num_envs, time_scale=plan.config.env.time_scale,
                          training_mode=cfg.mode, seed=cfg.seed,
                          overrides=list(cfg.overrides))
    return TrainingJob(job_id=f"{cfg.schedule_id}-{plan.asset_id}", asset_spec=spec, rl_config=rl)


def build_schedule(cfg: ScheduleConfig, where: Path | None = None) -> Schedule:
    """where: the file the schedule came from, named in its errors."""
    source = f" (in {where})" if where else ""
    try:
        cron = CronSchedule(cfg.cron, cfg.time_zone)
    except CronError as exc:
        raise ConfigError(f"schedule {cfg.schedule_id!r}: {exc}{source}") from None
    try:
        check_schedule_id(cfg.schedule_id)  # before the jobs, whose ids are made from it
        return Schedule(schedule_id=cfg.schedule_id, cron=cron, jobs=[job_for(cfg, a) for a in cfg.assets],
                        overlap=cfg.overlap, misfire=cfg.misfire.policy,
                        misfire_grace_seconds=cfg.misfire.grace_seconds, enabled=cfg.enabled,
                        resume_interrupted=cfg.resume.interrupted, max_resumes=cfg.resume.max_attempts,
                        extra={"algorithm": cfg.algorithm, "mode": cfg.mode, **_executor(cfg)})
    except ScheduleError as exc:
        raise ConfigError(str(exc)) from None


def _executor(cfg: ScheduleConfig) -> dict:
    """A schedule's executor as `extra["executor"]` (pipeline/launch/), checked at load."""
    kind = cfg.executor.kind
    if kind == "local":
        return {}
    if kind != "ray":
        raise ConfigError(f"schedule {cfg.schedule_id!r}: executor.kind {kind!r} is not an executor; "
                          "choose local or ray")
    from pipeline.launch.ray_jobs import RayJobExecutor

    return {"executor": RayJobExecutor(address=cfg.executor.address, num_cpus=cfg.executor.num_cpus)}


def load_schedules(names: Sequence[str] = (), overrides: Sequence[str] = (),
                   directory: Path = SCHEDULE_DIR) -> list[Schedule]:
    """The named schedules (default: every file), validated; overrides apply to each of them."""
    chosen = list(names) or schedule_names(directory)
    schedules = [build_schedule(load_config(n, overrides, directory), Path(directory) / f"{n}.yaml") for n in chosen]
    ids = [s.schedule_id for s in schedules]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ConfigError(f"schedule_id {', '.join(dupes)} is used by more than one file; ids must be unique")
    return schedules
