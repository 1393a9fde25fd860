"""The `python_function` side of the logged `policy` model: ML-Agents' ONNX policy, answering with the
actions Unity takes under Deterministic Inference.

It is the pyfunc loader (`loader_module`) of a model whose payload stays the `mlflow.onnx` flavour's
`model.onnx`; it is copied into the model's `code/` and imported from there, so it needs nothing of this
repository: only numpy, pandas and onnxruntime. Why not the `mlflow.onnx` flavour's own pyfunc: it returns
every graph output (version_number, memory_size, the *sampled* continuous_actions, ...), passes a DataFrame
to the graph as one tensor (ML-Agents' graph has one `obs_i` input per sensor), and does not cast
integer JSON to the float32 the graph takes.

Inputs, named after the asset's sensors in the order of the graph's obs_0, obs_1, ... (the model's
signature): a dict of arrays or lists, a DataFrame whose cells are each sensor's values (or whose columns are
the flattened observation, sensor after sensor), or one 2-D array of flattened observations.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

# Preferred output per action kind: the mean (continuous) / arg-max (discrete) action, not the sampled one.
SERVED_OUTPUTS = ("deterministic_continuous_actions", "deterministic_discrete_actions")
SAMPLED_OUTPUTS = ("continuous_actions", "discrete_actions")


def served_outputs(graph_outputs: list[str]) -> list[str]:
    """Which graph outputs the model answers with: the deterministic actions present, else the sampled ones."""
    chosen = [o for o in SERVED_OUTPUTS if o in graph_outputs]
    return chosen or [o for o in SAMPLED_OUTPUTS if o in graph_outputs]


class OnnxPolicy:
    def __init__(self, onnx_path: str, sensors: list[tuple[str, int]]):
        import onnxruntime as ort

        self.session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
        graph_inputs = [i.name for i in self.session.get_inputs()]
        if len(graph_inputs) != len(sensors):
            raise ValueError(f"{onnx_path}: {len(graph_inputs)} graph inputs for {len(sensors)} sensors {sensors}")
        self.sensors = sensors
        self.feeds = {name: graph_inputs[k] for k, (name, _) in enumerate(sensors)}  # obs_0.., then action_masks
        self.outputs = served_outputs([o.name for o in self.session.get_outputs()])

    def _arrays(self, model_input: Any) -> dict[str, np.ndarray]:
        import pandas as pd

        names = [n for n, _ in self.sensors]
        if isinstance(model_input, pd.DataFrame):
            if all(n in model_input.columns for n in names):
                model_input = {n: model_input[n].tolist() for n in names}
            else:  # flat columns, sensor after sensor
                model_input = model_input.to_numpy()
        if isinstance(model_input, (np.ndarray, list)):
            flat = np.asarray(model_input, dtype=np.float32)
            flat = flat.reshape(1, -1) if flat.ndim == 1 else flat
            widths = np.cumsum([size for _, size in self.sensors])[:-1]
            model_input = dict(zip(names, np.split(flat, widths, axis=1)))
        if not isinstance(model_input, dict):
            raise TypeError(f"expected a dict of {names}, a DataFrame or an array; got {type(model_input).__name__}")
        arrays = {}
        for name, size in self.sensors:
            value = model_input.get(name, model_input.get(self.feeds[name]))
            if value is None:
                raise KeyError(f"missing observation {name!r} ({size} values per row); inputs are {names}")
            arrays[name] = np.asarray(value, dtype=np.float32).reshape(-1, size)
        return arrays

    def predict(self, model_input: Any, params: dict | None = None) -> Any:
        arrays = self._arrays(model_input)
        results = self.session.run(self.outputs, {self.feeds[n]: a for n, a in arrays.items()})
        if len(results) == 1:
            return results[0]
        return dict(zip(self.outputs, results))


def _load_pyfunc(data_path: str, model_config: dict | None = None) -> OnnxPolicy:
    """MLflow's pyfunc loader hook: data_path is the model's model.onnx, its MLmodel beside it."""
    from mlflow.models import Model

    model = Model.load(str(Path(data_path).parent))
    sensors = [(spec.name, int(spec.shape[-1])) for spec in model.signature.inputs.inputs]
    return OnnxPolicy(data_path, sensors)
