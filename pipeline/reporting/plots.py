"""Pictures logged as run artifacts: learning curves, evaluation comparisons, trajectories."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: CI and servers have no display
import matplotlib.pyplot as plt
import numpy as np


def learning_curve(history: Mapping[str, Sequence[tuple[int, float]]], title: str, path: Path) -> Path | None:
    """One panel per metric, x = ML-Agents step. None when no metric has a point: nothing to draw.

    A metric with a single summary (a run shorter than two summary periods) is drawn as that one point,
    labelled, not as a line.
    """
    keys = [k for k, v in history.items() if v]
    if not keys:
        return None
    fig, axes = plt.subplots(len(keys), 1, figsize=(7, 2.6 * len(keys)), sharex=True, squeeze=False)
    for ax, key in zip(axes[:, 0], keys):
        steps, values = zip(*sorted(history[key]))
        if len(steps) == 1:
            ax.plot(steps, values, "o", ms=6)
            ax.annotate(f"one summary, at step {steps[0]:,}", (steps[0], values[0]), textcoords="offset points",
                        xytext=(8, 4), fontsize=8)
        else:
            ax.plot(steps, values, marker="o", ms=3)
        ax.set_ylabel(key.split("/")[-1])
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def eval_comparison(results: Mapping[str, object], title: str, path: Path) -> Path:
    """Success rate and mean reward with 95% intervals, one bar per policy."""
    names = list(results)
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, value, ci, label in ((a, "success_rate", "success_ci95", "success rate"),
                                 (b, "mean_reward", "reward_ci95", "mean episode reward")):
        v = np.array([getattr(results[n], value) for n in names])
        lo = np.array([getattr(results[n], ci)[0] for n in names])
        hi = np.array([getattr(results[n], ci)[1] for n in names])
        ax.bar(names, v, yerr=[v - lo, hi - v], capsize=5, color=["#4c72b0", "#999999", "#dd8452"][: len(names)])
        ax.set_title(label)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def trajectories(traces: Sequence[dict], title: str, path: Path) -> Path:
    """Top-down view of a few evaluation episodes: obstacles, goals and the path the agent took."""
    n = len(traces)
    fig, axes = plt.subplots(1, n, figsize=(3 * n, 3.2), squeeze=False)
    for ax, tr in zip(axes[0], traces):
        for (cx, cy), r in zip(tr["obstacles"], tr["radii"]):
            ax.add_patch(plt.Circle((cx, cy), r, color="#555555"))
        goals = np.asarray(tr["goals"])
        ax.scatter(goals[:, 0], goals[:, 1], marker="*", s=140, c="#2ca02c", zorder=3)
        for k, (gx, gy) in enumerate(goals):
            if len(goals) > 1:
                ax.annotate(str(k + 1), (gx, gy), textcoords="offset points", xytext=(5, 5))
        path_xy = np.asarray(tr["path"])
        ax.plot(path_xy[:, 0], path_xy[:, 1], c="#1f77b4", lw=1.5)
        ax.scatter(*path_xy[0], c="#1f77b4", s=30)
        ax.set_xlim(-1, 1)
        ax.set_ylim(-1, 1)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title("success" if tr["success"] else "failure", fontsize=9,
                     color="#2ca02c" if tr["success"] else "#d62728")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
