"""Build stage: resolve the environment the trainers will talk to and record its fingerprint."""
from __future__ import annotations

import hashlib
import inspect
from dataclasses import asdict, dataclass

import mlflow

from pipeline.config.plan import RunPlan
from pipeline.stages.common import experiment_for, plan_tags
from pipeline.tracking.runs import set_tags, stage_run


@dataclass(frozen=True)
class BuildResult:
    run_id: str
    environment: str  # what training will run against, in words
    fingerprint: str  # sha256 of what defines the environment (lineage and cache key)


def build(plan: RunPlan) -> BuildResult:
    world = plan.world
    # A built-in simulation is defined by its code: hash it, as a Unity build is hashed by its player files.
    source = "".join(inspect.getsource(m) for m in {inspect.getmodule(world), inspect.getmodule(world.__mro__[1])})
    fingerprint = hashlib.sha256(source.encode()).hexdigest()
    spec = world.spec
    description = (f"built-in simulation '{plan.simulation}' ({world.__name__}): behavior {spec.behavior_name}, "
                   f"sensors {spec.observation_space}, {spec.action_size} continuous actions, "
                   f"{plan.cfg['env']['num_envs']} workers x {plan.cfg['env']['num_areas']} areas "
                   "(no Unity build configured: set env_path to train on a player)")
    with stage_run("build", experiment_for(plan), f"build-{plan.asset_id}", plan_tags(plan)) as run:
        set_tags({"environment.fingerprint": fingerprint})
        result = BuildResult(run.info.run_id, description, fingerprint)
        mlflow.log_dict({**asdict(result), "observations": dict(spec.observations),
                         "max_episode_steps": spec.max_episode_steps}, "environment.json")
    print(f"build: {description}", flush=True)
    return result
