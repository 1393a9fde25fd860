"""Everything this project changes about ML-Agents 1.1.0's behaviour, in one place.

- `onnx_export`: the exporter Unity can read, on torch 2.13 (always applied: without it no .onnx is written).
- `hot_paths`: faster replacements of ML-Agents' hot functions, each tested against the original on the
  same inputs. `MLOPS_MLAGENTS_FAST=0` turns them off (for comparison with upstream ML-Agents).

They reach plain `mlagents-learn` through ML-Agents' own `mlagents.trainer_type` plugin entry point
(pyproject.toml): mlagents-learn loads every trainer-type plugin before it builds a trainer, so the same
changes apply there with no import of ours first and no environment variable.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Tuple

FAST_ENV = "MLOPS_MLAGENTS_FAST"


def fast_paths_enabled() -> bool:
    return os.environ.get(FAST_ENV, "1") != "0"


def apply() -> None:
    """Idempotent; call before ML-Agents builds a trainer or exports a policy."""
    from pipeline.mlagents_patches import hot_paths, onnx_export

    onnx_export.apply()
    if fast_paths_enabled():
        hot_paths.apply()


def trainer_types() -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """`mlagents.trainer_type` entry point: adds no trainer, applies the changes above."""
    apply()
    return {}, {}
