"""The setup guide's Python API (`unity_mlops_setup_guide.md`), backed by the real pipeline."""
from mlops_unity_pipeline.jobs import (
    RLTrainingConfig,
    TrainingJob,
    TrainingJobResult,
    UnityAssetSpec,
    UnityMLOpsOrchestrator,
)

__all__ = ["RLTrainingConfig", "TrainingJob", "TrainingJobResult", "UnityAssetSpec", "UnityMLOpsOrchestrator"]
