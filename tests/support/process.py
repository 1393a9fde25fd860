"""Running the product the way users do: as a child process of this interpreter, from the repository."""
from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


def command_line(pid: int) -> str:
    """A process's command line, its words joined by spaces ("" once it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _stat(pid: int) -> list[str]:
    """/proc/<pid>/stat after the command name: [state, parent pid, process group, ...] ([] once it is gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def alive(pid: int) -> bool:
    """Running, not gone and not a zombie waiting for its parent."""
    fields = _stat(pid)
    return bool(fields) and fields[0] != "Z"


def parent_of(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[1]) if fields else None


def child_env(**extra: str) -> dict[str, str]:
    """This environment for a child process: its own pipeline run (no MLFLOW_RUN_ID), the venv's tools first."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_RUN_ID"}
    env["PATH"] = f"{Path(PYTHON).parent}:{env.get('PATH', '')}"
    env.update(extra)
    return env
