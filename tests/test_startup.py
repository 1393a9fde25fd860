"""What a run pays before and after its work (issue 14, fixed cost per run), asserted on what gets imported and
done, never on time (timings: scripts/bench_startup.py).

- `--help` and bad input answer without MLflow, torch or pandas (each costs seconds to import);
- plain `mlagents-learn` loads our stats-writer plugin on every run: without MLAGENTS_MLFLOW=1 it imports no MLflow;
- the collector paused during start-up is back on once the stage's run starts;
- the policy model logged without MLflow's scan of every installed package has the same environment files.
"""
from __future__ import annotations

import gc
import json
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.support.process import PYTHON, REPO, child_env

HEAVY = ("mlflow", "torch", "pandas", "matplotlib", "mlagents", "onnx", "onnxruntime", "sqlalchemy", "alembic")


def loaded_by(code: str, **env: str) -> dict:
    """Run `code` in a fresh interpreter from the repository; what it reports, and which HEAVY modules it loaded."""
    driver = "\n".join([
        "import json, sys",
        "out = {}",
        "try:",
        textwrap.indent(textwrap.dedent(code).strip(), "    "),
        "except SystemExit as exc:",
        "    out['exit'] = exc.code",
        f"out['loaded'] = sorted(m for m in {HEAVY!r} if m in sys.modules)",
        "print('RESULT ' + json.dumps(out), file=sys.__stdout__)",
    ])
    proc = subprocess.run([PYTHON, "-c", driver], cwd=REPO, env=child_env(**env), capture_output=True, text=True,
                          timeout=300)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"no result (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return {**json.loads(lines[-1][len("RESULT "):]), "stderr": proc.stderr}


def cli(*args: str) -> str:
    return f"from pipeline.cli import main\nmain({list(args)!r})"


def test_help_imports_nothing_heavy():
    out = loaded_by(cli("--help"))
    assert out["exit"] == 0
    assert out["loaded"] == []


@pytest.mark.parametrize("args", [("train", "--max_steps", "-5"), ("train", "--asset", "no_such_asset"),
                                  ("main", "--overrides", "env.num_envs=0")])
