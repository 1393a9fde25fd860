"""Schema of the `build:` config section: building a player from a Unity project with the editor in batch mode.

Nothing here is needed to train on a player you built yourself (`env_path=...`); it is for `-e build`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import List, Optional

from pipeline.config.ranges import check_ranges


@dataclass
class BuildConfig:
    unity_project: Optional[str] = None  # path of the Unity project; None: no editor build
    editor_path: Optional[str] = None  # the Unity editor executable, e.g. ~/Unity/Hub/Editor/2022.3.x/Editor/Unity
    build_target: str = "StandaloneLinux64"  # the editor's -buildTarget
    # A static C# method that builds the player (-executeMethod); it finds the output path after
    # -customBuildPath. None: the editor's own -buildLinux64Player / -buildWindows64Player / -buildOSXUniversalPlayer.
    execute_method: Optional[str] = None
    # Where the player goes; None: builds/<asset_id>/<asset_id>.x86_64 (.exe / .app for other targets).
    output_path: Optional[str] = None
    timeout_s: int = 3600  # the editor is killed after this long and the build fails
    extra_args: List[str] = field(default_factory=list)  # more editor arguments, e.g. ["-username", "..."]
    force: bool = False  # rebuild even when the project's inputs are unchanged

    def validate(self) -> None:
        """Its numbers now; the project and the editor are checked when the build stage runs (unity/editor.py)."""
        check_ranges({"build": asdict(self)}, sections=("build",))
