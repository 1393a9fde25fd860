"""The comparison report of a sweep: a table per configuration, overlaid learning curves, final evaluation.

Logged under `comparison/` of the sweep's parent run; also printable:

    python -m pipeline.sweeps.report <parent run id>             # markdown table
    python -m pipeline.sweeps.report <parent run id> --out DIR   # + comparison.html and the PNGs in DIR
"""
from __future__ import annotations

import argparse
import base64
import html
import json
import math
import sys
import tempfile
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import mlflow

from pipeline.redaction import redact_uri
from pipeline.sweeps.aggregate import Estimate, over_seeds

ARTIFACT_DIR = "comparison"
CURVES = ("Environment/Cumulative Reward", "Environment/Success Rate")


@dataclass
class JobRun:
    run_id: str
    job: str
    name: str  # the run's name: its job number and the values the sweep varies
    overrides: str
    config: str
    seed: str
    status: str
    error: str
    metrics: dict[str, float]
    train_run_id: Optional[str]
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)


@dataclass
class ConfigRow:
    config: str
    runs: list[JobRun]
    success: Estimate
    reward: Estimate
    length: Estimate

    @property
    def finished(self) -> list[JobRun]:
        return [r for r in self.runs if r.status == "FINISHED" and "eval/success_rate" in r.metrics]


@dataclass
class Summary:
    parent: str
    name: str
    runs: list[JobRun]
    rows: list[ConfigRow]

    def best(self) -> Optional[ConfigRow]:
        rows = [r for r in self.rows if r.success.n]
        return max(rows, key=lambda r: (r.success.mean, r.reward.mean)) if rows else None

    def markdown(self) -> str:
        lines = [f"### Sweep {self.name} (run {self.parent})", "",
                 "| configuration | runs | success rate [95% CI] | mean reward [95% CI] | episode length "
                 "| interval over |",
                 "|---|---|---|---|---|---|"]
        best = self.best()
        for row in self.rows:
            ok = len(row.finished)
            runs_text = f"{ok}/{len(row.runs)}" + ("" if ok == len(row.runs) else " (failed: " + ", ".join(
                f"#{r.job}" for r in row.runs if r not in row.finished) + ")")
            mark = " **best**" if row is best and len(self.rows) > 1 else ""
            over = (f"{row.success.n} seeds" if row.success.kind == "seeds"
                    else f"{int(row.finished[0].metrics.get('eval/episodes', 0))} episodes" if row.finished else "–")
            lines.append(f"| `{row.config}`{mark} | {runs_text} | {row.success.text('{:.2f}')} | "
                         f"{row.reward.text()} | {row.length.text('{:.1f}')} | {over} |")
        failed = [r for r in self.runs if r.status != "FINISHED"]
        if failed:
            lines += ["", "Failed jobs: " + "; ".join(f"`{r.name}` {r.status}"
                                                      + (f" — {r.error}" if r.error else "") for r in failed)]
        return "\n".join(lines)

    def html(self, images: dict[str, Path]) -> str:
        head = ("<tr><th>configuration</th><th>runs</th><th>success rate [95% CI]</th>"
                "<th>mean reward [95% CI]</th><th>episode length</th><th>run ids</th></tr>")
        body = []
        for row in self.rows:
            ids = " ".join(f"<code>{r.run_id[:8]}</code>" for r in row.runs)
            body.append(f"<tr><td><code>{html.escape(row.config)}</code></td><td>{len(row.finished)}/{len(row.runs)}</td>"
                        f"<td>{row.success.text('{:.2f}')}</td><td>{row.reward.text()}</td>"
                        f"<td>{row.length.text('{:.1f}')}</td><td>{ids}</td></tr>")
        failed = [r for r in self.runs if r.status != "FINISHED"]
        failed_html = "" if not failed else "<h3>Failed jobs</h3><ul>" + "".join(
            f"<li>#{r.job} <code>{html.escape(r.overrides)}</code>: {r.status} {html.escape(r.error)}</li>"
            for r in failed) + "</ul>"
        # Inline pictures: MLflow's artifact viewer shows the HTML on its own, without its sibling files.
        pics = "".join(f"<h3>{html.escape(title)}</h3><img src=\"data:image/png;base64,"
                       f"{base64.b64encode(path.read_bytes()).decode()}\" style=\"max-width:100%\">"
                       for title, path in images.items())
        return (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>Sweep {html.escape(self.name)}</title>"
                "<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}"
                "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}</style></head><body>"
                f"<h2>Sweep {html.escape(self.name)}</h2><p>parent run <code>{self.parent}</code></p>"
                f"<table>{head}{''.join(body)}</table>{failed_html}{pics}</body></html>")


