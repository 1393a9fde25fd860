"""Which Unity player a run trains on, and whether that file can be a player on this machine."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from pipeline.config.schema import PipelineConfig

# What `mlagents_envs.env_utils.validate_environment_path` accepts without an extension on each platform.
PLAYER_SUFFIXES = {"linux": (".x86_64", ".x86"), "darwin": (".app",), "win32": (".exe",)}
_MAGIC = {  # first bytes of an executable -> the platform it runs on
    b"\x7fELF": "linux",
    b"MZ": "win32",
    b"\xcf\xfa\xed\xfe": "darwin", b"\xce\xfa\xed\xfe": "darwin", b"\xca\xfe\xba\xbe": "darwin",
}
PLATFORM_NAMES = {"linux": "Linux", "darwin": "macOS", "win32": "Windows"}
BUILD_TARGETS = {"linux": "StandaloneLinux64", "darwin": "StandaloneOSX", "win32": "StandaloneWindows64"}


class PlayerPathError(ValueError):
    """The message says what is wrong with the file; the caller prefixes the config key."""


def player_path(config: PipelineConfig) -> Optional[str]:
    """The player a run trains on: env_path, else an asset whose source is a Unity build, else the editor build's
    output."""
    if config.env_path:
        return str(config.env_path)
    source = config.asset.source
    if source.kind == "unity":
        return source.build_path
    if config.build.unity_project:
        return str(build_output_path(config))
    return None


def build_output_path(config: PipelineConfig) -> Path:
    build = config.build
    if build.output_path:
        return Path(build.output_path).expanduser().absolute()
    asset_id = config.asset.asset_id
    suffix = {"StandaloneLinux64": ".x86_64", "StandaloneOSX": ".app"}.get(build.build_target, ".exe")
    return (Path("builds") / asset_id / f"{asset_id}{suffix}").absolute()


def check_player(path: str, platform: str = sys.platform) -> Path:
    """The player executable `path` names (as mlagents-learn's --env finds it), or PlayerPathError saying why not."""
    p = Path(path).expanduser()
    if p.is_dir():
        inside = sorted(c.name for c in p.iterdir() if c.suffix in PLAYER_SUFFIXES.get(platform, ()))
        hint = f"; found {', '.join(inside)} in it" if inside else ""
        raise PlayerPathError(f"is a directory; give the player executable inside it{hint}")
    if not p.exists():
        found = [p.with_name(p.name + s) for s in PLAYER_SUFFIXES.get(platform, ())]
        found = [c for c in found if c.is_file()]
        if not found:
            raise PlayerPathError("no such file; give the path of a Unity player build "
                                  f"({' or '.join(PLAYER_SUFFIXES.get(platform, ('executable',)))})")
        p = found[0]
    built_for = _platform_of(p)
    if built_for is None:
        for plat, suffixes in PLAYER_SUFFIXES.items():
            if p.suffix in suffixes and plat != platform:
                built_for = plat
    if built_for is not None and built_for != platform:
        raise PlayerPathError(f"is a {PLATFORM_NAMES[built_for]} player and this machine runs "
                              f"{PLATFORM_NAMES.get(platform, platform)}; build the project for "
                              f"{BUILD_TARGETS.get(platform, platform)} (build.build_target)")
    if not os.access(p, os.X_OK):
        raise PlayerPathError(f"is not executable; run `chmod +x {p}` (a build copied without its file modes)")
    return p.absolute()


def _platform_of(path: Path) -> Optional[str]:
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return None
    if head.startswith(b"#!"):
        return None  # a launcher script: runs wherever its interpreter does
    for magic, plat in _MAGIC.items():
        if head.startswith(magic):
            return plat
    return None
