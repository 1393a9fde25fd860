"""The registered `policy` model, as a client gets it: `pyfunc.predict` and `mlflow models serve` over real HTTP,
answering with the deterministic actions of the ONNX Unity imports (checked against onnxruntime)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest

from pipeline.config.compose import compose_plan
from pipeline.registry import policy_model, policy_pyfunc
from pipeline.stages.pipeline import run_pipeline
from tests.support.process import REPO, child_env
from tests.support.store import use_store
from tests.support.training import TINY

SENSORS = (("raycast", 8), ("velocity", 2), ("target", 2))
MODEL = "nav-001.NavigationAgent"


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serving")
    mp = pytest.MonkeyPatch()
    uri = use_store(tmp, mp)
    result = run_pipeline(compose_plan([*TINY, f"results_dir={tmp / 'results'}"]))
    assert result.status == "FINISHED"
    onnx_path = Path(mlflow.artifacts.download_artifacts(result.train.onnx_uri, dst_path=str(tmp / "unity")))
    yield uri, result, onnx_path
    mp.undo()


def observations(rows: int, integer: bool = False) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    obs = {name: rng.uniform(-1, 1, size=(rows, size)) for name, size in SENSORS}
    return {k: np.round(v * 3).astype(np.int64) if integer else v.astype(np.float32) for k, v in obs.items()}


def onnxruntime_actions(onnx_path: Path, obs: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(str(onnx_path))
    feeds = {f"obs_{k}": np.asarray(obs[name], np.float32) for k, (name, _) in enumerate(SENSORS)}
    return session.run(["deterministic_continuous_actions"], feeds)[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(port: int, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


@pytest.mark.slow
def test_the_policy_model_has_a_signature_an_example_and_says_which_output_unity_uses(registered):
    _, result, onnx_path = registered
    info = mlflow.models.get_model_info(result.train.model_uri)
    assert [(s.name, s.shape) for s in info.signature.inputs.inputs] == [(n, (-1, k)) for n, k in SENSORS]
    assert [s.name for s in info.signature.outputs.inputs] == ["deterministic_continuous_actions"]
    assert info.saved_input_example_info is not None
    assert info.metadata["served_outputs"] == ["deterministic_continuous_actions"]
    assert info.metadata["description"].startswith(
        "ML-Agents policy of Unity behavior NavigationAgent. Predictions are deterministic_continuous_actions: the "
        "actions Unity takes with Behavior Parameters > Deterministic Inference ticked; the graph's sampled output "
        "(continuous_actions) is what it takes without.")
    version = mlflow.MlflowClient().get_model_version(MODEL, result.register.version)
    assert "Predictions are deterministic_continuous_actions" in version.description
    # The payload is still the mlflow.onnx flavour's graph, and Unity's file is untouched.
    graph = mlflow.onnx.load_model(result.train.model_uri)
    assert [i.name for i in graph.graph.input] == ["obs_0", "obs_1", "obs_2"]
    assert onnx_path.read_bytes() == (Path(result.train.results_dir) / "NavigationAgent.onnx").read_bytes()


@pytest.mark.slow
def test_pyfunc_predict_takes_a_dataframe_or_a_dict_and_answers_the_deterministic_actions(registered):
    _, result, onnx_path = registered
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    obs = observations(5)
    expected = onnxruntime_actions(onnx_path, obs)
    np.testing.assert_allclose(model.predict(obs), expected, rtol=1e-6)
    frame = pd.DataFrame({name: list(values) for name, values in obs.items()})
    np.testing.assert_allclose(model.predict(frame), expected, rtol=1e-6)
    ints = observations(3, integer=True)
    int_frame = pd.DataFrame({name: [list(map(int, row)) for row in values] for name, values in ints.items()})
    np.testing.assert_allclose(model.predict(int_frame), onnxruntime_actions(onnx_path, ints), rtol=1e-6)


@pytest.mark.slow
def test_mlflow_models_serve_answers_inputs_instances_and_dataframe_split_with_floats_or_integers(registered, tmp_path):
    uri, _, onnx_path = registered
    port = free_port()
    env = child_env(MLFLOW_TRACKING_URI=uri)
    cmd = [str(REPO / ".venv" / "bin" / "mlflow"), "models", "serve", "-m", f"models:/{MODEL}@champion",
           "--env-manager", "local", "-p", str(port)]
    with open(tmp_path / "serve.log", "w") as log:
        server = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        for integer in (False, True):
            obs = observations(4, integer)
            expected = onnxruntime_actions(onnx_path, obs).tolist()
            rows = [{name: obs[name][i].tolist() for name, _ in SENSORS} for i in range(4)]
            bodies = {
                "inputs": {"inputs": {name: obs[name].tolist() for name, _ in SENSORS}},
                "instances": {"instances": rows},
                "dataframe_split": {"dataframe_split": {"columns": [n for n, _ in SENSORS],
                                                        "data": [[r[n] for n, _ in SENSORS] for r in rows]}},
            }
            for form, body in bodies.items():
                status, answer = post(port, body)
                assert status == 200, (form, integer, answer)
                np.testing.assert_allclose(answer["predictions"], expected, rtol=1e-6, err_msg=f"{form} {integer}")
        status, answer = post(port, {"inputs": {"raycast": [[0.0] * 8]}})
        assert status == 400  # a missing sensor is the client's error, said as such
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_discrete_and_continuous_policies_answer_with_their_deterministic_outputs():
    discrete = ["version_number", "memory_size", "discrete_actions", "discrete_action_output_shape",
                "deterministic_discrete_actions"]
    assert policy_pyfunc.served_outputs(discrete) == ["deterministic_discrete_actions"]
    assert policy_pyfunc.served_outputs(["continuous_actions", "deterministic_continuous_actions", *discrete]) == [
        "deterministic_continuous_actions", "deterministic_discrete_actions"]
    assert policy_pyfunc.served_outputs(["version_number", "continuous_actions"]) == ["continuous_actions"]
    text = policy_model.description("PushAgent", [("obs_0", 6)], ["deterministic_discrete_actions"])
    assert "Predictions are deterministic_discrete_actions" in text and "sampled output (discrete_actions)" in text
