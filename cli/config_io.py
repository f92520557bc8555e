"""A config tree as ``config.json`` and back, with the same type checks as command-line bindings.

The file is plain JSON a person can read and diff: keys sorted, two-space indent, tuples as lists,
nested configs as objects. The top-level object also holds ``"__class__": "module.QualName"``, so
:func:`load_config` can rebuild a run's config from its folder alone (``lmforge sample RUN_DIR``).
No pickle: a run folder is something people copy around and load, and JSON cannot run code.

Loading is strict where strictness protects the user and lenient where it does not:
- an unknown key is an error naming the file and the key (a field was renamed or removed, or the
  file was hand-edited wrongly), with the nearest field suggested;
- a key missing from the file takes the field's default, so runs written before a field was added
  still load.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import pathlib
from typing import Any

from .errors import ConfigError
from .typecheck import build_config, is_config

CLASS_KEY = "__class__"


def class_path(cls: type) -> str:
    """``"module.QualName"`` for a config class, as stored under ``__class__``."""
    return f"{cls.__module__}.{cls.__qualname__}"


def to_dict(config: Any) -> dict[str, Any]:
    """The tree as JSON-ready dicts and lists (no ``__class__``)."""
    return {f.name: _plain(getattr(config, f.name)) for f in dataclasses.fields(config) if f.init}


def to_json(config: Any) -> str:
    """``config`` as sorted, indented JSON with its class recorded under ``__class__``."""
    if not is_config(config):
        raise TypeError(f"to_json needs a dataclass instance, got {type(config).__name__}")
    data = {CLASS_KEY: class_path(type(config)), **to_dict(config)}
    return json.dumps(data, sort_keys=True, indent=2) + "\n"


def from_json(cls: type, text: str, *, source: str = "config.json") -> Any:
    """An instance of ``cls`` rebuilt from :func:`to_json` text; ConfigError names ``source`` and key."""
    data = _parse(text, source)
    recorded = data.pop(CLASS_KEY, None)
    if recorded is not None and recorded != class_path(cls):
        raise ConfigError(f"{source} holds a {recorded} config, not a {class_path(cls)}")
    return build_config(cls, data, source=source)


def load_config(path: str | pathlib.Path) -> Any:
    """The config stored at ``path`` (a config.json), its class imported from ``__class__``."""
    path = pathlib.Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"no config file at {path}") from None
    data = _parse(text, str(path))
    recorded = data.get(CLASS_KEY)
    if not isinstance(recorded, str):
        raise ConfigError(f"{path} has no {CLASS_KEY!r} entry naming its config class; it was not written by lmforge")
    return from_json(import_class(recorded, source=str(path)), text, source=str(path))


def import_class(dotted: str, *, source: str = "") -> type:
    """The class named ``module.QualName`` (the longest importable module prefix wins)."""
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module_name, attrs = ".".join(parts[:cut]), parts[cut:]
        try:
            obj: Any = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name is not None and not module_name.startswith(e.name):
                raise  # the module exists but one of its own imports is missing: a real bug
            continue
        try:
            for attr in attrs:
                obj = getattr(obj, attr)
        except AttributeError:
            break
        if isinstance(obj, type) and dataclasses.is_dataclass(obj):
            return obj
        break
    where = f"{source}: " if source else ""
    raise ConfigError(
        f"{where}config class {dotted!r} cannot be imported; config classes must live in an installed "
        f"module (next to their task's runner), not in an experiment file")


# --- internals ----------------------------------------------------------------------------------

def _plain(value: Any) -> Any:
    if is_config(value):
        return to_dict(value)
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return value  # json writes Infinity/NaN, which json.loads reads back
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"config value {value!r} of type {type(value).__name__} has no JSON form; "
                    f"config fields hold numbers, strings, bools, None, tuples and nested configs")


def _parse(text: str, source: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{source} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must hold a JSON object of config keys, got {type(data).__name__}")
    return data
