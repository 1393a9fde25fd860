"""Command line of the MLflow entry points (see MLproject): one sub-command per stage, plus `main`.

    python -m pipeline.cli main --asset nav --algorithm ppo --max_steps 20000 --overrides "env.num_envs=1"
"""
from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import sys
import traceback
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

from pipeline.config.errors import ConfigError
from pipeline.redaction import redact_uri

EXIT_CONFIG = 2
EXIT_INTERRUPTED = 143  # 128 + SIGTERM, what a shell reports for a terminated process


@contextlib.contextmanager
def reported() -> Iterator[None]:
    """Failure handling for every entry point: bad input is one clear line and exit code 2."""
    from pipeline.tracking.runs import StageInterrupted
    from pipeline.unity.editor import BuildFailed

    _redact_tracebacks()
    try:
        yield
    except ConfigError as exc:
        print(redact_uri(f"error: {exc}"), file=sys.stderr, flush=True)
        sys.exit(EXIT_CONFIG)
    except BuildFailed as exc:  # the editor's own error, already logged with Editor.log on the build run
        print(redact_uri(f"error: build failed: {exc}"), file=sys.stderr, flush=True)
        sys.exit(1)
    except (StageInterrupted, KeyboardInterrupt) as exc:  # SIGTERM/Ctrl-C: saved and ended KILLED
        print(redact_uri(f"interrupted: {exc}"), file=sys.stderr, flush=True)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:
        if redact_uri(str(exc)) == str(exc):
            raise  # nothing to hide: the caller (Python, Hydra) reports it as usual
        # It quotes a password (MLflow's errors quote the tracking URI whole); Hydra would print it as is.
        sys.stderr.write(redact_uri(traceback.format_exc()))
        sys.stderr.flush()
        sys.exit(1)


def _redacting_excepthook(kind, exc, tb) -> None:
    sys.stderr.write(redact_uri("".join(traceback.format_exception(kind, exc, tb))))
    sys.stderr.flush()


def _redact_tracebacks() -> None:
    """Uncaught errors still print their traceback, without passwords: MLflow's own errors quote the tracking
    URI whole ("API request to http://user:PASSWORD@host/... failed"), and a scheduled job's last stderr
    line becomes its webhook's `error`."""
    if sys.excepthook is sys.__excepthook__:
        sys.excepthook = _redacting_excepthook


def overrides_from(args: argparse.Namespace) -> list[str]:
    out = []
    for key, override in (("asset", "asset"), ("algorithm", "algorithm"), ("mode", "mode"),
                          ("max_steps", "max_steps"), ("seed", "seed"), ("env_path", "env_path"),
                          ("unity_project", "build.unity_project"), ("editor_path", "build.editor_path"),
                          ("resume", "resume"), ("dataset_path", "mode.dataset_path")):
        value = getattr(args, key, None)
        if value not in (None, ""):
            out.append(f"{override}={value}")
    return out + shlex.split(args.overrides or "")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline.cli", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="stage", required=True)
    reap = sub.add_parser("reap", help="mark training runs whose process died (RUNNING forever) as FAILED")
    reap.add_argument("--experiment", default=None, help="only this experiment (default: all)")
    for stage in ("main", "build", "train", "evaluate", "register"):
        s = sub.add_parser(stage)
        s.add_argument("--asset", default="nav")
        s.add_argument("--overrides", default="", help="Hydra overrides, space separated")
        s.add_argument("--result-json", type=Path, help="write the stage's result here as JSON")
        if stage in ("main", "train"):
            s.add_argument("--algorithm", default="ppo")
            s.add_argument("--mode", default="online")
            s.add_argument("--max_steps", default="")
            s.add_argument("--seed", default="0")
            s.add_argument("--resume", default="", help="an interrupted training's run id, or 'latest'")
            s.add_argument("--dataset_path", default="", help="demonstrations for mode=offline|hybrid (.jsonl, .demo)")
        if stage in ("main", "train", "build"):
            s.add_argument("--env_path", default="", help="a Unity player build")
        if stage in ("main", "build"):
            s.add_argument("--unity_project", default="", help="a Unity project to build the player from")
            s.add_argument("--editor_path", default="", help="the Unity editor executable")
        if stage == "evaluate":
            s.add_argument("--policy", required=True, help="training run id, runs:/ URI or path to a .onnx")
        if stage == "register":
            s.add_argument("--run_id", required=True, help="the training run whose policy to register")
    return p


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parser().parse_args(argv)
    if args.stage == "reap":
        _reap(args.experiment)
        return
    if args.stage == "main":
        from pipeline.sweeps import handoff

        if handoff.wants_sweep(args.overrides):  # `-P overrides="asset=nav,patrol"`: a Hydra multirun
            handoff.run_multirun(overrides_from(argparse.Namespace(**{**vars(args), "overrides": ""})), args.overrides)
            return
    with reported():
        from pipeline.config.compose import compose_plan

        plan = compose_plan(overrides_from(args))  # validated before any run is created
        from pipeline.stages import build, evaluate, pipeline, register, train

        if args.stage == "main":
            result = pipeline.run_pipeline(plan)
        elif args.stage == "build":
            result = build.build(plan)
        elif args.stage == "train":
            result = train.train(plan)
        elif args.stage == "evaluate":
            result = evaluate.evaluate(plan, args.policy)
        else:
            result = register.register(plan, args.run_id)
    if args.result_json:
        args.result_json.write_text(json.dumps(asdict(result) if is_dataclass(result) else result, indent=2, default=str))


def _reap(experiment: Optional[str]) -> None:
    import mlflow

    from pipeline.tracking import store
    from pipeline.training.resume import reap

    store.configure()
    client = mlflow.MlflowClient()
    ids = [client.get_experiment_by_name(experiment).experiment_id] if experiment else \
        [e.experiment_id for e in client.search_experiments()]
    reaped = reap(ids)
    print(f"reap: {len(reaped)} dead training run(s) marked FAILED" + "".join(f"\n  {r}" for r in reaped))


if __name__ == "__main__":
    main()
