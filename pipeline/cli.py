"""Command line of the MLflow entry points (see MLproject): one sub-command per stage, plus `main`.

    python -m pipeline.cli main --asset nav --algorithm ppo --max_steps 20000 --overrides "env.num_envs=1"
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path

from pipeline import startup_gc
from pipeline.config.errors import ConfigError, ServiceUnavailable, exit_code
from pipeline.redaction import redact_uri

EXIT_INTERRUPTED = 143  # 128 + SIGTERM, what a shell reports for a terminated process


@contextlib.contextmanager
def reported() -> Iterator[None]:
    """Failure handling for every entry point: bad input (exit code 2) and an unavailable service (exit code 1)
    are one clear line each; pipeline/config/errors.py says which is which."""
    from pipeline.unity.editor import BuildFailed

    _redact_tracebacks()
    try:
        yield
    except (ConfigError, ServiceUnavailable) as exc:
        print(redact_uri(f"error: {exc}"), file=sys.stderr, flush=True)
        sys.exit(exit_code(exc))
    except BuildFailed as exc:  # the editor's own error, already logged with Editor.log on the build run
        print(redact_uri(f"error: build failed: {exc}"), file=sys.stderr, flush=True)
        sys.exit(1)
    except (_stage_interrupted(), KeyboardInterrupt) as exc:  # SIGTERM/Ctrl-C: saved and ended KILLED
        print(redact_uri(f"interrupted: {exc}"), file=sys.stderr, flush=True)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:
        if redact_uri(str(exc)) == str(exc):
            raise  # nothing to hide: the caller (Python, Hydra) reports it as usual
        # It quotes a password (MLflow's errors quote the tracking URI whole); Hydra would print it as is.
        sys.stderr.write(redact_uri(traceback.format_exc()))
        sys.stderr.flush()
        sys.exit(1)


def _stage_interrupted() -> type:
    # Imported only once something other than bad input went wrong: it imports MLflow, and a config
    # error must stay instant (an except clause's expression is evaluated only when it is reached).
    from pipeline.tracking.runs import StageInterrupted

    return StageInterrupted


def _redacting_excepthook(kind, exc, tb) -> None:
    sys.stderr.write(redact_uri("".join(traceback.format_exception(kind, exc, tb))))
    sys.stderr.flush()


def _redact_tracebacks() -> None:
    """Uncaught errors still print their traceback, without passwords: MLflow's own errors quote the tracking
    URI whole ("API request to http://user:PASSWORD@host/... failed"), and a scheduled job's last stderr
    line becomes its webhook's `error`."""
    if sys.excepthook is sys.__excepthook__:
        sys.excepthook = _redacting_excepthook


# Entry-point flag -> (config group, or the dotted key of a typed value).
FLAG_GROUPS = ("asset", "algorithm", "mode")
FLAG_VALUES = {"max_steps": "max_steps", "seed": "seed", "env_path": "env_path",
               "unity_project": "build.unity_project", "editor_path": "build.editor_path",
               "dataset_path": "mode.dataset_path"}


def _typed(text: str):
    """An MLflow parameter is text: whole numbers become ints; anything else stays text for the schema to judge."""
    return int(text) if text.strip().lstrip("-").isdigit() else text


def request_from(args: argparse.Namespace):
    """An entry point's flags as a launch request: groups by name, flags as typed values, `--overrides` (text a
    person wrote, Hydra's grammar) as overrides. A key the overrides set is theirs: the flag's default yields."""
    from hydra.errors import HydraException

    from pipeline.launch.request import LaunchRequest
    from pipeline.sweeps import jobs

    overrides = shlex.split(args.overrides or "")
    try:
        given = {o.key_or_group for o in jobs.parse(overrides)}
    except HydraException:  # not ours to report: composing the config says what is wrong
        given = set()
    groups = {g: getattr(args, g) for g in FLAG_GROUPS if getattr(args, g, None) not in (None, "") and g not in given}
    values = {key: _typed(getattr(args, flag)) for flag, key in FLAG_VALUES.items()
              if getattr(args, flag, None) not in (None, "") and key not in given}
    stage_args = {k: getattr(args, k) for k in ("policy", "run_id") if getattr(args, k, None)}
    resume = getattr(args, "resume", None) or None
    return LaunchRequest(groups=groups, values=values, overrides=overrides, stage=args.stage, stage_args=stage_args,
                         resume=None if "resume" in given else resume,
                         result_json=str(args.result_json) if args.result_json else None)


