"""The bad-input corpus: every malformed input is refused before any side effect, naming what is wrong.

One table across configs, overrides, classes named for Hydra to instantiate, Hydra settings that set the
environment or write outside the run's folders, group choices that are paths, the range of every number
(pipeline/config/ranges.py), results locations and stores, datasets (bytes, steps, line length), cron
expressions that never fire and schedule files, asset ids and paths, webhook URLs, registry names and resume
values. Each case runs against a fresh MLflow store and checks afterwards that no run and no results
directory were created; real command lines (exit code 2, the exact line) are in test_hardening.py.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest

from pipeline.config.command_line import check_command_line
from pipeline.config.compose import compose_plan
from pipeline.scheduling import cron, webhooks
from pipeline.scheduling.schedule import Schedule
from tests.support.store import all_runs

GOOD_STEP = {"episode": 0, "agent": 0, "step": 0, "obs": {"raycast": [0.5] * 8, "velocity": [0.0, 0.0],
                                                          "target": [0.1, 0.2]}, "action": [0.1, -0.1], "reward": 0.0}


def dataset(tmp: Path, *lines: str) -> str:
    path = tmp / "demo.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def step(**change) -> str:
    rec = json.loads(json.dumps(GOOD_STEP))
    for k, v in change.items():
        if v is ...:
            rec.pop(k)
        else:
            rec[k] = v
    return json.dumps(rec)


def plan(*overrides: str) -> Callable[[Path], object]:
    return lambda tmp: compose_plan([o.replace("{tmp}", str(tmp)) for o in overrides])


def offline(*lines: str) -> Callable[[Path], object]:
    return lambda tmp: compose_plan(["mode=offline", f"mode.dataset_path={dataset(tmp, *lines)}"])


def schedule(**kw) -> Callable[[Path], object]:
    from mlops_unity_pipeline import RLTrainingConfig, TrainingJob, UnityAssetSpec

    job = TrainingJob("nightly-nav", UnityAssetSpec("nav-001", "NavigationAgent"), RLTrainingConfig())
    args = {"schedule_id": "nightly", "cron": cron.CronSchedule("0 2 * * *", "UTC"), "jobs": [job]}
    args.update(kw)
    return lambda tmp: Schedule(**args)


def app(*argv: str) -> Callable[[Path], object]:
    """`python -m pipeline.run <argv>` up to Hydra: what it checks before Hydra instantiates anything."""
    return lambda tmp: check_command_line([a.replace("{tmp}", str(tmp)) for a in argv])


def app_config(yaml_text: str, *argv: str) -> Callable[[Path], object]:
    """The same with a config file of ours edited: `--config-dir {tmp} +payload=edited` merges yaml_text."""
    def attempt(tmp: Path) -> object:
        (tmp / "payload").mkdir()
        text = "# @package _global_\n" + yaml_text.replace("{tmp}", str(tmp))
        (tmp / "payload" / "edited.yaml").write_text(text)
        return check_command_line(["--config-dir", str(tmp), "+payload=edited", *argv])
    return attempt


def raw_dataset(content: bytes) -> Callable[[Path], object]:
    """An offline plan whose .jsonl holds these exact bytes."""
    def attempt(tmp: Path) -> object:
        (tmp / "demo.jsonl").write_bytes(content)
        return compose_plan(["mode=offline", f"mode.dataset_path={tmp / 'demo.jsonl'}"])
    return attempt


def schedule_file(text: str) -> Callable[[Path], object]:
    """conf/schedule-style file `bad.yaml` in a directory of its own, loaded as the runner loads it."""
    def attempt(tmp: Path) -> object:
        from pipeline.scheduling.settings import load_schedules

        (tmp / "schedules").mkdir()
        (tmp / "schedules" / "bad.yaml").write_text(text)
        return load_schedules(directory=tmp / "schedules")
    return attempt


def store_at(make: Callable[[Path], str]) -> Callable[[Path], object]:
    """A plan while MLFLOW_TRACKING_URI is sqlite:///<make(tmp)> (restored afterwards)."""
    def attempt(tmp: Path) -> object:
        import os

        before = os.environ["MLFLOW_TRACKING_URI"]
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{make(tmp)}"
        try:
            return compose_plan([])
        finally:
            os.environ["MLFLOW_TRACKING_URI"] = before
    return attempt


def not_a_database(tmp: Path) -> str:
    (tmp / "notes.db").write_text("these are my notes, not a database\n")
    return str(tmp / "notes.db")


def in_range(key: str, value: str, rule: str, allowed: str, example: str, *more: str) -> tuple:
    """A range-table case: the exact one-line message of pipeline/config/ranges.py."""
    return (f"range {key}={value}", plan(*more, f"{key}={value}"),
            f"{key} must be {rule}, got {value_repr(value)} (allowed: {allowed}; e.g. {key}={example})")


def value_repr(value: str) -> str:
    for kind in (int, float):
        try:
            return repr(kind(value))
        except ValueError:
            pass
    return repr(value)


