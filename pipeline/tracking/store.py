"""Which MLflow store runs go to: $MLFLOW_TRACKING_URI, else an embedded sqlite store in the repo root.

A brand-new store is created once, under a lock: MLflow creates the tables and runs its migrations on
first connect without any lock of its own, so two processes starting at once on a new store used to fail
one of them ("table experiments already exists", "duplicate column name"). The lock is a file beside a
sqlite store, or a PostgreSQL advisory lock for a `postgresql://` store used directly. After that, a store
this process has seen is not checked again, and a store another process finished creating is recognised
by its stamped schema version (one read, no migration, no lock).

A store that does not answer (a team server that is down, a database that refuses connections) is one
`ServiceUnavailable` line before any run is made, instead of MLflow retrying for minutes and then printing
a traceback.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

import mlflow

from pipeline.config.errors import ServiceUnavailable
from pipeline.config.places import chosen_store
from pipeline.paths import REPO_ROOT
from pipeline.redaction import redact_uri

DEFAULT_URI = f"sqlite:///{REPO_ROOT / 'mlflow.db'}"
SQLITE = "sqlite:///"
POSTGRES = ("postgresql://", "postgresql+psycopg://", "postgres://")
HTTP = ("http://", "https://")
PROBE_TIMEOUT_S = 10.0
_PG_INIT_LOCK = 0x6D6C666C6F775F69  # advisory lock key: "mlflow_i"

_ready: set[str] = set()  # stores this process has made sure exist


def configure(tracking_uri: str | None = None) -> str:
    uri = chosen_store(tracking_uri)[0] or DEFAULT_URI
    mlflow.set_tracking_uri(uri)
    prepare(uri)
    return uri


def prepare(uri: str) -> None:
    """Make sure the store at `uri` exists with MLflow's schema, creating it once if several processes race."""
    if uri in _ready:
        return
    if uri.startswith(HTTP):
        _probe_server(uri)
        _ready.add(uri)
        return
    if uri.startswith(POSTGRES):
        _prepare_postgres(uri)
        return
    if not uri.startswith(SQLITE) or uri == f"{SQLITE}:memory:":
        return
    path = Path(uri[len(SQLITE):])
    if not _created(path):
        from filelock import FileLock

        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{path}.init-lock"):
            if not _created(path):
                # MLflow's own store for this URI (cached by MLflow): it creates tables and migrates now,
                # under our lock, and later calls in this process reuse it.
                from mlflow.tracking._tracking_service.utils import _get_store

                _get_store(uri)
    _ready.add(uri)


def _prepare_postgres(uri: str) -> None:
    import psycopg

    try:
        conn = psycopg.connect(uri.replace("postgresql+psycopg://", "postgresql://", 1), autocommit=True,
                               connect_timeout=30)
    except psycopg.Error as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
        raise ServiceUnavailable(redact_uri(
            f"tracking store {uri}: cannot open the database (connection failed: {reason}); check the host, "
            "port, database name and credentials in MLFLOW_TRACKING_URI")) from None
    with conn:
        if not _pg_created(conn):
            conn.execute("SELECT pg_advisory_lock(%s)", (_PG_INIT_LOCK,))
            try:
                if not _pg_created(conn):
                    from mlflow.tracking._tracking_service.utils import _get_store

                    _get_store(uri)
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (_PG_INIT_LOCK,))
    _ready.add(uri)


def _probe_server(uri: str) -> None:
    """Any HTTP answer (even 401 or 404) means the server is there; only no answer at all is refused."""
    import requests

    try:
        requests.get(f"{uri.rstrip('/')}/health", timeout=PROBE_TIMEOUT_S)
    except requests.Timeout:
        reason = f"no answer within {PROBE_TIMEOUT_S:.0f} s"
    except requests.ConnectionError as exc:
        reason = "connection refused" if "refused" in str(exc).lower() else "cannot connect"
    else:
        return
    raise ServiceUnavailable(redact_uri(
        f"tracking server {uri}: {reason}; start it (e.g. `make team-server`) or set MLFLOW_TRACKING_URI "
        "to a running one"))


def _pg_created(conn) -> bool:
    # PostgreSQL's DDL is transactional: the version row appears when the whole migration commits.
    if conn.execute("SELECT to_regclass('alembic_version')").fetchone()[0] is None:
        return False
    return conn.execute("SELECT version_num FROM alembic_version").fetchone() is not None


def _created(path: Path) -> bool:
    """True once a store's creation has committed: MLflow stamps the schema version in the same transaction
    as its migrations, so a store being created by another process right now reads as not created."""
    if not path.exists():
        return False
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=1)
        try:
            return con.execute("SELECT version_num FROM alembic_version").fetchone() is not None
        finally:
            con.close()
    except sqlite3.Error:  # no such table yet, or locked by a creator mid-migration
        return False


def experiment_id(name: str) -> str:
    """The experiment's id, creating it (with artifacts beside the embedded store) when missing."""
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    uri = mlflow.get_tracking_uri()
    if uri.startswith(SQLITE):
        # Artifacts beside the database file, not in whatever directory the process started in.
        location = (Path(uri[len(SQLITE):]).resolve().parent / "mlruns").as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except mlflow.exceptions.MlflowException:
        # Another process created it between our lookup and create.
        return client.get_experiment_by_name(name).experiment_id
