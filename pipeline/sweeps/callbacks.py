"""Hydra callback: a multirun is one parent MLflow run, each job's pipeline run is its child.

Configured in conf/config.yaml under `hydra.callbacks`, so every `python -m pipeline.run -m ...`
(basic or joblib launcher, basic or Optuna sweeper) is tracked the same way:

- on_multirun_start (sweep process): check every job's config first (a bad one stops the sweep before
  any job runs, with no run left behind), create the parent run (or adopt the one `mlflow run` made),
  and, for parallel jobs on a sqlite store, start a local tracking server as the single writer.
- on_job_start (the job's process): create the job's child run, carrying its overrides as params and
  tags; the Hydra app (pipeline/run.py) hands it to the pipeline (`job_run_id()`), whose `main` run adopts it.
- on_job_end: forget it (so it never reaches the next job) and end the child FAILED if the job died before
  its pipeline could.
- on_multirun_end, or at exit when a job failed: the comparison report on the parent, the best
  trial's config for a search, the parent's final status, the server stopped.
"""
from __future__ import annotations

import atexit
import os
import sys
from pathlib import Path
from typing import Any, Optional

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from pipeline.config.errors import EXIT_UNAVAILABLE
from pipeline.redaction import redact_uri
from pipeline.sweeps import jobs
from pipeline.tracking.reaper import process_tags  # which process owns the sweep's parent run (reap)

# MLflow is imported in the multirun hooks only: Hydra builds this callback for every run, and a single run's
# process (pipeline/run.py) imports MLflow while its trainer process imports torch.

PARENT_ENV = "PIPELINE_SWEEP_RUN_ID"  # set in the sweep process, inherited by launcher workers
KEYS_ENV = "PIPELINE_SWEEP_KEYS"  # the keys the sweep varies: they name a job and group its seeds
MAX_TAG = 5000

_sweep: Optional["_Sweep"] = None  # the sweep this process runs; kept off the (pickled) callback
_job_run: Optional[str] = None  # the child run of the job this process runs now (Hydra runs one job at a time)


def job_run_id() -> Optional[str]:
    """The child run on_job_start made for the job running in this process, for its pipeline to adopt."""
    return _job_run


class _Sweep:
    def __init__(self, parent: str, experiment_id: str, adopted: bool, server, prior_uri: Optional[str],
                 config: DictConfig):
        self.parent, self.experiment_id, self.adopted = parent, experiment_id, adopted
        self.server, self.prior_uri, self.config = server, prior_uri, config
        self.done = False


def _short(target: str) -> str:
    return target.rsplit(".", 1)[-1]


def _is_search(config: DictConfig) -> bool:
    return "optuna" in str(config.hydra.sweeper.get("_target_", "")).lower()


def _n_jobs(config: DictConfig) -> int:
    launcher = config.hydra.launcher
    if "ray_launcher" in str(launcher.get("_target_", "")).lower():
        return 2  # a cluster: jobs at the same time, as many as it has room for
    if "joblib" not in str(launcher.get("_target_", "")).lower():
        return 1
    n = launcher.get("n_jobs", -1)
    if n is None or n < 0:  # joblib: -1 is one job per core
        return os.cpu_count() or 1
    return int(n)


