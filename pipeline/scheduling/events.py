"""The webhook contract: every event a runner sends, and what its payload holds, built here and only here.

Each builder returns `(event, payload)`; `Events.emit` queues it in the outbox inside the transaction that
makes it true (webhooks.py delivers it and signs it). Every payload carries the fire's identity
(`schedule_id`, `scheduled_minute`, `time_zone`, `due_at`) and the `runner_id` that decided it:

    fire.started      a job (one asset of a fire) was launched          asset_id, job_id, algorithm, mode, max_steps
                                                                        (+ resume_of, attempt when it continues a run)
    fire.succeeded    a job ended FINISHED                              asset_id, status, job_id, run_id, run_ids,
    fire.failed       a job ended otherwise (FAILED, KILLED)            onnx_uri, metrics, registry, error, started_at,
                                                                        finished_at, resumes (+ reason)
    fire.skipped      a fire or job will not run                        reason: misfire | duplicate | overlap, detail
    fire.interrupted  a job cut short goes back to the queue to resume  resume_run_id, attempt, max_attempts, detail
    schedule.failed   a schedule failed at run time and was disabled    cron, error, disabled
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Optional

from pipeline.launch.job_specs import RLTrainingConfig, TrainingJobResult
from pipeline.scheduling import webhooks
from pipeline.scheduling.claims import ClaimStore, JobRecord
from pipeline.scheduling.cron import UTC, Fire
from pipeline.scheduling.policy import humanize
from pipeline.scheduling.schedule import Schedule

MAX_LISTED = 50  # minutes listed in one misfire event; the count is always exact
Event = tuple[str, dict[str, Any]]


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


class Events:
    """Queues events of one runner; nothing is queued when no webhook is configured."""

    def __init__(self, store: ClaimStore, runner_id: str, enabled: bool):
        self.store, self.runner_id, self.enabled = store, runner_id, enabled

    def emit(self, event: Event, now: float) -> None:
        """Inside a transaction: the event is queued only if the state change commits."""
        if self.enabled:
            name, payload = event
            webhooks.enqueue(self.store, name, {"runner_id": self.runner_id, **payload}, now)


def fire_fields(s: Optional[Schedule], schedule_id: str, minute: str, due_at: float) -> dict[str, Any]:
    """The fire's identity, in every payload. `s` is None for a job of a schedule this runner does not have."""
    return {"schedule_id": schedule_id, "scheduled_minute": minute,
            "time_zone": s.cron.zone_name if s else None, "due_at": iso(due_at)}


def misfire_skipped(s: Schedule, skipped: list[Fire]) -> Event:
    """One event for a whole outage's missed fires, not one per fire."""
    last = skipped[-1]
    return "fire.skipped", {
        **fire_fields(s, s.schedule_id, last.scheduled_minute, last.due_at.timestamp()),
        "reason": "misfire", "assets": s.asset_ids, "missed": len(skipped),
        "scheduled_minutes": [f.scheduled_minute for f in skipped][-MAX_LISTED:],
        "detail": f"{len(skipped)} fire(s) were due while no runner was up; misfire policy {s.misfire!r}"}


def duplicate_skipped(s: Schedule, fire: Fire, claimed_by: str, claimed_at: float) -> Event:
    return "fire.skipped", {
        **fire_fields(s, s.schedule_id, fire.scheduled_minute, fire.due_at.timestamp()), "assets": s.asset_ids,
        "reason": "duplicate", "detail": f"already claimed by {claimed_by} at {iso(claimed_at)}"}


def overlap_skipped(s: Schedule, fire: Fire, running: list[str]) -> Event:
    return "fire.skipped", {
        **fire_fields(s, s.schedule_id, fire.scheduled_minute, fire.due_at.timestamp()), "assets": s.asset_ids,
        "reason": "overlap", "running_fires": running,
        "detail": f"overlap policy forbid: {', '.join(running)} still running"}


def replaced_skipped(s: Schedule, job: JobRecord, reason: str) -> Event:
    """A job of an older fire that had not started yet when a newer fire replaced it."""
    return "fire.skipped", {**fire_fields(s, s.schedule_id, job.scheduled_minute, job.due_at),
                            "reason": "overlap", "asset_id": job.asset_id, "detail": reason}


def unlaunched_skipped(s: Schedule, job: JobRecord, late: float) -> Event:
    """A job whose claiming runner died before launching it, now too late for the misfire policy."""
    return "fire.skipped", {
        **fire_fields(s, s.schedule_id, job.scheduled_minute, job.due_at), "reason": "misfire",
        "asset_id": job.asset_id, "missed": 1,
        "detail": f"claimed by {job.claimed_by}, which stopped before launching it; {humanize(late)} late "
                  f"(misfire policy {s.misfire!r})"}


def started(s: Schedule, job: JobRecord, job_id: str, config: RLTrainingConfig) -> Event:
    resumed = {"resume_of": job.resume_run_id, "attempt": job.attempt} if job.resume_run_id else {}
    return "fire.started", {**fire_fields(s, s.schedule_id, job.scheduled_minute, job.due_at),
                            "asset_id": job.asset_id, "job_id": job_id, "algorithm": config.algorithm,
                            "mode": config.training_mode, "max_steps": config.max_steps, **resumed}


def ended(s: Optional[Schedule], job: JobRecord, result: TrainingJobResult, succeeded: bool,
          reason: Optional[str], now: float) -> Event:
    """`job` as the claims database has it now (its start time and resumes so far)."""
    payload = {**fire_fields(s, job.schedule_id, job.scheduled_minute, job.due_at),
               "asset_id": job.asset_id, "status": result.status, "job_id": result.job_id,
               "run_id": result.run_id, "run_ids": result.run_ids, "onnx_uri": result.onnx_uri,
               "training_metrics": result.training_metrics, "eval_metrics": result.eval_metrics,
               "registry": result.registry, "error": result.error,
               "started_at": iso(job.started_at) if job.started_at else None, "finished_at": iso(now),
               "resumes": job.attempt}
    if reason:
        payload["reason"] = reason
    return ("fire.succeeded" if succeeded else "fire.failed"), payload


def interrupted(s: Schedule, job: JobRecord, result: TrainingJobResult, reason: Optional[str], run_id: str,
                later: bool) -> Event:
    """later: no runner will continue it now (this one is stopping); the next one to start will."""
    return "fire.interrupted", {
        **fire_fields(s, job.schedule_id, job.scheduled_minute, job.due_at),
        "asset_id": job.asset_id, "status": result.status, "run_id": result.run_id, "run_ids": result.run_ids,
        "reason": reason, "resume_run_id": run_id, "attempt": job.attempt + 1, "max_attempts": s.max_resumes,
        "detail": f"will continue training run {run_id} from its last checkpoint"
                  + (" when a runner next starts" if later else "")}


def schedule_failed(s: Schedule, error: str) -> Event:
    return "schedule.failed", {"schedule_id": s.schedule_id, "time_zone": s.cron.zone_name,
                               "cron": s.cron.expression, "error": error, "disabled": True}
