"""The scheduling loop: claim due fires, apply overlap/misfire policies and the concurrency cap, launch jobs,
record their outcomes, and stop gracefully.

Everything it decides is written to the claims database first (see claims.py), so any number of runners
on one file, restarted at any point, launch every fire at most once; policies then make that exactly once
or an explicit skip with a webhook saying why.
"""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
import uuid
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Optional, Protocol

from pipeline.launch.job_specs import RLTrainingConfig, TrainingJob, TrainingJobResult, UnityAssetSpec
from pipeline.redaction import redact_uri
from pipeline.scheduling import webhooks
from pipeline.scheduling.claims import ClaimStore, JobRecord
from pipeline.scheduling.cron import UTC, Fire
from pipeline.scheduling.launcher import alive, fire_job
from pipeline.scheduling.schedule import ON_TIME_SECONDS, Schedule

ON_STOP = ("cancel", "finish")
STOPPING = "runner stopping"  # cancel reasons starting so are interruptions, not decisions about the fire
STATES = {"FINISHED": "succeeded", "KILLED": "killed"}  # anything else: failed
MAX_LISTED = 50  # minutes listed in one misfire event; the count is always exact


class Launcher(Protocol):
    async def run(self, job: TrainingJob, schedule_id: str, minute: str,
                  on_spawn: Callable[[int, Optional[str]], None], cancel: asyncio.Event) -> TrainingJobResult: ...

    def recover(self, record: JobRecord, job: TrainingJob, why: str) -> Optional[TrainingJobResult]: ...

    def resume_point(self, record: JobRecord, result: TrainingJobResult) -> tuple[Optional[str], str]: ...


@dataclass
class RunnerSettings:
    state_path: Path
    max_concurrent_jobs: int = 4  # jobs (one asset of one fire) running at once, across all runners on the file
    webhook_url: Optional[str] = None
    webhook_secret: Optional[str] = None
    webhook_timeout: float = 10.0
    on_stop: str = "cancel"  # on SIGTERM/SIGINT: cancel running jobs (runs end KILLED) or let them finish
    heartbeat_seconds: float = 10.0
    lease_seconds: float = 60.0  # a runner silent this long is dead; its jobs are recovered
    stop_flush_seconds: float = 10.0  # how long a stopping runner keeps trying to deliver webhooks
    sqlite_synchronous: str = "FULL"  # FULL: claims survive power loss; NORMAL: only process crashes (faster)

    def __post_init__(self) -> None:
        from pipeline.config.ranges import Int, Num, check_value

        # Integers stay integers (1.5, True and None are refused), every time is a finite positive number.
        check_value("max_concurrent_jobs", self.max_concurrent_jobs, Int(1, 1024, 4))
        for key, example in (("webhook_timeout", 10.0), ("heartbeat_seconds", 10.0), ("lease_seconds", 60.0),
                             ("stop_flush_seconds", 10.0)):
            check_value(key, getattr(self, key), Num(0.0, 86_400.0, example, low_open=True))
        if self.on_stop not in ON_STOP:
            raise ValueError(f"on_stop {self.on_stop!r} is not a choice; use 'cancel' or 'finish'")
        if self.webhook_url is not None:
            webhooks.check_url(self.webhook_url)
        if self.lease_seconds <= 2 * self.heartbeat_seconds:
            raise ValueError("lease_seconds must be more than twice heartbeat_seconds")


def say(message: str) -> None:
    print(message, flush=True)  # one line per decision, promptly, even into a pipe or the journal


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


def humanize(seconds: float) -> str:
    s = int(max(0, seconds))
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return (f"{d}d" if d else "") + (f"{h}h" if h or d else "") + f"{m}m{s:02d}s"


