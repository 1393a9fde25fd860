"""Process helpers shared by the training workers and the Unity player workers: a leaf module."""
from __future__ import annotations

import ctypes
import os
import signal
from pathlib import Path

PR_SET_PDEATHSIG = 1


def die_with_trainer() -> None:
    """Called in each ML-Agents environment worker: exit when the trainer process dies.

    A forked worker keeps its own copy of the trainer's pipe end, so after a SIGKILL of the trainer
    it never sees EOF and would wait forever (an orphan holding memory and, for Unity, a player).
    """
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: fall back to ML-Agents' own shutdown
        return
    if os.getppid() == 1:  # the trainer died before we asked
        os._exit(1)


def process_start(pid: int) -> str | None:
    """The kernel's start time of a pid: with the pid, identifies one process even if the pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]
