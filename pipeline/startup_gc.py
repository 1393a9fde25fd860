"""The cyclic garbage collector paused while an entry point starts up, then back on with the start-up frozen.

Starting a stage imports MLflow, torch and ML-Agents: about a million objects that live until the process
exits. While they are created, the collector keeps scanning them for cycles they are not part of: a quarter of
the import time on this project's machine (`import mlflow, torch` and the trainers: ~4.6 s of CPU with the
collector, ~3.4 s without). An entry point (`pipeline.cli`, `pipeline.run`) pauses it first thing; the stage's
run resumes it once the work starts (`pipeline.tracking.runs.stage_run`), with the start-up's objects moved out
of the collector's way for good (`gc.freeze`), as CPython's documentation suggests for long-lived start-up
state. Code that never paused it (the Python API, tests) is unaffected: `resume` is then a no-op.
"""
from __future__ import annotations

import gc

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
