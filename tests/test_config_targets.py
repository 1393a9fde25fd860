"""The `_target_` allow-list: what Hydra may instantiate from config (pipeline/config/targets.py).

Refusals of bad input are in the bad-input corpus (tests/test_bad_input_corpus.py); here: the allow-list names
exactly the classes our configs and the installed plugins use, every shipped way of running passes the
check, and on the real command line a payload is refused before Hydra instantiates it.
"""
from __future__ import annotations

import inspect
import subprocess

import pytest
import yaml
from hydra._internal.utils import get_args_parser
from hydra.core.config_store import ConfigStore
from hydra.utils import get_class

from pipeline.config.command_line import check_command_line, compose_as_hydra
from pipeline.config.targets import ALLOWED, LAUNCHERS, SAMPLERS, SWEEP_CALLBACK, SWEEPERS
from tests.support.process import PYTHON, REPO, child_env
from tests.support.store import all_runs


def test_the_allow_list_names_exact_classes():
    names = set().union(*ALLOWED.values())
    for name in names:
        assert inspect.isclass(get_class(name)), name  # importable, and a class, not a function
    assert all(not n.endswith(".") and "*" not in n for n in names)  # no prefixes or patterns
    assert [n for n in names if n.startswith("pipeline.")] == [SWEEP_CALLBACK]


def test_the_allow_list_is_what_hydra_and_the_plugins_configure():
    import hydra._internal.core_plugins.basic_launcher  # noqa: F401  (each registers its config)
    import hydra._internal.core_plugins.basic_sweeper  # noqa: F401

    import hydra_plugins.hydra_joblib_launcher.config  # noqa: F401
    import hydra_plugins.hydra_optuna_sweeper.config  # noqa: F401

    cs = ConfigStore.instance()

    def targets(group: str) -> set[str]:
        return {cs.load(f"{group}/{option}").node["_target_"] for option in cs.list(group) if option.endswith(".yaml")}

    def project_targets(group: str) -> set[str]:  # the project's own options, written as conf/ YAML
        files = (REPO / "conf" / group).glob("*.yaml")
        return {t for t in (yaml.safe_load(f.read_text()).get("_target_") for f in files) if t}

    assert targets("hydra/sweeper/sampler") == SAMPLERS
    assert targets("hydra/launcher") | project_targets("hydra/launcher") == LAUNCHERS
    assert targets("hydra/sweeper") == SWEEPERS


@pytest.mark.parametrize("argv", [
    [],
    ["asset=patrol", "algorithm=sac", "max_steps=20000", "seed=3"],
    ["-m", "asset=nav,patrol", "algorithm=ppo,sac"],
    ["-m", "hydra/launcher=parallel", "hydra.launcher.n_jobs=2", "seed=0,1"],
    ["-m", "+search=ppo", "asset=nav", "hydra.sweeper.n_trials=8"],
    ["-m", "+search=sac", "hydra/launcher=parallel"],
    *[["-m", "+search=ppo", f"hydra/sweeper/sampler={s}"] for s in ("tpe", "random", "cmaes", "nsgaii", "motpe")],
    ["hydra/job_logging=disabled", "hydra/hydra_logging=hydra_debug"],
    ["--cfg", "job"],
], ids=lambda argv: " ".join(argv) or "defaults")
def test_every_shipped_way_of_running_passes(argv):
    assert compose_as_hydra(get_args_parser().parse_args(argv)) is not None  # so the composed config was checked too
    check_command_line(argv)


ERROR = ("error: hydra.callbacks.evil._target_={!r} is not allowed: hydra.callbacks.<name>._target_ may only name "
         "pipeline.sweeps.callbacks.MlflowSweepCallback (the allow-list is in pipeline/config/targets.py)")


@pytest.mark.parametrize("how", ["python -m pipeline.run", "mlflow run -P overrides=<a sweep>"])
@pytest.mark.slow  # starts the command line in child processes
def test_a_payload_on_the_command_line_never_runs(how, store, tmp_path):
    """Exit code 2 and the message, before Hydra instantiates anything: no marker file, no MLflow run.

    os.system is also on Hydra's own block-list (Hydra 1.3.8); builtins.open is not, and creates its marker
    without the allow-list. The second case goes through MLproject's `main` entry point, which hands a
    sweep to `python -m pipeline.run --multirun`.
    """
    marker = tmp_path / "marker"
    outputs = [f"hydra.run.dir={tmp_path / 'outputs'}", f"hydra.sweep.dir={tmp_path / 'multirun'}",
               f"results_dir={tmp_path / 'results'}"]
    if how == "python -m pipeline.run":
        target = "os.system"
        args = ["-m", "pipeline.run", f"+hydra.callbacks.evil._target_={target}",
                f"+hydra.callbacks.evil._args_=['touch {marker}']", *outputs]
    else:
        target = "builtins.open"
        overrides = ["seed=0,1", f"+hydra.callbacks.evil._target_={target}",
                     f"+hydra.callbacks.evil._args_=[{marker},w]", *outputs]
        args = ["-m", "pipeline.cli", "main", "--overrides", " ".join(overrides)]
    proc = subprocess.run([PYTHON, *args], cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == ERROR.format(target)
    assert not marker.exists()
    assert all_runs() == [] and all_runs("tests") == []
    assert not any((tmp_path / d).exists() for d in ("outputs", "multirun", "results"))
