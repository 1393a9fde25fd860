#!/usr/bin/env python
"""Steps/s of a built-in simulation in process vs. through ML-Agents' gRPC protocol and the simulated player.

    .venv/bin/python scripts/bench_protocol.py [--simulation nav] [--areas 16] [--steps 500]

Both paths take the same random actions from the same seed; "agent steps" = environment steps x areas,
the unit ML-Agents' max_steps counts. The protocol path is exactly what a Unity build gets:
UnityEnvironment launching a player, gRPC exchanges, side channels, protobuf on both sides.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mlagents_envs.base_env import ActionTuple  # noqa: E402
from mlagents_envs.environment import UnityEnvironment  # noqa: E402
from mlagents_envs.side_channel.engine_configuration_channel import EngineConfigurationChannel  # noqa: E402
from mlagents_envs.side_channel.stats_side_channel import StatsSideChannel  # noqa: E402

from pipeline.sim import SIMULATIONS  # noqa: E402
from pipeline.sim.unity_env import SimulatedUnityEnv  # noqa: E402
from pipeline.unity import ports  # noqa: E402


def drive(env, steps: int, action_size: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    env.reset()
    name = next(iter(env.behavior_specs))
    start = time.perf_counter()
    for _ in range(steps):
        decision, _ = env.get_steps(name)
        actions = rng.uniform(-1, 1, (len(decision), action_size)).astype(np.float32)
        env.set_actions(name, ActionTuple(continuous=actions))
        env.step()
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--simulation", default="nav", choices=sorted(SIMULATIONS))
    p.add_argument("--areas", type=int, default=16)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--json", type=Path, help="also write the numbers here")
    args = p.parse_args()
    world = SIMULATIONS[args.simulation]
    size = world.spec.action_size

    inproc = drive(SimulatedUnityEnv(world, num_areas=args.areas, seed=0), args.steps, size, 0)

    with tempfile.TemporaryDirectory() as tmp:
        player = Path(tmp) / f"{args.simulation.capitalize()}.x86_64"
        player.write_text(f'#!/bin/sh\nexec "{REPO / "scripts" / "simulated_player"}" --executable "$0" "$@"\n')
        player.chmod(0o755)
        engine = EngineConfigurationChannel()
        engine.set_configuration_parameters(time_scale=20.0)
        reservation = ports.reserve_port(5005)
        reservation.release()  # UnityEnvironment binds it right away
        env = UnityEnvironment(str(player), base_port=reservation.port, seed=0, no_graphics=True, num_areas=args.areas,
                               timeout_wait=60, side_channels=[engine, StatsSideChannel()], log_folder=tmp)
        try:
            protocol = drive(env, args.steps, size, 0)
        finally:
            env.close()

    rows = {"in_process": inproc, "protocol": protocol}
    out = {k: {"env_steps_per_s": args.steps / v, "agent_steps_per_s": args.steps * args.areas / v}
           for k, v in rows.items()}
    out["protocol_vs_in_process"] = out["protocol"]["agent_steps_per_s"] / out["in_process"]["agent_steps_per_s"]
    print(f"{args.simulation}, {args.areas} areas, {args.steps} steps, random actions")
    for k in rows:
        print(f"  {k:<11} {out[k]['env_steps_per_s']:9.1f} env steps/s  "
              f"{out[k]['agent_steps_per_s']:10.0f} agent steps/s")
    print(f"  protocol / in-process: {out['protocol_vs_in_process']:.3f}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    from bench import append_results  # scripts/ is this script's import path

    append_results(f"protocol path: {args.simulation}, {args.areas} areas, {args.steps} steps, random actions", [
        f"in-process: {out['in_process']['agent_steps_per_s']:,.0f} agent steps/s",
        f"simulated player over ML-Agents' gRPC protocol: {out['protocol']['agent_steps_per_s']:,.0f} agent steps/s",
        f"protocol / in-process: **{out['protocol_vs_in_process']:.3f}** (protobuf {protobuf_in_use()} on both sides)"])


def protobuf_in_use() -> str:
    import google.protobuf
    from google.protobuf.internal import api_implementation

    return f"{google.protobuf.__version__}, {api_implementation.Type()}"


if __name__ == "__main__":
    main()
