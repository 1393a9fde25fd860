"""A real PostgreSQL server and a team MLflow server on it, started by the test session itself.

Fixtures (session-scoped; registered in tests/conftest.py, so any test can ask for them by name):

- `postgres_server` -> `LocalPostgres` (pipeline/tracking/local_postgres.py): PostgreSQL from the machine's
  packages, its data in a fresh temp dir, on a free 127.0.0.1 port, running as the unprivileged `postgres`
  user when the tests run as root. Started once per session (~1-2 s), stopped and deleted at the end.
  `.url(db)` is `postgresql://postgres@127.0.0.1:<port>/<db>`; `.create_database(name)` makes one.
  `fresh_database(pg, prefix)` returns the URL of a new, empty database with a unique name: one per test
  keeps tests apart on the shared server.
- `team_server` -> `TeamServer`: `mlflow server --backend-store-uri <postgres_server>/team_mlflow
  --artifacts-destination <temp>/artifacts` on a free port (one worker). `.url` is the tracking URI
  clients use (http://127.0.0.1:<port>); artifacts travel through it (`mlflow-artifacts:`), so a client
  needs no access to `.artifacts`. Every test that logs to it should use its own experiment name
  (`unique_name("exp")`) to stay apart from the others in the session.

Both skip, saying why, when the PostgreSQL server binaries are not installed (`make postgres` installs them).

    from tests.support.postgres import fresh_database, unique_name   # helpers
    def test_x(team_server, monkeypatch):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", team_server.url)
"""
from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.tracking.local_postgres import LocalPostgres, PostgresUnavailable
from pipeline.tracking.tracking_server import TrackingServer


@dataclass(frozen=True)
class TeamServer:
    url: str  # tracking URI for clients: http://127.0.0.1:<port>
    backend_uri: str  # the PostgreSQL database behind it
    artifacts: Path  # --artifacts-destination (the server's side; clients go through `url`)
    log_path: Path


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def fresh_database(pg: LocalPostgres, prefix: str = "test") -> str:
    """A new empty database on `pg`; its URL."""
    return pg.create_database(unique_name(prefix))


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[LocalPostgres]:
    # Not pytest's tmp dirs: they are 0700 root, and PostgreSQL runs as another user that must enter it.
    root = Path(tempfile.mkdtemp(prefix="pytest-postgres-"))
    root.chmod(0o711)
    try:
        pg = LocalPostgres(root / "data", log_path=root / "postgres.log")
    except PostgresUnavailable as exc:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"no PostgreSQL to test with: {exc}")
    try:
        yield pg.start()
    finally:
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def team_server(postgres_server: LocalPostgres) -> Iterator[TeamServer]:
    root = Path(tempfile.mkdtemp(prefix="pytest-team-server-"))
    backend = postgres_server.create_database("team_mlflow")
    server = TrackingServer(backend, log_path=root / "mlflow-server.log", artifacts_destination=root / "artifacts")
    try:
        server.start(timeout=180)
        yield TeamServer(server.url, backend, root / "artifacts", root / "mlflow-server.log")
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
