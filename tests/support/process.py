"""Running the product the way users do: as a child process of this interpreter, from the repository."""
from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


def child_env(**extra: str) -> dict[str, str]:
    """This environment for a child process: its own pipeline run (no MLFLOW_RUN_ID), the venv's tools first."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_RUN_ID"}
    env["PATH"] = f"{Path(PYTHON).parent}:{env.get('PATH', '')}"
    env.update(extra)
    return env
