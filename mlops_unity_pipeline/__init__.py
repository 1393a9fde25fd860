"""The setup guide's Python API (`unity_mlops_setup_guide.md`), backed by the real pipeline."""
from mlops_unity_pipeline.jobs import (
    RLTrainingConfig,
    TrainingJob,
    TrainingJobResult,
    UnityAssetSpec,
    UnityMLOpsOrchestrator,
)
from mlops_unity_pipeline.scheduling import TrainingSchedule, TrainingScheduler

__all__ = ["RLTrainingConfig", "TrainingJob", "TrainingJobResult", "TrainingSchedule", "TrainingScheduler",
           "UnityAssetSpec", "UnityMLOpsOrchestrator"]