def test_config_error_imports_nothing_heavy(args, tmp_path):
    out = loaded_by(cli(*args), MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db")
    assert out["exit"] == 2
    assert out["loaded"] == []
    assert not (tmp_path / "mlflow.db").exists()  # and no store was opened


def test_the_hydra_app_answers_a_config_error_without_mlflow_or_torch(tmp_path):
    """`python -m pipeline.run`: Hydra builds the sweep callback for every run; it imports MLflow in a multirun."""
    code = f"""
        import runpy
        sys.argv = ["pipeline/run.py", "env.num_envs=0", "hydra.run.dir={tmp_path / 'hydra'}"]
        runpy.run_module("pipeline.run", run_name="__main__")
    """
    out = loaded_by(code, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db")
    assert out["exit"] == 2
    assert "error: env.num_envs must be >= 1, got 0" in out["stderr"]
    assert out["loaded"] == []
    assert not (tmp_path / "mlflow.db").exists()


def test_an_algorithm_error_is_checked_in_the_trainer_process_and_opens_no_store(tmp_path):
    """ML-Agents' settings classes live in its torch modules: an entry point has its trainer process (which imports
    them anyway) check the algorithm, while the stage's own process imports MLflow for the run it will not need."""
    out = loaded_by(cli("train", "--overrides", "algorithm.hyperparameters.batch_size=abc"),
                    MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db")
    assert out["exit"] == 2
    assert "error: algorithm.hyperparameters.batch_size must be int, got 'abc'" in out["stderr"]
    assert not {"torch", "mlagents"} & set(out["loaded"])
    assert not (tmp_path / "mlflow.db").exists()


def test_mlagents_learn_plugin_imports_no_mlflow_unless_asked():
    code = """
        from importlib.metadata import entry_points
        from mlagents.plugins.stats_writer import register_stats_writer_plugins
        from mlagents.trainers.settings import RunOptions
        ours = [e.value for e in entry_points(group="mlagents.stats_writer")]
        writers = register_stats_writer_plugins(RunOptions())
        out["ours"] = ours
        out["plugin_loaded"] = "pipeline.tracking.stats_writer" in sys.modules
        out["writers"] = [type(w).__name__ for w in writers]
    """
    out = loaded_by(code, MLAGENTS_MLFLOW="0")
    assert "pipeline.tracking.stats_writer:get_mlflow_writers" in out["ours"]
    assert out["plugin_loaded"]  # ML-Agents did load our plugin...
    assert "MLflowStatsWriter" not in out["writers"]
    assert "mlflow" not in out["loaded"] and "pandas" not in out["loaded"]  # ...which imported no MLflow


def test_stage_run_resumes_the_collector_paused_at_start_up(store):
    import mlflow

    from pipeline import startup_gc
    from pipeline.tracking import runs
    from pipeline.tracking import store as stores

    experiment = stores.experiment_id("startup-gc")
    startup_gc.pause()
    try:
        assert not gc.isenabled()
        with runs.stage_run("train", experiment, "gc", {}) as run:
            assert gc.isenabled()  # the stage's work runs with the collector on
            assert gc.get_freeze_count() > 0  # the start-up's objects set aside
        assert mlflow.MlflowClient().get_run(run.info.run_id).info.status == "FINISHED"
        gc.unfreeze()
        with startup_gc.frozen():  # a tear-down: what is alive is not scanned, and freed as usual after
            assert gc.get_freeze_count() > 0
        assert gc.get_freeze_count() == 0
    finally:
        gc.enable()
        gc.unfreeze()


def _tiny_policy(path: Path) -> Path:
    """An ONNX graph with ML-Agents' continuous-policy inputs and outputs (what log_policy_model reads)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    actions = helper.make_tensor_value_info("deterministic_continuous_actions", TensorProto.FLOAT, ["batch", 2])
    sampled = helper.make_tensor_value_info("continuous_actions", TensorProto.FLOAT, ["batch", 2])
    obs = helper.make_tensor_value_info("obs_0", TensorProto.FLOAT, ["batch", 12])
    w = numpy_helper.from_array(np.zeros((12, 2), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["obs_0", "w"], ["deterministic_continuous_actions"]),
                               helper.make_node("Identity", ["deterministic_continuous_actions"],
                                                ["continuous_actions"])],
                              "policy", [obs], [sampled, actions], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)]), str(path))
    return path


def test_policy_model_environment_without_package_scan(store, tmp_path):
    """Logged with MLflow's package map limited to its requirements: the same requirements and environments as
    with MLflow's full scan, and MLflow's map is its own again afterwards (inference elsewhere stays exact)."""
    import mlflow
    from mlflow.utils import requirements_utils

    from pipeline.registry import policy_model
    from pipeline.tracking import store as stores

    onnx_path = _tiny_policy(tmp_path / "NavigationAgent.onnx")
    experiment = stores.experiment_id("startup-model")  # not set_experiment: it would outlive this test
    files = {}
    requirements_utils._MODULES_TO_PACKAGES = requirements_utils._PACKAGES_TO_MODULES = None
    for how in ("limited", "full scan"):
        if how == "full scan":
            requirements_utils._init_modules_to_packages_map()  # built: the shortcut steps aside
        else:
            assert requirements_utils._MODULES_TO_PACKAGES is None
        with mlflow.start_run(experiment_id=experiment):
            info = policy_model.log_policy_model(onnx_path, "NavigationAgent",
                                                 {"raycast": 8, "velocity": 2, "target": 2})
            local = Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(tmp_path / how)))
        files[how] = {f: (local / f).read_text() for f in ("requirements.txt", "conda.yaml", "python_env.yaml")}
        if how == "limited":
            assert requirements_utils._MODULES_TO_PACKAGES is None  # not left holding four packages
    assert files["limited"] == files["full scan"]
    assert "onnxruntime==" in files["limited"]["requirements.txt"]
