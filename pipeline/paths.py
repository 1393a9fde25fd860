"""Where the repository's own files are: a leaf (imports nothing of the pipeline, nothing heavy).

The embedded MLflow store, `results/`, `conf/` and the demo datasets are found relative to the checkout, so
commands work from any working directory (jobs, `mlflow run`, the cron runner start elsewhere).
"""
from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = REPO_ROOT / "conf"
