"""Hydra settings no command line or config may change: the environment of processes, where Hydra writes,
and config-group choices that are paths. Checked before Hydra acts on any of them.

- **Process environment.** Hydra exports `hydra.job.env_set` (and copies `hydra.job.env_copy`) into the job's
  process before the task runs, and launchers pass `runtime_env` / `env_vars` to their workers:
  `LD_PRELOAD`, `PYTHONPATH`, `PYTHONSTARTUP`... load code into every process of the run. Refused outright
  (set environment variables outside the pipeline, where you control the shell).
- **Where Hydra writes.** `hydra.run.dir` / `hydra.sweep.dir` (Hydra creates them and writes `.hydra/` and a
  log file there) may only lie inside the working directory or the system temporary directory (where tests
  and throw-away runs put them); `hydra.sweep.subdir` must stay inside the sweep directory; `hydra.output_subdir`
  and `hydra.job.name` name files inside the run's folder, so they are plain names; log-file `filename`s of
  hydra.job_logging / hydra.hydra_logging must lie inside `${hydra.runtime.output_dir}` (or, like Hydra's own
  hydra_debug logging, the working or temporary directory); our sweep callback's
  `tuned_dir` (where a search writes its best config) follows the run.dir rule. Only the interpolations Hydra
  itself uses there (`${now:...}`, `${hydra.job.num|id|name}`) are accepted, since anything else
  (`${oc.env:HOME}`) cannot be judged before it is resolved.
- **Config-group choices** (`asset=`, `algorithm=`, `hydra/launcher=` ...) are plain names of files in
  conf/<group>/: `asset=../../x` would load and run a YAML from outside conf/.

`check_overrides` checks overrides as typed (the Hydra app, `main --overrides "-m ..."`, the pipeline.cli stages,
compose.py); `check_config` checks the composed config the Hydra app will run (config files, --config-dir,
defaults lists included).
"""
from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.config.errors import ConfigError
from pipeline.paths import CONF_DIR

WHERE = "see pipeline/config/hydra_settings.py"
# Keys that set the environment of processes, anywhere under hydra.
ENV_KEYS = frozenset({"env_set", "env_copy", "env_vars", "runtime_env"})
NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")  # a config-group choice: a file name in conf/<group>/
FILE_NAME = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,127}$")  # .hydra is one
# Interpolations Hydra itself puts in output locations; replaced by a placeholder name before the path check.
KNOWN_INTERPOLATION = re.compile(r"\$\{(now:[^{}]*|hydra\.job\.(num|id|name))\}")
OUTPUT_DIR = "${hydra.runtime.output_dir}"


def check_overrides(overrides: Sequence[str]) -> None:
    """Refuse environment settings, output locations outside the run's folders and group choices that are
    not plain names, in Hydra overrides as typed. Overrides Hydra cannot parse are left to Hydra."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides=list(overrides))
    except HydraException:
        return
    for o in parsed:
        if o.is_delete():
            continue
        key = o.key_or_group
        values = _values(o)
        if is_group(key) and not any(isinstance(v, Mapping) for v in values):
            for value in values:
                check_group_choice(key, value)
            continue
        path = tuple(key.split("."))
        for value in values:
            _walk(path, value)


def check_config(tree: Mapping[str, Any]) -> None:
    """The same on a composed config (plain containers, not resolved): the `hydra` node and its choices."""
    hydra = tree.get("hydra") or {}
    if not isinstance(hydra, Mapping):
        return
    choices = (hydra.get("runtime") or {}).get("choices") or {}
    for group, choice in choices.items():
        check_group_choice(str(group), choice)
    for key, value in hydra.items():
        if key != "runtime":
            _walk(("hydra", str(key)), value, composed=True)


def is_group(key: str) -> bool:
    """Whether an override key chooses a config group (asset=nav, hydra/launcher=basic), not a value."""
    return "/" in key or any((CONF_DIR / key).glob("*.yaml"))


def check_group_choice(group: str, choice: Any) -> None:
    """A config-group choice must be a plain name of a config in conf/<group>/ (None: no choice)."""
    if choice is None:
        return
    text = str(choice)
    if isinstance(choice, str) and NAME.match(text) and ".." not in text:
        return
    options = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml")) if (CONF_DIR / group).is_dir() else []
    default = _defaults().get(group)
    options = [default] if default in options else options
    example = f"e.g. {group}={options[0]}" if options else "e.g. the name of a file in that group, without .yaml"
    raise ConfigError(f"{group}={text!r} is not allowed: a config-group choice must be the plain name of a config "
                      f"in conf/{group}/ (letters, digits, '_', '-' or '.'; no '/' or '..'), never a path: a path "
                      f"would load a YAML from outside conf/; {example}")


def _defaults() -> dict[str, str]:
    """conf/config.yaml's group defaults (asset: nav, ...): the example an error suggests."""
    import yaml

    try:
        entries = yaml.safe_load((CONF_DIR / "config.yaml").read_text()).get("defaults", [])
    except (OSError, AttributeError, yaml.YAMLError):
        return {}
    return {str(k): str(v) for e in entries if isinstance(e, dict) for k, v in e.items()}


