"""End of an Optuna search: run the default config beside it, and save the best trial as a conf/algorithm file.

The trials are the sweep's child runs (the callback makes them); Optuna maximised what the Hydra app
returns, the evaluated success rate. Whether the best trial beat the default is decided by the rule the
registry's champion gate uses (`pipeline.comparison`): with the evaluation's 95% intervals, not only the
point estimates.
"""
from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Optional

import mlflow
import yaml
from mlflow.entities import RunTag
from omegaconf import DictConfig, OmegaConf

from pipeline import comparison
from pipeline.paths import REPO_ROOT
from pipeline.redaction import redact_uri
from pipeline.sweeps import jobs


def fixed_overrides(config: DictConfig) -> list[str]:
    return [o.input_line for o in jobs.parse(list(config.hydra.overrides.task)) if not o.is_sweep_override()]


def run_baseline(config: DictConfig, parent: str, experiment_id: str) -> Optional[str]:
    """The default config with the search's fixed overrides, as one more child run of the search."""
    from hydra import compose

    from pipeline.config.plan import build_plan
    from pipeline.stages.pipeline import run_pipeline

    overrides = fixed_overrides(config)
    client = mlflow.MlflowClient()
    child = client.create_run(experiment_id, run_name="baseline: default config", tags={
        "mlflow.parentRunId": parent, "pipeline.sweep_run_id": parent, "sweep.job": "baseline",
        "sweep.role": "baseline", "sweep.overrides": redact_uri(" ".join(overrides)),
        "sweep.config": "default (baseline)"}).info.run_id
    print(f"search: training the default config as the baseline (run {child})", flush=True)
    try:
        plan = build_plan(compose(config_name=config.hydra.job.config_name, overrides=overrides))
        run_pipeline(replace(plan, adopted_run_id=child))  # the pipeline's `main` run is this child
    except Exception as exc:  # the search's result stands without it; say so
        client.set_tag(child, "pipeline.error", redact_uri(f"{type(exc).__name__}: {exc}")[:5000])
        print(redact_uri(f"search: the baseline failed ({type(exc).__name__}: {exc})"), file=sys.stderr, flush=True)
    finally:
        while mlflow.active_run():
            mlflow.end_run("FAILED")
        if client.get_run(child).info.status == "RUNNING":
            client.set_terminated(child, "FAILED")
    return child


METRIC, TIEBREAK = "success_rate", "mean_reward"  # as the registry's gate judges by default


def _figures(run) -> dict[str, float]:
    """The evaluation figures of a run (`success_rate`, `success_rate_ci_low`, ...); NaN where one is missing."""
    nan = float("nan")
    return {f"{metric}{suffix}": run.data.metrics.get(f"eval/{metric}{suffix}", nan)
            for metric in (METRIC, TIEBREAK) for suffix in ("", "_ci_low", "_ci_high")}


def _describe(f: dict[str, float], metric: str) -> str:
    return f"{f[metric]:.2f} [{f[metric + '_ci_low']:.2f}, {f[metric + '_ci_high']:.2f}]"


def verdict(best: dict[str, float], base: dict[str, float]) -> tuple[bool, str]:
    """(improved?, what to tell the user) for the best trial against the default config."""
    success = f"success {_describe(best, METRIC)} vs {_describe(base, METRIC)}"
    won_on = comparison.better_on(best, base, METRIC, tiebreak=TIEBREAK)
    if won_on == METRIC:
        return True, f"improved on the default: {success}"
    if won_on == TIEBREAK:
        return True, (f"improved on the default: {success}, and mean reward {_describe(best, TIEBREAK)} vs "
                      f"{_describe(base, TIEBREAK)} (the lower end of its 95% interval is above the default's)")
    if best[METRIC] > base[METRIC]:
        return False, (f"better than the default by its point estimate only: {success}; the lower end of its 95% "
                       "interval is not above the default's success, so evaluate more episodes or seeds before "
                       "trusting it")
    return False, (f"did not improve on the default: best trial success {_describe(best, METRIC)} vs default "
                   f"{_describe(base, METRIC)}")


def finish(config: DictConfig, parent: str, experiment_id: str, tuned_dir: str, baseline: bool) -> Optional[Path]:
    from hydra import compose

    client = mlflow.MlflowClient()
    trials = [r for r in client.search_runs([experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'",
                                            max_results=5000)
              if r.data.tags.get("sweep.role") != "baseline" and r.info.status == "FINISHED"
              and "eval/success_rate" in r.data.metrics]
    if not trials:
        print("search: no trial finished with an evaluation; nothing to save", file=sys.stderr, flush=True)
        return None
    trials.sort(key=lambda r: int(r.data.tags.get("sweep.job", "0")))
    # Success first; equal success rates (common with few episodes) are told apart by reward, as in the report.
    best = max(trials, key=lambda r: (r.data.metrics["eval/success_rate"], r.data.metrics.get("eval/mean_reward", 0.0)))
    overrides = best.data.tags["sweep.overrides"].split(" ")
    cfg = compose(config_name=config.hydra.job.config_name, overrides=overrides)
    choices = config.hydra.runtime.choices
    chosen = jobs.job_params(overrides)
    asset = chosen.get("asset", choices.get("asset", cfg.asset.asset_id))
    name = f"{chosen.get('algorithm', choices.get('algorithm', 'algorithm'))}_{asset}_tuned"

    tags = {"search.best_run_id": best.info.run_id, "search.best_overrides": " ".join(overrides)[:5000],
            "search.tuned_config": name}
    message = f"best trial #{best.data.tags.get('sweep.job')}: success {_figures(best)[METRIC]:.2f}"
    if baseline:
        base = client.get_run(run_baseline(config, parent, experiment_id))
        if base.info.status == "FINISHED":
            improved, message = verdict(_figures(best), _figures(base))
            tags.update({"search.improved": str(improved).lower(), "search.verdict": message,
                         "search.baseline_run_id": base.info.run_id})

    algorithm = OmegaConf.to_container(cfg.algorithm, resolve=True)
    if cfg.max_steps is not None:
        algorithm["max_steps"] = int(cfg.max_steps)  # what the trial trained for: the file reproduces it
    searched = ", ".join(str(k) for k in config.hydra.sweeper.params)
    header = (f"# Best trial of the Optuna search in MLflow run {parent} (trial run {best.info.run_id}).\n"
              f"# {message}.\n"
              f"# Searched: {searched}. Trial overrides: {redact_uri(' '.join(overrides))}\n"
              f"# Use it: python -m pipeline.run algorithm={name} asset={asset}"
              f" (raise max_steps=... to train longer)\n")
    out_dir = Path(tuned_dir) if Path(tuned_dir).is_absolute() else REPO_ROOT / tuned_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.yaml"
    path.write_text(header + yaml.safe_dump(algorithm, sort_keys=False))
    client.log_artifact(parent, str(path), "search")
    client.log_batch(parent, tags=[RunTag(k, v) for k, v in tags.items()])
    print(f"search: {message}\nsearch: best config saved to {path} (use algorithm={name})", flush=True)
    return path
