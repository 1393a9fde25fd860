"""Config is validated before anything runs: errors name the key and the fix, and nothing is written."""
from __future__ import annotations

import dataclasses
import subprocess

import pytest
import yaml

from pipeline.config.compose import compose_plan
from pipeline.config.errors import ConfigError
from tests.support.process import PYTHON, REPO, child_env
from tests.support.store import all_runs


def test_defaults_compose_to_the_nav_ppo_online_plan():
    plan = compose_plan([])
    assert (plan.asset_id, plan.behavior_name, plan.algorithm, plan.mode) == (
        "nav-001", "NavigationAgent", "ppo", "online")
    assert plan.max_steps == 150_000 and plan.simulation == "nav"


@pytest.mark.parametrize("asset,algorithm", [(a, b) for a in ("nav", "patrol") for b in ("ppo", "sac", "poca")])
def test_every_asset_and_algorithm_composes(asset, algorithm):
    plan = compose_plan([f"asset={asset}", f"algorithm={algorithm}", "max_steps=1234", "seed=3"])
    assert plan.algorithm == algorithm and plan.max_steps == 1234 and plan.seed == 3
    assert plan.trainer_settings.max_steps == 1234


def test_trainer_config_yaml_is_what_mlagents_learn_reads():
    from mlagents.trainers.settings import RunOptions

    plan = compose_plan(["asset=patrol", "algorithm=sac"])
    text = yaml.safe_dump(plan.trainer_config())
    options = yaml.safe_load(text)
    options["env_settings"]["env_path"] = "/builds/Patrol.x86_64"  # as `--env=` would set it
    run_options = RunOptions.from_dict(options)
    settings = run_options.behaviors["PatrolAgent"]
    assert settings.trainer_type == "sac" and settings.max_steps == plan.max_steps
    assert settings.hyperparameters.steps_per_update == 16.0
    assert run_options.env_settings.num_envs == 2


@pytest.mark.parametrize("overrides,message", [
    (["max_steps=0"], "max_steps must be a positive number of agent steps, got 0"),
    (["max_steps=-5"], "max_steps must be a positive number of agent steps, got -5"),
    (["asset=tank"], "Could not find 'asset/tank'\n\nAvailable options in 'asset':\n\tforage\n\tnav\n\tpatrol\n\tpush"),
    (["algorithm=dqn"], "Available options in 'algorithm':\n\tpoca\n\tppo\n\tsac"),
    (["mode=evolution"], "Could not find 'mode/evolution'"),
    (["algorithm.hyperparameters.batch_size=big"], "algorithm.hyperparameters.batch_size must be int, got 'big'"),
    (["+algorithm.hyperparameters.batchsize=64"],
     "algorithm.hyperparameters.batchsize is not an option of ML-Agents' PPOSettings; valid options: batch_size,"),
    (["+algorithm.max_step=10"], "algorithm.max_step is not an option of ML-Agents' TrainerSettings"),
    (["algorithm.trainer_type=a2c"],
     "algorithm.trainer_type 'a2c' is not an ML-Agents trainer; choose one of: poca, ppo, sac"),
    (["env.num_envs=two"], "Value 'two' of type 'str' could not be converted to Integer\n    full_key: env.num_envs"),
    (["env.num_envs=0"], "env.num_envs must be >= 1, got 0"),
    (["asset.bogus=1"], "Could not override 'asset.bogus'."),
    (["asset.observation_space.raycast=16"], "asset.observation_space.raycast=16 but simulation 'nav' gives 8"),
    (["+asset.observation_space.lidar=3"], "asset.observation_space.lidar: simulation 'nav' has no sensor 'lidar'"),
    (["asset.asset_id=../../etc"], "asset.asset_id '../../etc' must be 1-64 letters, digits"),
    (["env_path=/builds/Nav.x86_64"],
     "env_path=/builds/Nav.x86_64: no such file; give the path of a Unity player build"),
    (["evaluation.episodes=0"], "evaluation.episodes must be >= 1, got 0"),
])
def test_bad_config_is_refused_with_the_key_named(overrides, message):
    with pytest.raises(ConfigError) as err:
        compose_plan(overrides)
    assert message in str(err.value)


