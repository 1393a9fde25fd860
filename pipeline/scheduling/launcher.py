"""Launch one scheduled job as this project's `main` pipeline, and find out what became of one after a crash.

The command is the guide orchestrator's own (`UnityMLOpsOrchestrator.command`: `python -m pipeline.cli
main ...`), with the fire's identity added as MLflow tags through `run_tags`. Unlike
`execute_training_job`, the child's pid is recorded and it is tied to the runner's life (PR_SET_PDEATHSIG),
so a runner killed with SIGKILL does not leave untracked trainings behind: they get SIGTERM, save, and end
their MLflow runs KILLED.
"""
from __future__ import annotations

import asyncio
import ctypes
import json
import os
import signal
import sys
from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional

from mlops_unity_pipeline.jobs import RLTrainingConfig, TrainingJob, TrainingJobResult, UnityMLOpsOrchestrator, _quote
from pipeline.redaction import redact_uri
from pipeline.scheduling.claims import JobRecord
from pipeline.tracking.store import REPO_ROOT

KILLED_CODES = (-2, -15, 130, 143)


def fire_job(template: TrainingJob, schedule_id: str, minute: str, time_zone: str,
             resume_run_id: Optional[str] = None) -> TrainingJob:
    """The template job of a schedule, for one fire: its runs carry schedule_id and scheduled_minute tags.
    resume_run_id: the fire was interrupted; continue that training run instead of starting afresh."""
    tags = [f"+run_tags.schedule_id={_quote(schedule_id)}", f"+run_tags.scheduled_minute={_quote(minute)}",
            f"+run_tags.schedule_time_zone={_quote(time_zone)}"]
    if resume_run_id:
        tags.append(f"resume={resume_run_id}")
    rl: RLTrainingConfig = replace(template.rl_config, overrides=list(template.rl_config.overrides) + tags)
    return TrainingJob(job_id=f"{schedule_id}-{minute.replace(':', '')}-{template.asset_spec.asset_id}",
                       asset_spec=template.asset_spec, rl_config=rl)


def _die_with_parent() -> None:
    """In the child, before exec: own process group (a Ctrl-C aimed at the runner is the runner's to
    handle) and SIGTERM when the runner dies, however it dies."""
    os.setpgid(0, 0)
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def process_start(pid: int) -> Optional[str]:
    """The kernel's start time of a pid: with the pid, identifies one process even if the pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def alive(pid: Optional[int], start: Optional[str]) -> bool:
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
                 log: Callable[[str], None] = print):
        self.orchestrator = orchestrator
        self.results_dir = Path(results_dir)
        self.log = lambda message: log(redact_uri(message))  # as the runner's: no password reaches a journal

    def result_path(self, schedule_id: str, minute: str, asset_id: str) -> Path:
        return self.results_dir / schedule_id / minute.replace(":", "") / f"{asset_id}.json"

    async def run(self, job: TrainingJob, schedule_id: str, minute: str,
                  on_spawn: Callable[[int, Optional[str]], None], cancel: asyncio.Event) -> TrainingJobResult:
        result_json = self.result_path(schedule_id, minute, job.asset_spec.asset_id)
        result_json.parent.mkdir(parents=True, exist_ok=True)
        cmd = self.orchestrator.command(job, result_json)
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_RUN_ID"}  # its own pipeline run
        env["PYTHONUNBUFFERED"] = "1"
        proc = await asyncio.create_subprocess_exec(*cmd, cwd=str(REPO_ROOT), env=env, stderr=asyncio.subprocess.PIPE,
                                                    preexec_fn=_die_with_parent)
        on_spawn(proc.pid, process_start(proc.pid))
        tail: deque[str] = deque(maxlen=15)

        async def pump() -> None:
            assert proc.stderr is not None
            async for raw in proc.stderr:
                line = raw.decode(errors="replace")
                tail.append(line.rstrip())
                sys.stderr.write(line)

        async def stop_on_cancel() -> None:
            await cancel.wait()
            if proc.returncode is None:
                proc.terminate()  # SIGTERM: the trainer saves its checkpoint and the run ends KILLED

        watcher = asyncio.create_task(stop_on_cancel())
        try:
            await pump()
            code = await proc.wait()
        except asyncio.CancelledError:
            if proc.returncode is None:
                proc.terminate()
                await proc.wait()
            raise
        finally:
            watcher.cancel()
        if code == 0 and result_json.exists():
            return UnityMLOpsOrchestrator._result(job, json.loads(result_json.read_text()))
        errors = [line for line in tail if line.startswith("error:")]
        last = [line for line in tail if line.strip()]
        error = (errors[-1][len("error:"):].strip() if errors else last[-1].strip() if last else "") \
            or f"exit code {code}"
        # Stopped by our SIGTERM: KILLED whatever exit code the interrupted pipeline chose.
        status = "KILLED" if code in KILLED_CODES or cancel.is_set() else "FAILED"
        result = self._from_mlflow(job, schedule_id, minute, status, error)
        if cancel.is_set() and result.status == "KILLED":
            result.error = f"cancelled: {error}"
        return result

    def _runs(self, schedule_id: str, minute: str, asset_id: str):
        import mlflow

        from pipeline.tracking import store

        store.configure(self.orchestrator.tracking_uri)
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
            if close_running and run.info.status == "RUNNING":
                mlflow.MlflowClient().set_terminated(run.info.run_id, "KILLED")
        return result

    def resume_point(self, record: JobRecord, result: TrainingJobResult) -> tuple[Optional[str], str]:
        """The interrupted training run this job can continue, or None and why not."""
        import mlflow

        from pipeline.tracking import store
        from pipeline.training.resume import why_not_continued

        train_run_id = result.run_ids.get("train")
        if not train_run_id:
            return None, "it had not started training"
        store.configure(self.orchestrator.tracking_uri)
        try:
            run = mlflow.MlflowClient().get_run(train_run_id)
        except mlflow.exceptions.MlflowException as exc:
            return None, f"its training run {train_run_id} cannot be read ({exc})"
        why = why_not_continued(run)
        return (None, why) if why else (train_run_id, "")

    def recover(self, record: JobRecord, job: TrainingJob, why: str) -> Optional[TrainingJobResult]:
        """What became of a job whose runner died; None while its process still runs."""
        if alive(record.pid, record.pid_start):
            return None
        path = self.result_path(record.schedule_id, record.scheduled_minute, record.asset_id)
        if path.exists():
            return UnityMLOpsOrchestrator._result(job, json.loads(path.read_text()))
        return self._from_mlflow(job, record.schedule_id, record.scheduled_minute, "KILLED", why, close_running=True)
