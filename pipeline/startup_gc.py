"""The cyclic garbage collector paused while an entry point starts up, then back on with the start-up frozen.

Starting a stage imports MLflow, torch and ML-Agents: about half a million objects that live until the process
exits. While they are created, the collector keeps scanning them for cycles they are not part of: a quarter of
the import time on this project's machine (`import mlflow, torch` and the trainers: ~4.6 s of CPU with the
collector, ~3.4 s without). An entry point (`pipeline.cli`, `pipeline.run`) pauses it first thing; the stage's
run resumes it once the work starts (`pipeline.tracking.runs.stage_run`), with the start-up's objects moved out
of the collector's way (`gc.freeze`, as CPython's documentation suggests for long-lived start-up state) until a
stage's tear-down ends (`frozen`). Code that never paused it (the Python API, tests) is unaffected: `resume`
is then a no-op.
"""
from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

_paused = False


def pause() -> None:
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def resume() -> None:
    """Idempotent. Objects created so far are frozen (never scanned again), the collector runs again."""
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()


@contextlib.contextmanager
def frozen() -> Iterator[None]:
    """The collector leaves what is alive now alone until the block ends: a tear-down after a training (model
    logging, pictures) imports and allocates enough to trigger full collections, each a scan of every object
    the run holds (~0.3 s of CPU), none of which is garbage yet. Unfrozen after, so a process that runs more
    stages frees them as usual."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