class MlflowSweepCallback(Callback):
    def __init__(self, tuned_dir: str = "conf/algorithm", baseline: bool = True, server: str = "auto") -> None:
        self.tuned_dir = tuned_dir  # where a search writes its best trial's algorithm config
        self.baseline = baseline  # a search also runs the default config, to say whether it improved on it
        self.server = server  # auto: a tracking server when jobs run in parallel on sqlite; always; never

    # -- the sweep process -------------------------------------------------------------------------
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        overrides = list(config.hydra.overrides.task)
        if not _check_jobs(config, overrides):
            return  # Hydra's sweeper reports the composition error itself, before any job and any run
        try:
            self._start(config, overrides)
        except Exception as exc:  # Hydra would only warn and run the jobs untracked: stop instead
            print(redact_uri(f"error: cannot track the sweep in MLflow ({type(exc).__name__}: {exc}); "
                             "no job was started"),
                  file=sys.stderr, flush=True)
            if _sweep is not None:
                _finish(self, completed=False)
            sys.exit(EXIT_UNAVAILABLE)

    def _start(self, config: DictConfig, overrides: list[str]) -> None:
        import mlflow
        from mlflow.entities import Param, RunTag

        from pipeline.tracking import runs, store

        global _sweep
        uri = store.configure(config.tracking.tracking_uri)
        experiment_id = store.experiment_id(config.tracking.experiment_name)

        adopted = os.environ.pop("MLFLOW_RUN_ID", None)  # `mlflow run`'s run is the sweep; never a job's
        client = mlflow.MlflowClient()
        search = _is_search(config)
        tags = {"pipeline.stage": "search" if search else "sweep",
                "sweep.overrides": redact_uri(" ".join(overrides))[:MAX_TAG],
                "sweep.dir": str(Path(config.hydra.sweep.dir).resolve()),
                "sweep.sweeper": _short(config.hydra.sweeper._target_),
                "sweep.launcher": _short(config.hydra.launcher._target_),
                **runs.code_version(), **process_tags(), **OmegaConf.to_container(config.run_tags)}
        if adopted:
            parent = adopted
            experiment_id = client.get_run(parent).info.experiment_id  # the jobs go where `mlflow run` put it
            client.log_batch(parent, tags=[RunTag(k, str(v)) for k, v in tags.items()])
        else:
            swept = [o for o in overrides if jobs.is_sweep([o])]
            if search:
                swept += [f"{k}={v}" for k, v in config.hydra.sweeper.params.items()]
            name = ("search " if search else "sweep ") + (" ".join(swept) or "default")
            parent = client.create_run(experiment_id, run_name=name[:250], tags=tags).info.run_id
        params = {f"sweep.{k}": v for k, v in jobs.job_params(overrides).items()}
        if search:
            params.update({f"search.{k}": str(v) for k, v in config.hydra.sweeper.params.items()})
            params["search.n_trials"] = str(config.hydra.sweeper.n_trials)
        client.log_batch(parent, params=[Param(k, redact_uri(v)[:6000]) for k, v in params.items()])

        server, prior_uri = None, os.environ.get("MLFLOW_TRACKING_URI")
        n_jobs = _n_jobs(config)
        if self.server == "always" or (self.server == "auto" and n_jobs > 1 and uri.startswith("sqlite:")):
            from pipeline.tracking.tracking_server import TrackingServer

            sweep_dir = Path(config.hydra.sweep.dir)
            sweep_dir.mkdir(parents=True, exist_ok=True)
            server = TrackingServer(uri, log_path=sweep_dir / "mlflow_server.log").start()
            os.environ["MLFLOW_TRACKING_URI"] = server.url  # every job logs through it
            mlflow.set_tracking_uri(server.url)
            print(f"sweep: {n_jobs} jobs in parallel write through the tracking server {server.url} "
                  f"(single writer of {uri})", flush=True)
        keys = [o.key_or_group for o in jobs.parse(overrides) if o.is_sweep_override()]
        if search:
            keys += [str(k) for k in config.hydra.sweeper.params]
        os.environ[KEYS_ENV] = ",".join(keys)
        os.environ[PARENT_ENV] = parent
        _sweep = _Sweep(parent, experiment_id, bool(adopted), server, prior_uri, config)
        atexit.register(_finish_at_exit, self)
        print(f"sweep: parent run {parent} (experiment {client.get_experiment(experiment_id).name})", flush=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        _finish(self, completed=True)

    # -- each job's process ------------------------------------------------------------------------
    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _job_run
        parent = os.environ.get(PARENT_ENV)
        if not parent or config.hydra.mode != RunMode.MULTIRUN:
            return
        _own_process_start_method()
        import mlflow
        from mlflow.entities import Param

        from pipeline.tracking import store

        store.configure(config.tracking.tracking_uri)
        overrides = list(config.hydra.overrides.task)
        params = jobs.job_params(overrides)
        swept = os.environ.get(KEYS_ENV, "").split(",")
        varied = {k: v for k, v in params.items() if k in swept}
        client = mlflow.MlflowClient()
        tags = {"mlflow.parentRunId": parent, "pipeline.sweep_run_id": parent,
                "sweep.job": str(config.hydra.job.num), "sweep.overrides": redact_uri(" ".join(overrides))[:MAX_TAG],
                "sweep.config": redact_uri(jobs.config_key(varied))[:MAX_TAG],
                **{f"sweep.override.{k}": redact_uri(v)[:MAX_TAG] for k, v in params.items()}}
        experiment_id = client.get_run(parent).info.experiment_id  # one experiment for the sweep and its jobs
        name = " ".join(f"{k}={v}" for k, v in varied.items()) or "default"
        child = client.create_run(experiment_id, run_name=redact_uri(f"#{config.hydra.job.num} {name}")[:250],
                                  tags=tags).info.run_id
        if params:
            client.log_batch(child, params=[Param(k, redact_uri(v)[:6000]) for k, v in params.items()])
        _job_run = child  # the pipeline's `main` run adopts it (pipeline/run.py)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        global _job_run
        if not os.environ.get(PARENT_ENV) or config.hydra.mode != RunMode.MULTIRUN:
            return
        child, _job_run = _job_run, None
        import mlflow
        from mlflow.entities import RunStatus

        while mlflow.active_run():  # nothing of this job may stay active for the next one
            mlflow.end_run(RunStatus.to_string(RunStatus.FAILED))
        if not child:
            return
        client = mlflow.MlflowClient()
        failed = job_return.status == JobStatus.FAILED
        error = job_return._return_value if failed else None
        if failed:
            client.set_tag(child, "pipeline.error", redact_uri(f"{type(error).__name__}: {error}")[:MAX_TAG])
            print(redact_uri(f"sweep: job #{config.hydra.job.num} ({' '.join(config.hydra.overrides.task)}) FAILED: "
                             f"{type(error).__name__}: {error}"), file=sys.stderr, flush=True)
        if client.get_run(child).info.status == "RUNNING":  # died before its pipeline run could end it
            client.set_terminated(child, "FAILED" if failed else "FINISHED")


def _own_process_start_method() -> None:
    """In a joblib (loky) worker, multiprocessing defaults to loky's context, which cannot start the plain
    `multiprocessing.Process` environment workers ML-Agents' SubprocessEnvManager makes: use the platform's."""
    import multiprocessing

    if multiprocessing.get_start_method(allow_none=True) == "loky":
        multiprocessing.set_start_method(None, force=True)


def _check_jobs(config: DictConfig, overrides: list[str]) -> bool:
    """Compose and validate every job's config before any runs: bad input stops the sweep, no run is left."""
    from hydra import compose
    from hydra.errors import HydraException

    from pipeline.config.errors import ConfigError, exit_code
    from pipeline.config.plan import build_plan

    if _is_search(config):  # the search space is Optuna's; its fixed overrides still have to be valid
        overrides = [o.input_line for o in jobs.parse(overrides) if not o.is_sweep_override()]
        batch = [overrides]
    else:
        batch = jobs.expand_basic(overrides)
    for i, job in enumerate(batch):
        try:
            build_plan(compose(config_name=config.hydra.job.config_name, overrides=job))
        except ConfigError as exc:
            print(f"error: job #{i} ({' '.join(job)}): {exc}\nno job was started", file=sys.stderr, flush=True)
            sys.exit(exit_code(exc))
        except HydraException:
            return False
    return True


def _finish_at_exit(callback: MlflowSweepCallback) -> None:
    _finish(callback, completed=False)


def _finish(callback: MlflowSweepCallback, completed: bool) -> None:
    """Report, save the search's best config, set the parent's status, stop the server: once per sweep."""
    global _sweep
    sweep = _sweep
    if sweep is None or sweep.done:
        return
    sweep.done = True
    import mlflow

    from pipeline.sweeps import report, search

    client = mlflow.MlflowClient()
    status = "FINISHED"
    try:
        if completed and _is_search(sweep.config):
            search.finish(sweep.config, sweep.parent, sweep.experiment_id, callback.tuned_dir, callback.baseline)
        summary = report.log_report(sweep.parent)
        failed = [r for r in summary.runs if r.status != "FINISHED"]
        print(summary.markdown(), flush=True)
        if failed:
            status = "FAILED"
            listing = "; ".join(f"{r.name} ({r.status}{': ' + r.error if r.error else ''})"
                                for r in failed)
            client.set_tag(sweep.parent, "sweep.failed_jobs", listing[:MAX_TAG])
            print(f"sweep: {len(failed)} of {len(summary.runs)} jobs failed: {listing}", file=sys.stderr, flush=True)
        elif not completed:
            status = "FAILED"
        print(f"sweep: comparison logged to run {sweep.parent} under {report.ARTIFACT_DIR}/; print it with "
              f"`python -m pipeline.sweeps.report {sweep.parent}`", flush=True)
    except BaseException as exc:
        status = "FAILED"
        client.set_tag(sweep.parent, "pipeline.error", f"{type(exc).__name__}: {exc}"[:MAX_TAG])
        raise
    finally:
        client.set_terminated(sweep.parent, status)
        if sweep.server is not None:
            sweep.server.stop()
            if sweep.prior_uri is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)
            else:
                os.environ["MLFLOW_TRACKING_URI"] = sweep.prior_uri
            mlflow.set_tracking_uri(sweep.server.backend_uri)
        os.environ.pop(PARENT_ENV, None)
        os.environ.pop(KEYS_ENV, None)
        _sweep = None