HYDRA_SETTINGS = "(see pipeline/config/hydra_settings.py)"
ENV_REFUSED = ("sets the environment of the run's processes (LD_PRELOAD, PYTHONPATH and the like load code into "
               f"them); set environment variables in the shell that starts the pipeline instead {HYDRA_SETTINGS}")
WRITES = ("Hydra (or the sweep callback) writes there, so it may only be a directory inside the working directory "
          "or the temporary directory")


def group_refused(group: str, value: str, example: str) -> str:
    return (f"{group}={value!r} is not allowed: a config-group choice must be the plain name of a config in "
            f"conf/{group}/ (letters, digits, '_', '-' or '.'; no '/' or '..'), never a path: a path would load a YAML "
            f"from outside conf/; e.g. {example}")


def config_dir_choice(choice: str) -> Callable[[Path], object]:
    """`--config-dir {tmp} +payload=<choice>`: a group only the composed config knows about."""
    def attempt(tmp: Path) -> object:
        (tmp / "payload").mkdir()
        (tmp / "payload" / "edited.yaml").write_text("# @package _global_\nseed: 1\n")
        return check_command_line(["--config-dir", str(tmp), f"+payload={choice}"])
    return attempt


ALLOW_LIST = "(the allow-list is in pipeline/config/targets.py)"
ONLY_OUR_CALLBACK = ("hydra.callbacks.<name>._target_ may only name pipeline.sweeps.callbacks.MlflowSweepCallback "
                     f"{ALLOW_LIST}")
NOTHING_INSTANTIATED = ("this config names no classes to instantiate; remove it (a _target_ may only stand at "
                        "hydra.callbacks.<name>, hydra.launcher, hydra.sweeper or hydra.sweeper.sampler; "
                        "the allow-list is in pipeline/config/targets.py)")

