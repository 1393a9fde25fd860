"""The scheduler's durable records: which fires were claimed, which jobs run, which runners are alive.

One database, shared by every runner pointed at it: a sqlite file (the embedded default, one machine)
or a PostgreSQL database (`postgresql://user@host/db`, runners on several machines). A fire is claimed by
inserting its (schedule_id, scheduled_minute) row inside a transaction that holds the database's write
lock (sqlite: `BEGIN IMMEDIATE`; PostgreSQL: a transaction-scoped advisory lock, and the insert is
`ON CONFLICT DO NOTHING`), so across threads, processes and machines exactly one claimer wins and the
claim is committed before anything is launched.

A fire's jobs (one per asset) move pending -> started -> succeeded | failed | killed, or
pending -> skipped; a schedule that resumes interrupted fires moves an interrupted job started -> pending
again, with the training run to continue (`resume_run_id`) and its attempt counted. `started` is written
*before* the child process is spawned: a job found `started` after a crash is never launched again as a
new training (at most once); its outcome is recovered from MLflow instead.
Concurrency is the number of `started` rows, not an in-memory guess.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# A state given as one of these is a PostgreSQL database (psycopg 3), anything else a sqlite file path.
DATABASE_URL_PREFIXES = ("postgresql://", "postgres://", "postgresql+psycopg://")

SCHEMA = """
CREATE TABLE IF NOT EXISTS fires (
    schedule_id      TEXT NOT NULL,
    scheduled_minute TEXT NOT NULL,            -- local wall-clock minute in the schedule's zone
    due_at           REAL NOT NULL,            -- unix time
    claimed_at       REAL NOT NULL,
    claimed_by       TEXT NOT NULL,            -- runner id
    state            TEXT NOT NULL,            -- active | done | skipped
    reason           TEXT,                     -- why skipped (misfire, overlap) or replaced
    PRIMARY KEY (schedule_id, scheduled_minute)
);
CREATE TABLE IF NOT EXISTS jobs (
    schedule_id      TEXT NOT NULL,
    scheduled_minute TEXT NOT NULL,
    asset_id         TEXT NOT NULL,
    position         INTEGER NOT NULL,         -- launch order within the fire
    state            TEXT NOT NULL,            -- pending | started | succeeded | failed | killed | skipped
    owner            TEXT,                     -- runner that started it
    pid              INTEGER,
    pid_start        TEXT,                     -- /proc start time, so a reused pid is not mistaken for ours
    started_at       REAL,
    finished_at      REAL,
    cancel_reason    TEXT,                     -- set to ask the owner to cancel (overlap policy replace)
    result           TEXT,                     -- JSON TrainingJobResult
    attempt          INTEGER NOT NULL DEFAULT 0,  -- resumes so far after interruptions
    resume_run_id    TEXT,                     -- pending again to continue this interrupted training run
    PRIMARY KEY (schedule_id, scheduled_minute, asset_id),
    FOREIGN KEY (schedule_id, scheduled_minute) REFERENCES fires (schedule_id, scheduled_minute)
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state);
CREATE TABLE IF NOT EXISTS watermarks (
    schedule_id      TEXT PRIMARY KEY,
    checked_through  REAL NOT NULL              -- every fire due at or before this was dealt with
);
CREATE TABLE IF NOT EXISTS runners (
    runner_id        TEXT PRIMARY KEY,
    host             TEXT NOT NULL,
    pid              INTEGER NOT NULL,
    started_at       REAL NOT NULL,
    heartbeat_at     REAL NOT NULL,
    stopped_at       REAL
);
CREATE TABLE IF NOT EXISTS outbox (
    delivery_id      TEXT PRIMARY KEY,          -- the same on every retry, so receivers can de-duplicate
    event            TEXT NOT NULL,
    body             BLOB NOT NULL,             -- the exact bytes signed and sent
    created_at       REAL NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  REAL NOT NULL,
    lease_until      REAL,
    delivered_at     REAL,
    gave_up_at       REAL,
    last_error       TEXT
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (delivered_at, gave_up_at, next_attempt_at);
"""

TERMINAL = ("succeeded", "failed", "killed", "skipped")


def is_database_url(state: str | os.PathLike) -> bool:
    return isinstance(state, str) and state.startswith(DATABASE_URL_PREFIXES)


def state_location(value: str | os.PathLike) -> str | Path:
    """`--state` as given: a database URL stays a string (a Path would fold its `//`), anything else a Path."""
    return value if is_database_url(value) else Path(value)


def results_dir_for(state: str | os.PathLike, default: Path) -> Path:
    """Where a runner keeps its jobs' result files: beside a sqlite state file, else `default` (on this machine)."""
    if is_database_url(state):
        return default
    state = Path(state)
    return state.parent / f"{state.stem}-results"


@dataclass
class JobRecord:
    schedule_id: str
    scheduled_minute: str
    asset_id: str
    position: int
    state: str
    owner: str | None
    pid: int | None
    pid_start: str | None
    started_at: float | None
    finished_at: float | None
    cancel_reason: str | None
    result: str | None
    attempt: int = 0
    resume_run_id: str | None = None
    due_at: float = 0.0
    claimed_by: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        return self.schedule_id, self.scheduled_minute, self.asset_id

    def result_dict(self) -> dict[str, Any]:
        return json.loads(self.result) if self.result else {}


@dataclass
class RunnerRecord:
    runner_id: str
    host: str
    pid: int
    started_at: float
    heartbeat_at: float
    stopped_at: float | None


class ClaimStore:
    """All reads and writes of the scheduler's database. One instance per runner (per connection).

    `path` is a sqlite file or a PostgreSQL URL (see `is_database_url`); `db.execute(sql, args)` takes the
    same sqlite-flavoured SQL on both and returns rows readable by index, by name and as `dict(row)`."""

    def __init__(self, path: str | os.PathLike, synchronous: str = "FULL"):
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be FULL or NORMAL, got {synchronous!r}")
        if is_database_url(path):
            self.path = path
            self.db = PostgresConnection(path)  # durability is the server's (its fsync / synchronous_commit)
            with self.transaction():  # under the lock: runners starting together on a new database
                self.db.executescript(PG_SCHEMA)
                self._migrate()
            return
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, taking the write lock up front so
        # two runners' read-check-write sequences never interleave.
        self.db = sqlite3.connect(str(self.path), timeout=60, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed claim survives power loss. NORMAL (WAL) survives a killed process but may
        # forget the last commits on power loss; the runner's own crash-safety does not depend on it.
        self.db.execute(f"PRAGMA synchronous={synchronous}")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.executescript(SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """Columns added since a state file was created (CREATE TABLE IF NOT EXISTS leaves old tables as they were)."""
        if isinstance(self.db, PostgresConnection):
            have = self.db.columns("jobs")
        else:
            have = {row[1] for row in self.db.execute("PRAGMA table_info(jobs)")}
        for column, decl in (("attempt", "INTEGER NOT NULL DEFAULT 0"), ("resume_run_id", "TEXT")):
            if column not in have:
                self.db.execute(f"ALTER TABLE jobs ADD COLUMN {column} {decl}")

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection | PostgresConnection]:
        if isinstance(self.db, PostgresConnection):
            with self.db.transaction() as db:
                yield db
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        else:
            self.db.execute("COMMIT")

    # -- fires ---------------------------------------------------------------------------------
    def claim_fire(self, schedule_id: str, minute: str, due_at: float, assets: list[str], runner_id: str,
                   now: float, skipped_reason: str | None = None) -> bool:
        """Record the fire; False if it was already claimed. Call inside `transaction()`."""
        cur = self.db.execute(
            "INSERT OR IGNORE INTO fires VALUES (?, ?, ?, ?, ?, ?, ?)",
            (schedule_id, minute, due_at, now, runner_id, "skipped" if skipped_reason else "active", skipped_reason))
        if cur.rowcount != 1:
            return False
        self.db.executemany(
            "INSERT INTO jobs (schedule_id, scheduled_minute, asset_id, position, state, finished_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(schedule_id, minute, a, i, "skipped" if skipped_reason else "pending", now if skipped_reason else None)
             for i, a in enumerate(assets)])
        return True

    def fire(self, schedule_id: str, minute: str) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM fires WHERE schedule_id=? AND scheduled_minute=?",
                               (schedule_id, minute)).fetchone()

    def active_fires(self, schedule_id: str) -> list[str]:
        return [r[0] for r in self.db.execute(
            "SELECT scheduled_minute FROM fires WHERE schedule_id=? AND state='active' ORDER BY due_at",
            (schedule_id,))]

    def fires(self, schedule_id: str | None = None) -> list[sqlite3.Row]:
        sql, args = "SELECT * FROM fires", ()
        if schedule_id:
            sql, args = sql + " WHERE schedule_id=?", (schedule_id,)
        return self.db.execute(sql + " ORDER BY due_at, schedule_id", args).fetchall()

    def _close_fire_if_done(self, schedule_id: str, minute: str) -> bool:
        left = self.db.execute("SELECT COUNT(*) FROM jobs WHERE schedule_id=? AND scheduled_minute=? AND state "
                               "NOT IN ('succeeded','failed','killed','skipped')", (schedule_id, minute)).fetchone()[0]
        if left:
            return False
        cur = self.db.execute("UPDATE fires SET state='done' WHERE schedule_id=? AND scheduled_minute=? "
                              "AND state='active'", (schedule_id, minute))
        return cur.rowcount == 1

    # -- jobs ----------------------------------------------------------------------------------
    _JOB_SELECT = ("SELECT j.*, f.due_at AS due_at, f.claimed_by AS claimed_by FROM jobs j "
                   "JOIN fires f USING (schedule_id, scheduled_minute)")

    def jobs(self, where: str = "TRUE", args: tuple = ()) -> list[JobRecord]:
        rows = self.db.execute(f"{self._JOB_SELECT} WHERE {where} ORDER BY f.due_at, j.schedule_id, j.position",
                               args).fetchall()
        return [JobRecord(**dict(r)) for r in rows]

    def job(self, key: tuple[str, str, str]) -> JobRecord:
        return self.jobs("j.schedule_id=? AND j.scheduled_minute=? AND j.asset_id=?", key)[0]

    def running_count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM jobs WHERE state='started'").fetchone()[0]

    def start_job(self, key: tuple[str, str, str], runner_id: str, now: float) -> bool:
        """pending -> started, written before the launch. False if someone else started or skipped it."""
        cur = self.db.execute("UPDATE jobs SET state='started', owner=?, started_at=? WHERE schedule_id=? AND "
                              "scheduled_minute=? AND asset_id=? AND state='pending'", (runner_id, now, *key))
        return cur.rowcount == 1

    def set_pid(self, key: tuple[str, str, str], pid: int, pid_start: str | None) -> None:
        self.db.execute("UPDATE jobs SET pid=?, pid_start=? WHERE schedule_id=? AND scheduled_minute=? "
                        "AND asset_id=?", (pid, pid_start, *key))

    def finish_job(self, key: tuple[str, str, str], state: str, result: dict | None, now: float) -> bool:
        """Record a job's end (call inside `transaction()`); True if this closed its whole fire."""
        assert state in TERMINAL, state
        self.db.execute("UPDATE jobs SET state=?, result=?, finished_at=? WHERE schedule_id=? AND "
                        "scheduled_minute=? AND asset_id=? AND state IN ('pending','started')",
                        (state, json.dumps(result, default=str) if result is not None else None, now, *key))
        return self._close_fire_if_done(key[0], key[1])

    def requeue_to_resume(self, key: tuple[str, str, str], run_id: str, result: dict) -> bool:
        """started -> pending, to be launched again continuing training run `run_id` (call inside `transaction()`)."""
        cur = self.db.execute(
            "UPDATE jobs SET state='pending', owner=NULL, pid=NULL, pid_start=NULL, started_at=NULL, "
            "cancel_reason=NULL, result=?, attempt=attempt+1, resume_run_id=? WHERE schedule_id=? "
            "AND scheduled_minute=? AND asset_id=? AND state='started'",
            (json.dumps(result, default=str), run_id, *key))
        return cur.rowcount == 1

    def pending_jobs(self, schedule_id: str | None = None, minute: str | None = None) -> list[JobRecord]:
        """Jobs waiting to be launched (of one fire, if given), in launch order."""
        if schedule_id is None:
            return self.jobs("j.state='pending'")
        return self.jobs("j.schedule_id=? AND j.scheduled_minute=? AND j.state='pending'", (schedule_id, minute))

    def cancel_requested(self, owner: str) -> list[JobRecord]:
        """Running jobs of `owner` that someone asked to cancel (overlap policy replace, a stopping runner)."""
        return self.jobs("j.state='started' AND j.owner=? AND j.cancel_reason IS NOT NULL", (owner,))

    def started_by(self, owners: set[str]) -> list[JobRecord]:
        """Jobs `owners` started and never recorded the end of."""
        marks = ",".join("?" * len(owners))
        return self.jobs(f"j.state='started' AND j.owner IN ({marks})", tuple(sorted(owners)))

    def claimed_unlaunched(self, claimers: set[str]) -> list[JobRecord]:
        """Jobs of fires `claimers` claimed and never launched (a job pending to resume is not one: it is owed)."""
        marks = ",".join("?" * len(claimers))
        return self.jobs(f"j.state='pending' AND j.resume_run_id IS NULL AND f.claimed_by IN ({marks})",
                         tuple(sorted(claimers)))

    def request_cancel_job(self, key: tuple[str, str, str], reason: str) -> None:
        """Ask the owner of one running job to cancel it; an earlier reason is kept (call inside `transaction()`)."""
        self.db.execute("UPDATE jobs SET cancel_reason=COALESCE(cancel_reason, ?) WHERE schedule_id=? "
                        "AND scheduled_minute=? AND asset_id=?", (reason, *key))

    def request_cancel(self, schedule_id: str, minute: str, reason: str) -> None:
        self.db.execute("UPDATE jobs SET cancel_reason=? WHERE schedule_id=? AND scheduled_minute=? "
                        "AND state='started' AND cancel_reason IS NULL", (reason, schedule_id, minute))
        self.db.execute("UPDATE fires SET reason=? WHERE schedule_id=? AND scheduled_minute=?",
                        (reason, schedule_id, minute))

    # -- watermarks ----------------------------------------------------------------------------
    def watermark(self, schedule_id: str) -> float | None:
        row = self.db.execute("SELECT checked_through FROM watermarks WHERE schedule_id=?", (schedule_id,)).fetchone()
        return row[0] if row else None

    def set_watermark(self, schedule_id: str, t: float) -> None:
        self.db.execute("INSERT INTO watermarks VALUES (?, ?) ON CONFLICT(schedule_id) DO UPDATE SET "
                        "checked_through=MAX(watermarks.checked_through, excluded.checked_through)", (schedule_id, t))

    # -- webhook outbox ------------------------------------------------------------------------
    def add_event(self, delivery_id: str, event: str, body: bytes, now: float) -> None:
        """Queue one webhook event; call inside the transaction that makes it true."""
        self.db.execute("INSERT INTO outbox (delivery_id, event, body, created_at, next_attempt_at) "
                        "VALUES (?, ?, ?, ?, ?)", (delivery_id, event, body, now, now))

    def take_event(self, now: float, lease_seconds: float) -> tuple[str, str, bytes, int] | None:
        """The oldest event due now, leased so a second runner on the same database does not send it too:
        (delivery_id, event, body, attempts)."""
        with self.transaction() as db:
            row = db.execute("SELECT delivery_id, event, body, attempts FROM outbox WHERE delivered_at IS NULL AND "
                             "gave_up_at IS NULL AND next_attempt_at <= ? AND (lease_until IS NULL OR lease_until < ?) "
                             "ORDER BY created_at LIMIT 1", (now, now)).fetchone()
            if row is None:
                return None
            db.execute("UPDATE outbox SET lease_until=? WHERE delivery_id=?", (now + lease_seconds, row[0]))
        return row[0], row[1], bytes(row[2]), row[3]

    def event_delivered(self, delivery_id: str, attempts: int, now: float) -> None:
        with self.transaction() as db:
            db.execute("UPDATE outbox SET delivered_at=?, attempts=?, lease_until=NULL, last_error=NULL "
                       "WHERE delivery_id=?", (now, attempts, delivery_id))

    def event_failed(self, delivery_id: str, attempts: int, error: str, retry_at: float | None, now: float) -> None:
        """A failed attempt: retried at `retry_at`, or given up (kept for inspection) when it is None."""
        with self.transaction() as db:
            if retry_at is None:
                db.execute("UPDATE outbox SET gave_up_at=?, attempts=?, lease_until=NULL, last_error=? "
                           "WHERE delivery_id=?", (now, attempts, error, delivery_id))
            else:
                db.execute("UPDATE outbox SET next_attempt_at=?, attempts=?, lease_until=NULL, last_error=? "
                           "WHERE delivery_id=?", (retry_at, attempts, error, delivery_id))

    def next_event_at(self) -> float | None:
        """When the next undelivered event may be sent (its retry time, or when its lease ends)."""
        row = self.db.execute("SELECT MIN(MAX(next_attempt_at, COALESCE(lease_until, 0))) FROM outbox "
                              "WHERE delivered_at IS NULL AND gave_up_at IS NULL").fetchone()
        return row[0]

    def undelivered_events(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL AND "
                               "gave_up_at IS NULL").fetchone()[0]

    # -- runners -------------------------------------------------------------------------------
    def register_runner(self, runner_id: str, now: float) -> None:
        with self.transaction():
            self.db.execute("INSERT INTO runners VALUES (?, ?, ?, ?, ?, NULL)",
                            (runner_id, socket.gethostname(), os.getpid(), now, now))

    def heartbeat(self, runner_id: str, now: float) -> None:
        self.db.execute("UPDATE runners SET heartbeat_at=? WHERE runner_id=?", (now, runner_id))

    def runner_stopped(self, runner_id: str, now: float) -> None:
        self.db.execute("UPDATE runners SET stopped_at=? WHERE runner_id=?", (now, runner_id))

    def runners(self, alive_only: bool = False) -> list[RunnerRecord]:
        sql = "SELECT * FROM runners" + (" WHERE stopped_at IS NULL" if alive_only else "")
        return [RunnerRecord(**dict(r)) for r in self.db.execute(sql)]


