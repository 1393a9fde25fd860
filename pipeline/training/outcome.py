"""What a training leaves behind, as plain data: it travels from a trainer process to the stage's process
(training/trainer_process.py), which must not import ML-Agents (torch) to read it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional


@dataclass(frozen=True)
class TrainingOutcome:
    results_dir: Path  # ML-Agents' <results_dir>/<run_id>
    onnx_path: Path  # <Behavior>.onnx, exactly what Unity imports
    checkpoint_path: Optional[Path]
    steps: int
    interrupted: bool  # stopped by SIGINT/SIGTERM before max_steps
