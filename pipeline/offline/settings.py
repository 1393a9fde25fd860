"""Schema of the `mode:` config group (online here; offline and hybrid in their own issue)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass
class ModeConfig:
    name: str = "online"
    dataset_path: Optional[str] = None
