"""A PostgreSQL server of our own in a directory, on the loopback address: for trying a team store on one box
and for the tests. A real team points at its own PostgreSQL instead (any `postgresql://user:pass@host/db`).

It uses the server binaries of the machine's PostgreSQL packages (Debian: `apt-get install postgresql`).
PostgreSQL refuses to run as root, so as root the server runs as the unprivileged `postgres` user (what
`runuser -u postgres --` would do, done by the child process itself), and owns its data directory.
Connections from 127.0.0.1 are trusted: the server is for this machine's own use, never exposed.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self needs Python 3.11; conda.yaml has 3.10

SUPERUSER = "postgres"


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL server binaries (or an unprivileged user to run them as root) are missing."""


def server_bin_dir() -> Path:
    """Where `initdb` and `postgres` are: on PATH, or Debian's /usr/lib/postgresql/<version>/bin (newest)."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(os.path.realpath(on_path)).parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    raise PostgresUnavailable("PostgreSQL server binaries (initdb, postgres) are not installed; "
                              "on Debian/Ubuntu: apt-get install postgresql (or `make postgres`)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalPostgres:
    """`postgres` serving `data_dir` on 127.0.0.1:`port`; `start()` creates the cluster on first use.

    `url(db)` is the SQLAlchemy/psycopg URI of a database on it (`postgresql://postgres@127.0.0.1:<port>/<db>`),
    `create_database(name)` makes one if missing. `stop()` shuts the server down (fast shutdown).
    """

    def __init__(self, data_dir: str | os.PathLike, port: int | None = None, log_path: Path | None = None):
        self.data_dir = Path(data_dir).resolve()
        self.port = port or free_port()
        self.log_path = log_path or self.data_dir.parent / f"{self.data_dir.name}.log"
        self.proc: subprocess.Popen | None = None
        self.bin = server_bin_dir()
        self._user = self._unprivileged_user()

    @staticmethod
    def _unprivileged_user() -> pwd.struct_passwd | None:
        if os.geteuid() != 0:
            return None  # already unprivileged: run as ourselves
        try:
            return pwd.getpwnam(SUPERUSER)
        except KeyError:
            raise PostgresUnavailable("running as root and there is no 'postgres' user to run PostgreSQL as "
                                      "(PostgreSQL refuses to run as root); install the postgresql package "
                                      "or run as an unprivileged user") from None

    def _as_server_user(self) -> dict:
        if self._user is None:
            return {}
        return {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}

    def _give(self, path: Path) -> None:
        if self._user is not None:
            os.chown(path, self._user.pw_uid, self._user.pw_gid)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def start(self, timeout: float = 60.0) -> LocalPostgres:
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        self.log_path.touch()
        self._give(self.log_path)
        cmd = [str(self.bin / "postgres"), "-D", str(self.data_dir), "-p", str(self.port),
               "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.data_dir}",
               "-c", "max_connections=200", "-c", "fsync=on"]
        with open(self.log_path, "ab") as log:
            # Its own session: a Ctrl-C meant for the caller does not reach it; stop() shuts it down cleanly.
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                         cwd=self.data_dir, **self._as_server_user())
        self._wait_ready(timeout)
        return self

    def _initdb(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        self._give(self.data_dir)
        self._check_reachable()
        cmd = [str(self.bin / "initdb"), "-D", str(self.data_dir), "-U", SUPERUSER, "--auth=trust",
               "-E", "UTF8", "--no-locale", "--no-sync"]
        done = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=self.data_dir,
                              **self._as_server_user())
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed for {self.data_dir}: {(done.stderr or done.stdout).strip()[-2000:]}")

    def _check_reachable(self) -> None:
        """The server's user must be able to walk down to its data directory (mkdtemp's and pytest's are 0700)."""
        if self._user is None:
            return
        for parent in reversed(self.data_dir.parents):
            st = parent.stat()
            bit = 0o100 if st.st_uid == self._user.pw_uid else 0o010 if st.st_gid == self._user.pw_gid else 0o001
            if not st.st_mode & bit:
                raise PostgresUnavailable(f"PostgreSQL runs as user {SUPERUSER!r}, which cannot enter {parent} "
                                          f"(mode {st.st_mode & 0o777:o}); put the data directory somewhere it can "
                                          "reach, e.g. under /tmp or the repository")

    def _wait_ready(self, timeout: float) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited with code {self.proc.returncode} before accepting "
                                   f"connections; see {self.log_path}:\n{self._log_tail()}")
            try:
                psycopg.connect(self.url(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"postgres did not accept connections on 127.0.0.1:{self.port} within "
                                       f"{timeout:.0f}s; see {self.log_path}") from None
                time.sleep(0.1)

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-15:])
        except OSError:
            return ""

    def create_database(self, name: str) -> str:
        """Create database `name` if it does not exist; returns its URL."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url(), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)  # fast shutdown: abort sessions, checkpoint, exit
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGQUIT)  # immediate shutdown
            self.proc.wait(timeout=10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
