"""Schema of the `registry:` config section (extended by the registry issue)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass
class RegistryConfig:
    vertex_project: Optional[str] = None  # Google Cloud project; None keeps the local record only
    vertex_region: str = "us-central1"
