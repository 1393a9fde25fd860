"""Several runs writing into the embedded sqlite store at once lose nothing and raise nothing."""
from __future__ import annotations

import importlib.util

import pytest

from tests.support.process import REPO

pytestmark = pytest.mark.slow


def test_concurrent_writers_lose_no_metric_points(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_store", REPO / "scripts" / "bench_store.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    row = bench.soak(writers=4, points=150, store=tmp_path / "mlflow.db")
    assert row["exit_codes"] == [0] * 4
    assert row["errors"] == 0 and row["lost"] == 0, row
