"""Start one run: check the run folder, write ``config.json``, call the task's runner.

``lmforge run`` and every point of ``lmforge sweep`` go through :func:`launch`, so the run folder
conventions (DESIGN.md "Configs and experiments") hold for both.

Re-running into an existing folder resumes it (the runner picks up its latest checkpoint), but
only with the same config: if ``config.json`` is there and differs, the run is refused with the
differing keys, before anything is written. Comparison is between configs, not between file
texts, so a field added to a dataclass since the folder was written (missing from the old file,
hence at its default) does not block a resume.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import pathlib
from collections.abc import Mapping
from typing import Any

from .bindings import diff
from .config_io import CLASS_KEY, class_path, from_json, to_json
from .errors import ConfigError
from .registry import task_for

CONFIG_FILE = "config.json"
RUNS_ROOT = pathlib.Path("runs")


def default_workdir(experiment: str | os.PathLike, variant: str, *, suffix: str = "",
                    now: datetime.datetime | None = None) -> pathlib.Path:
    """``runs/<exp-stem>-<variant>[-suffix]-<YYYYmmdd-HHMMSS>`` under the current directory."""
    stamp = (now or datetime.datetime.now()).strftime("%Y%m%d-%H%M%S")
    parts = [pathlib.Path(experiment).stem, variant, *([suffix] if suffix else []), stamp]
    return RUNS_ROOT / "-".join(parts)


def write_config(config: Any, workdir: pathlib.Path) -> bool:
    """Writes ``workdir/config.json``; returns True when resuming a folder with the same config.

    Raises ConfigError, leaving the folder untouched, if it already holds a different config or is
    a non-empty folder that is not a run folder.
    """
    path = workdir / CONFIG_FILE
    text = to_json(config)
    if path.exists():
        _check_same(config, path)
        return True
    if workdir.exists() and (not workdir.is_dir() or any(workdir.iterdir())):
        # Not a run folder (no config.json) but not empty either: a typo'd --workdir pointing at
        # a data or source folder must not get a run written into it.
        raise ConfigError(f"--workdir {workdir} exists and is not a run folder (it has no {CONFIG_FILE}); "
                          f"give a new or empty folder")
    workdir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{CONFIG_FILE}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written config.json
    return False


def launch(config: Any, workdir: str | os.PathLike) -> dict[str, float]:
    """Runs ``config`` in ``workdir`` through its registered task; returns the final metrics."""
    workdir = pathlib.Path(workdir)
    task = task_for(config)  # an unknown task fails before anything is written
    write_config(config, workdir)
    metrics = task.runner(config, workdir)
    if not isinstance(metrics, Mapping):
        raise TypeError(f"task {task.name!r} runner returned {type(metrics).__name__}; "
                        f"it must return a dict of final metrics")
    return {str(k): _number(v) for k, v in metrics.items()}


def _check_same(config: Any, path: pathlib.Path) -> None:
    text = path.read_text()
    try:
        recorded = json.loads(text).get(CLASS_KEY)
    except (json.JSONDecodeError, AttributeError):
        raise ConfigError(f"{path} exists but is not a config written by lmforge; "
                          f"refusing to overwrite it — pick a new --workdir") from None
    if recorded != class_path(type(config)):
        raise ConfigError(f"{path} is a {recorded} run, this is a {class_path(type(config))} run; "
                          f"pick a new --workdir")
    old = from_json(type(config), text, source=str(path))
    changed = diff(old, config)
    if changed:
        shown = [f"{k}: {_short(a)} → {_short(b)}" for k, (a, b) in list(changed.items())[:6]]
        more = f" and {len(changed) - 6} more" if len(changed) > 6 else ""
        raise ConfigError(f"{path} holds a different config ({'; '.join(shown)}{more}); refusing to "
                          f"resume into it — pick a new --workdir or repeat the original bindings")


def _short(value: Any, limit: int = 40) -> str:
    text = "(absent)" if value is dataclasses.MISSING else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _number(value: Any) -> Any:
    """Final metrics as plain floats where they are numbers (jax/numpy scalars included)."""
    if isinstance(value, (bool, str)):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return value
