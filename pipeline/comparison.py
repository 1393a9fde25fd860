"""The one rule for "is policy A better than policy B", used by the registry's champion gate and the search.

Each side's evaluation is a dict of figures: an estimate and its 95% interval per metric (`success_rate`,
`success_rate_ci_low`, `success_rate_ci_high`, ...). A beats B on a metric when the *lower* end of A's interval
is above B's estimate plus a margin: a lucky run within noise does not count as better. When the main metric
cannot separate them (A's estimate at least B's, but inside the noise), the tie-break metric is judged the
same way: a policy that succeeds as often but earns more reward (e.g. reaches the goal sooner) is better.
A leaf module: plain numbers in, no MLflow.
"""
from __future__ import annotations

from typing import Mapping, Optional

Figures = Mapping[str, float]


def has(figures: Figures, metric: str) -> bool:
    return all(k in figures for k in (metric, f"{metric}_ci_low", f"{metric}_ci_high"))


def beats(a: Figures, b: Figures, metric: str, margin: float = 0.0) -> bool:
    """A's lower 95% bound on `metric` is above B's estimate plus `margin` (False when either is NaN)."""
    return a[f"{metric}_ci_low"] > b[metric] + margin


def tiebreak_applies(a: Figures, b: Figures, metric: str, tiebreak: Optional[str]) -> bool:
    """Whether `tiebreak` gets to decide: A is not worse on `metric` by its estimate and both have the figure."""
    return bool(tiebreak) and tiebreak != metric and has(a, tiebreak) and has(b, tiebreak) and a[metric] >= b[metric]


def better_on(a: Figures, b: Figures, metric: str, margin: float = 0.0, tiebreak: Optional[str] = None,
              tiebreak_margin: float = 0.0) -> Optional[str]:
    """The metric on which A is better than B (`metric`, else `tiebreak`), or None when it is not better."""
    if beats(a, b, metric, margin):
        return metric
    if tiebreak_applies(a, b, metric, tiebreak) and beats(a, b, tiebreak, tiebreak_margin):
        return tiebreak
    return None
