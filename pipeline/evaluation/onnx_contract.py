"""ML-Agents' inference contract: what Unity's inference engine requires of a policy ONNX file."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnx

from pipeline.config.errors import ConfigError

# Unity's ML-Agents (Sentis / Barracuda) reads these graph outputs for a continuous-action policy.
REQUIRED_OUTPUTS = ("version_number", "memory_size", "continuous_actions", "continuous_action_output_shape")
MAX_OPSET = 15  # newest opset the ML-Agents Unity package (Sentis) imports; ML-Agents exports 9


class PolicyContractError(ConfigError):
    """The ONNX file is not a policy Unity's ML-Agents can load."""


@dataclass(frozen=True)
class PolicyContract:
    opset: int
    inputs: dict[str, int]  # obs_i -> vector size
    outputs: tuple[str, ...]
    action_size: int
    has_deterministic: bool


def check_policy(path: Path, expected_obs: tuple[int, ...] | None = None, action_size: int | None = None) -> PolicyContract:
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:
        raise PolicyContractError(f"{path}: not a valid ONNX model ({exc})") from None
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if not 1 <= opset <= MAX_OPSET:
        raise PolicyContractError(f"{path}: opset {opset} is outside what Unity ML-Agents imports (1..{MAX_OPSET})")
    inputs = {}
    for i in model.graph.input:
        dims = [d.dim_value for d in i.type.tensor_type.shape.dim]
        inputs[i.name] = dims[-1] if dims else 0
    obs_names = [n for n in inputs if n.startswith("obs_")]
    if not obs_names or len(obs_names) != len(inputs):
        raise PolicyContractError(f"{path}: inputs must be named obs_0, obs_1, ... as ML-Agents exports them; "
                                  f"found {list(inputs)}")
    outputs = tuple(o.name for o in model.graph.output)
    missing = [o for o in REQUIRED_OUTPUTS if o not in outputs]
    if missing:
        raise PolicyContractError(f"{path}: missing output(s) {missing} that Unity reads; found {list(outputs)}. "
                                  "Export with ML-Agents' ModelSerializer.")
    if expected_obs is not None:
        got = tuple(inputs[f"obs_{k}"] for k in range(len(obs_names)) if f"obs_{k}" in inputs)
        if got != tuple(expected_obs):
            raise PolicyContractError(f"{path}: observation sizes {got} do not match the asset's sensors {tuple(expected_obs)}")
    act = {o.name: o for o in model.graph.output}["continuous_actions"]
    dims = [d.dim_value for d in act.type.tensor_type.shape.dim]
    size = dims[-1] if dims else 0
    if action_size is not None and size and size != action_size:
        raise PolicyContractError(f"{path}: {size} continuous actions, the asset expects {action_size}")
    return PolicyContract(opset, inputs, outputs, size or (action_size or 0), "deterministic_continuous_actions" in outputs)
