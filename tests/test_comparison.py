"""One rule decides "is A better than B": the registry's champion gate and the search's verdict agree on it."""
from __future__ import annotations

import itertools

import pytest

from pipeline import comparison
from pipeline.registry.gate import Evaluation, judge
from pipeline.sweeps.search import verdict

PROTOCOL = {"episodes": "100", "seed": "0", "deterministic": "true"}


def figures(success, low, high, reward=0.5, rlow=0.45, rhigh=0.55) -> dict[str, float]:
    return {"success_rate": success, "success_rate_ci_low": low, "success_rate_ci_high": high,
            "mean_reward": reward, "mean_reward_ci_low": rlow, "mean_reward_ci_high": rhigh}


def test_better_means_the_lower_bound_clears_the_other_estimate_plus_the_margin():
    a, b = figures(0.9, 0.81, 0.95), figures(0.8, 0.71, 0.87)
    assert comparison.better_on(a, b, "success_rate") == "success_rate"  # 0.81 > 0.80
    assert comparison.better_on(a, b, "success_rate", margin=0.02) is None  # 0.81 <= 0.82
    assert comparison.better_on(b, a, "success_rate") is None
    # Overlapping intervals are enough: the rule asks about B's estimate, not B's upper bound.
    assert a["success_rate_ci_low"] < b["success_rate_ci_high"]


def test_the_tiebreak_decides_only_when_the_main_metric_is_not_worse():
    same = figures(1.0, 0.96, 1.0, reward=0.9, rlow=0.88, rhigh=0.92)
    champion = figures(1.0, 0.96, 1.0, reward=0.8, rlow=0.78, rhigh=0.82)
    assert comparison.better_on(same, champion, "success_rate", tiebreak="mean_reward") == "mean_reward"
    worse = figures(0.97, 0.9, 1.0, reward=0.9, rlow=0.88, rhigh=0.92)
    assert comparison.better_on(worse, champion, "success_rate", tiebreak="mean_reward") is None


def test_missing_figures_never_count_as_better():
    nan = float("nan")
    assert comparison.better_on(figures(nan, nan, nan), figures(0.1, 0.0, 0.2), "success_rate", tiebreak=None) is None
    assert comparison.better_on(figures(0.9, 0.8, 1.0), figures(nan, nan, nan), "success_rate") is None


GRID = [figures(s, lo, hi, reward=r, rlow=r - 0.02, rhigh=r + 0.02)
        for (s, lo, hi), r in itertools.product([(0.5, 0.4, 0.6), (0.55, 0.51, 0.59), (0.7, 0.61, 0.78),
                                                  (1.0, 0.96, 1.0)], [0.3, 0.5])]


@pytest.mark.parametrize("a, b", list(itertools.product(GRID, GRID)))
def test_the_gate_and_the_search_give_the_same_answer(a, b):
    gate = judge(Evaluation(a, PROTOCOL), Evaluation(b, PROTOCOL), "v1", "success_rate", 0.0, "mean_reward", 0.0)
    improved, _ = verdict(a, b)
    assert gate.promote == improved


def test_the_search_says_what_it_found():
    default = figures(0.5, 0.4, 0.6)
    improved, text = verdict(figures(0.8, 0.7, 0.88), default)
    assert improved and text == "improved on the default: success 0.80 [0.70, 0.88] vs 0.50 [0.40, 0.60]"
    improved, text = verdict(figures(0.55, 0.45, 0.65), default)
    assert not improved and text.startswith("better than the default by its point estimate only: success 0.55 "
                                            "[0.45, 0.65] vs 0.50 [0.40, 0.60]; the lower end of its 95% interval")
    improved, text = verdict(figures(0.4, 0.3, 0.5), default)
    assert not improved and text == ("did not improve on the default: best trial success 0.40 [0.30, 0.50] vs "
                                     "default 0.50 [0.40, 0.60]")
    improved, text = verdict(figures(0.5, 0.4, 0.6, reward=0.9, rlow=0.85, rhigh=0.95), default)
    assert improved and "mean reward 0.90 [0.85, 0.95] vs 0.50 [0.45, 0.55]" in text
