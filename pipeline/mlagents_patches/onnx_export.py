"""torch >= 2.9 routes `torch.onnx.export` to the dynamo exporter by default. It needs onnxscript,
ignores opset 9 and produces a graph Unity's inference engine cannot read. mlagents 1.1.0 calls
`torch.onnx.export` without `dynamo=`, so we default that one argument back to the legacy
TorchScript exporter; explicit callers are untouched.
"""
from __future__ import annotations

import functools
import warnings


def apply() -> None:
    import torch.onnx

    if getattr(torch.onnx.export, "_legacy_default", False):
        return
    export = torch.onnx.export

    @functools.wraps(export)
    def export_legacy_by_default(*args, **kwargs):
        kwargs.setdefault("dynamo", False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return export(*args, **kwargs)

    export_legacy_by_default._legacy_default = True  # type: ignore[attr-defined]
    torch.onnx.export = export_legacy_by_default


def preload() -> None:
    """Import what a first export imports (onnx, the TorchScript exporter, its opset modules) before training.

    A stop (Ctrl-C, SIGTERM) is a KeyboardInterrupt wherever training is; landing in the middle of an import,
    as it can during the first checkpoint's export, it leaves modules half-initialised, and ML-Agents' save on
    stop then fails to export ("Module onnx is not installed!"): a FAILED run without its model instead of a
    KILLED one with it. One tiny export (~30 ms) imports all of it.
    """
    import io

    import torch

    apply()
    torch.onnx.export(torch.nn.Linear(1, 1), (torch.zeros(1, 1),), io.BytesIO(), opset_version=9)
