"""`mlflow run . -P overrides="asset=nav,patrol seed=0,1"`: a sweep in the overrides runs as a Hydra multirun.

The `main` entry point composes one config; sweep syntax (or `-m`) hands the whole command to the Hydra
app in multirun mode instead, where the sweep callback makes `mlflow run`'s run the sweep's parent.
"""
from __future__ import annotations

import os
import shlex
import sys
from typing import Sequence

from pipeline.sweeps import jobs


def wants_sweep(overrides_text: str) -> bool:
    return jobs.is_sweep(shlex.split(overrides_text or ""))


def multirun_argv(flag_overrides: Sequence[str], overrides_text: str) -> list[str]:
    """Entry-point flags first, dropping any the overrides set themselves (Hydra rejects a key given twice)."""
    given = [o for o in shlex.split(overrides_text or "") if o not in jobs.MULTIRUN_FLAGS]
    keys = {o.key_or_group for o in jobs.parse(given)}
    flags = [o for o in flag_overrides if o.split("=", 1)[0] not in keys]
    return ["--multirun", *flags, *given]


def run_multirun(flag_overrides: Sequence[str], overrides_text: str) -> None:
    """Become `python -m pipeline.run --multirun ...` (same environment, so MLFLOW_RUN_ID comes along)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "pipeline.run", *multirun_argv(flag_overrides, overrides_text)])