def overrides_from(args: argparse.Namespace) -> list[str]:
    """The same flags as Hydra overrides, for handing a sweep to the Hydra app (pipeline/sweeps/handoff.py)."""
    from pipeline.launch.request import NAME
    from pipeline.sweeps.handoff import flag_override

    out = []
    for group in FLAG_GROUPS:
        name = getattr(args, group, None)
        if name not in (None, ""):
            if not NAME.match(name):
                raise ConfigError(f"--{group} {name!r} is not the name of a conf/{group}/*.yaml; "
                                  f"sweep it in overrides instead (overrides=\"{group}=a,b\")")
            out.append(f"{group}={name}")
    out += [flag_override(key, getattr(args, flag)) for flag, key in (*FLAG_VALUES.items(), ("resume", "resume"))
            if getattr(args, flag, None) not in (None, "")]
    return out + shlex.split(args.overrides or "")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline.cli", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="stage", required=True)
    reap = sub.add_parser("reap", help="close runs whose process died (RUNNING forever) as FAILED, with the reason")
    reap.add_argument("--experiment", default=None, help="only this experiment (default: all)")
    reap.add_argument("--older-than", default=None, metavar="DURATION",
                      help="also close RUNNING runs of other hosts (or with no process recorded) started longer ago "
                           "than this (90s, 30m, 12h, 2d); this host's runs are checked exactly regardless")
    req = sub.add_parser("run-request", help="run a launch request (pipeline/launch/): JSON, a file, or '-' (stdin)")
    req.add_argument("request", nargs="?", help="the request as JSON, a path to a JSON file, or - for stdin")
    req.add_argument("--from-env", metavar="VAR", help="read the request from this environment variable")
    req.add_argument("--print-result", action="store_true", help="also print the result as one JSON line on stdout")
    req.add_argument("--private-env", metavar="FILE", help="environment variables that can hold credentials, as the "
                     "Ray executor ships them (pipeline/launch/ray_jobs.py); the file is deleted once read")
    for stage in ("main", "build", "train", "evaluate", "register"):
        s = sub.add_parser(stage)
        s.add_argument("--asset", default="nav")
        s.add_argument("--overrides", default="", help="Hydra overrides, space separated")
        s.add_argument("--result-json", type=Path, help="write the stage's result here as JSON")
        if stage in ("main", "train"):
            s.add_argument("--algorithm", default="",
                           help="a conf/algorithm name; empty: the asset's default (MA-POCA for push, PPO otherwise)")
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


def main(argv: Sequence[str] | None = None) -> None:
    startup_gc.pause()  # until the stage's run starts: imports and config, no cyclic garbage to find
    args = parser().parse_args(argv)
    if args.stage == "reap":
        _reap(args.experiment, args.older_than)
        return
    if args.stage == "main":
        from pipeline.sweeps import handoff

        if handoff.wants_sweep(args.overrides):  # `-P overrides="asset=nav,patrol"`: a Hydra multirun
            with reported():
                flags = overrides_from(argparse.Namespace(**{**vars(args), "overrides": ""}))
            handoff.run_multirun(flags, args.overrides)
            return
    if args.stage == "run-request":
        _run_request(args)
        return
    with reported():
        from pipeline.launch.inprocess import run_request
        from pipeline.launch.request import RequestError

        try:
            request = request_from(args)
        except RequestError as exc:
            raise ConfigError(str(exc)) from None
        # `mlflow run` hands its entry point the run it made in MLFLOW_RUN_ID: read here, once, and taken out of
        # the environment (mlflow.start_run would adopt it wherever it is called); the request carries it on.
        request.run_id = os.environ.pop("MLFLOW_RUN_ID", None)
        run_request(request, own_trainer=True)  # validated before any run is created; writes --result-json


def _run_request(args: argparse.Namespace) -> None:
    """The child side of every executor: no command line is built from the request's values."""
    import os

    from pipeline.launch.inprocess import run_request
    from pipeline.launch.request import LaunchRequest, RequestError

    with reported():
        try:
            if args.private_env:
                from pipeline.launch.ray_jobs import take_private_env

                take_private_env(args.private_env)
            if args.from_env:
                text = os.environ.pop(args.from_env, None)  # not inherited by the trainer's own children
                if text is None:
                    raise ConfigError(f"--from-env {args.from_env}: that environment variable is not set")
            elif args.request == "-" or args.request is None:
                text = sys.stdin.read()
            elif args.request.lstrip().startswith("{"):
                text = args.request
            else:
                text = Path(args.request).read_text()
            request = LaunchRequest.from_json(text)
        except (RequestError, OSError) as exc:
            raise ConfigError(f"run-request: {exc}") from None
        run_request(request, print_result=args.print_result, own_trainer=True)


def _reap(experiment: str | None, older_than: str | None = None) -> None:
    import mlflow

    from pipeline.tracking import reaper, store

    with reported():
        limit = reaper.parse_duration(older_than) if older_than else None
        from pipeline.config.plan import check_store

        check_store(None)  # a store that is a directory or not a database: one error line
        store.configure()
        client = mlflow.MlflowClient()
        if experiment and client.get_experiment_by_name(experiment) is None:
            where = redact_uri(mlflow.get_tracking_uri())
            raise ConfigError(f"--experiment {experiment!r}: no such experiment in {where}")
        ids = [client.get_experiment_by_name(experiment).experiment_id] if experiment else \
            [e.experiment_id for e in client.search_experiments()]
        reaped = reaper.reap(ids, limit)
    print(f"reap: {len(reaped)} run(s) of dead processes marked FAILED" + "".join(f"\n  {r}" for r in reaped))


if __name__ == "__main__":
    main()