# -- PostgreSQL ------------------------------------------------------------------------------------
# The same tables; only the column types sqlite does not share change (REAL is 4 bytes in PostgreSQL).
PG_SCHEMA = re.sub(r"\bBLOB\b", "BYTEA", re.sub(r"\bREAL\b", "DOUBLE PRECISION", SCHEMA))
# Every write transaction of every runner on the database takes this lock first: claims are decided one
# transaction at a time, as sqlite's BEGIN IMMEDIATE does (and schema creation never races).
ADVISORY_LOCK = 0x6D6C6F70735F6331  # "mlops_c1"
_SCALAR_MINMAX = {"MAX": "GREATEST", "MIN": "LEAST"}


class Row:
    """A result row as sqlite3.Row reads: row[0], row["name"], dict(row)."""

    __slots__ = ("_names", "_values")

    def __init__(self, names: tuple[str, ...], values: tuple):
        self._names, self._values = names, values

    def keys(self) -> list[str]:
        return list(self._names)

    def __getitem__(self, key):
        return self._values[key if isinstance(key, int) else self._names.index(key)]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Row({dict(zip(self._names, self._values))!r})"


def _row_factory(cursor):
    names = tuple(c.name for c in cursor.description or ())
    return lambda values: Row(names, values)


def to_postgres(sql: str) -> str:
    """The sqlite-flavoured SQL of this package in PostgreSQL's dialect: `?` parameters, `INSERT OR IGNORE`,
    and sqlite's two-argument scalar MAX()/MIN() (GREATEST/LEAST); aggregate MAX/MIN stay."""
    sql = sql.replace("%", "%%").replace("?", "%s")
    if re.match(r"\s*INSERT OR IGNORE INTO\b", sql, re.IGNORECASE):
        sql = re.sub(r"INSERT OR IGNORE INTO", "INSERT INTO", sql, count=1, flags=re.IGNORECASE)
        sql += " ON CONFLICT DO NOTHING"
    out, i = [], 0
    for m in re.finditer(r"\b(MAX|MIN)\(", sql, re.IGNORECASE):
        depth, top_comma, j = 0, False, m.end()
        while j < len(sql):
            c = sql[j]
            if c == "(":
                depth += 1
            elif c == ")":
                if depth == 0:
                    break
                depth -= 1
            elif c == "," and depth == 0:
                top_comma = True
            j += 1
        if top_comma:
            out += [sql[i:m.start()], _SCALAR_MINMAX[m.group(1).upper()], "("]
            i = m.end()
    return "".join(out) + sql[i:]


