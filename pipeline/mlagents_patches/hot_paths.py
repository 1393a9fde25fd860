"""Faster replacements for ML-Agents 1.1.0's hot paths (see pipeline/mlagents_patches/__init__.py)."""
from __future__ import annotations


def apply() -> None:
    """Install the replacements; idempotent."""
