"""Load an experiment file by path and pick its variant: ``path/to/exp.py[:VARIANT]``.

An experiment file is a short Python module (not installed, not importable by name) exporting:
- ``get_config(variant: str = "default")`` → the top-level config dataclass of a registered task;
- ``VARIANTS: tuple[str, ...]`` → the variants it accepts (every experiment has ``"smoke"``);
- optionally ``sweep() -> dict[str, list]`` → the default sweep axes for ``lmforge sweep``.

``:NAME`` after the path picks a variant, as in big_vision; without it the variant is
``"default"``, which every ``get_config`` accepts whether or not ``VARIANTS`` lists it.

The module is executed under the name ``lmforge_experiment_<stem>`` and registered in
``sys.modules``, because ``typing.get_type_hints`` and ``dataclasses`` look a class's module up
there (a dataclass with ``from __future__ import annotations`` defined in the file needs it).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import pathlib
import re
import sys
import traceback
import types
from typing import Any

from .errors import ConfigError, did_you_mean, one_line

DEFAULT_VARIANT = "default"


def split_spec(spec: str) -> tuple[pathlib.Path, str]:
    """``"exp.py:smoke"`` → ``(Path("exp.py"), "smoke")``; no ``:NAME`` gives ``"default"``."""
    path, sep, variant = spec.rpartition(":")
    if not sep or "/" in variant or variant.endswith(".py"):
        return pathlib.Path(spec), DEFAULT_VARIANT
    if not variant:
        raise ConfigError(f"experiment spec {spec!r} ends with ':' but names no variant")
    return pathlib.Path(path), variant


def load_experiment(spec: str) -> tuple[types.ModuleType, str]:
    """``(module, variant)`` for ``path/to/exp.py[:VARIANT]``, the variant checked against VARIANTS."""
    path, variant = split_spec(spec)
    if not path.is_file():
        hint = " (it is a folder; name the .py file)" if path.is_dir() else ""
        raise ConfigError(f"experiment file {str(path)!r} not found{hint}")
    if path.suffix != ".py":
        raise ConfigError(f"experiment file {str(path)!r} is not a .py file")
    module = _exec_module(path)
    if not callable(getattr(module, "get_config", None)):
        raise ConfigError(f"experiment {path} defines no get_config(variant) function")
    variants = getattr(module, "VARIANTS", None)
    if not isinstance(variants, (tuple, list)) or not all(isinstance(v, str) for v in variants):
        raise ConfigError(f"experiment {path} must define VARIANTS, a tuple of variant names (e.g. ('smoke',))")
    if variant != DEFAULT_VARIANT and variant not in variants:
        near = did_you_mean(variant, variants)
        tail = f" — did you mean {near!r}?" if near else ""
        raise ConfigError(f"experiment {path} has no variant {variant!r}; its variants: "
                          f"{', '.join(dict.fromkeys((DEFAULT_VARIANT, *variants)))}{tail}")
    return module, variant


def experiment_config(module: types.ModuleType, variant: str) -> Any:
    """``module.get_config(variant)``, checked to be a config dataclass instance."""
    try:
        config = module.get_config(variant)
    except Exception as e:   # a typo, 1/0, a config's own check: one line at the file's line, not a traceback
        raise _mistake(pathlib.Path(module.__file__), e, f"get_config({variant!r})") from e
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise ConfigError(f"{module.__file__}: get_config({variant!r}) returned {type(config).__name__} {config!r:.40}; "
                          f"it must return a config dataclass instance")
    from .config_io import from_json, to_json   # pylint: disable=import-outside-toplevel
    from .typecheck import nonfinite_keys   # pylint: disable=import-outside-toplevel

    if nonfinite_keys(config):   # refused with its own message when the run writes config.json
        return config
    try:   # what the run writes as config.json must read back (resume, continue, eval, sample read it)
        from_json(type(config), to_json(config), source=f"{module.__file__}: get_config({variant!r})")
    except ConfigError as e:
        raise ConfigError(f"{e} (a value that config.json could not give back: fix the experiment or the field's "
                          f"type)") from None
    return config


def experiment_sweep(module: types.ModuleType) -> dict[str, list] | None:
    """The experiment's default sweep axes, or None if it has no ``sweep()``."""
    sweep = getattr(module, "sweep", None)
    if not callable(sweep):
        return None
    try:
        return sweep()
    except Exception as e:
        raise _mistake(pathlib.Path(module.__file__), e, "sweep()") from e


def _exec_module(path: pathlib.Path) -> types.ModuleType:
    stem = re.sub(r"\W", "_", path.stem)
    name = f"lmforge_experiment_{stem}"
    spec = importlib.util.spec_from_file_location(name, path.resolve())
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot load experiment file {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    previous = sys.modules.get(name)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as e:
        # Leave no half-executed module behind; a mistake in the file is one line naming its line.
        if previous is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = previous
        if isinstance(e, Exception):   # SyntaxError included; KeyboardInterrupt and SystemExit pass through
            raise _mistake(path, e, "loading the experiment") from e
        raise
    return module


def _mistake(path: pathlib.Path, e: BaseException, what: str) -> ConfigError:
    """``EXP.py:LINE: get_config('smoke') failed: TypeError: ...`` -- the innermost line of the
    experiment file in the traceback (a SyntaxError's own line), for ``lmforge: error:``. Any exception
    raised by the experiment's code is reported so (a ValueError from a config's own checks too, which
    would otherwise not name the file); ``--traceback`` shows the whole traceback."""
    here = str(pathlib.Path(path).resolve())
    line = getattr(e, "lineno", None) if isinstance(e, SyntaxError) else None
    for frame in traceback.extract_tb(e.__traceback__):
        if str(pathlib.Path(frame.filename).resolve()) == here:
            line = frame.lineno
    where = f"{path}:{line}" if line else str(path)
    message = e.msg if isinstance(e, SyntaxError) else one_line(e)
    return ConfigError(f"{where}: {what} failed: {type(e).__name__}: {message} (--traceback shows the whole traceback)")
