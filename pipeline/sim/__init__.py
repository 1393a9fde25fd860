"""Built-in, vectorised simulations of the assets, usable wherever a Unity build would be."""
from __future__ import annotations

from pipeline.sim.forage import ForageWorld
from pipeline.sim.nav import NavWorld
from pipeline.sim.patrol import PatrolWorld
from pipeline.sim.push import PushWorld
from pipeline.sim.world import SimSpec, World

SIMULATIONS: dict[str, type[World]] = {"nav": NavWorld, "patrol": PatrolWorld, "push": PushWorld,
                                       "forage": ForageWorld}


def simulation(name: str) -> type[World]:
    try:
        return SIMULATIONS[name]
    except KeyError:
        raise KeyError(f"unknown simulation {name!r}; built-in simulations: {', '.join(sorted(SIMULATIONS))}") from None


__all__ = ["SIMULATIONS", "SimSpec", "World", "simulation"]
