"""Command line of the simulated player: the arguments UnityEnvironment gives a Unity build, plus which simulation.

    python -m pipeline.unity.simulated_player --simulation nav --mlagents-port 5005 -nographics -batchmode \
        -logFile p.log
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from pipeline.sim import SIMULATIONS
from pipeline.unity.simulated_player.player import Faults, PlayerLog, SimulatedPlayer, idle

SIMULATION_ENV = "SIMULATED_PLAYER_SIMULATION"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="simulated_player", description=__doc__, allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mlagents-port", type=int, dest="port", help="the trainer's gRPC port (set by UnityEnvironment)")
    p.add_argument("-logFile", "-logfile", dest="log_file", help="player log path; '-' for stdout")
    p.add_argument("-nographics", action="store_true", help="accepted like a Unity player; nothing is rendered anyway")
    p.add_argument("-batchmode", action="store_true")
    p.add_argument("--simulation", choices=sorted(SIMULATIONS),
                   help=f"built-in simulation to serve (else ${SIMULATION_ENV}, else the executable's name)")
    p.add_argument("--behavior-name", help="announce this behavior name instead of the simulation's")
    p.add_argument("--executable", help="the path this player was launched as (set by scripts/simulated_player)")
    p.add_argument("--crash-after-steps", type=int, help="test hook: die of SIGSEGV after N steps")
    p.add_argument("--hang-after-steps", type=int, help="test hook: stop answering after N steps")
    return p


def choose_simulation(explicit: Optional[str], executable: Optional[str]) -> Optional[str]:
    if explicit:
        return explicit
    if os.environ.get(SIMULATION_ENV):
        return os.environ[SIMULATION_ENV]
    if executable:  # Nav.x86_64 -> nav, as a build is named after its scene
        stem = Path(executable).name.split(".")[0].lower()
        if stem in SIMULATIONS:
            return stem
    return None


def main(argv: Optional[Sequence[str]] = None) -> int:
    args, unknown = parser().parse_known_args(argv)  # Unity ignores arguments it does not know
    log = PlayerLog(args.log_file)
    log(f"Simulated Unity player, launched as {args.executable or sys.argv[0]} "
        f"{' '.join(sys.argv[1:])}")
    if args.nographics or args.batchmode:
        log("Batch mode, no graphics device")
    simulation = choose_simulation(args.simulation, args.executable)
    if simulation not in SIMULATIONS:
        log(f"Error: which simulation should this player serve? got {simulation!r}; pass --simulation "
            f"{{{','.join(sorted(SIMULATIONS))}}}, set ${SIMULATION_ENV}, or name the player after one (Nav.x86_64)")
        return 1
    if args.port is None:
        log("No --mlagents-port argument: not connecting to a trainer")
        return idle(log)
    faults = Faults(args.crash_after_steps, args.hang_after_steps)
    return SimulatedPlayer(SIMULATIONS[simulation], args.port, log, args.behavior_name, faults).run()


if __name__ == "__main__":
    sys.exit(main())
