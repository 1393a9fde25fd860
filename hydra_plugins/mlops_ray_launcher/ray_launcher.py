"""Run each job of a Hydra sweep as a Ray task on a cluster: `python -m pipeline.run -m hydra/launcher=ray ...`.

Written on Ray's own API rather than the published hydra-ray-launcher, which pins cloudpickle<3 (the lock
has 3.x) and passes `object_store_memory` when joining a cluster, which Ray refuses (hydra#2893).

Like Hydra's joblib launcher, each job is Hydra's own `run_job` in another process, so the sweep callback
(pipeline/sweeps/callbacks.py) runs there unchanged: the job's child MLflow run under the sweep's parent,
the comparison report at the end. What joblib's workers inherit from the sweep process (the parent run id,
the swept keys, the tracking server) is passed to the tasks as their environment. Each task asks for one
CPU per environment worker of its job (or `num_cpus`), runs in a fresh worker process (ML-Agents keeps
process-global state), and tags its runs with the Ray node that ran it (`run_tags.ray_node_id`).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

log = logging.getLogger(__name__)

# Environment of the sweep process that its jobs need (joblib's workers inherit all of it).
PASSED_ON_PREFIXES = ("MLFLOW_", "PIPELINE_", "MLOPS_", "MLAGENTS_")
NOT_PASSED_ON = ("MLFLOW_RUN_ID",)  # the sweep's own run is never a job's


def passed_on_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(PASSED_ON_PREFIXES) and k not in NOT_PASSED_ON}


def execute_job(idx: int, overrides: Sequence[str], hydra_context: HydraContext, config: DictConfig,
                task_function: TaskFunction, singleton_state: dict[Any, Any], cwd: str,
                environment: dict[str, str]) -> JobReturn:
    """In the Ray worker: Hydra's own job run, as the joblib launcher does it."""
    import ray

    os.environ.update(environment)
    if os.path.isdir(cwd):  # a node sharing the sweep's filesystem: relative paths (results/) mean the same
        os.chdir(cwd)
    setup_globals()
    Singleton.set_state(singleton_state)
    node_id = ray.get_runtime_context().get_node_id()
    sweep_config = hydra_context.config_loader.load_sweep_config(
        config, [*overrides, f"++run_tags.ray_node_id={node_id}"])
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{idx}"
        sweep_config.hydra.job.num = idx
    from hydra.core.hydra_config import HydraConfig

    HydraConfig.instance().set_config(sweep_config)
    return run_job(hydra_context=hydra_context, config=sweep_config, task_function=task_function,
                   job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")


class RayLauncher(Launcher):
    def __init__(self, address: str | None = None, num_cpus: float | None = None,
                 resources: dict[str, float] | None = None, init: dict[str, Any] | None = None) -> None:
        self.address = address  # None: $RAY_ADDRESS, else a new local Ray
        self.num_cpus = num_cpus  # None: the job's env.num_envs
        self.resources = dict(resources or {})
        self.init = dict(init or {})
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.task_function, self.hydra_context = config, task_function, hydra_context

    def _cpus(self, overrides: Sequence[str]) -> float:
        if self.num_cpus is not None:
            return float(self.num_cpus)
        assert self.hydra_context is not None and self.config is not None
        job = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        return float(max(1, int(job.env.num_envs)))

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import ray

        assert self.config is not None and self.task_function is not None and self.hydra_context is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        address = self.address or os.environ.get("RAY_ADDRESS") or None
        if not ray.is_initialized():
            ray.init(address=address, log_to_driver=True, **self.init)
        log.info(f"Ray launcher: {len(job_overrides)} jobs on {address or 'a local Ray'}, sweep dir {sweep_dir}")
        remote = ray.remote(max_calls=1)(execute_job)  # a fresh worker process per job
        singleton_state = Singleton.get_state()
        environment = passed_on_environment()
        refs = []
        for i, overrides in enumerate(job_overrides):
            idx = initial_job_idx + i
            cpus = self._cpus(overrides)
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}  ({cpus:g} CPUs)")
            refs.append(remote.options(num_cpus=cpus, resources=self.resources or None).remote(
                idx, list(overrides), self.hydra_context, self.config, self.task_function, singleton_state,
                os.getcwd(), environment))
        return ray.get(refs)
