"""Log the `policy` model of a training run: the `mlflow.onnx` flavour (payload: ML-Agents' ONNX graph) with a
signature and an input example built from the asset's sensors, served by `policy_pyfunc` (see there why).

It is also an MLflow flavour module (`save_model(path, mlflow_model, ...)`) so that `Model.log` builds it:
the mlflow.onnx model, then its pyfunc loader swapped for ours.
"""
from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from mlflow.models import Model, ModelSignature
from mlflow.types.schema import Schema, TensorSpec

from pipeline.registry import policy_pyfunc

LOADER = Path(policy_pyfunc.__file__)


def sensors_of(onnx_model: onnx.ModelProto, observation_space: dict[str, int]) -> list[tuple[str, int]]:
    """(input name, size) per graph input obs_0, obs_1, ...: the asset's sensor names where their sizes match."""
    graph = [(i.name, int(i.type.tensor_type.shape.dim[-1].dim_value)) for i in onnx_model.graph.input]
    extra = [(n, size) for n, size in graph if not n.startswith("obs_")]  # a discrete policy's action_masks
    sizes = [size for n, size in graph if n.startswith("obs_")]
    named = [(str(k), int(v)) for k, v in observation_space.items()]
    if [size for _, size in named] == sizes:
        return named + extra
    return [(f"obs_{k}", size) for k, size in enumerate(sizes)] + extra


def description(behavior: str, sensors: list[tuple[str, int]], outputs: list[str]) -> str:
    inputs = ", ".join(f"{name} ({size})" for name, size in sensors)
    if any(o.startswith("deterministic_") for o in outputs):
        how = ("the actions Unity takes with Behavior Parameters > Deterministic Inference ticked; the graph's "
               "sampled output (" + ", ".join(o[len("deterministic_"):] for o in outputs) + ") is what it takes "
               "without")
    else:
        how = "the sampled actions, as Unity takes them (this export has no deterministic output)"
    return (f"ML-Agents policy of Unity behavior {behavior}. Predictions are {' and '.join(outputs)}: {how}. "
            f"Inputs, float32 rows: {inputs}. The ONNX file Unity imports is the training run's "
            f"unity/{behavior}.onnx.")


def signature_and_example(onnx_model: onnx.ModelProto, sensors: list[tuple[str, int]],
                          outputs: list[str]) -> tuple[ModelSignature, dict[str, np.ndarray]]:
    graph_out = {o.name: o for o in onnx_model.graph.output}
    out_specs = []
    for name in outputs:
        elem = graph_out[name].type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(elem.elem_type)
        out_specs.append(TensorSpec(np.dtype(dtype), (-1, int(elem.shape.dim[-1].dim_value or -1)), name))
    inputs = Schema([TensorSpec(np.dtype(np.float32), (-1, size), name) for name, size in sensors])
    # action_masks: 1 = allowed (as Unity feeds it); all zeros would mask every action
    example = {name: (np.ones if name == "action_masks" else np.zeros)((1, size), np.float32) for name, size in sensors}
    return ModelSignature(inputs=inputs, outputs=Schema(out_specs)), example


def log_policy_model(onnx_path: Path, behavior: str, observation_space: dict[str, int], name: str = "policy"):
    """Log onnx_path as the active run's `name` model; returns MLflow's ModelInfo."""
    import mlflow.onnx

    graph = onnx.load(str(onnx_path))
    sensors = sensors_of(graph, observation_space)
    outputs = policy_pyfunc.served_outputs([o.name for o in graph.graph.output])
    signature, example = signature_and_example(graph, sensors, outputs)
    text = description(behavior, sensors, outputs)
    # Requirements given, not inferred: inference loads the model in a subprocess to watch its imports
    # (~5 s per run) and for an ONNX graph always finds the same packages.
    requirements = [*mlflow.onnx.get_default_pip_requirements(), "pandas"]
    with _only_packages(["mlflow", *(r.split("==")[0] for r in requirements)]):
        return Model.log(artifact_path=None, name=name, flavor=sys.modules[__name__], onnx_model=graph,
                         signature=signature, input_example=example, pip_requirements=requirements,
                         metadata={"description": text, "unity_behavior": behavior, "served_outputs": outputs},
                         code_paths=[str(LOADER)], save_as_external_data=False)  # one file, like Unity's


_PACKAGE_MAP = threading.Lock()


@contextlib.contextmanager
def _only_packages(packages: list[str]) -> Iterator[None]:
    """MLflow checks given requirements against the installed versions through a map of every installed
    distribution's modules, built on first use by reading all their file lists (~0.5-1 s of CPU, most of
    logging this model). The requirements here are pinned to installed versions already (MLflow's own
    pins); the check only needs to find these packages, so the map holds them alone while the model is
    logged, and MLflow builds its full one if anything else needs it later. A change in MLflow's private
    names leaves MLflow's own behaviour."""
    from mlflow.utils import requirements_utils as reqs

    with _PACKAGE_MAP:
        if getattr(reqs, "_MODULES_TO_PACKAGES", False) is not None or \
                getattr(reqs, "_PACKAGES_TO_MODULES", False) is not None:
            yield  # built already in this process (or MLflow changed): nothing to save
            return
        reqs._MODULES_TO_PACKAGES = {p: [p] for p in packages}  # these import as their own names
        try:
            yield
        finally:
            reqs._MODULES_TO_PACKAGES = reqs._PACKAGES_TO_MODULES = None


def save_model(path: str, mlflow_model: Model, onnx_model: onnx.ModelProto, **kwargs) -> None:
    """Flavour hook for Model.log: the mlflow.onnx model, with python_function served by policy_pyfunc."""
    import mlflow.onnx

    mlflow.onnx.save_model(onnx_model, path, mlflow_model=mlflow_model, **kwargs)
    mlflow_model.flavors["python_function"]["loader_module"] = LOADER.stem
    mlflow_model.save(str(Path(path) / "MLmodel"))


def served_as(model_dir: Path) -> str:
    """What a client of the logged model gets, from its MLmodel (for a registered version's description)."""
    try:
        metadata = Model.load(str(model_dir)).metadata or {}
    except Exception:  # noqa: BLE001 - an older policy model, logged before the description existed
        return ""
    return str(metadata.get("description", ""))
