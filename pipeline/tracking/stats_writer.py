"""ML-Agents StatsWriters that stream training statistics to MLflow and to the console (what they write:
tracking/training_stats.py).

`MLflowStatsWriter` is also published as an `mlagents.stats_writer` plugin (see pyproject.toml),
so plain `mlagents-learn` logs to MLflow too once this package is installed. MLflow is imported only by a
writer that logs to it: `mlagents-learn` loads this plugin on every run, opted in or not.
"""
from __future__ import annotations

import os
from typing import Any

from mlagents.trainers.stats import StatsReporter, StatsSummary, StatsWriter

from pipeline.tracking.training_stats import HIDDEN, MLflowMetrics, ProgressLine, summarize


class MLflowStatsWriter(MLflowMetrics, StatsWriter):
    """MLflowMetrics as an ML-Agents StatsWriter: plain `mlagents-learn`'s plugin, the offline learner."""


class ProgressWriter(ProgressLine, StatsWriter):
    """ProgressLine as an ML-Agents StatsWriter."""


class SinkWriter(StatsWriter):
    """Any training_stats sink as an ML-Agents StatsWriter, handed `Summary` values: what the sink gets when
    ML-Agents runs in another process (training/trainer_process.py), so both ways feed it the same data."""

    def __init__(self, sink: Any):
        self.sink = sink

    def write_stats(self, category: str, values: dict[str, StatsSummary], step: int) -> None:
        self.sink.write_stats(category, summarize(values), step)


def write_pending_summaries(writers: list[StatsWriter] | None = None) -> None:
    """Write what ML-Agents gathered since its last summary, at each trainer's last step.

    ML-Agents writes a summary only when a trainer crosses a multiple of summary_freq, so the end of a
    training (all of one shorter than summary_freq) is never written. writers=None: every writer attached
    to ML-Agents' StatsReporter (and the pending stats are consumed), else only those given.
    """
    with StatsReporter.lock:
        pending = {c: {k: list(v) for k, v in stats.items()} for c, stats in StatsReporter.stats_dict.items()}
    for category, stats in pending.items():
        if not stats.get("Step") or not any(v for k, v in stats.items() if k not in HIDDEN):
            continue
        step = int(stats["Step"][-1])  # ML-Agents' trainer sets it to its step count after every trajectory
        reporter = StatsReporter(category)
        if writers is None:
            reporter.write_stats(step)
            continue
        values = {k: reporter.get_stats_summaries(k) for k, v in stats.items() if v}
        for writer in writers:
            writer.write_stats(category, values, step)


def get_mlflow_writers(run_options: Any) -> list[StatsWriter]:
    """`mlagents.stats_writer` plugin for plain `mlagents-learn`: opt in with MLAGENTS_MLFLOW=1.

    Logs to the run in MLFLOW_RUN_ID, or to a new run of experiment $MLFLOW_EXPERIMENT_NAME (default
    "mlagents-learn") in $MLFLOW_TRACKING_URI (default the repository's mlflow.db), which ends FINISHED,
    KILLED or FAILED with mlagents-learn (see pipeline/tracking/mlagents_learn_run.py).
    """
    if os.environ.get("MLAGENTS_MLFLOW") != "1":
        return []
    from pipeline.tracking.mlagents_learn_run import LearnRun

    run = LearnRun(run_options)
    writers: list[StatsWriter] = [MLflowStatsWriter(run.run_id, run.primary_category, client=run.client)]
    run.flush = lambda: write_pending_summaries(writers)
    return writers