def collect(parent: str, client: Optional[mlflow.MlflowClient] = None) -> Summary:
    client = client or mlflow.MlflowClient()
    try:
        parent_run = client.get_run(parent)
    except mlflow.exceptions.MlflowException:
        raise LookupError(f"no run {parent} in the tracking store {redact_uri(mlflow.get_tracking_uri())}; "
                          "give the sweep's parent run id (printed as 'sweep: parent run ...')") from None
    children = client.search_runs([parent_run.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent}'", max_results=5000)
    jobs = []
    for run in children:
        tags = run.data.tags
        train_id = tags.get("pipeline.train_run_id")
        job = JobRun(run.info.run_id, tags.get("sweep.job", "?"), run.info.run_name or "",
                     tags.get("sweep.overrides", ""),
                     tags.get("sweep.config", "default"), tags.get("sweep.override.seed", tags.get("seed", "")),
                     run.info.status, tags.get("pipeline.error", ""),
                     {k: v for k, v in run.data.metrics.items() if k.startswith("eval/")}, train_id)
        if train_id:
            for key in CURVES:
                try:
                    job.curves[key] = sorted((m.step, m.value) for m in client.get_metric_history(train_id, key))
                except mlflow.exceptions.MlflowException:
                    pass
        jobs.append(job)
    jobs.sort(key=lambda j: (not j.job.isdigit(), int(j.job) if j.job.isdigit() else 0, j.job))
    groups: "OrderedDict[str, list[JobRun]]" = OrderedDict()
    for job in jobs:
        groups.setdefault(job.config, []).append(job)
    rows = [_row(config, members) for config, members in groups.items()]
    return Summary(parent, parent_run.info.run_name or parent, jobs, rows)


def _row(config: str, members: list[JobRun]) -> ConfigRow:
    done = [r for r in members if r.status == "FINISHED" and "eval/success_rate" in r.metrics]

    def est(key: str) -> Estimate:
        one = done[0].metrics if len(done) == 1 else {}
        interval = (one[f"{key}_ci_low"], one[f"{key}_ci_high"]) if f"{key}_ci_low" in one else None
        return over_seeds([r.metrics.get(key, math.nan) for r in done], interval)

    return ConfigRow(config, members, est("eval/success_rate"), est("eval/mean_reward"),
                     est("eval/mean_episode_length"))


def learning_curves(summary: Summary, path: Path) -> Path:
    """Every configuration's curves overlaid: thin lines per seed, the thick line their mean."""
    from pipeline.reporting.plots import plt

    fig, axes = plt.subplots(1, len(CURVES), figsize=(6 * len(CURVES), 4), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, key in zip(axes[0], CURVES):
        for i, row in enumerate(summary.rows):
            c = colours[i % len(colours)]
            series = [r.curves.get(key) for r in row.runs if r.curves.get(key)]
            for s in series:
                ax.plot(*zip(*s), color=c, lw=0.8, alpha=0.35 if len(series) > 1 else 1.0,
                        label=None if len(series) > 1 else row.config)
            common = sorted(set.intersection(*(set(dict(s)) for s in series))) if len(series) > 1 else []
            if common:
                ax.plot(common, [sum(dict(s)[t] for s in series) / len(series) for t in common], color=c, lw=2.2,
                        label=f"{row.config} (mean of {len(series)})")
        ax.set_title(key.split("/")[-1])
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 3), fontsize=8, frameon=False)
    fig.suptitle(f"Learning curves: {summary.name}")
    fig.tight_layout(rect=(0, 0.06 + 0.04 * (len(labels) // 3), 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def final_eval(summary: Summary, path: Path) -> Path:
    """Evaluated success rate and reward per configuration, 95% intervals, each seed as a dot."""
    from pipeline.reporting.plots import plt

    rows = summary.rows
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.6 * len(rows) + 1.8), squeeze=False)
    for ax, (key, est, label) in zip(axes[0], (("eval/success_rate", "success", "success rate"),
                                               ("eval/mean_reward", "reward", "mean episode reward"))):
        for y, row in enumerate(rows):
            e: Estimate = getattr(row, est)
            if e.n:
                ax.errorbar([e.mean], [y], xerr=[[e.mean - e.low], [e.high - e.mean]], fmt="o", capsize=4,
                            color="#4c72b0", ms=7)
            ax.scatter([r.metrics[key] for r in row.finished if key in r.metrics], [y] * len(row.finished),
                       color="#dd8452", s=14, zorder=3)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels([r.config for r in rows] if ax is axes[0][0] else [""] * len(rows), fontsize=8)
        ax.invert_yaxis()
        ax.set_title(f"{label} (95% interval; dots: runs)")
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"Final evaluation: {summary.name}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write(summary: Summary, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    images = {"Learning curves": learning_curves(summary, out / "learning_curves.png"),
              "Final evaluation": final_eval(summary, out / "final_eval.png")}
    files = dict(images)
    files["markdown"] = out / "comparison.md"
    files["markdown"].write_text(summary.markdown() + "\n")
    files["html"] = out / "comparison.html"
    files["html"].write_text(summary.html(images))
    files["json"] = out / "comparison.json"
    files["json"].write_text(json.dumps({"parent": summary.parent, "rows": [
        {"config": r.config, "runs": [j.run_id for j in r.runs], "finished": len(r.finished),
         "success": asdict(r.success), "reward": asdict(r.reward), "episode_length": asdict(r.length)}
        for r in summary.rows],
        "failed": [asdict(j) | {"curves": None} for j in summary.runs if j.status != "FINISHED"]},
        indent=2, default=str))
    return files


