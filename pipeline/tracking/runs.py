"""The one place a stage's MLflow run is started and ended: FINISHED, FAILED with the error, or KILLED."""
from __future__ import annotations

import contextlib
import subprocess
import traceback
from typing import Any, Iterator, Mapping, Optional

import mlflow
from mlflow.entities import Param, RunStatus, RunTag

from pipeline import startup_gc
from pipeline.paths import REPO_ROOT
from pipeline.redaction import redact_uri

INTERRUPTED = "interrupted: "  # how `pipeline.error` starts when a run was stopped from outside (KILLED)


class StageInterrupted(Exception):
    """Training stopped by SIGINT/SIGTERM: its run ends KILLED, with what was saved logged."""


@contextlib.contextmanager
def stage_run(stage: str, experiment_id: str, run_name: str, tags: Mapping[str, str],
              run_id: Optional[str] = None, adopt_run_id: Optional[str] = None) -> Iterator[mlflow.ActiveRun]:
    """Start this stage's run: a child of the active run, the run made for it, or a new one.

    run_id: reopen that run instead (a resumed training continues its own run).
    adopt_run_id: a run made for this stage before it started (RunPlan.adopted_run_id: `mlflow run`'s, a sweep
    job's), which becomes this stage's run; only a top run adopts one (a nested run is a child of the active run)."""
    from pipeline.tracking.reaper import process_tags

    nested = mlflow.active_run() is not None
    # Which process owns the run, from its first write: `reap` closes it if that process dies (tracking/reaper.py).
    tags = {"pipeline.stage": stage, **process_tags(), **tags}
    if run_id:
        run = mlflow.start_run(run_id=run_id, nested=nested)
        set_tags(process_tags())  # a resumed run belongs to this process now
        interruption = run.data.tags.get("pipeline.error")
        if interruption:  # live again: keep why it stopped, but no error tag on a run that may yet finish
            mlflow.set_tag("pipeline.last_interruption", interruption)
            mlflow.MlflowClient().delete_tag(run.info.run_id, "pipeline.error")
    elif not nested and adopt_run_id:
        run = mlflow.start_run(run_id=adopt_run_id, tags=tags)
    else:
        if nested:  # a child lives in its parent's experiment, whichever the caller's config names
            experiment_id = mlflow.active_run().info.experiment_id
        run = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, nested=nested, tags=tags)
    startup_gc.resume()  # the stage's work starts: collector back on, the start-up's objects frozen
    try:
        yield run
    except (KeyboardInterrupt, StageInterrupted) as exc:
        mlflow.set_tag("pipeline.error", redact_uri(f"{INTERRUPTED}{exc}")[:5000])
        mlflow.end_run(RunStatus.to_string(RunStatus.KILLED))
        raise
    except BaseException as exc:
        with contextlib.suppress(Exception):
            # Redacted: MLflow's own errors quote the tracking URI, password included.
            mlflow.set_tag("pipeline.error", redact_uri(f"{type(exc).__name__}: {exc}")[:5000])
            mlflow.log_text(redact_uri(traceback.format_exc()), "error.txt")
        mlflow.end_run(RunStatus.to_string(RunStatus.FAILED))
        raise
    else:
        mlflow.end_run(RunStatus.to_string(RunStatus.FINISHED))


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Dotted keys -> string values, any URI password in them replaced by *** (e.g. tracking.tracking_uri)."""
    out: dict[str, str] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = redact_uri(str(value))[:6000]
    return out


def log_params(params: Mapping[str, Any]) -> None:
    """Log the flattened config. `mlflow run` has already logged its -P values (often "" = "use the
    config's value") under the same names and MLflow forbids changing a param, so where they differ
    the resolved value goes to `resolved.<key>`."""
    client, run_id = mlflow.MlflowClient(), mlflow.active_run().info.run_id
    given = client.get_run(run_id).data.params
    items = [Param(k if given.get(k, v) == v else f"resolved.{k}", v) for k, v in flatten(params).items()]
    for i in range(0, len(items), 100):  # MLflow's per-request limit
        client.log_batch(run_id, params=items[i:i + 100])


def code_version() -> dict[str, str]:
    """Git commit of this checkout (and whether it has uncommitted changes), for lineage."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                                check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"git.commit": "unknown"}
    return {"git.commit": commit, "git.dirty": str(bool(dirty)).lower()}


def software_versions() -> dict[str, str]:
    from importlib.metadata import version

    return {f"version.{p}": version(p) for p in ("mlagents", "mlagents-envs", "torch", "mlflow", "onnxruntime")}


def set_tags(tags: Mapping[str, str]) -> None:
    mlflow.MlflowClient().log_batch(mlflow.active_run().info.run_id,
                                    tags=[RunTag(k, redact_uri(str(v))) for k, v in tags.items()])
