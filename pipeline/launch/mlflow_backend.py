"""MLflow project backend `ray`: `mlflow run . -e main -P asset=nav --backend ray --backend-config ray.json`.

The entry point's parameters become a launch request (pipeline/launch/request.py), exactly as
`python -m pipeline.cli <entry point> ...` reads them, and the request runs as a Ray job whose pipeline
run *is* the MLflow run `mlflow run` created (its params, then the stage runs as its children). Its status
comes back from Ray: `mlflow run` waits (echoing the job's log) and exits non-zero if the job failed; with
`"wait": false` it returns at once and the `SubmittedRun` polls or cancels the job.

backend config (JSON): {"address": "http://<head>:8265" (default $RAY_ADDRESS), "num_cpus": null (default:
env.num_envs), "python": the interpreter on the nodes (default this one), "working_dir": the checkout on
the nodes (default the project directory), "submission_id": null (default "mlflow-<run id>"), "wait": true}.
"""
from __future__ import annotations

import time
from typing import Any

from mlflow.entities import RunStatus
from mlflow.projects.backend.abstract_backend import AbstractBackend
from mlflow.projects.submitted_run import SubmittedRun

from pipeline.launch.ray_jobs import TERMINAL, RayJobExecutor


def request_for(entry_point: str, params: dict[str, Any]):
    """The entry point and its -P parameters as a launch request, read by the entry points' own parser."""
    from pipeline.cli import parser, request_from
    from pipeline.config.errors import ConfigError
    from pipeline.sweeps import handoff

    if handoff.wants_sweep(str(params.get("overrides", ""))):
        raise ConfigError("a sweep in overrides does not run as one Ray job; run it with the Ray launcher: "
                          "python -m pipeline.run -m hydra/launcher=ray <overrides>")
    argv = [entry_point]
    for key, value in params.items():
        argv += [f"--{key.replace('-', '_')}" if key not in ("result-json",) else "--result-json", str(value)]
    return request_from(parser().parse_args(argv))


class RaySubmittedRun(SubmittedRun):
    def __init__(self, run_id: str, executor: RayJobExecutor, submission_id: str, poll_seconds: float = 2.0):
        super().__init__()
        self._run_id, self.executor, self.submission_id = run_id, executor, submission_id
        self.poll_seconds = poll_seconds

    @property
    def run_id(self) -> str:
        return self._run_id

    def wait(self) -> bool:
        """Until the Ray job ends, echoing its log as it grows; then the run is ended as the job ended (the
        pipeline ends its own run; this covers a job that died before it could)."""
        import mlflow

        shown = 0
        while True:
            state = self.executor.state(self.submission_id)
            shown = self._echo(shown)
            if state in TERMINAL:
                break
            time.sleep(self.poll_seconds)
        self._note_node()
        client = mlflow.MlflowClient()
        if client.get_run(self._run_id).info.status == "RUNNING":
            client.set_terminated(self._run_id, TERMINAL[state])
        return state == "SUCCEEDED"

    def _echo(self, shown: int) -> int:
        if self.executor.echo is None:
            return shown
        try:
            text = self.executor.client.get_job_logs(self.submission_id)
        except RuntimeError:
            return shown
        self.executor.echo.write(text[shown:])
        self.executor.echo.flush()
        return len(text)

    def get_status(self) -> str:
        state = self.executor.state(self.submission_id)
        return RunStatus.to_string({"SUCCEEDED": RunStatus.FINISHED, "FAILED": RunStatus.FAILED,
                                    "STOPPED": RunStatus.KILLED}.get(state, RunStatus.RUNNING))

    def cancel(self) -> None:
        self.executor.client.stop_job(self.submission_id)
        self.wait()

    def _note_node(self) -> None:
        import mlflow

        node = self.executor.node_of(self.submission_id)
        if node:
            mlflow.MlflowClient().set_tag(self._run_id, "ray.node_id", node)


class RayProjectBackend(AbstractBackend):
    def run(self, project_uri, entry_point, params, version, backend_config, tracking_uri, experiment_id):
        from mlflow import tracking
        from mlflow.projects.utils import fetch_and_validate_project, get_or_create_run, load_project

        config = dict(backend_config or {})
        work_dir = fetch_and_validate_project(project_uri, version, entry_point, params)
        project = load_project(work_dir)
        spec = project.get_entry_point(entry_point)
        # The values as given (MLflow's own compute_parameters shell-quotes them for its command line).
        full_params = {k: (params or {}).get(k, p.default) for k, p in spec.parameters.items()}
        full_params = {k: "" if v is None else v for k, v in full_params.items()}
        request = request_for(entry_point, full_params)  # bad input stops here, before any run exists
        active_run = get_or_create_run(None, project_uri, experiment_id, work_dir, version, entry_point, params)
        run_id = active_run.info.run_id
        request.run_id = run_id
        request.env.update({"MLFLOW_TRACKING_URI": tracking.get_tracking_uri(),
                            "MLFLOW_EXPERIMENT_ID": str(experiment_id)})
        executor = RayJobExecutor(address=config.get("address"), python=config.get("python") or _python(),
                                  cwd=config.get("working_dir") or work_dir, num_cpus=config.get("num_cpus"))
        submission_id = config.get("submission_id") or f"mlflow-{run_id}"
        try:
            executor.submit(request, submission_id)
        except Exception as exc:
            tracking.MlflowClient().set_terminated(run_id, "FAILED")
            raise RuntimeError(f"could not submit run {run_id} to Ray at {executor.address}: {exc}") from exc
        tracking.MlflowClient().set_tag(run_id, "ray.submission_id", submission_id)
        submitted = RaySubmittedRun(run_id, executor, submission_id)
        # `mlflow run` waits only for its built-in backends; like them, wait here unless told not to.
        if config.get("wait", True) and not submitted.wait():
            from mlflow.exceptions import ExecutionException

            raise ExecutionException(f"Run (ID '{run_id}') failed: Ray job {submission_id} "
                                     f"{executor.state(submission_id)}")
        return submitted


def _python() -> str:
    import sys

    return sys.executable
