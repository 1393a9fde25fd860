"""The `python -m pipeline.run` command line, checked against the allow-list of classes (targets.py) before
Hydra reads it: Hydra instantiates its callbacks, launcher and sweeper before the task function runs."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Optional, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from pipeline.config import hydra_settings
from pipeline.config.errors import ConfigError
from pipeline.config.targets import check_config, check_overrides

APP_FILE = Path(__file__).resolve().parents[1] / "run.py"  # the Hydra app; its config_path is relative to it
CONFIG_PATH, CONFIG_NAME = "../conf", "config"
# What Hydra instantiates (or hands to logging.config) from its own config, resolved when it does.
INSTANTIATED_FROM = ("callbacks", "launcher", "sweeper", "job_logging", "hydra_logging")


def check_command_line(argv: Sequence[str]) -> None:
    """Refuse a class or function outside the allow-list (pipeline/config/targets.py) before Hydra runs.

    Hydra instantiates hydra.callbacks, hydra.launcher and hydra.sweeper (with its sampler) before the task
    function runs, so `build_plan`'s check would come too late. Two checks, here:
    - the overrides as typed, so the error names the override even where composing would fail;
    - the config Hydra instantiates from, composed here the way Hydra composes it for the sweep process
      (same search path, --config-path/--config-name/--config-dir, sweep values left aside). Composing
      rather than scanning conf/**.yaml: a `_target_` can also come from ConfigStore nodes (the plugins'
      dataclasses), hydra.searchpath, --config-dir or `group@package` overrides, which a file scan misses,
      and it costs one composition (~0.2 s, no instantiation, nothing resolved). When composing fails,
      Hydra's own (identical or stricter) composition fails the same way before instantiating anything,
      so that error is left to Hydra to report as it always has.
    """
    from hydra._internal.utils import get_args_parser

    args = get_args_parser().parse_args(list(argv))  # Hydra's own parser: the same reading of the line
    if args.experimental_rerun is not None:
        raise ConfigError("--experimental-rerun is not accepted: it unpickles a saved config (which can run "
                          "any code) and skips the config checks; run again with the same overrides instead")
    check_overrides(args.overrides)
    hydra_settings.check_overrides(args.overrides)  # environment, output locations, group choices
    cfg = compose_as_hydra(args)
    if cfg is not None:
        written = OmegaConf.to_container(cfg, resolve=False)
        check_config(written)  # as written: names the key as typed
        check_config(_resolved(cfg))  # as Hydra will read it: `${oc.create:...}` can build a _target_
        hydra_settings.check_config(written)  # config files, --config-dir and defaults lists included


def _resolved(cfg: DictConfig) -> dict:
    """The parts of the hydra node that Hydra instantiates from, resolved the way Hydra resolves them."""
    from hydra.core.utils import setup_globals

    setup_globals()  # Hydra's resolvers: ${now:...}, ${hydra:...}
    if OmegaConf.is_missing(cfg.hydra.runtime, "output_dir"):  # set when a job starts; logging files use it
        cfg.hydra.runtime.output_dir = "<output_dir>"
    previous = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(cfg)
    try:
        out = {}
        for key in INSTANTIATED_FROM:
            try:
                value = cfg.hydra.get(key)
                out[key] = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
            except Exception as exc:  # Hydra would fail on it too, but only when instantiating it
                raise ConfigError(f"hydra.{key} does not resolve, so it cannot be checked against the allow-list "
                                  f"of classes: {exc}") from None
        return {"hydra": out}
    finally:
        HydraConfig.instance().cfg = previous


def compose_as_hydra(args) -> Optional[DictConfig]:
    """The sweep process's config (hydra node included), as `Hydra.get_mode` composes it; None if it fails."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_automatic_config_search_path
    from hydra.core.config_search_path import SearchPathQuery
    from hydra.core.global_hydra import GlobalHydra
    from hydra.initialize import get_gh_backup, restore_gh_from_backup

    config_path = args.config_path if args.config_path is not None else CONFIG_PATH
    # `python -m pipeline.run` runs that file: Hydra resolves config_path against it (not a package).
    search_path = create_automatic_config_search_path(str(APP_FILE), None, config_path)
    if args.config_dir is not None:
        if not os.path.isdir(args.config_dir):
            return None  # Hydra refuses it ("Additional config directory ... not found")
        search_path.prepend(provider="command-line", path=f"file://{os.path.abspath(args.config_dir)}",
                            anchor=SearchPathQuery(provider="schema"))
    backup = get_gh_backup()
    GlobalHydra.instance().clear()
    try:
        app = Hydra.create_main_hydra2(task_name="run", config_search_path=search_path)
        return app.compose_config(config_name=args.config_name or CONFIG_NAME, overrides=list(args.overrides),
                                  run_mode=RunMode.MULTIRUN, with_log_configuration=False,
                                  validate_sweep_overrides=False)
    except Exception:
        return None
    finally:
        with contextlib.suppress(KeyError):  # nothing to restore when Hydra never got initialised
            restore_gh_from_backup(backup)
