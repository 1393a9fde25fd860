"""The scheduling loop: wakes at every due time and heartbeat, claims due fires, launches jobs, records their
outcomes, and stops gracefully on SIGTERM/SIGINT.

It wires the parts that decide and record: what a fire does is fire policy (policy.py, pure functions),
what it says is the webhook contract (events.py), what it writes is claims queries (claims.py). Everything
it decides is written to the claims database first, so any number of runners on one database, restarted at
any point, launch every fire at most once; policies make that exactly once or an explicit skip with a
webhook saying why.

A launcher that can (`prestart`: the local child process) starts a fire's jobs `prestart_seconds` before the
minute, so the job's process has read its config, imported its libraries and opened the tracking store when
its fire is due; it is told to go only once the fire is claimed and the job started in the claims database,
and is released without creating any run otherwise.
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

from pipeline.config.errors import ConfigError
from pipeline.launch.job_specs import RLTrainingConfig, TrainingJob, TrainingJobResult, UnityAssetSpec
from pipeline.redaction import redact_uri
from pipeline.scheduling import events, policy, webhooks
from pipeline.scheduling.claims import ClaimStore, JobRecord
from pipeline.scheduling.cron import UTC, Fire
from pipeline.scheduling.events import iso
from pipeline.scheduling.launcher import alive, fire_job
from pipeline.scheduling.policy import STOPPING, humanize, upcoming
from pipeline.scheduling.schedule import Schedule

__all__ = ["ON_STOP", "STOPPING", "Launcher", "Runner", "RunnerSettings", "humanize", "iso", "say", "upcoming",
           "utcnow"]

ON_STOP = ("cancel", "finish")


class Launcher(Protocol):
    async def run(self, job: TrainingJob, schedule_id: str, minute: str,
                  on_spawn: Callable[[int, Optional[str]], None], cancel: asyncio.Event) -> TrainingJobResult: ...

    def recover(self, record: JobRecord, job: TrainingJob, why: str) -> Optional[TrainingJobResult]: ...

    def resume_point(self, record: JobRecord, result: TrainingJobResult) -> tuple[Optional[str], str]: ...

    # Optional, for launchers whose jobs can start ahead of their minute (PipelineLauncher, local processes):
    #   async def prestart(self, job, schedule_id, minute) -> handle | None
    #   async def release(self, handle, why) -> None            the job will not run: no run is created
    #   and run(..., prestarted=handle) goes on with the process `prestart` started.


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
    # Start a fire's job processes this long before its minute (0: at the minute), so its MLflow run is created
    # right at the minute rather than after the process has imported its libraries: 45 s covers getting ready
    # on a loaded 2-core box (25-35 s measured, bench/results.md); each process logs how long it took.
    prestart_seconds: float = 45.0

    def __post_init__(self) -> None:
        from pipeline.config.ranges import Int, Num, check_value

        # Integers stay integers (1.5, True and None are refused), every time is a finite positive number.
        check_value("max_concurrent_jobs", self.max_concurrent_jobs, Int(1, 1024, 4))
        for key, example in (("webhook_timeout", 10.0), ("heartbeat_seconds", 10.0), ("lease_seconds", 60.0),
                             ("stop_flush_seconds", 10.0)):
            check_value(key, getattr(self, key), Num(0.0, 86_400.0, example, low_open=True))
        check_value("prestart_seconds", self.prestart_seconds, Num(0.0, 50.0, 45.0))
        if self.on_stop not in ON_STOP:
            raise ConfigError(f"on_stop {self.on_stop!r} is not a choice; use 'cancel' or 'finish'")
        if self.webhook_url is not None:
            webhooks.check_url(self.webhook_url)
        if self.lease_seconds <= 2 * self.heartbeat_seconds:
            raise ConfigError("lease_seconds must be more than twice heartbeat_seconds")


def say(message: str) -> None:
    print(message, flush=True)  # one line per decision, promptly, even into a pipe or the journal


def utcnow() -> datetime:
    return datetime.now(UTC)


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
        self.events = events.Events(self.store, self.runner_id, enabled=bool(settings.webhook_url))
        self.delivery = webhooks.WebhookDelivery(self.store, settings.webhook_url, settings.webhook_secret,
                                                 settings.webhook_timeout, clock=self.now, log=log)
        self.tasks: dict[tuple[str, str, str], asyncio.Task] = {}
        self.cancels: dict[tuple[str, str, str], asyncio.Event] = {}
        # Jobs whose process started ahead of their fire: key -> (the launcher's handle, due_at).
        self.prestarted: dict[tuple[str, str, str], tuple[Any, float]] = {}
        self._releases: set[asyncio.Task] = set()
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
            raise ConfigError(f"schedule {schedule.schedule_id!r} was already added; schedule ids must be unique")
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
                self.events.emit(events.schedule_failed(s, error), now)
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
            await self._prestart(now)
        self._release_prestarted(now)
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
        gone = r.stopped_at is None and r.host == socket.gethostname() and r.pid != os.getpid() \
            and not alive(r.pid, None)
        return policy.runner_dead(r.stopped_at, r.heartbeat_at, now, self.settings.lease_seconds, gone)

    # -- claiming -------------------------------------------------------------------------------
    def _claim_due(self, s: Schedule, now: float) -> None:
        if now < self._next_due.get(s.schedule_id, float("-inf")):
            return  # nothing can be due yet: no write, no lock (an idle runner barely touches the disk)
        claimed_any = False
        with self.store.transaction():
            mark = policy.first_mark(self.store.watermark(s.schedule_id), now)
            fires = s.cron.fires_between(datetime.fromtimestamp(mark, UTC), datetime.fromtimestamp(now, UTC))
            run, missed = policy.split_due(fires, now, self.up_at, s.misfire, s.misfire_grace_seconds)
            skipped = [f for f in missed if self.store.claim_fire(s.schedule_id, f.scheduled_minute,
                                                                  f.due_at.timestamp(), s.asset_ids, self.runner_id,
                                                                  now, skipped_reason="misfire")]
            if skipped:
                self.events.emit(events.misfire_skipped(s, skipped), now)
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
        existing = self.store.fire(s.schedule_id, minute)
        if existing is not None:
            self.events.emit(events.duplicate_skipped(s, f, existing["claimed_by"], existing["claimed_at"]), now)
            self.log(f"{s.schedule_id} {minute}: duplicate, already claimed by {existing['claimed_by']}")
            return False
        running = self.store.active_fires(s.schedule_id)
        action = policy.on_overlap(s.overlap, running)
        if action == "skip":
            self.store.claim_fire(s.schedule_id, minute, due, s.asset_ids, self.runner_id, now,
                                  skipped_reason="overlap")
            self.events.emit(events.overlap_skipped(s, f, running), now)
            self.log(f"{s.schedule_id} {minute}: skipped, {', '.join(running)} still running (overlap=forbid)")
            return True
        self.store.claim_fire(s.schedule_id, minute, due, s.asset_ids, self.runner_id, now)
        self.log(f"{s.schedule_id} {minute}: claimed ({len(s.asset_ids)} job(s))")
        if action == "replace":
            for old in running:
                self._replace(s, old, minute, now)
        return True

    def _replace(self, s: Schedule, old: str, new: str, now: float) -> None:
        reason = f"replaced by the {new} fire (overlap policy replace)"
        self.store.request_cancel(s.schedule_id, old, reason)
        for job in self.store.pending_jobs(s.schedule_id, old):
            self.store.finish_job(job.key, "skipped", None, now)
            self.events.emit(events.replaced_skipped(s, job, reason), now)
        self.log(f"{s.schedule_id} {old}: cancelling, {reason}")

    # -- launching ------------------------------------------------------------------------------
    def _template(self, s: Optional[Schedule], asset_id: str) -> Optional[TrainingJob]:
        return next((j for j in s.jobs if j.asset_spec.asset_id == asset_id), None) if s else None

    def _start_pending(self, now: float) -> None:
        for job in self.store.pending_jobs():
            s = self.schedules.get(job.schedule_id)
            if s is None:
                continue  # another runner's schedule
            template = self._template(s, job.asset_id)
            if template is None:
                continue
            with self.store.transaction():
                if self.store.running_count() >= self.settings.max_concurrent_jobs:
                    return
                if not self.store.start_job(job.key, self.runner_id, now):
                    continue
                self.events.emit(events.started(s, job, self._job(s, job, template).job_id, template.rl_config),
                                 now)
            if job.resume_run_id:
                self.log(f"{s.schedule_id} {job.scheduled_minute}: resuming {job.asset_id}, training run "
                         f"{job.resume_run_id} (resume {job.attempt} of at most {s.max_resumes})")
            else:
                self.log(f"{s.schedule_id} {job.scheduled_minute}: starting {job.asset_id} "
                         f"(late {humanize(now - job.due_at)})")
            self._launch(s, job, template)

    def _job(self, s: Schedule, job: JobRecord, template: TrainingJob) -> TrainingJob:
        return fire_job(template, s.schedule_id, job.scheduled_minute, s.cron.zone_name, job.resume_run_id,
                        job.attempt)

    def _launch(self, s: Schedule, job: JobRecord, template: TrainingJob) -> None:
        cancel = asyncio.Event()
        self.cancels[job.key] = cancel
        held = self.prestarted.pop(job.key, (None, 0.0))[0]
        self.tasks[job.key] = asyncio.get_running_loop().create_task(self._run_job(s, job, template, cancel, held))

    async def _run_job(self, s: Schedule, job: JobRecord, template: TrainingJob, cancel: asyncio.Event,
                       held: Any = None) -> None:
        concrete = self._job(s, job, template)
        try:
            extra = {"prestarted": held} if held is not None else {}
            result = await self.launcher.run(concrete, s.schedule_id, job.scheduled_minute,
                                             lambda pid, start: self._set_pid(job.key, pid, start), cancel, **extra)
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

    # -- starting ahead of the minute -------------------------------------------------------------
    @property
    def _lead(self) -> float:
        return self.settings.prestart_seconds if hasattr(self.launcher, "prestart") else 0.0

    async def _prestart(self, now: float) -> None:
        """Start the processes of fires due within the lead, as many as the concurrency cap leaves room for.
        Nothing is claimed: at the minute the claims database decides, and a process whose job does not start
        then is released before it creates any run."""
        if self._lead <= 0:
            return
        soon = policy.to_prestart(policy.next_of_each(list(self.schedules.values()), self.clock()), now, self._lead)
        for s, f in soon:
            if self.store.fire(s.schedule_id, f.scheduled_minute) is not None or \
                    policy.on_overlap(s.overlap, self.store.active_fires(s.schedule_id)) == "skip":
                continue
            for template in s.jobs:
                key = (s.schedule_id, f.scheduled_minute, template.asset_spec.asset_id)
                if key in self.prestarted:
                    continue
                if self.store.running_count() + len(self.prestarted) >= self.settings.max_concurrent_jobs:
                    return
                job = fire_job(template, s.schedule_id, f.scheduled_minute, s.cron.zone_name)
                try:
                    held = await self.launcher.prestart(job, s.schedule_id, f.scheduled_minute)
                except Exception as exc:  # noqa: BLE001 (it will start at the minute instead)
                    self.log(f"warning: {job.job_id}: could not start ahead of its minute: {exc}")
                    continue
                if held is not None:
                    self.prestarted[key] = (held, f.due_at.timestamp())
                    self.log(f"{s.schedule_id} {f.scheduled_minute}: {key[2]} getting ready "
                             f"(due in {humanize(f.due_at.timestamp() - now)})")

    def _release_prestarted(self, now: float, why: str = "its fire did not start it here") -> None:
        """Release the processes started ahead of a fire that is due now (or of every fire, when stopping) and
        did not start them: their fire was claimed elsewhere, skipped, or is waiting for a free slot."""
        for key, (held, due_at) in list(self.prestarted.items()):
            if due_at <= now or self.stopping.is_set():
                del self.prestarted[key]
                self.log(f"{key[0]} {key[1]}: {key[2]} released before creating any run "
                         f"({'runner stopping' if self.stopping.is_set() else why})")
                task = asyncio.get_running_loop().create_task(self.launcher.release(held, why))
                self._releases.add(task)
                task.add_done_callback(self._releases.discard)

    # -- ending ---------------------------------------------------------------------------------
    def _finish(self, s: Optional[Schedule], job: JobRecord, result: TrainingJobResult, why: Optional[str]) -> None:
        if result.error:  # a launcher error can quote the tracking URI whole (MLflow's errors do)
            result = replace(result, error=redact_uri(result.error))
        why = redact_uri(why) if why else why
        now = self.now()
        state = policy.end_state(result.status)
        current = self.store.job(job.key)
        cancel_reason = current.cancel_reason
        if state != "succeeded" and self._resume_later(s, current, result, why or cancel_reason or result.error, now):
            return
        reason = why or cancel_reason or (result.error if state != "succeeded" else None)
        with self.store.transaction():
            self.store.finish_job(job.key, state, asdict(result), now)
            self.events.emit(events.ended(s, current, result, state == "succeeded", reason, now), now)
        self.log(f"{job.schedule_id} {job.scheduled_minute}: {job.asset_id} {result.status}"
                 + (f" run {result.run_id}" if result.run_id else "") + (f" ({reason})" if reason else ""))
        self.delivery.wake.set()

    def _resume_later(self, s: Optional[Schedule], job: JobRecord, result: TrainingJobResult, reason: Optional[str],
                      now: float) -> bool:
        """The schedule's resume policy: an interrupted job goes back to pending, to continue its own training
        run from its last checkpoint (here, or in the next runner on this file if this one is stopping)."""
        if s is None:
            return False
        where = f"{job.schedule_id} {job.scheduled_minute}: {job.asset_id}"
        why_not = policy.why_not_resumed(s.resume_interrupted, job.state, job.cancel_reason, job.attempt,
                                         s.max_resumes)
        if why_not is None:
            run_id, why_not = self.launcher.resume_point(job, result)
        else:
            run_id = None
        if run_id is None:
            if why_not:
                self.log(f"{where} not resumed: {why_not}")
            return False
        with self.store.transaction():
            if not self.store.requeue_to_resume(job.key, run_id, asdict(result)):
                return False
            self.events.emit(events.interrupted(s, job, result, reason, run_id, later=self.stopping.is_set()), now)
        self.log(f"{where} interrupted ({reason}); will continue training run {run_id} from its last checkpoint "
                 f"(resume {job.attempt + 1} of at most {s.max_resumes})")
        self._wake.set()
        self.delivery.wake.set()
        return True

    def _apply_cancel_requests(self) -> None:
        for job in self.store.cancel_requested(self.runner_id):
            ev = self.cancels.get(job.key)
            if ev is not None and not ev.is_set():
                ev.set()

    # -- recovery -------------------------------------------------------------------------------
    def _recover(self, now: float) -> None:
        dead = {r.runner_id for r in self.store.runners() if r.runner_id != self.runner_id and self._is_dead(r, now)}
        if not dead:
            return
        for job in self.store.started_by(dead):
            s = self.schedules.get(job.schedule_id)
            template = self._template(s, job.asset_id)
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
        for job in self.store.claimed_unlaunched(dead):
            s = self.schedules.get(job.schedule_id)
            if s is None:
                continue
            late = now - job.due_at
            if policy.still_launchable(late, s.misfire, s.misfire_grace_seconds):
                continue
            with self.store.transaction():
                if self.store.job(job.key).state != "pending":
                    continue
                self.store.finish_job(job.key, "skipped", None, now)
                self.events.emit(events.unlaunched_skipped(s, job, late), now)
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
                self.store.request_cancel_job(key, reason)
        for ev in self.cancels.values():
            ev.set()

    def _seconds_to_next(self) -> float:
        nxt = self.next_fires(1)
        return policy.wake_in(self.now(), nxt[0][1].due_at.timestamp() if nxt else None,
                              self.settings.heartbeat_seconds, self._lead)

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
        self._release_prestarted(self.now())
        if self.settings.on_stop == "cancel" and self.tasks:
            self._cancel_all(f"{STOPPING} (on_stop=cancel)")
        while self.tasks:
            await asyncio.wait(list(self.tasks.values()), timeout=self.settings.heartbeat_seconds)
            with self.store.transaction():  # still alive: nobody may take these jobs over
                self.store.heartbeat(self.runner_id, self.now())
        if self._releases:
            await asyncio.gather(*self._releases, return_exceptions=True)
