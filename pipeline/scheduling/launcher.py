"""Launch one scheduled job as this project's `main` pipeline, and find out what became of one after a crash.

A fire is the guide orchestrator's launch request for the job (`UnityMLOpsOrchestrator.request`, typed
values, pipeline/launch/), with the fire's identity as MLflow tags. Run locally, the child's pid is
recorded and it is tied to the runner's life (PR_SET_PDEATHSIG), so a runner killed with SIGKILL does not
leave untracked trainings behind: they get SIGTERM, save, and end their MLflow runs KILLED. Sent to a Ray
cluster (a schedule's `executor: {kind: ray}`), the fire's Ray submission id is derived from (schedule,
minute, asset), so Ray itself refuses a second submission of the same fire.

Run locally, a fire's job can be `prestart`ed: its process gets ready before the minute and is let go by
`run(..., prestarted=...)` once the runner has claimed the fire and started the job, or `release`d without
creating any run (a Ray fire is submitted at the minute).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.launch.job_specs import TrainingJob, TrainingJobResult
from pipeline.launch.local import KILLED_CODES, Child, LocalProcessExecutor
from pipeline.launch.request import LaunchRequest
from pipeline.processes import process_start
from pipeline.redaction import redact_uri
from pipeline.scheduling.claims import JobRecord

if TYPE_CHECKING:  # the guide API sits above the scheduler; it hands us its orchestrator
    from mlops_unity_pipeline.jobs import UnityMLOpsOrchestrator

__all__ = ["KILLED_CODES", "FireJob", "PipelineLauncher", "alive", "fire_job", "submission_id"]


@dataclass
class FireJob(TrainingJob):
    """A schedule's template job for one fire: its runs carry the fire's identity as tags."""

    tags: dict[str, str] = field(default_factory=dict)
    resume_run_id: str | None = None  # the fire was interrupted: continue that training run
    attempt: int = 0  # resumes of this fire so far, this one included


def fire_job(template: TrainingJob, schedule_id: str, minute: str, time_zone: str,
             resume_run_id: str | None = None, attempt: int = 0) -> FireJob:
    """The template job of a schedule, for one fire: its runs carry schedule_id and scheduled_minute tags.
    resume_run_id: the fire was interrupted; continue that training run instead of starting afresh (its
    `attempt`-th resume)."""
    return FireJob(job_id=f"{schedule_id}-{minute.replace(':', '')}-{template.asset_spec.asset_id}",
                   asset_spec=template.asset_spec, rl_config=template.rl_config,
                   tags={"schedule_id": schedule_id, "scheduled_minute": minute, "schedule_time_zone": time_zone},
                   resume_run_id=resume_run_id, attempt=attempt if resume_run_id else 0)


def submission_id(schedule_id: str, minute: str, asset_id: str, attempt: int = 0) -> str:
    """The Ray job id of one fire of one asset: the same fire always gets the same id, and its n-th resume
    `<that id>-r<n>`, so Ray itself refuses a second submission of either."""
    digest = hashlib.sha256(f"{schedule_id}\0{minute}\0{asset_id}".encode()).hexdigest()[:12]
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in f"{schedule_id}-{minute}-{asset_id}")
    return f"fire-{safe}-{digest}" + (f"-r{attempt}" if attempt else "")


def alive(pid: int | None, start: str | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return start is None or process_start(pid) == start


class PipelineLauncher:
    def __init__(self, orchestrator: UnityMLOpsOrchestrator, results_dir: Path,
                 log: Callable[[str], None] = print, executors: dict[str, Any] | None = None):
        self.orchestrator = orchestrator
        self.results_dir = Path(results_dir)
        self.log = lambda message: log(redact_uri(message))  # as the runner's: no password reaches a journal
        self.executors = dict(executors or {})  # schedule id -> executor; default: the orchestrator's
        self._watching: set[asyncio.Task] = set()

    def executor_for(self, schedule_id: str) -> Any:
        return self.executors.get(schedule_id) or self.orchestrator.executor

    def result_path(self, schedule_id: str, minute: str, asset_id: str) -> Path:
        return self.results_dir / schedule_id / minute.replace(":", "") / f"{asset_id}.json"

    def _request(self, job: TrainingJob, schedule_id: str, minute: str) -> LaunchRequest:
        result_json = self.result_path(schedule_id, minute, job.asset_spec.asset_id)
        result_json.parent.mkdir(parents=True, exist_ok=True)
        request = self.orchestrator.request(job, tags=getattr(job, "tags", {}), resume=getattr(job, "resume_run_id",
                                                                                                None))
        request.result_json = str(result_json)
        return request

    async def prestart(self, job: TrainingJob, schedule_id: str, minute: str) -> Child | None:
        """Start a fire's job process ahead of its minute (None: its executor starts jobs at the minute; a Ray
        fire is submitted then under its fire's id)."""
        executor = self.executor_for(schedule_id)
        if not isinstance(executor, LocalProcessExecutor) or getattr(job, "resume_run_id", None):
            return None
        child = await executor.start(self._request(job, schedule_id, minute))
        task = asyncio.get_running_loop().create_task(self._say_when_ready(child, schedule_id, minute, job))
        self._watching.add(task)
        task.add_done_callback(self._watching.discard)
        return child

    async def _say_when_ready(self, child: Child, schedule_id: str, minute: str, job: TrainingJob) -> None:
        """One line when a pre-started process is ready: how long getting ready takes here is what
        --prestart-seconds must cover."""
        t0 = time.monotonic()
        ready = asyncio.ensure_future(child.ready.wait())
        await asyncio.wait([ready, child.pump], return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if child.ready.is_set():
            self.log(f"{schedule_id} {minute}: {job.asset_spec.asset_id} ready to go "
                     f"({time.monotonic() - t0:.1f} s after its process started)")

    async def release(self, held: Child, why: str) -> None:
        await held.release()

    async def run(self, job: TrainingJob, schedule_id: str, minute: str,
                  on_spawn: Callable[[int, str | None], None], cancel: asyncio.Event,
                  prestarted: Child | None = None) -> TrainingJobResult:
        asset_id = job.asset_spec.asset_id
        request = self._request(job, schedule_id, minute)
        executor = self.executor_for(schedule_id)
        if prestarted is not None and (not isinstance(executor, LocalProcessExecutor)
                                       or replace(prestarted.request, hold=False) != request):
            await prestarted.release()  # started for another job than this one has become: start afresh
            prestarted = None
        if isinstance(executor, LocalProcessExecutor):
            outcome = await executor.run(request, on_spawn=lambda pid: on_spawn(pid, process_start(pid)),
                                         cancel=cancel, held=prestarted)
        else:  # a cluster: the fire's id makes a second submission of it a refusal, not a second training
            attempt = getattr(job, "attempt", 0) if request.resume else 0  # a resume: a submission of its own
            outcome = await executor.run(request, cancel=cancel,
                                         submission_id=submission_id(schedule_id, minute, asset_id, attempt))
        if outcome.result is not None:
            return self.orchestrator._result(job, outcome.result)
        error = outcome.error or f"exit code {outcome.exit_code}"
        # Stopped by our SIGTERM: KILLED whatever exit code the interrupted pipeline chose.
        status = "KILLED" if outcome.exit_code in KILLED_CODES or cancel.is_set() or outcome.status == "KILLED" \
            else "FAILED"
        result = self._from_mlflow(job, schedule_id, minute, status, error)
        if cancel.is_set() and result.status == "KILLED":
            result.error = f"cancelled: {error}"
        return result

    def _runs(self, schedule_id: str, minute: str, asset_id: str):
        import mlflow

        self.orchestrator.use_store()
        exp = mlflow.get_experiment_by_name(self.orchestrator.experiment_name)
        if exp is None:
            return []
        query = (f"tags.schedule_id = '{schedule_id}' AND tags.scheduled_minute = '{minute}' "
                 f"AND tags.asset = '{asset_id}'")
        return mlflow.MlflowClient().search_runs([exp.experiment_id], query)

    def _from_mlflow(self, job: TrainingJob, schedule_id: str, minute: str, status: str, error: str,
                     close_running: bool = False) -> TrainingJobResult:
        """A result for a job that wrote none: its run ids from the schedule tags, stuck runs closed KILLED."""
        import mlflow

        result = TrainingJobResult(job.job_id, status, job.asset_spec.asset_id, error=error)
        for run in self._runs(schedule_id, minute, job.asset_spec.asset_id):
            stage = run.data.tags.get("pipeline.stage", "?")
            if stage == "main":
                result.run_id = run.info.run_id
            else:
                result.run_ids[stage] = run.info.run_id
            if run.info.status == "RUNNING":  # the job's process has ended: a RUNNING run of it is dead
                from pipeline.tracking.reaper import close_run, why_dead
                from pipeline.tracking.runs import INTERRUPTED

                dead = why_dead(run)  # exact for runs of this host (pid, start time, boot id)
                if dead or close_running:  # either reason reads as an interruption (resume.py), not an own error
                    close_run(mlflow.MlflowClient(), run.info.run_id, status,
                              f"{dead} ({error})" if dead else f"{INTERRUPTED}{error}")
        return result

    def resume_point(self, record: JobRecord, result: TrainingJobResult) -> tuple[str | None, str]:
        """The interrupted training run this job can continue, or None and why not."""
        import mlflow

        from pipeline.training.resume import why_not_continued

        train_run_id = result.run_ids.get("train")
        if not train_run_id:
            return None, "it had not started training"
        self.orchestrator.use_store()
        try:
            run = mlflow.MlflowClient().get_run(train_run_id)
        except mlflow.exceptions.MlflowException as exc:
            return None, f"its training run {train_run_id} cannot be read ({exc})"
        why = why_not_continued(run)
        return (None, why) if why else (train_run_id, "")

    def recover(self, record: JobRecord, job: TrainingJob, why: str) -> TrainingJobResult | None:
        """What became of a job whose runner died; None while its process (or Ray job) still runs."""
        executor = self.executor_for(record.schedule_id)
        if not isinstance(executor, LocalProcessExecutor):
            sid = submission_id(record.schedule_id, record.scheduled_minute, record.asset_id,
                                record.attempt if record.resume_run_id else 0)
            if executor.state(sid) in ("PENDING", "RUNNING"):
                return None
            outcome = executor.outcome(sid)
            if outcome is not None and outcome.result is not None:
                return self.orchestrator._result(job, outcome.result)
        elif alive(record.pid, record.pid_start):
            return None
        path = self.result_path(record.schedule_id, record.scheduled_minute, record.asset_id)
        if path.exists():
            return self.orchestrator._result(job, json.loads(path.read_text()))
        return self._from_mlflow(job, record.schedule_id, record.scheduled_minute, "KILLED", why, close_running=True)
