"""Schema of the `build:` config section: building a player from a Unity project (Unity issue)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass
class BuildConfig:
    unity_project: Optional[str] = None  # path of the Unity project; None: no editor build
    editor_path: Optional[str] = None  # the Unity editor executable
