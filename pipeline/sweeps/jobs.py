"""What a sweep's overrides mean: which are sweeps, one job's parameters, which jobs share a configuration."""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

# Keys that repeat a configuration rather than change it: jobs differing only in these are one row.
REPLICATE_KEYS = ("seed",)
MULTIRUN_FLAGS = ("-m", "--multirun")


def parse(overrides: Sequence[str]):
    return OverridesParser.create().parse_overrides(overrides=list(overrides))


def is_sweep(overrides: Sequence[str]) -> bool:
    """True for `-m`/`--multirun`, or any sweep value (`a=1,2`, `range(..)`, `choice(..)`, `glob(..)`)."""
    if any(o in MULTIRUN_FLAGS for o in overrides):
        return True
    try:
        return any(o.is_sweep_override() for o in parse(overrides))
    except HydraException:
        return False  # not ours to report: composing the config says what is wrong


def job_params(overrides: Iterable[str]) -> dict[str, str]:
    """`asset=nav` -> {"asset": "nav"}; `+x=1`/`++x=1`/`~x` keep their key."""
    out: dict[str, str] = {}
    for o in parse(list(overrides)):
        key = o.key_or_group
        if key.startswith("hydra.") or key.startswith("hydra/"):
            continue
        if o.is_delete():
            out[key] = "<deleted>"
        elif o.is_sweep_override():  # the sweep's own definition, as typed: `nav,patrol`, `range(0,3)`
            out[key] = o.input_line.split("=", 1)[1] if "=" in o.input_line else ""
        else:
            out[key] = o.get_value_element_as_str()
    return out


def config_key(params: Mapping[str, str]) -> str:
    """The configuration a job runs, without its replicate keys: `algorithm=sac asset=nav`."""
    items = sorted((k, v) for k, v in params.items() if k not in REPLICATE_KEYS)
    return " ".join(f"{k}={v}" for k, v in items) or "default"


def expand_basic(overrides: Sequence[str]) -> list[list[str]]:
    """Every job Hydra's basic sweeper will launch for these overrides (cartesian product of the sweeps)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    batches = BasicSweeper.split_arguments(parse(overrides), max_batch_size=None)
    return [list(job) for batch in batches for job in batch]
