"""gRPC ports for ML-Agents environments that never clash between processes on one machine.

The trainer is the gRPC server and the player connects to it, so each environment worker needs a
port of its own. `mlagents-learn` uses `base_port + worker_id` and fails with "worker in use" when a
second training on the machine picks the same base port. Here a port is reserved by an exclusive
`flock` on `<lock dir>/<port>.lock` *and* a successful probe bind; the lock is held for as long as the
process that took it lives, and the kernel drops it when that process ends (even on SIGKILL), so
reservations never go stale. A port that an unrelated program grabs between the probe and gRPC's
bind is the caller's to retry (see `environment.PlayerEnvFactory`).
"""
from __future__ import annotations

import errno
import fcntl
import os
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

LOCK_DIR_ENV = "MLAGENTS_PORT_LOCK_DIR"
FIRST_PORT, LAST_PORT = 1024, 65535
SEARCH_SPAN = 2000  # ports tried above the preferred one before giving up


class NoFreePort(RuntimeError):
    pass


@dataclass
class PortReservation:
    port: int
    _fd: Optional[int]

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = None


def lock_dir() -> Path:
    path = Path(os.environ.get(LOCK_DIR_ENV) or Path(tempfile.gettempdir()) / "mlagents-ports")
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True)
        try:
            path.chmod(0o1777)  # shared by every user's trainings, like /tmp itself
        except OSError:
            pass
    return path


def reserve_port(preferred: int, skip: int = 0) -> PortReservation:
    """The first port at or above `preferred` (after `skip` candidates) that no one holds or listens on."""
    directory = lock_dir()
    for port in _candidates(preferred, skip):
        fd = _try_lock(directory / f"{port}.lock")
        if fd is None:
            continue  # another training on this machine holds it
        if _bindable(port):
            return PortReservation(port, fd)
        os.close(fd)
    raise NoFreePort(f"no free TCP port in {preferred}..{preferred + SEARCH_SPAN} for ML-Agents' gRPC server "
                     f"(set env.base_port to another range)")


def _candidates(preferred: int, skip: int) -> Iterator[int]:
    start = min(max(preferred, FIRST_PORT), LAST_PORT)
    for offset in range(skip, SEARCH_SPAN):
        port = start + offset
        if port > LAST_PORT:
            port = FIRST_PORT + (port - LAST_PORT - 1)
        yield port


def _try_lock(path: Path) -> Optional[int]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return None
        raise
    # Descriptors are inherited by fork (the env worker) but not by exec (the player): close_fds.
    os.set_inheritable(fd, False)
    return fd


def _bindable(port: int) -> bool:
    """What ML-Agents' RpcCommunicator.check_port tests, on every address gRPC's `[::]` bind will take."""
    families = [(socket.AF_INET, "0.0.0.0"), (socket.AF_INET, "127.0.0.1")]
    if socket.has_ipv6:
        families.append((socket.AF_INET6, "::"))
    for family, host in families:
        try:
            s = socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            continue  # no IPv6 on this host
        try:
            # SO_REUSEADDR: a port in TIME_WAIT from a finished training is free; a listening one is not.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                continue
            return False
        finally:
            s.close()
    return True
