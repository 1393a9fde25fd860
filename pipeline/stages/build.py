"""Build stage: produce or resolve the environment the trainers will talk to, and record its fingerprint.

- `build.unity_project` + `build.editor_path`: build the player with the editor in batch mode (skipped
  when the project's inputs are unchanged); the editor log is an artifact, the player's content hash a tag.
- a player build given directly (`env_path`, or `asset.source.kind=unity`): hash it, say what will run.
- neither: the asset's built-in simulation, fingerprinted by its code.
"""
from __future__ import annotations

import hashlib
import inspect
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import mlflow

from pipeline.config.plan import RunPlan
from pipeline.stages.common import experiment_for, plan_tags
from pipeline.tracking.runs import set_tags, stage_run
from pipeline.unity import editor
from pipeline.unity.player import build_output_path, check_player, player_path


@dataclass(frozen=True)
class BuildResult:
    run_id: str
    environment: str  # what training will run against, in words
    fingerprint: str  # sha256 of what defines the environment (lineage and cache key)


def build(plan: RunPlan) -> BuildResult:
    if plan.config.build.unity_project and not plan.config.env_path:
        return _editor_build(plan)
    if player_path(plan.config):
        return _existing_player(plan)
    return _simulation(plan)


def _editor_build(plan: RunPlan) -> BuildResult:
    settings = plan.config.build
    editor.check_settings(settings)  # bad settings: a ConfigError before any run exists
    output = build_output_path(plan.config)
    with stage_run("build", experiment_for(plan), f"build-{plan.asset_id}", plan_tags(plan),
                   adopt_run_id=plan.adopted_run_id) as run:
        with tempfile.TemporaryDirectory() as tmp:
            log = Path(tmp) / "Editor.log"
            print(f"build: Unity editor building {settings.unity_project} -> {output} "
                  f"(timeout {settings.timeout_s}s)", flush=True)
            try:
                made = editor.build_player(settings, output, log)
            finally:
                if log.is_file():
                    mlflow.log_artifact(str(log), "build")
        set_tags({"environment.fingerprint": made.player_hash, "player.sha256": made.player_hash,
                  "player.path": str(made.player), "build.inputs_hash": made.inputs_hash,
                  "build.skipped": str(made.skipped).lower()})
        mlflow.log_metric("build/seconds", made.seconds)
        what = "unchanged inputs, reusing" if made.skipped else "built"
        description = f"Unity player {made.player} ({what}; {settings.build_target})"
        result = BuildResult(run.info.run_id, description, made.player_hash)
        mlflow.log_dict({**asdict(result), "inputs_hash": made.inputs_hash, "skipped": made.skipped},
                        "environment.json")
    print(f"build: {description}", flush=True)
    return result


def _existing_player(plan: RunPlan) -> BuildResult:
    player = check_player(player_path(plan.config))
    fingerprint = editor.player_hash(player)
    description = (f"Unity player {player} for behavior {plan.behavior_name}, {plan.config.env.num_envs} workers "
                   f"x {plan.config.env.num_areas} areas (no Unity project configured: not rebuilt)")
    with stage_run("build", experiment_for(plan), f"build-{plan.asset_id}", plan_tags(plan),
                   adopt_run_id=plan.adopted_run_id) as run:
        set_tags({"environment.fingerprint": fingerprint, "player.sha256": fingerprint, "player.path": str(player)})
        result = BuildResult(run.info.run_id, description, fingerprint)
        mlflow.log_dict(asdict(result), "environment.json")
    print(f"build: {description}", flush=True)
    return result


def _simulation(plan: RunPlan) -> BuildResult:
    world = plan.world
    # A built-in simulation is defined by its code: hash it, as a Unity build is hashed by its player files.
    source = "".join(inspect.getsource(m) for m in {inspect.getmodule(world), inspect.getmodule(world.__mro__[1])})
    fingerprint = hashlib.sha256(source.encode()).hexdigest()
    spec = world.spec
    description = (f"built-in simulation '{plan.simulation}' ({world.__name__}): behavior {spec.behavior_name}, "
                   f"sensors {spec.observation_space}, {spec.describe_actions()}, "
                   f"{plan.config.env.num_envs} workers x {plan.config.env.num_areas} areas "
                   "(no Unity build configured: set env_path to train on a player, or build.unity_project "
                   "and build.editor_path to build one)")
    with stage_run("build", experiment_for(plan), f"build-{plan.asset_id}", plan_tags(plan),
                   adopt_run_id=plan.adopted_run_id) as run:
        set_tags({"environment.fingerprint": fingerprint})
        result = BuildResult(run.info.run_id, description, fingerprint)
        mlflow.log_dict({**asdict(result), "observations": dict(spec.observations),
                         "max_episode_steps": spec.max_episode_steps}, "environment.json")
    print(f"build: {description}", flush=True)
    return result
