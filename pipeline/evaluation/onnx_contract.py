"""ML-Agents' inference contract: what Unity's inference engine requires of a policy ONNX file."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnx

from pipeline.config.errors import ConfigError

# Unity's ML-Agents (Sentis / Barracuda) reads these graph outputs for a continuous-action policy...
REQUIRED_OUTPUTS = ("version_number", "memory_size", "continuous_actions", "continuous_action_output_shape")
# ...these for a discrete one, which also takes the action masks (1 = allowed) of all branches side by side.
DISCRETE_OUTPUTS = ("version_number", "memory_size", "discrete_actions", "discrete_action_output_shape")
ACTION_MASKS = "action_masks"
MAX_OPSET = 15  # newest opset the ML-Agents Unity package (Sentis) imports; ML-Agents exports 9


class PolicyContractError(ConfigError):
    """The ONNX file is not a policy Unity's ML-Agents can load."""


@dataclass(frozen=True)
class PolicyContract:
    opset: int
    inputs: dict[str, int]  # obs_i -> vector size
    outputs: tuple[str, ...]
    action_size: int  # continuous actions (0 for a discrete policy)
    has_deterministic: bool
    branches: tuple[int, ...] = ()  # discrete branch sizes, as the model's discrete_action_output_shape says


def check_policy(path: Path, expected_obs: tuple[int, ...] | None = None, action_size: int | None = None,
                 branches: tuple[int, ...] | None = None) -> PolicyContract:
    """Check what Unity's inference engine checks when it loads `path`; `branches` (discrete branch sizes)
    makes it a discrete-action check, else `action_size` continuous actions are expected."""
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:  # noqa: BLE001 - onnx raises many kinds; any of them means Unity cannot load it
        raise PolicyContractError(f"{path}: not a valid ONNX model ({exc})") from None
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if not 1 <= opset <= MAX_OPSET:
        raise PolicyContractError(f"{path}: opset {opset} is outside what Unity ML-Agents imports (1..{MAX_OPSET})")
    inputs = {}
    for i in model.graph.input:
        dims = [d.dim_value for d in i.type.tensor_type.shape.dim]
        inputs[i.name] = dims[-1] if dims else 0
    obs_names = [n for n in inputs if n.startswith("obs_")]
    others = [n for n in inputs if not n.startswith("obs_")]
    if not obs_names or any(n != ACTION_MASKS for n in others):
        raise PolicyContractError(f"{path}: inputs must be named obs_0, obs_1, ... (and action_masks for discrete "
                                  f"actions) as ML-Agents exports them; found {list(inputs)}")
    outputs = tuple(o.name for o in model.graph.output)
    discrete = bool(branches) if branches is not None else "discrete_actions" in outputs
    required = DISCRETE_OUTPUTS if discrete else REQUIRED_OUTPUTS
    missing = [o for o in required if o not in outputs]
    if missing:
        kind = "discrete" if discrete else "continuous"
        raise PolicyContractError(f"{path}: missing output(s) {missing} that Unity reads for {kind} actions; found "
                                  f"{list(outputs)}. Export with ML-Agents' ModelSerializer.")
    if expected_obs is not None:
        got = tuple(inputs[f"obs_{k}"] for k in range(len(obs_names)) if f"obs_{k}" in inputs)
        if got != tuple(expected_obs):
            raise PolicyContractError(f"{path}: observation sizes {got} do not match the asset's sensors "
                                      f"{tuple(expected_obs)}")
    if discrete:
        return _check_discrete(path, model, inputs, outputs, opset, tuple(branches or ()))
    if ACTION_MASKS in inputs:
        raise PolicyContractError(f"{path}: takes action_masks, a discrete policy's input, but the asset's actions "
                                  "are continuous")
    act = {o.name: o for o in model.graph.output}["continuous_actions"]
    dims = [d.dim_value for d in act.type.tensor_type.shape.dim]
    size = dims[-1] if dims else 0
    if action_size is not None and size and size != action_size:
        raise PolicyContractError(f"{path}: {size} continuous actions, the asset expects {action_size}")
    return PolicyContract(opset, inputs, outputs, size or (action_size or 0),
                          "deterministic_continuous_actions" in outputs)


def _check_discrete(path: Path, model, inputs: dict[str, int], outputs: tuple[str, ...], opset: int,
                    branches: tuple[int, ...]) -> PolicyContract:
    """Unity compares discrete_action_output_shape (the branch sizes) with the agent's Discrete Branches
    and feeds action_masks as wide as all branches together."""
    if ACTION_MASKS not in inputs:
        raise PolicyContractError(f"{path}: a discrete policy needs the action_masks input Unity feeds; found "
                                  f"{list(inputs)}")
    declared = _constant_output(path, model, inputs, "discrete_action_output_shape")
    if branches and declared != branches:
        raise PolicyContractError(f"{path}: discrete_action_output_shape says branches {list(declared)}, the asset's "
                                  f"action_space.branches are {list(branches)}")
    mask_width = inputs[ACTION_MASKS]
    if mask_width and mask_width != sum(declared):
        raise PolicyContractError(f"{path}: action_masks input is {mask_width} wide, the branches {list(declared)} "
                                  f"need {sum(declared)}")
    act = {o.name: o for o in model.graph.output}["discrete_actions"]
    dims = [d.dim_value for d in act.type.tensor_type.shape.dim]
    if dims and dims[-1] and dims[-1] != len(declared):
        raise PolicyContractError(f"{path}: discrete_actions gives {dims[-1]} values per agent, one per branch of "
                                  f"{list(declared)} expected")
    return PolicyContract(opset, inputs, outputs, 0, "deterministic_discrete_actions" in outputs, declared)


def _constant_output(path: Path, model, inputs: dict[str, int], name: str) -> tuple[int, ...]:
    """Run the graph once on zeros (all actions allowed) and read a constant output, as Unity reads it."""
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = {i.name: (np.ones if i.name == ACTION_MASKS else np.zeros)(
        [d if isinstance(d, int) and d > 0 else 1 for d in i.shape], np.float32) for i in session.get_inputs()}
    try:
        value = session.run([name], feed)[0]
    except Exception as exc:  # noqa: BLE001 - onnxruntime's errors share no base class
        raise PolicyContractError(f"{path}: cannot read {name} ({exc})") from None
    return tuple(int(v) for v in np.asarray(value).reshape(-1))
