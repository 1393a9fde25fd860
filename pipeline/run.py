"""The pipeline as a Hydra app: `python -m pipeline.run asset=patrol algorithm=sac max_steps=20000 seed=3`."""
from __future__ import annotations

import os
import sys
from dataclasses import replace

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

import pipeline.config.schema  # noqa: F401  (registers the schema in Hydra's ConfigStore)
from pipeline import startup_gc
from pipeline.cli import reported
from pipeline.config.command_line import CONFIG_NAME, CONFIG_PATH, check_command_line
from pipeline.config.plan import build_plan
from pipeline.sweeps.callbacks import job_run_id
from pipeline.training import trainer_process


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name=CONFIG_NAME)
def _app(cfg: DictConfig) -> float:
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        # One sweep job, in the child run the sweep callback made for it: its error fails this job (that run
        # FAILED), the sweep goes on (pipeline/sweeps).
        from pipeline.stages.pipeline import run_pipeline

        result = run_pipeline(replace(build_plan(cfg), adopted_run_id=job_run_id()))
    else:
        with reported(), trainer_process.started() as trainer:
            # `mlflow run` hands its entry point the run it made in MLFLOW_RUN_ID: read here, once, and taken out
            # of the environment (mlflow.start_run would adopt it wherever it is called).
            adopted = os.environ.pop("MLFLOW_RUN_ID", None)
            plan = build_plan(cfg, trainer.check_algorithm)
            from pipeline.stages.pipeline import run_pipeline  # MLflow: imported while the trainer checks

            trainer.checked()
            trainer_process.keep_for(plan)
            result = run_pipeline(replace(plan, adopted_run_id=adopted))
    # Sweepers (Optuna) maximise what the task returns: the evaluated success rate.
    return result.evaluate.metrics["eval/success_rate"] if result.evaluate else float("nan")


def main() -> None:
    startup_gc.pause()  # until the first stage's run starts (pipeline/startup_gc.py)
    with reported():  # a refused class: `error: ...`, exit code 2, before any run or file exists
        check_command_line(sys.argv[1:])
    _app()


if __name__ == "__main__":
    main()
