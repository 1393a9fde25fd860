"""Carry out a launch request as a Ray job (Ray Jobs API) on a cluster: `RayJobExecutor(address).run(request)`.

The request travels as JSON in the job's runtime environment (never through a shell command line built from
its values); the entrypoint is `python -m pipeline.cli run-request --from-env ... --print-result`, run in
this repository's directory, and asks for one CPU per environment worker (`entrypoint_num_cpus`), so Ray
places it on a node with room for its env workers. The caller may give the `submission_id`: Ray refuses a
second job with the same id, and a second `run` of it follows the first job instead of training again.
The job reaches MLflow through the variables passed on (MLFLOW_TRACKING_URI, ...): on a real cluster that
is a tracking server every node can reach.
"""
from __future__ import annotations

import asyncio
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from pipeline.launch.inprocess import RESULT_MARKER
from pipeline.launch.local import REQUEST_ENV, Outcome
from pipeline.launch.request import LaunchRequest
from pipeline.paths import REPO_ROOT

# What a job takes from the submitting process's environment (besides what the request sets itself).
PASSED_ON = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
             "MLFLOW_TRACKING_TOKEN", "MLOPS_PIPELINE_OVERRIDES", "MLAGENTS_PORT_LOCK_DIR",
             "GOOGLE_APPLICATION_CREDENTIALS")
TERMINAL = {"SUCCEEDED": "FINISHED", "FAILED": "FAILED", "STOPPED": "KILLED"}


def default_address() -> str:
    return os.environ.get("RAY_ADDRESS") or "auto"


class RayJobExecutor:
    def __init__(self, address: str | None = None, python: str = sys.executable, cwd: str | Path = REPO_ROOT,
                 poll_seconds: float = 1.0, num_cpus: float | None = None, resources: dict[str, float] | None = None,
                 echo: Any = sys.stderr):
        self.address = address or default_address()
        self.python, self.cwd = python, str(cwd)
        self.poll_seconds = poll_seconds
        self.num_cpus = num_cpus  # None: one per environment worker of the request
        self.resources = resources
        self.echo = echo
        self._client = None

    @property
    def client(self):
        if self._client is None:
            from ray.job_submission import JobSubmissionClient

            self._client = JobSubmissionClient(self.address)
        return self._client

    def entrypoint(self) -> str:
        # Only this checkout's own paths are quoted into it; the request's values are in the environment.
        return (f"cd {shlex.quote(self.cwd)} && {shlex.quote(self.python)} -m pipeline.cli run-request "
                f"--from-env {REQUEST_ENV} --print-result")

    def submit(self, request: LaunchRequest, submission_id: str | None = None) -> str:
        """Check the request's config here (bad input never reaches the cluster), then submit it."""
        from pipeline.launch.inprocess import plan_for

        plan = plan_for(request)
        cpus = self.num_cpus if self.num_cpus is not None else max(1, int(plan.config.env.num_envs))
        env = {k: os.environ[k] for k in PASSED_ON if os.environ.get(k)}
        env.update(request.env)
        env.update({REQUEST_ENV: request.to_json(), "PYTHONUNBUFFERED": "1"})
        return self.client.submit_job(
            entrypoint=self.entrypoint(), submission_id=submission_id, runtime_env={"env_vars": env},
            entrypoint_num_cpus=cpus,
            entrypoint_resources=self.resources,
            metadata={"pipeline.stage": request.stage, **{f"tag.{k}": v for k, v in request.tags.items()}})

    def state(self, submission_id: str) -> str | None:
        """Ray's status of the job (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED), None if Ray has no such job."""
        try:
            return str(self.client.get_job_status(submission_id).value)
        except RuntimeError:
            return None

    def node_of(self, submission_id: str) -> str | None:
        """The Ray node id the job's entrypoint ran on."""
        return self.client.get_job_info(submission_id).driver_node_id

    def outcome(self, submission_id: str) -> Outcome | None:
        """How a finished job ended, its result read back from its log; None while it runs or if unknown."""
        state = self.state(submission_id)
        if state not in TERMINAL:
            return None
        logs = self.client.get_job_logs(submission_id)
        lines = logs.splitlines()
        results = [line[len(RESULT_MARKER):] for line in lines if line.startswith(RESULT_MARKER)]
        if results and state == "SUCCEEDED":
            result = json.loads(results[-1])
            status = result.get("status", "FINISHED") if isinstance(result, dict) else "FINISHED"
            return Outcome(status, result, tail=lines[-15:])
        errors = [line[len("error:"):].strip() for line in lines if line.startswith("error:")]
        message = self.client.get_job_info(submission_id).message or ""
        last = [line for line in lines if line.strip()]
        error = errors[-1] if errors else (last[-1].strip() if last else message) or f"Ray job {state}"
        return Outcome(TERMINAL[state], None, error, tail=lines[-15:])

    async def run(self, request: LaunchRequest, on_spawn: Any = None, cancel: asyncio.Event | None = None,
                  submission_id: str | None = None) -> Outcome:
        """Submit (or, when Ray already has `submission_id`, follow that job) and wait for its end; cancelling
        stops the job (SIGTERM to the entrypoint: the trainer saves and its run ends KILLED)."""
        loop = asyncio.get_running_loop()
        try:
            submission_id = await loop.run_in_executor(None, self.submit, request, submission_id)
        except RuntimeError as exc:
            if not (submission_id and "already exists" in str(exc)):
                raise
            self._say(f"ray: job {submission_id} was already submitted; following it instead of training again")
        else:
            self._say(f"ray: submitted job {submission_id} to {self.address}")
        cancel = cancel or asyncio.Event()
        while True:
            state = await loop.run_in_executor(None, self.state, submission_id)
            if state in TERMINAL:
                break
            if cancel.is_set():
                await loop.run_in_executor(None, self.client.stop_job, submission_id)
            try:
                await asyncio.wait_for(cancel.wait() if not cancel.is_set() else asyncio.sleep(self.poll_seconds),
                                       self.poll_seconds)
            except asyncio.TimeoutError:
                pass
        outcome = await loop.run_in_executor(None, self.outcome, submission_id)
        assert outcome is not None
        if request.result_json and outcome.result is not None:
            Path(request.result_json).parent.mkdir(parents=True, exist_ok=True)
            Path(request.result_json).write_text(json.dumps(outcome.result, indent=2))
        return outcome

    def _say(self, message: str) -> None:
        if self.echo is not None:
            print(message, file=self.echo, flush=True)