CASES: list[tuple[str, Callable[[Path], object], str]] = [
    # --- configs and overrides -------------------------------------------------------------------
    ("max_steps zero", plan("max_steps=0"), "max_steps must be a positive number of agent steps, got 0"),
    ("max_steps negative", plan("max_steps=-1"), "got -1"),
    ("max_steps text", plan("max_steps=lots"),
     "Value 'lots' of type 'str' could not be converted to Integer\n    full_key: max_steps"),
    ("seed negative", plan("seed=-3"), "seed must be a non-negative integer, got -3"),
    ("unknown asset", plan("asset=tank"), "Could not find 'asset/tank'"),
    ("unknown algorithm", plan("algorithm=dqn"), "Could not find 'algorithm/dqn'"),
    ("unknown mode", plan("mode=evolution"), "Could not find 'mode/evolution'"),
    ("unknown top-level key", plan("max_step=5"), "Could not override 'max_step'"),
    ("unknown asset key", plan("asset.colour=red"), "Could not override 'asset.colour'"),
    ("unknown env key", plan("env.workers=2"), "Could not override 'env.workers'"),
    ("num_envs text", plan("env.num_envs=two"), "full_key: env.num_envs"),
    ("num_envs zero", plan("env.num_envs=0"), "env.num_envs must be >= 1, got 0"),
    ("num_areas zero", plan("env.num_areas=0"), "env.num_areas must be >= 1, got 0"),
    ("timeout_wait zero", plan("env.timeout_wait=0"), "env.timeout_wait must be >= 1, got 0"),
    ("time_scale zero", plan("env.time_scale=0"), "env.time_scale must be > 0, got 0.0"),
    ("eval episodes zero", plan("evaluation.episodes=0"), "evaluation.episodes must be >= 1, got 0"),
    ("bad override syntax", plan("asset=="), "Error parsing override 'asset=='"),
    ("hyperparameter type", plan("algorithm.hyperparameters.batch_size=big"),
     "algorithm.hyperparameters.batch_size must be int, got 'big'"),
    ("hyperparameter float for int", plan("algorithm.hyperparameters.num_epoch=2.5"),
     "algorithm.hyperparameters.num_epoch must be int, got 2.5"),
    ("unknown hyperparameter", plan("+algorithm.hyperparameters.batchsize=64"),
     "algorithm.hyperparameters.batchsize is not an option of ML-Agents' PPOSettings"),
    ("sac option on ppo", plan("+algorithm.hyperparameters.tau=0.01"),
     "algorithm.hyperparameters.tau is not an option"),
    ("unknown trainer option", plan("+algorithm.max_step=10"),
     "algorithm.max_step is not an option of ML-Agents' TrainerSettings"),
    ("unknown network option", plan("+algorithm.network_settings.layers=3"),
     "algorithm.network_settings.layers is not an option of ML-Agents' NetworkSettings"),
    ("unknown trainer type", plan("algorithm.trainer_type=a2c"),
     "algorithm.trainer_type 'a2c' is not an ML-Agents trainer"),
    ("hidden units text", plan("algorithm.network_settings.hidden_units=wide"),
     "algorithm.network_settings.hidden_units must be int, got 'wide'"),
    ("normalize not bool", plan("algorithm.network_settings.normalize=maybe"),
     "algorithm.network_settings.normalize must be bool, got 'maybe'"),
    ("bad schedule enum", plan("algorithm.hyperparameters.learning_rate_schedule=cosine"),
     "algorithm (ppo): 'cosine' is not a valid ScheduleType"),
    ("sensor size", plan("asset.observation_space.raycast=16"),
     "asset.observation_space.raycast=16 but simulation 'nav' gives 8"),
    ("unknown sensor", plan("+asset.observation_space.lidar=3"), "simulation 'nav' has no sensor 'lidar'"),
    ("action size", plan("asset.action_space.size=3"),
     "'size': 3} does not match simulation 'nav': continuous, size 2"),
    ("discrete actions", plan("asset.action_space.type=discrete"), "{'type': 'discrete', 'size': 2} does not match"),
    ("behavior name", plan("asset.name=Tank"), "asset.name 'Tank' is not the behavior of simulation 'nav'"),
    ("unknown simulation", plan("asset.source.simulation=maze"),
     "asset.source.simulation 'maze' is not a built-in simulation"),
    ("unknown source kind", plan("asset.source.kind=cloud"), "asset.source.kind must be 'simulation' or 'unity'"),
    ("_target_ in config", plan("+asset._target_=os.system"),
     "asset._target_='os.system': this config names no classes"),
    ("_target_ nested", plan("+algorithm.hyperparameters._target_=subprocess.call"),
     "algorithm.hyperparameters._target_='subprocess.call'"),
    # --- classes Hydra would instantiate (python -m pipeline.run, mlflow run -P overrides=...) ------
    ("hydra callback _target_",
     app("+hydra.callbacks.evil._target_=os.system", "+hydra.callbacks.evil._args_=['touch {tmp}/results']"),
     f"hydra.callbacks.evil._target_='os.system' is not allowed: {ONLY_OUR_CALLBACK}"),
    ("hydra callback as a dict", app("+hydra.callbacks.evil={_target_: subprocess.call, _args_: [[touch, x]]}"),
     f"hydra.callbacks.evil._target_='subprocess.call' is not allowed: {ONLY_OUR_CALLBACK}"),
    ("our callback retargeted", app("hydra.callbacks.mlflow_sweep._target_=builtins.exec"),
     f"hydra.callbacks.mlflow_sweep._target_='builtins.exec' is not allowed: {ONLY_OUR_CALLBACK}"),
    ("_target_ inside our callback", app("+hydra.callbacks.mlflow_sweep.tuned_dir._target_=os.system"),
     f"hydra.callbacks.mlflow_sweep.tuned_dir._target_='os.system': {NOTHING_INSTANTIATED}"),
    ("_target_ interpolated", app("+hydra.callbacks.evil._target_=${oc.env:EVIL}"),
     f"hydra.callbacks.evil._target_='${{oc.env:EVIL}}' is not allowed: {ONLY_OUR_CALLBACK}"),
    ("_target_ swept",
     app("-m", "+hydra.callbacks.evil._target_=pipeline.sweeps.callbacks.MlflowSweepCallback,os.system"),
     f"hydra.callbacks.evil._target_='os.system' is not allowed: {ONLY_OUR_CALLBACK}"),
    ("callback _args_ without _target_", app("+hydra.callbacks.evil._args_=['touch results']"),
     "hydra.callbacks.evil._args_=['touch results']: hydra.callbacks.evil has no _target_ to instantiate with it; "
     f"remove it {ALLOW_LIST}"),
    ("_partial_ where nothing is instantiated", app("+hydra.run._partial_=true"),
     "hydra.run._partial_=True: nothing is instantiated at hydra.run; remove it (only hydra.callbacks.<name>, "
     "hydra.launcher, hydra.sweeper or hydra.sweeper.sampler are; the allow-list is in pipeline/config/targets.py)"),
    ("launcher _target_", app("hydra.launcher._target_=os.system"),
     "hydra.launcher._target_='os.system' is not allowed: hydra.launcher._target_ may only name one of "
     "hydra._internal.core_plugins.basic_launcher.BasicLauncher, "
     "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"),
    ("sweeper _target_", app("-m", "hydra.sweeper._target_=pathlib.Path.write_text"),
     "hydra.sweeper._target_='pathlib.Path.write_text' is not allowed: hydra.sweeper._target_ may only name one of "
     "hydra._internal.core_plugins.basic_sweeper.BasicSweeper, "
     f"hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper {ALLOW_LIST}"),
    ("optuna sampler _target_", app("-m", "+search=ppo", "hydra.sweeper.sampler._target_=os.system"),
     "hydra.sweeper.sampler._target_='os.system' is not allowed: hydra.sweeper.sampler._target_ may only name one of "
     "optuna.samplers.CmaEsSampler, optuna.samplers.GridSampler, optuna.samplers.MOTPESampler, "
     f"optuna.samplers.NSGAIISampler, optuna.samplers.RandomSampler, optuna.samplers.TPESampler {ALLOW_LIST}"),
    ("optuna custom search space", app("-m", "+search=ppo", "hydra.sweeper.custom_search_space=os.system"),
     "hydra.sweeper.custom_search_space='os.system' is not allowed: hydra.sweeper.custom_search_space may only be null "
     f"{ALLOW_LIST}"),
    ("logging handler class", app("hydra.job_logging.handlers.console.class=subprocess.Popen"),
     "hydra.job_logging.handlers.console.class='subprocess.Popen' is not allowed: "
     "hydra.job_logging.handlers.<name>.class"
     f" may only name one of logging.FileHandler, logging.StreamHandler {ALLOW_LIST}"),
    ("pipeline _target_ on the app", app("+asset._target_=os.system"),
     f"asset._target_='os.system': {NOTHING_INSTANTIATED}"),
    ("callback in an edited config", app_config("hydra:\n  callbacks:\n    evil:\n      _target_: builtins.open\n"
                                                "      _args_: ['{tmp}/results', w]\n"),
     f"hydra.callbacks.evil._target_='builtins.open' is not allowed: {ONLY_OUR_CALLBACK}"),
    ("callback built by an interpolation",
     app_config("hydra:\n  callbacks:\n    evil: "
                "\"${oc.create:{_target_: builtins.open, _args_: ['{tmp}/results', w]}}\"\n"),
     f"hydra.callbacks.evil._target_='builtins.open' is not allowed: {ONLY_OUR_CALLBACK}"),
    ("logging factory in an edited config",
     app_config("hydra:\n  job_logging:\n    filters:\n      evil:\n        (): os.system\n"),
     "hydra.job_logging.filters.evil.()='os.system' is not allowed: nothing may be named for instantiation there; "
     f"remove it {ALLOW_LIST}"),
    ("rerun from a pickle", app("--experimental-rerun", "{tmp}/config.pickle"),
     "--experimental-rerun is not accepted: it unpickles a saved config (which can run any code) and skips the config "
     "checks; run again with the same overrides instead"),
    # --- asset ids and paths ---------------------------------------------------------------------
    ("asset id traversal", plan("asset.asset_id=../../etc"), "asset.asset_id '../../etc' must be 1-64 letters"),
    ("asset id slash", plan("asset.asset_id=nav/001"), "asset.asset_id 'nav/001' must be"),
    ("asset id empty", plan("asset.asset_id=''"), "asset.asset_id '' must be"),
    ("asset id too long", plan("asset.asset_id=" + "a" * 65), "must be 1-64"),
    ("build path missing", plan("env_path={tmp}/Nav.x86_64"), "no such file"),
    ("build path traversal", plan("env_path={tmp}/../../nope/Nav.x86_64"), "no such file"),
    ("build path is a directory", plan("env_path={tmp}"), "is a directory; give the player executable inside it"),
    ("dataset missing", plan("mode=offline", "mode.dataset_path={tmp}/none.jsonl"),
     "none.jsonl: no such file; record one"),
    ("dataset required", plan("mode=offline"), "mode.dataset_path is required for mode=offline"),
    # --- datasets --------------------------------------------------------------------------------
    ("dataset not json", offline(step(), "{not json"), "line 2: not valid JSON"),
    ("dataset not an object", offline("[1, 2]"), "line 1: expected a JSON object, got list"),
    ("dataset unknown key", offline(step(colour="red")), "line 1: unknown key(s) ['colour']"),
    ("dataset missing sensor", offline(step(obs={"raycast": [0.5] * 8, "velocity": [0, 0]})), "has no 'target'"),
    ("dataset unknown sensor", offline(step(obs={**GOOD_STEP["obs"], "lidar": [1.0]})), "'lidar' is not a sensor"),
    ("dataset sensor size", offline(step(obs={**GOOD_STEP["obs"], "raycast": [0.5] * 7})), "has 7 values but"),
    ("dataset action size", offline(step(action=[0.1, 0.2, 0.3])), "has 3 values but"),
    ("dataset NaN", offline(step(action=[float("nan"), 0.0])), "line 1: action contains NaN"),
    ("dataset reward type", offline(step(reward="high")), "line 1: reward must be a number"),
    ("dataset reward on some lines", offline(step(), step(step=1, reward=...)), "line 2: has no \"reward\""),
    ("dataset interrupted not done", offline(step(done=False, interrupted=True)),
     "interrupted is true but done is false"),
    ("dataset negative episode", offline(step(episode=-1)), "episode must be a non-negative integer"),
    ("dataset wrong behavior",
     offline(json.dumps({"schema": "mlagents-demo-jsonl/1", "behavior_name": "Tank"}), step()),
     "recorded for behavior 'Tank'"),
    ("dataset late header", offline(step(), json.dumps({"schema": "mlagents-demo-jsonl/1"})),
     "a header line (with \"schema\") may only be the first line"),
    # --- cron expressions and schedules ----------------------------------------------------------
    ("cron four fields", lambda tmp: cron.parse_expression("0 2 * *"), "has 4 fields; a schedule needs exactly five"),
    ("cron six fields", lambda tmp: cron.parse_expression("0 0 2 * * *"), "has 6 fields"),
    ("cron minute 60", lambda tmp: cron.parse_expression("60 2 * * *"), "is not a valid cron expression"),
    ("cron hour 24", lambda tmp: cron.parse_expression("0 24 * * *"), "is not a valid cron expression"),
    ("cron text", lambda tmp: cron.parse_expression("every night"), "cron 'every night'"),
    ("cron alias", lambda tmp: cron.parse_expression("@fortnightly"), "unknown alias"),
    ("cron empty", lambda tmp: cron.parse_expression(""), "cron '' has 0 fields"),
    ("time zone", lambda tmp: cron.parse_zone("Mars/Olympus"), "time_zone 'Mars/Olympus' is not an IANA time zone"),
    ("schedule id traversal", schedule(schedule_id="../nightly"), "schedule_id '../nightly' must be 1-64"),
    ("overlap policy", schedule(overlap="queue"), "overlap 'queue' is not a policy"),
    ("misfire policy", schedule(misfire="always"), "misfire.policy 'always' is not a policy"),
    ("no assets", schedule(jobs=[]), "a schedule needs at least one asset"),
    # --- webhook URLs ----------------------------------------------------------------------------
    ("webhook scheme", lambda tmp: webhooks.check_url("ftp://hooks.example.com/x"),
     "scheme 'ftp' is not http or https"),
    ("webhook no scheme", lambda tmp: webhooks.check_url("hooks.example.com/x"), "is not http or https"),
    ("webhook no host", lambda tmp: webhooks.check_url("https:///x"), "has no host"),
    ("webhook credentials", lambda tmp: webhooks.check_url("https://bot:hunter2@hooks.example.com/x"),
     "must not carry a user or password"),
    ("webhook spaces", lambda tmp: webhooks.check_url("https://hooks.example.com/a b"), "without spaces"),
    ("webhook port", lambda tmp: webhooks.check_url("https://hooks.example.com:99999/x"), "invalid port"),
    # --- registry names --------------------------------------------------------------------------
    ("gate metric", plan("registry.metric=accuracy"), "registry.metric='accuracy' is not a gated evaluation figure"),
    ("negative margin", plan("registry.margin=-0.1"), "registry.margin=-0.1 must be >= 0"),
    ("alias case", plan("registry.champion_alias=Champion"), "registry.champion_alias='Champion' must be 2-128"),
    ("reserved alias", plan("registry.challenger_alias=latest"), "registry.challenger_alias='latest' is reserved"),
    ("vertex project", plan("registry.vertex_project=My_Project"), "is not a Google Cloud project ID"),
    ("staging bucket", plan("registry.staging_bucket=my-bucket"), "registry.staging_bucket='my-bucket' must be gs://"),
    ("vertex label", plan("+registry.vertex_labels.team=Robotics"), "label value 'Robotics'"),
    ("anonymous credentials", plan("registry.credentials=anonymous"), "registry.credentials=anonymous only works"),
    ("key file missing", plan("registry.credentials={tmp}/key.json"), "no such key file"),
    # --- Hydra settings that change the environment or write elsewhere; group choices as paths ------
    ("env_set on the app", app("+hydra.job.env_set.LD_PRELOAD={tmp}/x.so"),
     f"hydra.job.env_set.LD_PRELOAD='{{tmp}}/x.so' is not allowed: env_set {ENV_REFUSED}"),
    ("env_set in a sweep", app("-m", "+hydra.job.env_set.PYTHONPATH={tmp}", "seed=0,1"),
     f"hydra.job.env_set.PYTHONPATH='{{tmp}}' is not allowed: env_set {ENV_REFUSED}"),
    ("env_set as a dict", app("+hydra.job={env_set: {LD_PRELOAD: x.so}}"),
     f"hydra.job.env_set={{'LD_PRELOAD': 'x.so'}} is not allowed: env_set {ENV_REFUSED}"),
    ("env_copy", app("hydra.job.env_copy=[HOME]"),
     f"hydra.job.env_copy=['HOME'] is not allowed: env_copy {ENV_REFUSED}"),
    ("launcher runtime_env", app("+hydra.launcher.ray.init.runtime_env.env_vars.LD_PRELOAD=x.so"),
     f"hydra.launcher.ray.init.runtime_env.env_vars.LD_PRELOAD='x.so' is not allowed: runtime_env {ENV_REFUSED}"),
    ("env_set in an edited config", app_config("hydra:\n  job:\n    env_set:\n      LD_PRELOAD: /x.so\n"),
     f"hydra.job.env_set={{'LD_PRELOAD': '/x.so'}} is not allowed: env_set {ENV_REFUSED}"),
    ("env_set on a stage command", plan("+hydra.job.env_set.LD_PRELOAD=x.so"),
     f"hydra.job.env_set.LD_PRELOAD='x.so' is not allowed: env_set {ENV_REFUSED}"),
    ("run dir absolute", app("hydra.run.dir=/etc/pipeline"),
     "hydra.run.dir='/etc/pipeline' is not allowed: /etc/pipeline is outside"),
    ("run dir escaping", app("hydra.run.dir=../../../../../../../../etc/x"),
     f"; {WRITES}, e.g. hydra.run.dir=outputs/my-run"),
    ("run dir from the environment", app("hydra.run.dir=${oc.env:HOME}/x"),
     "hydra.run.dir='${oc.env:HOME}/x' is not allowed: only ${now:...} and ${hydra.job.num|id|name} interpolations "
     f"are accepted in it; {WRITES}, e.g. hydra.run.dir=outputs/my-run {HYDRA_SETTINGS}"),
    ("sweep dir absolute", app("-m", "seed=0,1", "hydra.sweep.dir=/var/lib/x"),
     "hydra.sweep.dir='/var/lib/x' is not allowed"),
    ("sweep subdir absolute", app("-m", "seed=0,1", "hydra.sweep.subdir=/etc"),
     "hydra.sweep.subdir='/etc' is not allowed: it is an absolute path; a sweep job's folder must stay inside "
     f"hydra.sweep.dir, e.g. hydra.sweep.subdir=job${{hydra.job.num}} {HYDRA_SETTINGS}"),
    ("sweep subdir escaping", app("-m", "seed=0,1", "hydra.sweep.subdir=../../x"),
     "hydra.sweep.subdir='../../x' is not allowed: it leads out of its parent folder with '..'"),
    ("output_subdir escaping", app("hydra.output_subdir=../../x"),
     "hydra.output_subdir='../../x' is not allowed: it names a file or folder inside the run's output folder, so it "
     f"must be a plain name (no '/' or '..'), e.g. hydra.output_subdir=.hydra {HYDRA_SETTINGS}"),
    ("job name as a path", app("hydra.job.name=../../.bashrc"), "hydra.job.name='../../.bashrc' is not allowed"),
    ("log file elsewhere", app("hydra.job_logging.handlers.file.filename=/etc/profile.d/x.sh"),
     "hydra.job_logging.handlers.file.filename='/etc/profile.d/x.sh' is not allowed: /etc/profile.d/x.sh is outside "),
    ("log file escaping the run", app("hydra.job_logging.handlers.file.filename=${hydra.runtime.output_dir}/../../x"),
     "is not allowed: it leads out of its parent folder with '..'; a log file must be written inside the run's output "
     "folder (or the working or temporary directory), e.g. "
     "hydra.job_logging.handlers.file.filename='${hydra.runtime.output_dir}/${hydra.job.name}.log'"),
    ("debug log file elsewhere", app("hydra/hydra_logging=hydra_debug",
                                     "hydra.hydra_logging.handlers.file.filename=/var/tmp/../../etc/cron.d/x"),
     "hydra.hydra_logging.handlers.file.filename='/var/tmp/../../etc/cron.d/x' is not allowed: /etc/cron.d/x is "
     "outside"),
    ("tuned_dir elsewhere", app("-m", "+search=ppo", "hydra.callbacks.mlflow_sweep.tuned_dir=/etc/x"),
     "hydra.callbacks.mlflow_sweep.tuned_dir='/etc/x' is not allowed"),
    ("runtime set by hand", app("hydra.runtime.output_dir=/etc"),
     f"hydra.runtime.output_dir='/etc' is not allowed: hydra.runtime is set by Hydra itself when the job starts; "
     f"remove it {HYDRA_SETTINGS}"),
    ("asset as a path", plan("asset=../../../tmp/evil"), group_refused("asset", "../../../tmp/evil", "asset=nav")),
    ("asset absolute", plan("asset=/abs/path"), group_refused("asset", "/abs/path", "asset=nav")),
    ("algorithm as a path", plan("algorithm=../x"), group_refused("algorithm", "../x", "algorithm=ppo")),
    ("mode as a path", plan("mode=../asset/nav"), group_refused("mode", "../asset/nav", "mode=online")),
    ("asset path on the app", app("asset=../conf/asset/nav"), group_refused("asset", "../conf/asset/nav", "asset=nav")),
    ("asset path in a sweep", app("-m", "asset=nav,../../x"), group_refused("asset", "../../x", "asset=nav")),
    ("launcher as a path", app("-m", "seed=0,1", "hydra/launcher=../../x"),
     group_refused("hydra/launcher", "../../x", "hydra/launcher=parallel")),
    ("search as a path", app("-m", "+search=../algorithm/ppo"),
     group_refused("search", "../algorithm/ppo", "search=ppo")),
    ("group path through --config-dir", config_dir_choice("../payload/edited"),
     "payload='../payload/edited' is not allowed: a config-group choice must be the plain name of a config in "
     "conf/payload/"),
    # --- the range table (pipeline/config/ranges.py) ---------------------------------------------------
    in_range("seed", "4294967296", "<= 2147483647", "an integer from 0 to 2147483647", "0"),
    in_range("algorithm.summary_freq", "0", ">= 1", "an integer from 1 to 1000000000000", "10000"),
    in_range("algorithm.checkpoint_interval", "0", ">= 1", "an integer from 1 to 1000000000000", "50000"),
    in_range("algorithm.hyperparameters.batch_size", "0", ">= 1", "an integer from 1 to 16777216", "512"),
    in_range("algorithm.hyperparameters.learning_rate", "-1", "> 0", "a number in (0, 1]", "0.0003"),
    in_range("algorithm.hyperparameters.learning_rate", "inf", "a finite number", "a number in (0, 1]", "0.0003"),
    in_range("algorithm.network_settings.hidden_units", "0", ">= 1", "an integer from 1 to 4096", "128"),
    in_range("algorithm.network_settings.num_layers", "0", ">= 1", "an integer from 1 to 32", "2"),
    in_range("env.time_scale", "nan", "a finite number", "a number in (0, 100]", "20.0"),
    in_range("env.time_scale", "inf", "a finite number", "a number in (0, 100]", "20.0"),
    in_range("env.time_scale", "-inf", "a finite number", "a number in (0, 100]", "20.0"),
    in_range("registry.margin", "nan", "a finite number", "a number >= 0", "0.0"),
    in_range("env.base_port", "70000", "<= 65535", "an integer from 1024 to 65535", "5005"),
    in_range("env.base_port", "80", ">= 1024", "an integer from 1024 to 65535", "5005"),
    in_range("evaluation.seed", "-1", ">= 0", "an integer from 0 to 2147483647", "10000"),
    in_range("evaluation.episodes", "0", ">= 1", "an integer from 1 to 100000", "100"),
    in_range("env.num_areas", "0", ">= 1", "an integer from 1 to 4096", "16"),
    in_range("env.num_envs", "0", ">= 1", "an integer from 1 to 256", "2"),
    in_range("env.timeout_wait", "-5", ">= 1", "an integer from 1 to 86400", "60"),
    in_range("algorithm.reward_signals.extrinsic.gamma", "1.5", "<= 1", "a number in (0, 1]", "0.99"),
    in_range("algorithm.reward_signals.extrinsic.gamma", "0", "> 0", "a number in (0, 1]", "0.99"),
    in_range("algorithm.reward_signals.extrinsic.strength", "nan", "a finite number", "a number in [0, 1000000]",
             "1.0"),
    in_range("algorithm.hyperparameters.lambd", "1.01", "<= 1", "a number in [0, 1]", "0.95"),
    in_range("algorithm.hyperparameters.epsilon", "0", "> 0", "a number in (0, 1]", "0.2"),
    in_range("algorithm.hyperparameters.beta", "-0.01", ">= 0", "a number in [0, 1]", "0.005"),
    in_range("algorithm.hyperparameters.num_epoch", "0", ">= 1", "an integer from 1 to 1000", "3"),
    in_range("algorithm.keep_checkpoints", "0", ">= 1", "an integer from 1 to 10000", "3"),
    in_range("algorithm.time_horizon", "0", ">= 1", "an integer from 1 to 1000000", "64"),
    in_range("algorithm.hyperparameters.tau", "0", "> 0", "a number in (0, 1]", "0.005", "algorithm=sac"),
    in_range("algorithm.hyperparameters.steps_per_update", "0", "> 0", "a number in (0, 1000000]", "16.0",
             "algorithm=sac"),
    in_range("algorithm.hyperparameters.buffer_init_steps", "-1", ">= 0", "an integer from 0 to 1000000000000", "0",
             "algorithm=sac"),
    in_range("mode.validation_fraction", "1.0", "< 1", "a number in [0, 1)", "0.1"),
    in_range("mode.awr_temperature", "nan", "a finite number", "a number in (0, 1000000]", "1.0"),
    in_range("registry.timeout_s", "inf", "a finite number", "a number in (0, 86400]", "120.0"),
    in_range("max_steps", "1000000000000000", "<= 1000000000000", "an integer from 1 to 1000000000000, or null",
             "150000"),
    ("range buffer smaller than batch", plan("algorithm.hyperparameters.buffer_size=256"),
     "algorithm.hyperparameters.buffer_size must be >= batch_size (512), got 256 (a buffer is split into batches: a "
     "smaller one trains nothing; e.g. algorithm.hyperparameters.buffer_size=8192)"),
    ("range seed plus workers", plan("seed=2147483647"),
     "seed + env.num_envs - 1 must be <= 2147483647 (environment worker i is seeded seed + i), got seed=2147483647 "
     "with env.num_envs=2 (e.g. seed=2147483646)"),
    ("range bool for an int", plan("algorithm.time_horizon=true"), "algorithm.time_horizon must be int, got True"),
    ("range float for an int", plan("algorithm.summary_freq=1.5"), "algorithm.summary_freq must be int, got 1.5"),
    # --- results location and store ----------------------------------------------------------------
    ("results_dir under a file", plan("results_dir=/etc/hostname/results"),
     "results_dir=/etc/hostname/results: /etc/hostname is a file, not a directory; e.g. results_dir=results"),
    ("store is a directory", store_at(lambda tmp: str(tmp)), "is a directory; give a database file, e.g. sqlite:///"),
    ("store is not a database", store_at(not_a_database),
     "notes.db is not an SQLite database; point it at an MLflow database or at a new file name (MLflow creates it)"),
    # --- datasets: bytes, steps, sizes -----------------------------------------------------------------
    ("dataset not UTF-8", raw_dataset(step().encode() + b"\n" + step(step=1).encode()[:-2] + b"\xff}\n"),
     "line 2: not UTF-8 text (byte 0xff at column"),
    ("dataset latin-1", raw_dataset(json.dumps({"schema": "mlagents-demo-jsonl/1", "note": "caf\u00e9"},
                                               ensure_ascii=False)
                                    .encode("latin-1") + b"\n"), "line 1: not UTF-8 text (byte 0xe9"),
    ("dataset step text", offline(step(step="abc")), "line 1: step must be a non-negative integer, got 'abc'"),
    ("dataset step negative", offline(step(step=-4)), "line 1: step must be a non-negative integer, got -4"),
    ("dataset step float", offline(step(step=1.5)), "line 1: step must be a non-negative integer, got 1.5"),
    ("dataset agent bool", offline(step(agent=True)), "line 1: agent must be a non-negative integer, got True"),
    ("dataset huge integer",
     raw_dataset(step().replace('"reward": 0.0', '"reward": ' + "9" * 5000).encode() + b"\n"),
     "line 1: not a usable JSON step (Exceeds the limit"),
    ("dataset nested too deep", raw_dataset(b"[" * 200_000 + b"]" * 200_000 + b"\n"),
     "line 1: not a usable JSON step"),
    ("dataset line too long", raw_dataset(b'{"episode": 0, "pad": "' + b"x" * (1 << 20) + b'"}\n'),
     "line 1 is longer than 1048576 bytes (1 MiB), the limit for one step; a JSONL dataset has one JSON object per "
     "line (data/demos/README.md)"),
    ("dataset infinite reward", raw_dataset(step().replace('"reward": 0.0', '"reward": 1e999').encode() + b"\n"),
     "line 1: reward contains an infinite value"),
    # --- schedules that never fire -------------------------------------------------------------------
    ("cron february 30", lambda tmp: cron.parse_expression("0 0 30 2 *"),
     "cron '0 0 30 2 *' never fires: no minute matches it within 8 years (a day that does not exist in that month, "
     "such as February 30th or April 31st?); fix the day-of-month and month fields, e.g. '0 0 28 2 *'"),
    ("cron april 31", lambda tmp: cron.parse_expression("0 0 31 4 *"), "cron '0 0 31 4 *' never fires"),
    ("cron november 31", lambda tmp: cron.parse_expression("15 3 31 11 *"), "cron '15 3 31 11 *' never fires"),
    ("schedule file never fires", schedule_file("cron: '0 0 30 2 *'\nassets: [nav]\n"),
     "e.g. '0 0 28 2 *' (in {tmp}/schedules/bad.yaml)"),
    ("schedule asset as a path", schedule_file("cron: '0 2 * * *'\nassets: ['../../x']\n"),
     "schedule 'bad', asset '../../x': asset='../../x' is not allowed: a config-group choice must be the plain name"),
    ("schedule seed out of range", schedule_file("cron: '0 2 * * *'\nassets: [nav]\nseed: 4294967296\n"),
     "seed must be <= 2147483647, got 4294967296"),
    ("schedule env_set override", schedule_file("cron: '0 2 * * *'\noverrides: ['+hydra.job.env_set.A=b']\n"),
     f"hydra.job.env_set.A='b' is not allowed: env_set {ENV_REFUSED}"),
    # --- resume ----------------------------------------------------------------------------------
    ("resume word", plan("resume=yesterday"), "resume='yesterday' must be 'latest' or an MLflow run id"),
    ("resume short id", plan("resume=abc123"), "resume='abc123' must be"),
]


def test_the_corpus_is_large_and_unique():
    assert len(CASES) >= 190
    assert len({name for name, _, _ in CASES}) == len(CASES)


@pytest.mark.parametrize("name,attempt,message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_before_any_side_effect(name, attempt, message, store, tmp_path):
    with pytest.raises(ValueError) as err:  # ConfigError, CronError, ScheduleError are ValueErrors
        attempt(tmp_path)
    assert message.replace("{tmp}", str(tmp_path)) in str(err.value), str(err.value)
    assert all_runs() == [] and all_runs("tests") == []
    assert not (tmp_path / "results").exists()
