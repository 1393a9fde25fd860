"""The promotion gate: does the challenger beat the champion, judged with 95% intervals, on equal terms?

Both policies must have been evaluated with the same protocol (episodes, seed, deterministic actions),
so they faced the very same episodes. Whether the challenger is better is `pipeline.comparison`'s rule (the
one the search uses too): the *lower* end of its 95% interval above the champion's estimate plus the margin,
else the tie-break metric judged the same way; a lucky run within noise does not replace a champion.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional

from pipeline import comparison

PROTOCOL_KEYS = ("episodes", "seed", "deterministic")


@dataclass(frozen=True)
class Evaluation:
    """One policy's evaluation: figures (`success_rate`, `success_rate_ci_low`, ...) and its protocol."""

    figures: dict[str, float]
    protocol: dict[str, str]  # episodes, seed, deterministic, as the evaluate run's params spell them
    run_id: Optional[str] = None

    def has(self, metric: str) -> bool:
        return comparison.has(self.figures, metric)

    def describe(self, metric: str) -> str:
        f = self.figures
        return f"{f[metric]:.3f} [{f[metric + '_ci_low']:.3f}, {f[metric + '_ci_high']:.3f}]"

    def as_tags(self) -> dict[str, str]:
        tags = {f"eval.{k}": f"{v:.6g}" for k, v in self.figures.items()}
        tags.update({f"eval.protocol.{k}": v for k, v in self.protocol.items()})
        if self.run_id:
            tags["eval.run_id"] = self.run_id
        return tags

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> "Evaluation":
        figures, protocol = {}, {}
        for key, value in tags.items():
            if key.startswith("eval.protocol."):
                protocol[key[len("eval.protocol."):]] = value
            elif key.startswith("eval.") and key != "eval.run_id":
                try:
                    figures[key[len("eval."):]] = float(value)
                except ValueError:
                    pass
        return cls(figures, protocol, tags.get("eval.run_id"))


@dataclass(frozen=True)
class Verdict:
    promote: bool
    kind: str  # better | tiebreak | not-better | protocol-mismatch | no-evaluation | champion-unevaluated
    reason: str
    figures: dict[str, float] = field(default_factory=dict)


def judge(challenger: Optional[Evaluation], champion: Optional[Evaluation], champion_label: str,
          metric: str, margin: float, tiebreak: Optional[str], tiebreak_margin: float) -> Verdict:
    if challenger is None or not challenger.has(metric):
        return Verdict(False, "no-evaluation",
                       f"the challenger has no evaluation ({metric} with its 95% interval); evaluate it with "
                       "`python -m pipeline.cli evaluate --policy <train run id>` and register again")
    if champion is None or not champion.has(metric):
        return Verdict(False, "champion-unevaluated",
                       f"the champion ({champion_label}) has no {metric} on record to compare with; evaluate "
                       "and re-register it, or promote with registry.force=true")
    mismatch = {k: (challenger.protocol.get(k), champion.protocol.get(k)) for k in PROTOCOL_KEYS
                if challenger.protocol.get(k) != champion.protocol.get(k)}
    if mismatch:
        diffs = ", ".join(f"{k} {mine} vs {theirs}" for k, (mine, theirs) in mismatch.items())
        return Verdict(False, "protocol-mismatch",
                       f"not comparable: evaluated with a different protocol than the champion ({champion_label}): "
                       f"{diffs}; evaluate both with the same evaluation.episodes/seed/deterministic")

    won_on = comparison.better_on(challenger.figures, champion.figures, metric, margin, tiebreak, tiebreak_margin)
    figures = _figures(challenger, champion, metric)
    text = _explain(challenger, champion, metric, margin)
    if won_on == metric:
        return Verdict(True, "better", f"{text} -> promoted", figures)
    if comparison.tiebreak_applies(challenger.figures, champion.figures, metric, tiebreak):
        figures.update(_figures(challenger, champion, tiebreak))
        text += f"; tie-break: {_explain(challenger, champion, tiebreak, tiebreak_margin)}"
        if won_on == tiebreak:
            return Verdict(True, "tiebreak", f"{text} -> promoted", figures)
    return Verdict(False, "not-better", f"{text} -> {champion_label} stays champion", figures)


def _explain(challenger: Evaluation, champion: Evaluation, metric: str, margin: float) -> str:
    low, theirs = challenger.figures[f"{metric}_ci_low"], champion.figures[metric]
    better = comparison.beats(challenger.figures, champion.figures, metric, margin)
    return (f"{metric} {challenger.describe(metric)} vs champion {champion.describe(metric)}: "
            f"lower bound {low:.3f} {'>' if better else '<='} {theirs:.3f} + margin {margin:g}")


def _figures(challenger: Evaluation, champion: Evaluation, metric: str) -> dict[str, float]:
    out = {}
    for who, ev in (("challenger", challenger), ("champion", champion)):
        for suffix in ("", "_ci_low", "_ci_high"):
            out[f"gate/{who}_{metric}{suffix}"] = ev.figures[metric + suffix]
    return out
