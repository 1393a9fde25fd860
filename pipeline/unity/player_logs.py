"""Player logs (`Player-<worker>.log`, one per launch) as artifacts of the training run."""
from __future__ import annotations

from pathlib import Path

import mlflow

ARTIFACT_DIR = "run_logs"  # where a finished run's ML-Agents run_logs (player logs included) go too


def attach_player_logs(run_logs: Path) -> list[str]:
    """Log every player log under run_logs/ of the active run; the ones a failed training leaves are the evidence."""
    logs = sorted(Path(run_logs).glob("Player-*.log"))
    for log in logs:
        mlflow.log_artifact(str(log), ARTIFACT_DIR)
    return [f"{ARTIFACT_DIR}/{log.name}" for log in logs]
