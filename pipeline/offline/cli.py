"""Record, convert and inspect demonstration datasets (`python scripts/record_demos.py ...`).

    record   play a built-in simulation with its scripted heuristic or an ONNX policy, optionally noisy
    convert  JSONL <-> Unity .demo (by the output's extension)
    inspect  validate a dataset against an asset and print its size, returns and digest
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

from pipeline.config.errors import EXIT_BAD_INPUT, ConfigError, exit_code
from pipeline.offline import dataset as ds
from pipeline.offline import jsonl, recorder, unity_demo
from pipeline.offline.loader import dataset_format, load
from pipeline.sim import SIMULATIONS


def _world(asset: str):
    if asset not in SIMULATIONS:
        raise ConfigError(f"--asset {asset!r} is not a built-in simulation; "
                          f"choose one of: {', '.join(sorted(SIMULATIONS))}")
    return SIMULATIONS[asset]


def write(path: Path, data: ds.Dataset, header: Optional[dict] = None) -> Path:
    fmt = dataset_format(path, "output")
    if fmt == "jsonl":
        return jsonl.write(path, data, header)
    return unity_demo.write(path, data, name=path.stem)


def cmd_record(args: argparse.Namespace) -> None:
    world = _world(args.asset)
    dataset_format(args.out, "--out")
    if args.policy == "heuristic":
        policy = world.heuristic
    else:
        from pipeline.evaluation.rollout import onnx_policy

        if not Path(args.policy).is_file():
            raise ConfigError(f"--policy {args.policy}: no such ONNX file (or use --policy heuristic)")
        policy = onnx_policy(Path(args.policy), deterministic=True)

    reported = [0]

    def progress(done: int, total: int) -> None:
        if done - reported[0] >= max(total // 10, 1):
            reported[0] = done
            print(f"recorded {done}/{total} episodes", file=sys.stderr, flush=True)

    data = recorder.record(world, policy, args.episodes, seed=args.seed, num_areas=args.areas,
                           noise=args.noise, mixed=args.mixed, progress=progress)
    source = {"policy": args.policy if args.policy == "heuristic" else Path(args.policy).name,
              "simulation": args.asset, "episodes": args.episodes, "seed": args.seed, "noise": args.noise,
              "mixed": args.mixed}
    write(args.out, data, {"source": source, **data.metadata})
    stats = data.metadata["episode_stats"]
    print(f"wrote {args.out}: {len(data):,} steps, {stats['episodes']} episodes, success {stats['success']:.1%}, "
          f"mean return {stats['mean_return']:.3f}")


def cmd_convert(args: argparse.Namespace) -> None:
    world = _world(args.asset)
    data = load(args.input, recorder.layout_of_world(world), key="input")
    dataset_format(args.output, "output")
    write(args.output, data, {"source": {"converted_from": str(data.path), "sha256": data.digest}})
    print(f"wrote {args.output}: {len(data):,} steps, {data.episodes} episodes (from {data.format} {data.path})")


def cmd_inspect(args: argparse.Namespace) -> None:
    data = load(args.path, recorder.layout_of_world(_world(args.asset)), key="path")
    print(json.dumps({"path": str(data.path), "format": data.format, "sha256": data.digest,
                      "has_rewards": data.has_rewards, **data.summary()}, indent=2))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scripts/record_demos.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("record", help="record demonstrations in a built-in simulation")
    r.add_argument("--asset", default="nav", help="built-in simulation: " + ", ".join(sorted(SIMULATIONS)))
    r.add_argument("--out", type=Path, required=True, help="output .jsonl or .demo")
    r.add_argument("--episodes", type=int, default=250)
    r.add_argument("--policy", default="heuristic", help="'heuristic' or the path of an ONNX policy")
    r.add_argument("--noise", type=float, default=0.0, help="std of Gaussian noise added to actions")
    r.add_argument("--mixed", action="store_true", help="each episode's noise std uniform in [0, --noise]")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--areas", type=int, default=16, help="training areas played at once")
    r.set_defaults(func=cmd_record)
    c = sub.add_parser("convert", help="convert between .jsonl and Unity .demo")
    c.add_argument("input", type=Path)
    c.add_argument("output", type=Path)
    c.add_argument("--asset", default="nav")
    c.set_defaults(func=cmd_convert)
    i = sub.add_parser("inspect", help="validate a dataset against an asset and summarise it")
    i.add_argument("path", type=Path)
    i.add_argument("--asset", default="nav")
    i.set_defaults(func=cmd_inspect)
    return p


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parser().parse_args(argv)
    if getattr(args, "episodes", 1) < 1:
        print("error: --episodes must be >= 1", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    try:
        args.func(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(exit_code(exc))
