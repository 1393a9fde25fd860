"""Which classes a config may name for instantiation: an explicit allow-list, per place in the config.

Hydra instantiates `_target_` at a few places of its own config (the callbacks, the launcher, the sweeper
and the Optuna sampler), the Optuna sweeper calls `hydra.sweeper.custom_search_space` by name, and Python's
logging instantiates the handler `class`es (and `()` factories) of hydra.job_logging / hydra.hydra_logging.
Anywhere else (the whole pipeline config included) nothing is instantiated, so naming a class there is a
mistake or an attack. Exact names only: a prefix such as `pipeline.` would admit functions that do things.

`check_config` checks a config tree (composed, as plain containers); `check_overrides` checks overrides as
typed. pipeline/run.py runs both before Hydra instantiates anything; build_plan runs `check_config` on
every pipeline config.
"""
from __future__ import annotations

from typing import Any, Iterable, Optional, Sequence

from pipeline.config.errors import ConfigError

SWEEP_CALLBACK = "pipeline.sweeps.callbacks.MlflowSweepCallback"  # our only class built from config

LAUNCHERS = frozenset({
    "hydra._internal.core_plugins.basic_launcher.BasicLauncher",  # hydra/launcher=basic (the default)
    "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",  # conf/hydra/launcher/parallel.yaml
    "hydra_plugins.mlops_ray_launcher.ray_launcher.RayLauncher",  # conf/hydra/launcher/ray.yaml
})
SWEEPERS = frozenset({
    "hydra._internal.core_plugins.basic_sweeper.BasicSweeper",  # hydra/sweeper=basic (the default)
    "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper",  # conf/search/*.yaml
})
# The samplers of hydra-optuna-sweeper's hydra/sweeper/sampler group (tpe, random, cmaes, nsgaii, motpe, grid).
SAMPLERS = frozenset({
    "optuna.samplers.TPESampler",
    "optuna.samplers.RandomSampler",
    "optuna.samplers.CmaEsSampler",
    "optuna.samplers.NSGAIISampler",
    "optuna.samplers.MOTPESampler",
    "optuna.samplers.GridSampler",
})
# The handlers of Hydra's own hydra/job_logging and hydra/hydra_logging configs.
LOG_HANDLERS = frozenset({"logging.StreamHandler", "logging.FileHandler"})

# Where config may name something to instantiate or call, and what: (path of the key, "*" = any one key).
ALLOWED: dict[tuple[str, ...], frozenset[str]] = {
    ("hydra", "callbacks", "*", "_target_"): frozenset({SWEEP_CALLBACK}),
    ("hydra", "launcher", "_target_"): LAUNCHERS,
    ("hydra", "sweeper", "_target_"): SWEEPERS,
    ("hydra", "sweeper", "sampler", "_target_"): SAMPLERS,
    ("hydra", "sweeper", "custom_search_space"): frozenset(),  # a function Optuna calls by name: null only
    ("hydra", "job_logging", "handlers", "*", "class"): LOG_HANDLERS,
    ("hydra", "hydra_logging", "handlers", "*", "class"): LOG_HANDLERS,
}
INSTANTIATED = "hydra.callbacks.<name>, hydra.launcher, hydra.sweeper or hydra.sweeper.sampler"
LOGGING = (("hydra", "job_logging"), ("hydra", "hydra_logging"))
CALL_ARGUMENTS = ("_args_", "_partial_")  # how Hydra calls a _target_: only where one is instantiated
WHERE = "the allow-list is in pipeline/config/targets.py"


def check_config(tree: Any) -> None:
    """Refuse any class or function named outside `ALLOWED`, in a config given as plain containers."""
    _walk(tree, (), complete=True)


def check_overrides(overrides: Sequence[str]) -> None:
    """Refuse the same in Hydra overrides as typed (`+hydra.callbacks.x._target_=...`, `+a.b={_target_: ...}`).

    Overrides Hydra cannot parse are left to Hydra, which refuses them before instantiating anything.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides=list(overrides))
    except HydraException:
        return
    for o in parsed:
        if o.is_delete():  # removing a key instantiates nothing
            continue
        path = tuple(o.key_or_group.split("."))
        for value in _values(o):
            _check_key(path, value, complete=False)
            _walk(value, path, complete=False)


def _values(o) -> Iterable[Any]:
    """An override's value; every value of a sweep (or its text, when it cannot be listed)."""
    if not o.is_sweep_override():
        return [o.value()]
    try:
        return list(o.sweep_string_iterator())
    except Exception:  # interval(...) and other sweeps that are not lists of values
        return [o.input_line.split("=", 1)[1] if "=" in o.input_line else ""]


def _walk(node: Any, path: tuple, complete: bool) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            _check_key((*path, str(key)), value, complete, node)
            _walk(value, (*path, str(key)), complete)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _walk(value, (*path[:-1], f"{path[-1]}[{i}]") if path else (f"[{i}]",), complete)


def _check_key(path: tuple, value: Any, complete: bool, node: Optional[dict] = None) -> None:
    if not path:
        return
    key, parent = path[-1], path[:-1]
    names_something = key == "_target_" or (key in ("class", "()") and parent[:2] in LOGGING) or \
        path == ("hydra", "sweeper", "custom_search_space")
    if names_something:
        rule = _rule(path)
        allowed = ALLOWED.get(rule, frozenset()) if rule else frozenset()
        if (value is None and key != "_target_") or (isinstance(value, str) and value in allowed):
            return
        raise ConfigError(_refusal(path, value, rule, allowed))
    if key in CALL_ARGUMENTS and parent[:1] == ("hydra",):
        target_path = (*parent, "_target_")
        if _rule(target_path) is None:
            raise ConfigError(f"{_dotted(path)}={value!r}: nothing is instantiated at {_dotted(parent)}; remove it "
                              f"(only {INSTANTIATED} are; {WHERE})")
        if complete and node is not None and "_target_" not in node:
            raise ConfigError(f"{_dotted(path)}={value!r}: {_dotted(parent)} has no _target_ to instantiate "
                              f"with it; remove it ({WHERE})")


def _rule(path: tuple) -> Optional[tuple[str, ...]]:
    for rule in ALLOWED:
        if len(rule) == len(path) and all(r in ("*", p) for r, p in zip(rule, path)):
            return rule
    return None


def _refusal(path: tuple, value: Any, rule: Optional[tuple], allowed: frozenset[str]) -> str:
    where = f"{_dotted(path)}={value!r}"
    if rule is None:
        if path[-1] == "_target_":
            return (f"{where}: this config names no classes to instantiate; remove it "
                    f"(a _target_ may only stand at {INSTANTIATED}; {WHERE})")
        return f"{where} is not allowed: nothing may be named for instantiation there; remove it ({WHERE})"
    place = ".".join("<name>" if r == "*" else r for r in rule)
    if not allowed:
        return f"{where} is not allowed: {place} may only be null ({WHERE})"
    names = sorted(allowed)
    return (f"{where} is not allowed: {place} may only name "
            f"{names[0] if len(names) == 1 else 'one of ' + ', '.join(names)} ({WHERE})")


def _dotted(path: tuple) -> str:
    return ".".join(path)