def _values(o) -> list[Any]:
    if not o.is_sweep_override():
        return [o.value()]
    try:
        return list(o.sweep_string_iterator())
    except Exception:  # noqa: BLE001 (interval(...), glob(...): ranges of numbers or existing group names)
        return []


def _walk(path: tuple, value: Any, composed: bool = False) -> None:
    if path[:1] != ("hydra",):
        return
    _check_key(path, value, composed)
    if isinstance(value, Mapping):
        for k, v in value.items():
            _walk((*path, str(k)), v, composed)


def _check_key(path: tuple, value: Any, composed: bool) -> None:
    where = f"{'.'.join(path)}={value!r}"
    env = next((p for p in path if p in ENV_KEYS), None)
    if env is not None and not (composed and _empty(value)):
        raise ConfigError(f"{where} is not allowed: {env} sets the environment of the run's processes "
                          "(LD_PRELOAD, PYTHONPATH and the like load code into them); set environment variables "
                          f"in the shell that starts the pipeline instead ({WHERE})")
    if path[:2] == ("hydra", "runtime") and not composed:
        raise ConfigError(f"{where} is not allowed: hydra.runtime is set by Hydra itself when the job starts; "
                          f"remove it ({WHERE})")
    if isinstance(value, Mapping):
        return
    if path in (("hydra", "run", "dir"), ("hydra", "sweep", "dir")) or \
            (len(path) == 4 and path[1] == "callbacks" and path[3] == "tuned_dir"):
        problem = _outside(value)
        if problem:
            raise ConfigError(f"{where} is not allowed: {problem}; Hydra (or the sweep callback) writes there, "
                              "so it may only be a directory inside the working directory or the temporary "
                              f"directory, e.g. {'.'.join(path)}=outputs/my-run ({WHERE})")
    elif path == ("hydra", "sweep", "subdir"):
        problem = _escapes(value)
        if problem:
            raise ConfigError(f"{where} is not allowed: {problem}; a sweep job's folder must stay inside "
                              f"hydra.sweep.dir, e.g. hydra.sweep.subdir=job${{hydra.job.num}} ({WHERE})")
    elif path in (("hydra", "output_subdir"), ("hydra", "job", "name")):
        if value is None and path[-1] == "output_subdir":
            return  # no .hydra folder at all
        text = str(value)
        if not (isinstance(value, str) and FILE_NAME.match(text) and text not in (".", "..")):
            raise ConfigError(f"{where} is not allowed: it names a file or folder inside the run's output folder, "
                              f"so it must be a plain name (no '/' or '..'), e.g. {'.'.join(path)}="
                              f"{'.hydra' if path[-1] == 'output_subdir' else 'run'} ({WHERE})")
    elif len(path) == 5 and path[1] in ("job_logging", "hydra_logging") and path[2] == "handlers" \
            and path[4] == "filename":
        text = str(value)
        if text.startswith(OUTPUT_DIR + "/"):
            problem = _escapes(text[len(OUTPUT_DIR) + 1:])
        else:  # Hydra's own hydra_debug logging writes hydra-<job>.log into the working directory
            problem = _outside(value)
        if problem:
            raise ConfigError(f"{where} is not allowed: {problem}; a log file must be written inside the run's output "
                              "folder (or the working or temporary directory), e.g. "
                              f"{'.'.join(path)}='{OUTPUT_DIR}/${{hydra.job.name}}.log' ({WHERE})")


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, (Mapping, list, tuple)) and len(value) == 0)


def _static(value: Any) -> tuple[str | None, str | None]:
    """(the path text with Hydra's own interpolations replaced, None) or (None, why it cannot be judged)."""
    if not isinstance(value, str) or not value.strip():
        return None, "it must be a path"
    text = KNOWN_INTERPOLATION.sub("x", value)
    if "${" in text:
        return None, "only ${now:...} and ${hydra.job.num|id|name} interpolations are accepted in it"
    return text, None


def _escapes(value: Any) -> str | None:
    text, why = _static(value)
    if why:
        return why
    if os.path.isabs(text):
        return "it is an absolute path"
    if os.path.normpath(text).split(os.sep)[0] == "..":
        return "it leads out of its parent folder with '..'"
    return None


def _outside(value: Any) -> str | None:
    text, why = _static(value)
    if why:
        return why
    target = Path(text) if os.path.isabs(text) else Path.cwd() / text
    target = target.resolve()  # symlinks of the parts that exist, and '..'
    roots = _roots()
    if any(target == root or root in target.parents for root in roots):
        return None
    return f"{target} is outside {' and '.join(str(r) for r in roots)}"


def _roots() -> Iterable[Path]:
    return list(dict.fromkeys([Path.cwd().resolve(), Path(tempfile.gettempdir()).resolve()]))
