"""Carry out a launch request as a Ray job (Ray Jobs API) on a cluster: `RayJobExecutor(address).run(request)`.

The request travels as JSON in the job's runtime environment (never through a shell command line built from
its values); the entrypoint is `python -m pipeline.cli run-request --from-env ... --print-result`, run in
this repository's directory, and asks for one CPU per environment worker (`entrypoint_num_cpus`), so Ray
places it on a node with room for its env workers. The caller may give the `submission_id`: Ray refuses a
second job with the same id, and a second `run` of it follows the first job instead of training again.
The job reaches MLflow through the variables passed on (MLFLOW_TRACKING_URI, ...): on a real cluster that
is a tracking server every node can reach.

Ray shows a job's entrypoint and runtime environment to anyone who can read its Jobs API or dashboard, and
a tracking URI can hold a password (`postgresql://user:secret@db/mlflow`). So the variables that can carry
a credential (`private`) never go there: they travel in a one-file working_dir package the Jobs SDK uploads
to the cluster's GCS (the runtime env shows only its content-hash URI, and a random nonce in the file keeps
that hash unguessable), which Ray unpacks on the node that runs the job. The driver reads that file and
deletes it before anything else runs (`take_private_env`); Ray drops the package when the job ends. No
filesystem is shared between the submitter and the nodes.
"""
from __future__ import annotations

import asyncio
import json
import os
import secrets
import shlex
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from pipeline.launch.inprocess import RESULT_MARKER
from pipeline.launch.local import REQUEST_ENV, Outcome
from pipeline.launch.request import LaunchRequest
from pipeline.paths import REPO_ROOT
from pipeline.redaction import redact_uri

# What a job takes from the submitting process's environment (besides what the request sets itself).
PASSED_ON = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
             "MLFLOW_TRACKING_TOKEN", "MLOPS_PIPELINE_OVERRIDES", "MLAGENTS_PORT_LOCK_DIR",
             "GOOGLE_APPLICATION_CREDENTIALS")
TERMINAL = {"SUCCEEDED": "FINISHED", "FAILED": "FAILED", "STOPPED": "KILLED"}
PRIVATE_ENV_FILE = "pipeline-private-env.json"  # in the job's working_dir package (never in its runtime env)
PRIVATE = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
           "MLFLOW_TRACKING_TOKEN")
PRIVATE_WORDS = ("PASSWORD", "TOKEN", "SECRET", "CREDENTIAL", "_URI", "_URL", "_DSN")


def private(name: str) -> bool:
    """Whether an environment variable can carry a credential (a URI may hold a password)."""
    return name in PRIVATE or any(word in name.upper() for word in PRIVATE_WORDS)


def take_private_env(path: str | Path) -> None:
    """In the job's driver: the private variables into this process's environment; the file is deleted first."""
    path = Path(path)
    text = path.read_text()
    path.unlink()
    os.environ.update(json.loads(text)["env"])


def default_address() -> str:
    return os.environ.get("RAY_ADDRESS") or "auto"


class RayJobExecutor:
    def __init__(self, address: str | None = None, python: str = sys.executable, cwd: str | Path = REPO_ROOT,
                 poll_seconds: float = 0.5, num_cpus: float | None = None, resources: dict[str, float] | None = None,
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

    def entrypoint(self, private_env: bool = False) -> str:
        # Only this checkout's own paths are quoted into it; the request's values are in the environment. The
        # job starts in its working_dir (the private variables' package); `cd` keeps it in $OLDPWD.
        take = f' --private-env "$OLDPWD/{PRIVATE_ENV_FILE}"' if private_env else ""
        return (f"cd {shlex.quote(self.cwd)} && {shlex.quote(self.python)} -m pipeline.cli run-request "
                f"--from-env {REQUEST_ENV}{take} --print-result")

    def submit(self, request: LaunchRequest, submission_id: str | None = None) -> str:
        """Check the request's config here (bad input never reaches the cluster), then submit it."""
        from pipeline.launch.inprocess import plan_for

        plan = plan_for(request)
        cpus = self.num_cpus if self.num_cpus is not None else max(1, int(plan.config.env.num_envs))
        env = {k: os.environ[k] for k in PASSED_ON if os.environ.get(k)}
        env.update(request.env)
        hidden = {k: v for k, v in env.items() if private(k)}
        shown = {k: v for k, v in env.items() if k not in hidden}
        request = replace(request, env={k: v for k, v in request.env.items() if k not in hidden})
        shown.update({REQUEST_ENV: request.to_json(), "PYTHONUNBUFFERED": "1"})
        if any(redact_uri(v) != v for v in hidden.values()):  # MLflow prints its run links with the password
            shown["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
        runtime_env: dict[str, Any] = {"env_vars": shown}
        with tempfile.TemporaryDirectory(prefix="ray-private-env-") as package:
            if hidden:
                path = Path(package) / PRIVATE_ENV_FILE
                path.touch(mode=0o600)
                path.write_text(json.dumps({"env": hidden, "nonce": secrets.token_hex(16)}))
                runtime_env["working_dir"] = package  # the SDK uploads it to the cluster before submitting
            return self.client.submit_job(
                entrypoint=self.entrypoint(bool(hidden)), submission_id=submission_id, runtime_env=runtime_env,
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
