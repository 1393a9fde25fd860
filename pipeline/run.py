"""The pipeline as a Hydra app: `python -m pipeline.run asset=patrol algorithm=sac max_steps=20000 seed=3`."""
from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

import pipeline.config.schema  # noqa: F401  (registers the schema in Hydra's ConfigStore)
from pipeline.cli import reported
from pipeline.config.command_line import CONFIG_NAME, CONFIG_PATH, check_command_line
from pipeline.config.plan import build_plan
from pipeline.stages.pipeline import run_pipeline


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name=CONFIG_NAME)
def _app(cfg: DictConfig) -> float:
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        # One sweep job: its error fails this job (its child run FAILED), the sweep goes on (pipeline/sweeps).
        result = run_pipeline(build_plan(cfg))
    else:
        with reported():
            result = run_pipeline(build_plan(cfg))
    # Sweepers (Optuna) maximise what the task returns: the evaluated success rate.
    return result.evaluate.metrics["eval/success_rate"] if result.evaluate else float("nan")


def main() -> None:
    with reported():  # a refused class: `error: ...`, exit code 2, before any run or file exists
        check_command_line(sys.argv[1:])
    _app()


if __name__ == "__main__":
    main()
