"""The training lock: a training holds an exclusive lock on `<results>/.<run id>.lock` while it runs.

The kernel drops it when the process dies, however it dies (SIGKILL included), so "is this run still
training?" has an exact answer on this machine: resume uses it not to adopt a live run, `reap` to close a
run whose process is gone. A leaf module, so both can use it.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator

from pipeline.config.errors import ConfigError


def lock_path(write_path: Path) -> Path:
    # Beside, not inside, the results directory: ML-Agents refuses to start a new run in a non-empty one.
    return write_path.parent / f".{write_path.name}.lock"


@contextlib.contextmanager
def training_lock(write_path: Path) -> Iterator[None]:
    write_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path(write_path), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            # POSIX record locks belong to this process only: the environment workers ML-Agents forks
            # do not inherit them, so the lock dies with the trainer even if a worker lingers.
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise ConfigError(f"{write_path} is being trained by another process right now") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.close(fd)


def is_training(write_path: Path) -> bool:
    lock = lock_path(write_path)
    if not lock.exists():
        return False
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)
