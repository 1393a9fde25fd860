"""Several seeds of one configuration -> mean and 95% interval; one seed keeps its evaluation's own interval."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence


@dataclass(frozen=True)
class Estimate:
    mean: float
    low: float
    high: float
    n: int
    kind: str  # what the interval is over: "episodes" (one run's evaluation) or "seeds"

    def text(self, fmt: str = "{:.3f}") -> str:
        if math.isnan(self.mean):
            return "–"
        return f"{fmt.format(self.mean)} [{fmt.format(self.low)}, {fmt.format(self.high)}]"


def over_seeds(values: Sequence[float], single_interval: Optional[tuple[float, float]] = None) -> Estimate:
    """Mean ± Student-t 95% interval across seeds; with one seed, that run's own 95% interval."""
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return Estimate(float("nan"), float("nan"), float("nan"), 0, "seeds")
    mean = sum(vals) / len(vals)
    if len(vals) == 1:
        lo, hi = single_interval if single_interval else (mean, mean)
        return Estimate(mean, lo, hi, 1, "episodes")
    from scipy import stats

    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
    half = stats.t.ppf(0.975, len(vals) - 1) * sd / math.sqrt(len(vals))
    return Estimate(mean, mean - half, mean + half, len(vals), "seeds")