def test_bad_input_on_the_command_line_exits_2_and_writes_no_run(store, tmp_path):
    proc = subprocess.run([PYTHON, "-m", "pipeline.cli", "train", "--max_steps", "0"], cwd=REPO,
                          capture_output=True, text=True, env=child_env(), timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: max_steps must be a positive number")
    assert all_runs() == [] and all_runs("tests") == []
    assert not (tmp_path / "results").exists()


def test_bad_input_exits_2_and_an_unavailable_service_exits_1_whatever_part_found_it():
    from pipeline.config.errors import ServiceUnavailable, exit_code
    from pipeline.evaluation.onnx_contract import PolicyContractError
    from pipeline.launch.request import RequestError
    from pipeline.offline.dataset import DatasetError
    from pipeline.registry.vertex_mirror import VertexError, VertexUnavailable
    from pipeline.scheduling.cron import CronError
    from pipeline.scheduling.schedule import ScheduleError

    for bad_input in (ConfigError, ScheduleError, CronError, RequestError, DatasetError, PolicyContractError,
                      VertexError):
        assert exit_code(bad_input("x")) == 2, bad_input
    assert exit_code(VertexUnavailable("x")) == exit_code(ServiceUnavailable("x")) == 1
    assert not issubclass(VertexUnavailable, ConfigError)  # a network failure is not the user's input
    assert exit_code(RuntimeError("x")) is None  # anything else: the caller's own handling (a traceback)


# -- the schema is the one place of the defaults; the plan carries it typed ------------------------------

GROUPS = ("asset", "algorithm", "mode")  # chosen in conf/config.yaml's defaults list, typed by the schema


def test_conf_config_yaml_chooses_groups_and_restates_no_default():
    from pipeline.config.schema import PipelineConfig
    from pipeline.paths import CONF_DIR

    text = yaml.safe_load((CONF_DIR / "config.yaml").read_text())
    restated = sorted(set(text) & {f.name for f in dataclasses.fields(PipelineConfig)})
    assert restated == [], f"conf/config.yaml restates schema defaults {restated}: set them in config/schema.py"
    assert set(text) == {"defaults", "hydra"}


def test_the_composed_defaults_are_the_schemas():
    """Whatever conf/ holds, the values a run gets without overrides are the dataclasses' defaults."""
    from omegaconf import OmegaConf

    from pipeline.config.compose import compose_config
    from pipeline.config.schema import PipelineConfig

    composed = OmegaConf.to_container(compose_config([]), resolve=True)
    schema = OmegaConf.to_container(OmegaConf.structured(PipelineConfig))
    for name in (f.name for f in dataclasses.fields(PipelineConfig) if f.name not in GROUPS):
        assert composed[name] == schema[name], name


def test_the_plan_carries_the_typed_config_and_its_sections():
    from pipeline.config.schema import EnvConfig, PipelineConfig
    from pipeline.registry.settings import RegistryConfig

    plan = compose_plan(["env.num_areas=8", "registry.margin=0.05", "+run_tags.team=nav"])
    assert isinstance(plan.config, PipelineConfig) and isinstance(plan.config.env, EnvConfig)
    assert isinstance(plan.config.registry, RegistryConfig) and plan.config.registry.margin == 0.05
    assert plan.config.env.num_areas == 8 and plan.config.asset.action_space.size == 2
    assert plan.config.run_tags == {"team": "nav"}
    assert isinstance(plan.config.algorithm, dict)  # ML-Agents' own block, as mlagents-learn reads it
    assert plan.cfg["env"]["num_areas"] == 8 and yaml.safe_load(yaml.safe_dump(plan.cfg)) == plan.cfg


@pytest.mark.parametrize("section,values,message", [
    ("env", {"num_envs": 0}, "env.num_envs must be >= 1, got 0"),
    ("evaluation", {"episodes": 0}, "evaluation.episodes must be >= 1, got 0"),
    ("registry", {"margin": -0.1}, "registry.margin=-0.1 must be >= 0"),
    ("registry", {"timeout_s": float("nan")}, "registry.timeout_s must be a finite number, got nan"),
    ("build", {"timeout_s": 0}, "build.timeout_s must be >= 1, got 0"),
    ("mode", {"batch_size": 0}, "mode.batch_size must be >= 1, got 0"),
    ("asset", {"asset_id": "../x"}, "asset.asset_id '../x' must be 1-64 letters"),
    ("tracking", {"tracking_uri": "sqlite:////"}, "tracking.tracking_uri=sqlite:////: / is a directory"),
])
def test_each_section_checks_itself_and_names_its_key(section, values, message, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    plan = compose_plan([])
    part = dataclasses.replace(getattr(plan.config, section), **values)
    with pytest.raises(ConfigError) as err:
        part.validate()
    assert str(err.value).startswith(message)


def test_a_key_the_schema_does_not_have_is_refused_naming_its_section():
    from pipeline.config.plan import build_plan

    raw = compose_plan([]).cfg
    raw["env"]["num_area"] = 8
    with pytest.raises(ConfigError) as err:
        build_plan(raw)
    assert str(err.value).startswith("env.num_area is not an option of the env section; valid options: base_port,")


@pytest.mark.parametrize("mode", ["online", "offline", "hybrid"])
def test_a_mode_file_sets_only_what_differs_from_the_schema(mode):
    from pipeline.offline.settings import ModeConfig
    from pipeline.paths import CONF_DIR

    text = yaml.safe_load((CONF_DIR / "mode" / f"{mode}.yaml").read_text())
    defaults = dataclasses.asdict(ModeConfig())
    restated = sorted(k for k, v in text.items() if k != "name" and k in defaults and v == defaults[k])
    assert restated == [], f"conf/mode/{mode}.yaml restates ModeConfig defaults {restated}"
    assert compose_plan([f"mode={mode}"] + ([] if mode == "online" else [
        "mode.dataset_path=data/demos/navigation_demo.jsonl"])).config.mode.name == mode


def test_a_bad_section_value_on_the_command_line_is_one_exact_line_and_exit_2(store, tmp_path):
    proc = subprocess.run([PYTHON, "-m", "pipeline.cli", "train", "--overrides", "env.num_envs=0"], cwd=REPO,
                          capture_output=True, text=True, env=child_env(), timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == ("error: env.num_envs must be >= 1, got 0 (allowed: an integer "
                                                    "from 1 to 256; e.g. env.num_envs=2)")
    assert "Traceback" not in proc.stderr and all_runs() == []
