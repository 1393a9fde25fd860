"""`mlflow run . -P overrides="asset=nav,patrol seed=0,1"`: a sweep in the overrides runs as a Hydra multirun.

The `main` entry point composes one config; sweep syntax (or `-m`) hands the whole command to the Hydra
app in multirun mode instead, where the sweep callback makes `mlflow run`'s run the sweep's parent.
"""
from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Sequence

from pipeline.sweeps import jobs


def wants_sweep(overrides_text: str) -> bool:
    return jobs.is_sweep(shlex.split(overrides_text or ""))


def flag_override(key: str, value: str) -> str:
    """An entry-point flag as a Hydra override of exactly that value, for the multirun command line: quoted,
    quotes escaped, `${` kept literal. Text Hydra's grammar cannot carry unchanged (a backslash) is refused."""
    from pipeline.config.errors import ConfigError

    text = str(value)
    if "\\" in text:
        raise ConfigError(f"{key}={text!r}: a backslash cannot be handed to a Hydra sweep unchanged; "
                          "run the configurations one at a time (no sweep syntax in overrides)")
    if text.strip().lstrip("-").isdigit():
        return f"{key}={int(text)}"
    return f"{key}='" + text.replace("'", "\\'").replace("${", "\\${") + "'"


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
