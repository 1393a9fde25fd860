"""Training statistics as a run's MLflow metrics and as the console's progress line, without ML-Agents.

ML-Agents hands its StatsWriters `StatsSummary` objects, and its stats module imports torch (TensorBoard's
writer). These sinks only read `mean`, `std`, `num` and `aggregated_value`, so they take ML-Agents' summaries as
they are (tracking/stats_writer.py: the StatsWriters) or `Summary`, the same four numbers as plain data (what a
trainer process sends to the stage's process, training/trainer_process.py, which then never imports torch).
"""
from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any, Mapping, NamedTuple

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient


class Summary(NamedTuple):
    """One statistic's summary period, as ML-Agents' StatsSummary presents it."""

    mean: float
    std: float
    num: int
    aggregated_value: float


def summarize(values: Mapping[str, Any]) -> dict[str, Summary]:
    """ML-Agents' StatsSummary objects (numpy over a list) -> plain, picklable numbers."""
    return {k: Summary(float(v.mean), float(v.std), int(v.num), float(v.aggregated_value)) if v.num
            else Summary(0.0, 0.0, 0, 0.0) for k, v in values.items()}


STEPS_PER_SECOND = "Environment/Steps per Second"
GROUP_REWARD = "Environment/Group Cumulative Reward"  # ML-Agents' POCA trainer records it per group episode
EXTRINSIC = "Policy/Extrinsic Reward"  # per agent episode: own reward + group reward, what PPO/SAC learn from
HIDDEN = {"Is Training", "Step"}  # bookkeeping ML-Agents' TensorBoard writer hides too


class _Rate:
    """Agent steps per wall-clock second between consecutive summaries of a category."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[int, float]] = {}

    def update(self, category: str, step: int) -> float | None:
        now = time.monotonic()
        prev = self._last.get(category)
        self._last[category] = (step, now)
        if prev is None or step <= prev[0] or now <= prev[1]:
            return None
        return (step - prev[0]) / (now - prev[1])


class MLflowMetrics:
    """Logs every summary period's statistics to one MLflow run, at the ML-Agents step."""

    def __init__(self, run_id: str, primary_category: str | None = None, client: MlflowClient | None = None,
                 resumed: bool = False):
        self.run_id = run_id
        self.primary = primary_category
        if client is None:
            from mlflow.tracking import MlflowClient

            client = MlflowClient()
        self.client = client
        self._rate = _Rate()
        # A resumed training replays the steps since its last checkpoint; the killed attempt already
        # logged those summaries, so each key continues after its last logged step (no duplicates).
        self._logged_through: dict[str, int] = {}
        if resumed:
            for key in self.client.get_run(run_id).data.metrics:
                self._logged_through[key] = max((m.step for m in self.client.get_metric_history(run_id, key)),
                                                default=-1)

    def _key(self, category: str, key: str) -> str:
        # One behavior per asset is the common case: keep ML-Agents' names as users know them.
        return key if category == self.primary or self.primary is None else f"{category}/{key}"

    def write_stats(self, category: str, values: Mapping[str, Summary], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(self._key(category, k), float(v.aggregated_value), now, step)
                   for k, v in values.items() if v.num > 0 and k not in HIDDEN]
        rate = self._rate.update(category, step)
        if rate is not None:
            metrics.append(Metric(self._key(category, STEPS_PER_SECOND), rate, now, step))
        metrics = [m for m in metrics if m.step > self._logged_through.get(m.key, -1)]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[i:i + 1000])


class ProgressLine:
    """One console line per summary: step / max_steps, mean reward, success, steps/s, time left.

    group: the behaviour's agents act as a MultiAgentGroup (push). Their own rewards are then 0 and what counts
    is the group's: the line shows ML-Agents' "Environment/Group Cumulative Reward" (recorded by MA-POCA) and
    calls the success rate the group's. PPO and SAC add the group reward to each agent's own (ML-Agents'
    extrinsic reward signal) and record no group statistic, so for them the line shows that sum, the
    "Policy/Extrinsic Reward" they learn from. A trainer that reports a group reward marks the behaviour as a
    group even when `group` was not given (e.g. on a Unity build)."""

    def __init__(self, max_steps: int, stream=None, group: bool = False):
        self.max_steps = max_steps
        self.stream = stream or sys.stdout
        self.group = group
        self._start = time.monotonic()

    def write_stats(self, category: str, values: Mapping[str, Summary], step: int) -> None:
        # Averaged since the start: per-period rates swing with PPO's update pauses.
        elapsed = time.monotonic() - self._start
        rate = step / elapsed if elapsed > 0 and step > 0 else None
        parts = [f"[{category}] step {step:,}/{self.max_steps:,} ({100 * step / self.max_steps:3.0f}%)"]
        reward = _present(values, "Environment/Cumulative Reward")
        group_reward = _present(values, GROUP_REWARD)
        group = self.group or group_reward is not None
        if group_reward is not None:
            parts.append(f"group reward {group_reward.mean:7.3f} ± {group_reward.std:.3f}")
            if reward is not None and (reward.mean or reward.std):  # agents' own rewards, when the task has any
                parts.append(f"own reward {reward.mean:7.3f}")
        elif group and _present(values, EXTRINSIC) is not None:
            seen = values[EXTRINSIC]
            parts.append(f"own+group reward {seen.mean:7.3f} ± {seen.std:.3f}")
        elif reward is not None:
            parts.append(f"mean reward {reward.mean:7.3f} ± {reward.std:.3f}")
        success = _present(values, "Environment/Success Rate")
        if success is not None:
            parts.append(f"{'group success' if group else 'success'} {success.mean:5.1%}")
        if rate:
            left = max(self.max_steps - step, 0) / rate
            parts.append(f"{rate:,.0f} steps/s")
            parts.append(f"{int(left // 60)}m{int(left % 60):02d}s left")
        print(" | ".join(parts), file=self.stream, flush=True)


def _present(values: Mapping[str, Summary], key: str) -> Summary | None:
    summary = values.get(key)
    return summary if summary is not None and summary.num else None
