"""Carry out a launch request in this process: compose and check its config, then run its entry point.

This is what the child of every other executor runs (`python -m pipeline.cli run-request ...`, locally or
as a Ray job), and what tests and notebooks can call directly.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, TextIO

from pipeline.launch.request import LaunchRequest

RESULT_MARKER = "pipeline-result: "  # a result line on stdout, for executors that only see the logs (Ray jobs)
READY_LINE = "ready: waiting to be told to go"  # on stderr, from a held request once it can create its runs at once


def plan_for(request: LaunchRequest, algorithm_check: Callable[[dict, int], Any] | None = None):
    """The validated RunPlan of a request (no run is created, nothing is written). algorithm_check: see
    config.plan.build_plan."""
    from pipeline.config.compose import compose_typed_plan

    values = dict(request.values)
    if request.resume:
        values["resume"] = request.resume
    return compose_typed_plan(request.groups, values, request.overrides, request.tags, algorithm_check)


@contextlib.contextmanager
def _environment(extra: dict[str, str]) -> Iterator[None]:
    before = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def as_dict(result: Any) -> Any:
    return asdict(result) if is_dataclass(result) else result


def entry_point(request: LaunchRequest) -> Callable[[Any], Any]:
    """The request's stage as a function of its plan. Only the stage that runs is imported (the others pull in
    onnxruntime, the registry, ...)."""
    if request.stage == "main":
        from pipeline.stages import pipeline

        return pipeline.run_pipeline
    if request.stage == "build":
        from pipeline.stages import build

        return build.build
    if request.stage == "train":
        from pipeline.stages import train

        return lambda plan: train.train(plan)
    if request.stage == "evaluate":
        from pipeline.stages import evaluate

        return lambda plan: evaluate.evaluate(plan, request.stage_args["policy"])
    from pipeline.stages import register

    return lambda plan: register.register(plan, request.stage_args["run_id"])


def ready_then_wait(plan, go: TextIO) -> bool:
    """A held request: open the tracking store now (creating a run is then one insert), then wait for the
    launcher. True on a "go" line; False at end of input (released: its job will not run), having created
    no run."""
    from pipeline.stages.common import experiment_for

    experiment_for(plan)
    print(READY_LINE, file=sys.stderr, flush=True)
    return go.readline().strip() == "go"


def run_request(request: LaunchRequest, print_result: bool = False, go: TextIO | None = None,
                own_trainer: bool = False) -> Any:
    """Run the request's entry point here; returns the stage's result (PipelineResult, TrainResult, ...), or None
    when a held request was released. go: where a held request waits for its "go" (default: stdin).
    own_trainer: a stage that trains does so in a process started now, which imports torch and ML-Agents while
    this one imports MLflow (training/trainer_process.py); what an entry point asks for, a notebook need not."""
    from pipeline.training import trainer_process

    with _environment(request.env):  # before the trainer process starts: it inherits the request's environment
        if not (own_trainer and request.stage in ("main", "train")):
            return _run(request, print_result, go, None)
        with trainer_process.started() as trainer:
            return _run(request, print_result, go, trainer)


def _run(request: LaunchRequest, print_result: bool, go: TextIO | None, trainer) -> Any:
    try:
        plan = plan_for(request, trainer.check_algorithm if trainer else None)  # bad input stops here
        entry = entry_point(request)  # imports the stage (MLflow) while a trainer process checks the algorithm
        if trainer:
            trainer.checked()
    except Exception as exc:
        if request.run_id:  # a run made for it already (mlflow run --backend ray): it failed, say why
            _fail(request.run_id, exc)
        raise
    if trainer:
        from pipeline.training import trainer_process

        trainer_process.keep_for(plan)
    if request.hold and not ready_then_wait(plan, go or sys.stdin):
        return None
    adopted = request.run_id or (_child_of(request.parent_run_id, plan) if request.parent_run_id else None)
    result = entry(dataclasses.replace(plan, adopted_run_id=adopted))
    data = as_dict(result)
    if request.result_json:
        Path(request.result_json).parent.mkdir(parents=True, exist_ok=True)
        Path(request.result_json).write_text(json.dumps(data, indent=2, default=str))
    if print_result:
        print(RESULT_MARKER + json.dumps(data, default=str), flush=True)
    return result


def _child_of(parent_run_id: str, plan) -> str:
    """A run under `parent_run_id` for the pipeline's top run to adopt, made once the config is valid."""
    import mlflow

    from pipeline.stages.common import experiment_for

    experiment_id = experiment_for(plan)
    run = mlflow.MlflowClient().create_run(experiment_id, tags={"mlflow.parentRunId": parent_run_id})
    return run.info.run_id


def _fail(run_id: str, exc: BaseException) -> None:
    import mlflow

    from pipeline.redaction import redact_uri
    from pipeline.tracking import store

    store.configure()
    client = mlflow.MlflowClient()
    client.set_tag(run_id, "pipeline.error", redact_uri(f"{type(exc).__name__}: {exc}")[:5000])
    client.set_terminated(run_id, "FAILED")