def log_report(parent: str) -> Summary:
    """Collect the children of `parent`, write the report and log it as the parent's `comparison/` artifacts."""
    client = mlflow.MlflowClient()
    summary = collect(parent, client)
    with tempfile.TemporaryDirectory() as tmp:
        write(summary, Path(tmp))
        client.log_artifacts(parent, tmp, ARTIFACT_DIR)
    best = summary.best()
    metrics = {"sweep/jobs": len(summary.runs), "sweep/failed_jobs": sum(r.status != "FINISHED" for r in summary.runs)}
    if best is not None:
        metrics.update({"sweep/best_success_rate": best.success.mean, "sweep/best_mean_reward": best.reward.mean})
        client.set_tag(parent, "sweep.best_config", best.config[:5000])
    for k, v in metrics.items():
        client.log_metric(parent, k, float(v))
    return summary


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(prog="python -m pipeline.sweeps.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("parent_run_id", help="the sweep's parent run (printed when the sweep starts)")
    p.add_argument("--out", type=Path, help="also write comparison.html/.md/.json and the PNGs here")
    p.add_argument("--log", action="store_true", help="(re)log the report as the parent run's artifacts")
    args = p.parse_args(argv)
    from pipeline.config.errors import EXIT_BAD_INPUT, ServiceUnavailable, exit_code
    from pipeline.tracking import store

    try:
        store.configure()
    except ServiceUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exit_code(exc))
    try:
        summary = log_report(args.parent_run_id) if args.log else collect(args.parent_run_id)
    except LookupError as exc:  # no such sweep: bad input
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    print(summary.markdown())
    if args.out:
        files = write(summary, args.out)
        print(f"\nwrote {', '.join(str(f) for f in files.values())}")


if __name__ == "__main__":
    main()