def upcoming(schedules, now: datetime, count: int = 1,
             on_error: Optional[Callable[[Schedule, Exception], None]] = None) -> list[tuple[Schedule, Fire]]:
    """The next `count` fires across enabled schedules, soonest first. A schedule whose fires cannot be
    computed is left out (and handed to `on_error`): one bad schedule never hides the others."""
    out: list[tuple[Schedule, Fire]] = []
    for s in schedules:
        if s.enabled:
            try:
                it = s.cron.fires_after(now)
                out += [(s, next(it)) for _ in range(count)]
            except Exception as exc:  # noqa: BLE001 (croniter's failures have no common base)
                if on_error is not None:
                    on_error(s, exc)
    return sorted(out, key=lambda p: p[1].due_at)[:count]


class Runner:
    def __init__(self, schedules: list[Schedule], launcher: Launcher, settings: RunnerSettings,
                 clock: Callable[[], datetime] = utcnow, log: Callable[[str], None] = say):
        self.settings = settings
        self.launcher = launcher
        self.clock = clock
        # Every line goes to a journal: a job's error can quote the tracking URI (MLflow's errors do).
        self.log = lambda message: log(redact_uri(message))
        self.schedules: dict[str, Schedule] = {}
        for s in schedules:
            self.add(s)
        self.store = ClaimStore(settings.state_path, settings.sqlite_synchronous)
        self.runner_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.delivery = webhooks.WebhookDelivery(self.store, settings.webhook_url, settings.webhook_secret,
                                                 settings.webhook_timeout, clock=self.now, log=log)
        self.tasks: dict[tuple[str, str, str], asyncio.Task] = {}
        self.cancels: dict[tuple[str, str, str], asyncio.Event] = {}
        self.stopping = asyncio.Event()
        self._wake = asyncio.Event()  # a job ended: a queued job may start now rather than at the next tick
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._registered = False
        self._last_heartbeat = float("-inf")
        self._next_due: dict[str, float] = {}  # schedule -> when its next fire is due; nothing to claim before
        # When this runner came up: a fire due before it is a misfire (its misfire policy decides), however
        # recent; ON_TIME_SECONDS only excuses a runner that was up but ticked late. Lowered at the first
        # tick if the clock says that is earlier (a clock set back between construction and start).
        self.up_at = self.now()

    # -- setup ----------------------------------------------------------------------------------
    def add(self, schedule: Schedule) -> None:
        if schedule.schedule_id in self.schedules:
            raise ValueError(f"schedule {schedule.schedule_id!r} was already added; schedule ids must be unique")
        self.schedules[schedule.schedule_id] = schedule

    def now(self) -> float:
        return self.clock().timestamp()

    def next_fires(self, count: int = 1) -> list[tuple[Schedule, Fire]]:
        return upcoming(list(self.schedules.values()), self.clock(), count,
                        on_error=lambda s, exc: self._disable(s, exc, self.now()))

    def _disable(self, s: Schedule, exc: BaseException, now: float) -> None:
        """A schedule that fails at run time is reported (log line, `schedule.failed` webhook) and disabled in
        this runner; the other schedules keep running."""
        if not s.enabled:
            return
        s.enabled = False
        self._next_due.pop(s.schedule_id, None)
        error = redact_uri(f"{type(exc).__name__}: {exc}")[:2000]
        self.log(f"error: schedule {s.schedule_id} disabled: {error}; the other schedules keep running "
                 "(fix it and restart the runner)")
        try:
            with self.store.transaction():
                self._event("schedule.failed", {"schedule_id": s.schedule_id, "time_zone": s.cron.zone_name,
                                                "cron": s.cron.expression, "error": error, "disabled": True}, now)
        except Exception as report_exc:  # noqa: BLE001 (reporting must not take the runner down either)
            self.log(f"warning: could not queue the schedule.failed event of {s.schedule_id}: {report_exc}")
        self.delivery.wake.set()

    def print_next(self) -> None:
        nxt = self.next_fires(1)
        if not nxt:
            self.log("next: nothing (no enabled schedules)")
            return
        s, f = nxt[0]
        self.log(f"next: {s.schedule_id} at {f.scheduled_minute} {s.cron.zone_name} "
                 f"(in {humanize(f.due_at.timestamp() - self.now())}): " + s.describe().split("; trains ", 1)[1])

    def _event(self, event: str, payload: dict[str, Any], now: float) -> None:
        """Inside a transaction: the event is queued only if the state change commits."""
        if self.settings.webhook_url:
            webhooks.enqueue(self.store, event, {"runner_id": self.runner_id, **payload}, now)

    def _fire_payload(self, s: Schedule | None, schedule_id: str, minute: str, due_at: float) -> dict[str, Any]:
        return {"schedule_id": schedule_id, "scheduled_minute": minute,
                "time_zone": s.cron.zone_name if s else None, "due_at": iso(due_at)}

    # -- one pass -------------------------------------------------------------------------------
    async def tick(self) -> None:
        """Everything a runner does at one moment; run_forever calls it at every due time and heartbeat."""
        now = self.now()
        if not self._registered:
            self._register(now)
        if now - self._last_heartbeat >= self.settings.heartbeat_seconds / 2:
            with self.store.transaction():
                self.store.heartbeat(self.runner_id, now)
            self._last_heartbeat = now
        self._recover(now)
        if not self.stopping.is_set():
            for s in list(self.schedules.values()):
                if s.enabled:
                    try:
                        self._claim_due(s, now)
                    except Exception as exc:  # noqa: BLE001 (one bad schedule never takes the runner down)
                        self._disable(s, exc, now)
        self._apply_cancel_requests()
        if not self.stopping.is_set():
            self._start_pending(now)
        self.delivery.wake.set()

    def _register(self, now: float) -> None:
        self.up_at = min(self.up_at, now)
        self.store.register_runner(self.runner_id, now)
        self._registered = True
        others = [r for r in self.store.runners(alive_only=True)
                  if r.runner_id != self.runner_id and not self._is_dead(r, now)]
        for r in others:
            self.log(f"warning: another runner is active on {self.settings.state_path}: {r.runner_id} "
                     f"(heartbeat {iso(r.heartbeat_at)}); fires are still claimed once, by whichever is first")

    def _is_dead(self, r, now: float) -> bool:
        if r.stopped_at is not None:
            return True
        if r.host == socket.gethostname() and r.pid != os.getpid() and not alive(r.pid, None):
            return True
        return now - r.heartbeat_at > self.settings.lease_seconds

    # -- claiming -------------------------------------------------------------------------------
    def _claim_due(self, s: Schedule, now: float) -> None:
        if now < self._next_due.get(s.schedule_id, float("-inf")):
            return  # nothing can be due yet: no write, no lock (an idle runner barely touches the disk)
        claimed_any = False
        with self.store.transaction():
            mark = self.store.watermark(s.schedule_id)
            if mark is None:  # first sight of this schedule: the minute just gone still counts as on time
                mark = now - ON_TIME_SECONDS
            fires = s.cron.fires_between(datetime.fromtimestamp(mark, UTC), datetime.fromtimestamp(now, UTC))
            on_time = [f for f in fires
                       if f.due_at.timestamp() >= self.up_at and now - f.due_at.timestamp() <= ON_TIME_SECONDS]
            missed = [f for f in fires if f not in on_time]
            run = on_time
            if missed and not on_time and s.misfire == "run_once" \
                    and now - missed[-1].due_at.timestamp() <= s.misfire_grace_seconds:
                run, missed = [missed[-1]], missed[:-1]
            skipped = [f for f in missed if self.store.claim_fire(s.schedule_id, f.scheduled_minute,
                                                                  f.due_at.timestamp(), s.asset_ids, self.runner_id,
                                                                  now, skipped_reason="misfire")]
            if skipped:
                self._event("fire.skipped", {
                    **self._fire_payload(s, s.schedule_id, skipped[-1].scheduled_minute,
                                         skipped[-1].due_at.timestamp()),
                    "reason": "misfire", "assets": s.asset_ids, "missed": len(skipped),
                    "scheduled_minutes": [f.scheduled_minute for f in skipped][-MAX_LISTED:],
                    "detail": f"{len(skipped)} fire(s) were due while no runner was up; misfire policy "
                              f"{s.misfire!r}"}, now)
                self.log(f"{s.schedule_id}: skipped {len(skipped)} missed fire(s) "
                         f"({skipped[0].scheduled_minute} .. {skipped[-1].scheduled_minute}): "
                         f"misfire policy {s.misfire}")
            for f in run:
                claimed_any |= self._claim_one(s, f, now)
            self.store.set_watermark(s.schedule_id, now)
        self._next_due[s.schedule_id] = s.cron.next_fire(datetime.fromtimestamp(now, UTC)).due_at.timestamp()
        if claimed_any:
            self.print_next()

    def _claim_one(self, s: Schedule, f: Fire, now: float) -> bool:
        minute, due = f.scheduled_minute, f.due_at.timestamp()
        payload = {**self._fire_payload(s, s.schedule_id, minute, due), "assets": s.asset_ids}
        existing = self.store.fire(s.schedule_id, minute)
        if existing is not None:
            self._event("fire.skipped", {**payload, "reason": "duplicate",
                                         "detail": f"already claimed by {existing['claimed_by']} at "
                                                   f"{iso(existing['claimed_at'])}"}, now)
            self.log(f"{s.schedule_id} {minute}: duplicate, already claimed by {existing['claimed_by']}")
            return False
        active = self.store.active_fires(s.schedule_id)
        if active and s.overlap == "forbid":
            self.store.claim_fire(s.schedule_id, minute, due, s.asset_ids, self.runner_id, now,
                                  skipped_reason="overlap")
            self._event("fire.skipped", {**payload, "reason": "overlap", "running_fires": active,
                                         "detail": f"overlap policy forbid: {', '.join(active)} still running"}, now)
            self.log(f"{s.schedule_id} {minute}: skipped, {', '.join(active)} still running (overlap=forbid)")
            return True
        self.store.claim_fire(s.schedule_id, minute, due, s.asset_ids, self.runner_id, now)
        self.log(f"{s.schedule_id} {minute}: claimed ({len(s.asset_ids)} job(s))")
        if active and s.overlap == "replace":
            for old in active:
                self._replace(s, old, minute, now)
        return True

    def _replace(self, s: Schedule, old: str, new: str, now: float) -> None:
        reason = f"replaced by the {new} fire (overlap policy replace)"
        self.store.request_cancel(s.schedule_id, old, reason)
        for job in self.store.jobs("j.schedule_id=? AND j.scheduled_minute=? AND j.state='pending'",
                                   (s.schedule_id, old)):
            self.store.finish_job(job.key, "skipped", None, now)
            self._event("fire.skipped", {**self._fire_payload(s, s.schedule_id, old, job.due_at),
                                         "reason": "overlap", "asset_id": job.asset_id, "detail": reason}, now)
        self.log(f"{s.schedule_id} {old}: cancelling, {reason}")

    # -- launching ------------------------------------------------------------------------------
    def _start_pending(self, now: float) -> None:
        for job in self.store.jobs("j.state='pending'"):
            s = self.schedules.get(job.schedule_id)
            if s is None:
                continue  # another runner's schedule
            template = next((j for j in s.jobs if j.asset_spec.asset_id == job.asset_id), None)
            if template is None:
                continue
            with self.store.transaction():
                if self.store.running_count() >= self.settings.max_concurrent_jobs:
                    return
                if not self.store.start_job(job.key, self.runner_id, now):
                    continue
                resumed = {"resume_of": job.resume_run_id, "attempt": job.attempt} if job.resume_run_id else {}
                self._event("fire.started", {**self._fire_payload(s, s.schedule_id, job.scheduled_minute, job.due_at),
                                             "asset_id": job.asset_id, "job_id": self._job(s, job, template).job_id,
                                             "algorithm": template.rl_config.algorithm,
                                             "mode": template.rl_config.training_mode,
                                             "max_steps": template.rl_config.max_steps, **resumed}, now)
            if job.resume_run_id:
                self.log(f"{s.schedule_id} {job.scheduled_minute}: resuming {job.asset_id}, training run "
                         f"{job.resume_run_id} (resume {job.attempt} of at most {s.max_resumes})")
            else:
                self.log(f"{s.schedule_id} {job.scheduled_minute}: starting {job.asset_id} "
                         f"(late {humanize(now - job.due_at)})")
            self._launch(s, job, template)

    def _job(self, s: Schedule, job: JobRecord, template: TrainingJob) -> TrainingJob:
        return fire_job(template, s.schedule_id, job.scheduled_minute, s.cron.zone_name, job.resume_run_id)

    def _launch(self, s: Schedule, job: JobRecord, template: TrainingJob) -> None:
        cancel = asyncio.Event()
        self.cancels[job.key] = cancel
        self.tasks[job.key] = asyncio.get_running_loop().create_task(self._run_job(s, job, template, cancel))

    async def _run_job(self, s: Schedule, job: JobRecord, template: TrainingJob, cancel: asyncio.Event) -> None:
        concrete = self._job(s, job, template)
        try:
            result = await self.launcher.run(concrete, s.schedule_id, job.scheduled_minute,
                                             lambda pid, start: self._set_pid(job.key, pid, start), cancel)
        except Exception as exc:  # a launch problem fails this job, never the runner
            result = TrainingJobResult(concrete.job_id, "FAILED", job.asset_id, error=f"launch failed: {exc}")
            self.log(f"error: {concrete.job_id}: launch failed: {exc}")
        finally:
            self.tasks.pop(job.key, None)
            self.cancels.pop(job.key, None)
        self._finish(s, job, result, why=None)
        self._wake.set()

    def _set_pid(self, key, pid: int, start: Optional[str]) -> None:
        with self.store.transaction():
            self.store.set_pid(key, pid, start)

    def _finish(self, s: Optional[Schedule], job: JobRecord, result: TrainingJobResult, why: Optional[str]) -> None:
        if result.error:  # a launcher error can quote the tracking URI whole (MLflow's errors do)
            result = replace(result, error=redact_uri(result.error))
        why = redact_uri(why) if why else why
        now = self.now()
        state = STATES.get(result.status, "failed")
        current = self.store.job(job.key)
        cancel_reason = current.cancel_reason
        if state != "succeeded" and self._resume_later(s, current, result, why or cancel_reason or result.error, now):
            return
        with self.store.transaction():
            self.store.finish_job(job.key, state, asdict(result), now)
            payload = {**self._fire_payload(s, job.schedule_id, job.scheduled_minute, job.due_at),
                       "asset_id": job.asset_id, "status": result.status, "job_id": result.job_id,
                       "run_id": result.run_id, "run_ids": result.run_ids, "onnx_uri": result.onnx_uri,
                       "training_metrics": result.training_metrics, "eval_metrics": result.eval_metrics,
                       "registry": result.registry, "error": result.error,
                       "started_at": iso(current.started_at) if current.started_at else None, "finished_at": iso(now),
                       "resumes": current.attempt}
            reason = why or cancel_reason or (result.error if state != "succeeded" else None)
            if reason:
                payload["reason"] = reason
            self._event("fire.succeeded" if state == "succeeded" else "fire.failed", payload, now)
        self.log(f"{job.schedule_id} {job.scheduled_minute}: {job.asset_id} {result.status}"
                 + (f" run {result.run_id}" if result.run_id else "") + (f" ({reason})" if reason else ""))
        self.delivery.wake.set()

    def _resume_later(self, s: Optional[Schedule], job: JobRecord, result: TrainingJobResult, reason: Optional[str],
                      now: float) -> bool:
        """The schedule's resume policy: an interrupted job goes back to pending, to continue its own training
        run from its last checkpoint (here, or in the next runner on this file if this one is stopping)."""
        if s is None or not s.resume_interrupted or job.state != "started":
            return False
        if job.cancel_reason and not job.cancel_reason.startswith(STOPPING):
            return False  # cancelled on purpose (overlap policy replace): that is a decision, not an interruption
        where = f"{job.schedule_id} {job.scheduled_minute}: {job.asset_id}"
        if job.attempt >= s.max_resumes:
            self.log(f"{where} not resumed: already resumed {job.attempt} time(s), the schedule's maximum")
            return False
        run_id, why_not = self.launcher.resume_point(job, result)
        if run_id is None:
            self.log(f"{where} not resumed: {why_not}")
            return False
        with self.store.transaction():
            if not self.store.requeue_to_resume(job.key, run_id, asdict(result)):
                return False
            self._event("fire.interrupted", {
                **self._fire_payload(s, job.schedule_id, job.scheduled_minute, job.due_at),
                "asset_id": job.asset_id, "status": result.status, "run_id": result.run_id, "run_ids": result.run_ids,
                "reason": reason, "resume_run_id": run_id, "attempt": job.attempt + 1, "max_attempts": s.max_resumes,
                "detail": f"will continue training run {run_id} from its last checkpoint"
                          + (" when a runner next starts" if self.stopping.is_set() else "")}, now)
        self.log(f"{where} interrupted ({reason}); will continue training run {run_id} from its last checkpoint "
                 f"(resume {job.attempt + 1} of at most {s.max_resumes})")
        self._wake.set()
        self.delivery.wake.set()
        return True

    def _apply_cancel_requests(self) -> None:
        for job in self.store.jobs("j.state='started' AND j.owner=? AND j.cancel_reason IS NOT NULL",
                                   (self.runner_id,)):
            ev = self.cancels.get(job.key)
            if ev is not None and not ev.is_set():
                ev.set()

    # -- recovery -------------------------------------------------------------------------------
    def _recover(self, now: float) -> None:
        dead = {r.runner_id for r in self.store.runners() if r.runner_id != self.runner_id and self._is_dead(r, now)}
        if not dead:
            return
        marks = ",".join("?" * len(dead))
        for job in self.store.jobs(f"j.state='started' AND j.owner IN ({marks})", tuple(dead)):
            s = self.schedules.get(job.schedule_id)
            template = next((j for j in s.jobs if j.asset_spec.asset_id == job.asset_id), None) if s else None
            concrete = (self._job(s, job, template) if s and template else
                        TrainingJob(f"{job.schedule_id}-{job.asset_id}", UnityAssetSpec(job.asset_id, job.asset_id),
                                    RLTrainingConfig()))
            why = f"runner {job.owner} stopped while this job ran"
            result = self.launcher.recover(job, concrete, why)
            if result is None:
                continue  # its process is still finishing; look again next tick
            if result.status == "FINISHED":
                why = None
            self._finish(s, job, result, why)
        # Fires a dead runner claimed but never launched: launch now if still on time (per misfire policy).
        # (A job pending to resume an interrupted training is owed its continuation, however late.)
        for job in self.store.jobs(f"j.state='pending' AND j.resume_run_id IS NULL AND f.claimed_by IN ({marks})",
                                   tuple(dead)):
            s = self.schedules.get(job.schedule_id)
            if s is None:
                continue
            late = now - job.due_at
            if late <= ON_TIME_SECONDS or (s.misfire == "run_once" and late <= s.misfire_grace_seconds):
                continue
            with self.store.transaction():
                if self.store.job(job.key).state != "pending":
                    continue
                self.store.finish_job(job.key, "skipped", None, now)
                self._event("fire.skipped", {**self._fire_payload(s, s.schedule_id, job.scheduled_minute, job.due_at),
                                             "reason": "misfire", "asset_id": job.asset_id, "missed": 1,
                                             "detail": f"claimed by {job.claimed_by}, which stopped before launching "
                                                       f"it; {humanize(late)} late (misfire policy {s.misfire!r})"},
                            now)
            self.log(f"{s.schedule_id} {job.scheduled_minute}: {job.asset_id} skipped, its runner stopped before "
                     f"launching it and it is {humanize(late)} late")

    # -- running forever --------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop launching; running jobs are cancelled or finish per settings.on_stop. Thread-safe."""
        loop = self._loop
        if loop is not None and threading.current_thread() is not threading.main_thread() and loop.is_running():
            loop.call_soon_threadsafe(self.stopping.set)
        else:
            self.stopping.set()

    def _on_signal(self, signame: str) -> None:
        if self.stopping.is_set() and self.settings.on_stop == "finish":
            self.log(f"{signame} again: cancelling running jobs")
            self._cancel_all(f"{STOPPING} (second signal)")
            return
        self.log(f"{signame}: no new launches; " + ("cancelling" if self.settings.on_stop == "cancel" else
                                                   "waiting for") + f" {len(self.tasks)} running job(s)")
        self.stop()

    def _cancel_all(self, reason: str) -> None:
        with self.store.transaction():
            for key in list(self.cancels):
                self.store.db.execute("UPDATE jobs SET cancel_reason=COALESCE(cancel_reason, ?) WHERE schedule_id=? "
                                      "AND scheduled_minute=? AND asset_id=?", (reason, *key))
        for ev in self.cancels.values():
            ev.set()

    def _seconds_to_next(self) -> float:
        nxt = self.next_fires(1)
        wait = self.settings.heartbeat_seconds
        if nxt:
            wait = min(wait, nxt[0][1].due_at.timestamp() - self.now())
        return max(0.05, wait)

    async def run_forever(self) -> None:
        self._loop = asyncio.get_running_loop()
        handled = []
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._loop.add_signal_handler(sig, self._on_signal, sig.name)
                handled.append(sig)
        delivery_stop = asyncio.Event()
        delivery = self._loop.create_task(self.delivery.run(delivery_stop))
        self.log(f"runner {self.runner_id}: {len(self.schedules)} schedule(s), state {self.settings.state_path}, "
                 f"max {self.settings.max_concurrent_jobs} concurrent job(s), on stop: {self.settings.on_stop}, "
                 f"webhook: {webhooks.shown(self.settings.webhook_url) if self.settings.webhook_url else 'none'}")
        for s in self.schedules.values():
            self.log(("  " if s.enabled else "  (disabled) ") + s.describe())
        self.print_next()
        try:
            while not self.stopping.is_set():
                self._wake.clear()
                await self.tick()
                waits = [asyncio.ensure_future(self.stopping.wait()), asyncio.ensure_future(self._wake.wait())]
                await asyncio.wait(waits, timeout=self._seconds_to_next(), return_when=asyncio.FIRST_COMPLETED)
                for w in waits:
                    w.cancel()
            await self._shutdown()
        finally:
            delivery_stop.set()
            self.delivery.wake.set()
            try:
                await asyncio.wait_for(self.delivery.deliver_due(), timeout=self.settings.stop_flush_seconds)
            except (asyncio.TimeoutError, Exception):
                pass
            delivery.cancel()
            await asyncio.gather(delivery, return_exceptions=True)
            left = self.delivery.pending() if self.settings.webhook_url else 0
            with self.store.transaction():
                self.store.runner_stopped(self.runner_id, self.now())
            for sig in handled:
                self._loop.remove_signal_handler(sig)
            self.log(f"runner {self.runner_id} stopped" + (f"; {left} webhook event(s) kept for the next start"
                                                           if left else ""))

    async def _shutdown(self) -> None:
        if self.settings.on_stop == "cancel" and self.tasks:
            self._cancel_all(f"{STOPPING} (on_stop=cancel)")
        while self.tasks:
            await asyncio.wait(list(self.tasks.values()), timeout=self.settings.heartbeat_seconds)
            with self.store.transaction():  # still alive: nobody may take these jobs over
                self.store.heartbeat(self.runner_id, self.now())