class PostgresConnection:
    """What ClaimStore and its callers use of a sqlite3 connection, on PostgreSQL (psycopg 3, autocommit
    outside `transaction()`, like the sqlite connection's isolation_level=None)."""

    def __init__(self, url: str):
        self.url = url.replace("postgresql+psycopg://", "postgresql://", 1)
        self.conn = self._connect()

    def _connect(self):
        import psycopg

        from pipeline.config.errors import ServiceUnavailable
        from pipeline.redaction import redact_uri

        try:
            # Keepalives: a runner idles for hours between fires; a dead peer is noticed, not waited on forever.
            return psycopg.connect(self.url, autocommit=True, row_factory=_row_factory, connect_timeout=30,
                                   keepalives=1, keepalives_idle=60, keepalives_interval=10, keepalives_count=5)
        except psycopg.Error as exc:
            reason = " ".join(str(exc).split())
            message = (f"state {self.url}: cannot open the claims database ({reason}); check the host, port, "
                       "database name and credentials in the URL")
            raise ServiceUnavailable(redact_uri(message)) from None

    def _usable(self) -> None:
        if self.conn.broken or self.conn.closed:
            self.conn = self._connect()  # the server restarted or the network dropped since the last statement

    def execute(self, sql: str, args: tuple | list = ()):
        import psycopg

        in_transaction = self.conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE
        try:
            return self.conn.execute(to_postgres(sql), tuple(args))
        except psycopg.OperationalError:
            if in_transaction or not self.conn.broken:
                raise
            self._usable()  # one retry on a fresh connection: a lone statement is its own transaction
            return self.conn.execute(to_postgres(sql), tuple(args))

    def executemany(self, sql: str, rows) -> None:
        with self.conn.cursor() as cur:
            cur.executemany(to_postgres(sql), [tuple(r) for r in rows])

    def executescript(self, script: str) -> None:
        self.conn.execute(script)  # no parameters: several statements in one go

    @contextlib.contextmanager
    def transaction(self) -> Iterator[PostgresConnection]:
        self._usable()
        with self.conn.transaction():
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK,))
            yield self

    def columns(self, table: str) -> set[str]:
        return {r[0] for r in self.conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = %s", (table,))}

    def close(self) -> None:
        self.conn.close()
