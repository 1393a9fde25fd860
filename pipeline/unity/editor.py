"""Build a player from a Unity project with the editor in batch mode, the way CI machines do.

    <editor> -batchmode -nographics -quit -projectPath <project> -buildTarget <target>
             (-executeMethod <method> -customBuildPath <output> | -buildLinux64Player <output>) -logFile <log>

The editor's exit code and the errors in its log become the result; the build is skipped when the
project's inputs (Assets/, Packages/ manifests, ProjectSettings/, the build settings) hash the same
as the last successful build's and its player is still there, byte for byte.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Optional

from pipeline.config.errors import ConfigError

if TYPE_CHECKING:
    from pipeline.unity.settings import BuildConfig

STAMP_NAME = ".pipeline-build.json"  # next to the player: the inputs hash it was built from
INPUT_DIRS = ("Assets", "ProjectSettings")
INPUT_FILES = ("Packages/manifest.json", "Packages/packages-lock.json")
PLAYER_FLAGS = {"StandaloneLinux64": "-buildLinux64Player", "StandaloneWindows64": "-buildWindows64Player",
                "StandaloneOSX": "-buildOSXUniversalPlayer"}
# Lines of an editor log that say why a build failed (C# compiler errors, build pipeline failures, exceptions).
ERROR_LINE = re.compile(r"error CS\d+|Error building Player|BuildFailedException|Build Failed|"
                        r"Aborting batchmode due to failure|Scripts have compiler errors|"
                        r"^\w+(\.\w+)*Exception: |No valid Unity Editor license", re.M)


class BuildFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class EditorBuild:
    player: Path
    log: Optional[Path]  # the editor log (None when skipped)
    inputs_hash: str
    player_hash: str
    skipped: bool
    seconds: float


def check_settings(build: BuildConfig) -> tuple[Path, Path]:
    """The project and editor, or a ConfigError naming the build.* key; before any run is created."""
    project = Path(build.unity_project).expanduser()
    if not (project / "Assets").is_dir() or not (project / "ProjectSettings").is_dir():
        raise ConfigError(f"build.unity_project={build.unity_project}: not a Unity project "
                          "(it needs Assets/ and ProjectSettings/)")
    if not build.editor_path:
        raise ConfigError("build.editor_path must name the Unity editor executable to build "
                          f"{build.unity_project} (e.g. ~/Unity/Hub/Editor/<version>/Editor/Unity)")
    editor = Path(build.editor_path).expanduser()
    if not editor.is_file() or not os.access(editor, os.X_OK):
        problem = "not executable" if editor.is_file() else "no such file"
        raise ConfigError(f"build.editor_path={build.editor_path}: {problem}; give the Unity editor executable")
    if build.timeout_s <= 0:
        raise ConfigError(f"build.timeout_s must be > 0, got {build.timeout_s}")
    if not build.execute_method and build.build_target not in PLAYER_FLAGS:
        raise ConfigError(f"build.build_target={build.build_target} needs build.execute_method (the editor "
                          f"has built-in player builds only for {', '.join(PLAYER_FLAGS)})")
    return project.absolute(), editor.absolute()


def inputs_hash(project: Path, build: BuildConfig) -> str:
    h = hashlib.sha256()
    settings = {k: getattr(build, k) for k in ("build_target", "execute_method", "extra_args")}
    h.update(json.dumps(settings, sort_keys=True).encode())
    files = [f for d in INPUT_DIRS for f in sorted((project / d).rglob("*")) if f.is_file()]
    files += [project / f for f in INPUT_FILES if (project / f).is_file()]
    _hash_files(h, files, project)
    return h.hexdigest()


def player_hash(player: Path) -> str:
    """Content hash of the player: every file of the build directory (executable, <name>_Data/, UnityPlayer.so)."""
    h = hashlib.sha256()
    root = player.parent
    files = [f for f in sorted(root.rglob("*")) if f.is_file() and f.name != STAMP_NAME and not f.name.endswith(".log")]
    if player.is_file() and player not in files:
        files.append(player)
    _hash_files(h, files, root)
    return h.hexdigest()


def _hash_files(h, files: Iterable[Path], root: Path) -> None:
    for f in files:
        h.update(str(f.relative_to(root)).encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        h.update(b"\0")


def editor_command(editor: Path, project: Path, build: BuildConfig, output: Path, log: Path) -> list[str]:
    cmd = [str(editor), "-batchmode", "-nographics", "-quit", "-projectPath", str(project),
           "-buildTarget", build.build_target]
    if build.execute_method:
        cmd += ["-executeMethod", build.execute_method, "-customBuildPath", str(output)]
    else:
        cmd += [PLAYER_FLAGS[build.build_target], str(output)]
    return cmd + ["-logFile", str(log)] + list(build.extra_args or [])


def build_player(build: BuildConfig, output: Path, log: Path) -> EditorBuild:
    project, editor = check_settings(build)
    started = time.monotonic()
    digest = inputs_hash(project, build)
    stamp = output.parent / STAMP_NAME
    if not build.force and output.exists() and stamp.is_file():
        previous = json.loads(stamp.read_text())
        if previous.get("inputs_hash") == digest and previous.get("player_hash") == player_hash(output):
            return EditorBuild(output, None, digest, previous["player_hash"], True, time.monotonic() - started)
    output.parent.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = editor_command(editor, project, build, output, log)
    code = run_with_timeout(cmd, build.timeout_s)
    text = log.read_text(errors="replace") if log.is_file() else ""
    errors = [line.strip() for line in text.splitlines() if ERROR_LINE.search(line)]
    where = f"the Unity editor building {project} for {build.build_target}"
    if code is None:
        raise BuildFailed(f"{where} did not finish within build.timeout_s={build.timeout_s}s and was stopped; "
                          f"editor log: {log}" + _first(errors))
    if code != 0 or errors and not output.exists():
        raise BuildFailed(f"{where} failed with exit code {code}" + (_first(errors) or f"; see the editor log {log}"))
    if not output.exists():
        raise BuildFailed(f"{where} exited 0 but wrote no player at {output}; does "
                          f"{build.execute_method or 'the build'} honour -customBuildPath? editor log: {log}")
    result = EditorBuild(output, log, digest, player_hash(output), False, time.monotonic() - started)
    stamp.write_text(json.dumps({"inputs_hash": digest, "player_hash": result.player_hash}, indent=2))
    return result


def run_with_timeout(cmd: list[str], timeout_s: float) -> Optional[int]:
    """The exit code, or None when the editor (and everything it started) had to be killed."""
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, None)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue
        proc.wait()
        return None


def _first(errors: list[str], n: int = 5) -> str:
    return (":\n  " + "\n  ".join(errors[:n])) if errors else ""
