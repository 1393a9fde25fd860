"""Checkpoints that a kill can never leave half-written.

ML-Agents' TorchModelSaver writes `<Behavior>-<step>.pt` and `checkpoint.pt` with a plain
`torch.save(path)`; a SIGKILL in the middle leaves a truncated file that a resume would then load.
Its module gets a `torch` whose `save` writes to a temporary file and renames it into place
(atomic on POSIX), so a checkpoint file is always either the previous one or the new one.
Whoever needs to know that a checkpoint file is complete (uploading it, see resume.py) registers with
`watching()`.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from mlagents.torch_utils import torch
from mlagents.trainers.model_saver import torch_model_saver


class _AtomicSaveTorch:
    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def save(obj, f, *args, **kwargs):
        if not isinstance(f, (str, os.PathLike)):
            return torch.save(obj, f, *args, **kwargs)
        tmp = f"{os.fspath(f)}.tmp-{os.getpid()}"
        torch.save(obj, tmp, *args, **kwargs)
        os.replace(tmp, f)
        for listener in list(_listeners):
            listener(Path(f))


_listeners: list[Callable[[Path], None]] = []


@contextlib.contextmanager
def watching(listener: Callable[[Path], None]) -> Iterator[None]:
    """Call `listener(path)` after each checkpoint file ML-Agents saves is complete on disk."""
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)


def install() -> None:
    if not isinstance(torch_model_saver.torch, _AtomicSaveTorch):
        torch_model_saver.torch = _AtomicSaveTorch()
