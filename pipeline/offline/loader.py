"""Find a demonstration file, pick its format by suffix, read it and check it against the asset's layout.

Above `dataset` (the in-memory data) and the two formats, `jsonl` and `unity_demo`, which build on `dataset`.
"""
from __future__ import annotations

import os
from pathlib import Path

from pipeline.digest import file_sha256
from pipeline.offline import jsonl, unity_demo
from pipeline.offline.dataset import Dataset, DatasetError, Layout
from pipeline.paths import REPO_ROOT

FORMATS = {".jsonl": "jsonl", ".demo": "demo"}


def resolve_path(path: str | os.PathLike) -> Path:
    """A dataset path as the user wrote it: absolute, or relative to the working directory, else to the repo.

    The repo fallback is what makes the guide's `data/demos/navigation_demo.jsonl` work from jobs and
    `mlflow run`, which do not start in the directory the user typed the path in.
    """
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p.resolve() if p.exists() else p
    in_repo = REPO_ROOT / p
    return in_repo.resolve() if in_repo.exists() else p


def dataset_format(path: Path, key: str = "mode.dataset_path") -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DatasetError(f"{key}={path}: unknown dataset format {path.suffix or '(no extension)'!r}; "
                           f"use a .jsonl file (data/demos/README.md) or a Unity .demo file")
    return fmt


_cache: dict[tuple, Dataset] = {}


def load(path: str | os.PathLike, layout: Layout, key: str = "mode.dataset_path") -> Dataset:
    """Read and validate a dataset for `layout`; the same unchanged file is parsed once per process."""
    p = resolve_path(path)
    if not p.exists():
        places = dict.fromkeys([str(Path.cwd()), str(REPO_ROOT)])
        where = "" if Path(path).is_absolute() else f" (looked in {' and '.join(places)})"
        raise DatasetError(f"{key}={path}: no such file{where}; record one with "
                           "`python scripts/record_demos.py record --asset nav --out <file>.jsonl`")
    if p.is_dir():
        raise DatasetError(f"{key}={path} is a directory; give one .jsonl or .demo file")
    fmt = dataset_format(p, key)
    stat = p.stat()
    cache_key = (str(p), stat.st_mtime_ns, stat.st_size, layout)
    if cache_key in _cache:
        return _cache[cache_key]
    if fmt == "jsonl":
        data = jsonl.read(p, layout)
    else:
        data = unity_demo.read(p, layout)
    if len(data) == 0:
        raise DatasetError(f"{p}: no demonstration steps (the file is empty)")
    data.path, data.format, data.digest = p, fmt, file_sha256(p)
    _cache.clear()  # one dataset at a time is what a process trains on
    _cache[cache_key] = data
    return data
