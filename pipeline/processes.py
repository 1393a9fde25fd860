"""Process helpers shared by the training workers and the Unity player workers: a leaf module."""
from __future__ import annotations

import ctypes
import os
import signal
from pathlib import Path

PR_SET_PDEATHSIG = 1


def die_with_parent(signum: int = signal.SIGKILL, parent: int | None = None) -> None:
    """Get `signum` (default SIGKILL: exit) when the process that started this one dies, however it dies.
    parent: its pid, to tell that it died before we asked (else a parent of pid 1, an orphan's, is taken for that).

    Called in each ML-Agents environment worker, whose forked copy of the trainer's pipe end means it never sees
    EOF after a SIGKILL of the trainer (an orphan holding memory and, for Unity, a player); and in a trainer
    process (training/trainer_process.py), which would otherwise go on training into a results directory that
    a resumed run may be writing by then.
    """
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signum)
    except (OSError, AttributeError):  # not Linux: fall back to ML-Agents' own shutdown / the closed pipe
        return
    if os.getppid() != parent if parent is not None else os.getppid() == 1:  # it died before we asked
        os._exit(1)


def process_start(pid: int) -> str | None:
    """The kernel's start time of a pid: with the pid, identifies one process even if the pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]
