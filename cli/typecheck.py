"""Turn a command-line string or a JSON value into the value a config field's annotation asks for.

Config trees are frozen stdlib dataclasses, and a dataclass checks nothing about its field types.
Command-line bindings and ``config.json`` files are the two places where untyped values enter, so
this module converts and checks them there, once, against the annotations:

- ``int``: an int, or an integral float (``train.steps=1e5`` is a common way to write 100000);
  never a bool, although ``bool`` subclasses ``int``.
- ``float``: an int or a float (``optim.lr=1`` means 1.0), and finite: ``nan``, ``inf`` and
  ``1e999`` are refused with the key named (no config field means "unbounded" by ``inf``; a NaN
  learning rate would pass every ``x <= 0`` check in ``__post_init__`` and die in the NaN guard).
- ``bool``: ``True``/``False`` or ``true``/``false``; never 0/1, which are more often typos.
- ``str``: the parsed string, or the raw text when it does not parse (``model.family=llama``).
- ``X | None``: ``None`` only where the annotation allows it.
- ``tuple[X, ...]`` / ``tuple[X, Y]``: from a tuple or list (JSON has no tuples), element-wise. On
  the command line, bare words inside it are strings as they are outside one:
  ``data.synthetic=((arithmetic,1.0),)`` is ``(('arithmetic', 1.0),)`` (words with other characters,
  such as a regex, still need quotes).
- ``Literal[...]``: one of the listed values.
- a nested dataclass: an instance, or a dict of its fields (from JSON) checked recursively.

Ranges are the dataclasses' own (``__post_init__``); :func:`check_flag` does the same finiteness
and range check for the numeric flags of the subcommands, naming the flag and its range.

Annotations are resolved with :func:`typing.get_type_hints`, so config modules may use
``from __future__ import annotations``.
"""

from __future__ import annotations

import ast
import collections.abc
import dataclasses
import functools
import math
import re
import types
import typing
from typing import Any, Literal, Union

from .errors import ConfigError, did_you_mean, one_line


class _Mismatch(Exception):
    """Internal: a value does not fit a type; the caller turns it into a ConfigError with a key."""


_NOT_PARSED = object()
_NON_FINITE = ("inf", "+inf", "-inf", "infinity", "+infinity", "-infinity", "nan", "+nan", "-nan")


def is_config(value: Any) -> bool:
    """True for a dataclass instance (a config node), False for dataclass types and leaves."""
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """``{field name: resolved annotation}`` for the fields of ``cls`` that ``__init__`` accepts."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception as e:  # NameError for a forward reference that does not resolve, mostly
        raise ConfigError(
            f"cannot resolve the type annotations of {cls.__module__}.{cls.__qualname__}: {one_line(e)}"
        ) from e
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls) if f.init}


def type_name(tp: Any) -> str:
    """A short readable spelling of an annotation, for error messages: ``tuple[int, ...] | None``."""
    if tp is type(None) or tp is None:
        return "None"
    if tp is Any:
        return "any value"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return f"tuple[{type_name(args[0])}, ...]"
        return f"{name}[{', '.join(type_name(a) for a in args)}]" if args else name
    if isinstance(tp, type):
        return tp.__qualname__ if dataclasses.is_dataclass(tp) else tp.__name__
    return str(tp).replace("typing.", "")


def coerce(value: Any, tp: Any, key: str, *, source: str = "") -> Any:
    """``value`` converted to annotation ``tp``, or a ConfigError naming ``key`` (and ``source``).

    ``value`` is already a Python value (from JSON or a Python sweep list); for command-line text
    use :func:`parse_text`. Nested dataclasses given as dicts are built field by field, so an
    error deep inside names the full dotted key.
    """
    try:
        return _coerce(value, tp, key, source)
    except _Mismatch:
        raise ConfigError(
            f"{_where(source)}config key {key!r} expects {type_name(tp)}, got {value!r}"
        ) from None


def parse_text(text: str, tp: Any, key: str) -> Any:
    """Command-line text converted to annotation ``tp``: ``ast.literal_eval`` first, raw text second.

    The raw-text fallback is what lets ``model.family=llama`` and ``flag=true`` work unquoted; it
    is tried after the literal, so ``name=None`` on a ``str | None`` field gives ``None``.
    """
    parsed = _literal(text)
    candidates = [parsed, text]
    if parsed is _NOT_PARSED and _wants_tuple(tp):   # (attn, mlp): bare words inside a tuple, quoted text as written
        candidates.insert(1, _literal(_quote_bare_words(text)))
    for candidate in candidates:
        if candidate is _NOT_PARSED:
            continue
        try:
            return _coerce(candidate, tp, key, "")
        except _Mismatch:
            continue
    raise ConfigError(f"config key {key!r} expects {type_name(tp)}, got {text!r}{_hint(text, parsed, tp, key)}")


# A quoted string (kept as it is), or a bare word right after "(", "[" or "," and right before ",", ")"
# or "]" (not True/False/None).
_BARE_WORD = re.compile(r"""(?P<text>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")"""
                        r"|(?P<before>[(\[,]\s*)(?!(?:True|False|None)\s*[,)\]])(?P<word>[A-Za-z_][\w\-./]*)(?=\s*[,)\]])")


def _quote_bare_words(text: str) -> str:
    return _BARE_WORD.sub(lambda m: m["text"] or f"{m['before']}{m['word']!r}", text)


def _wants_tuple(tp: Any) -> bool:
    """``tp`` is a tuple type, or a union with one (``tuple[str, ...] | None``)."""
    return typing.get_origin(tp) is tuple or tp is tuple or any(
        typing.get_origin(a) is tuple for a in typing.get_args(tp))


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return _NOT_PARSED


def build_config(cls: type, data: dict, key: str = "", *, source: str = "") -> Any:
    """An instance of dataclass ``cls`` from a dict of its fields, every value checked.

    Keys missing from ``data`` take the field's default (so a config.json written before a field
    was added still loads); an unknown key is an error naming it and the nearest field.
    """
    types_ = field_types(cls)
    prefix = f"{key}." if key else ""
    kwargs = {}
    for name, value in data.items():
        if name not in types_:
            near = did_you_mean(name, types_)
            tail = f" — did you mean {prefix + near!r}?" if near else f"; {cls.__qualname__} has {', '.join(types_)}"
            raise ConfigError(f"{_where(source)}unknown config key {prefix + name!r}{tail}")
        kwargs[name] = coerce(value, types_[name], prefix + name, source=source)
    missing = [f.name for f in dataclasses.fields(cls) if f.init and f.name not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{_where(source)}config key {key or cls.__qualname__!r} is missing required "
                          f"field(s) {', '.join(repr(prefix + m) for m in missing)}")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError, AssertionError) as e:
        raise ConfigError(f"{_where(source)}invalid {cls.__qualname__} at {key or 'top level'}: {one_line(e)}") from e


def check_flag(flag: str, value: float, *, low: float | None = None, high: float | None = None,
               low_open: bool = False, high_open: bool = False) -> float:
    """``value`` of a numeric command-line flag if it is finite and in range, else a one-line ConfigError
    naming the flag and its range: ``--top-p=0.0: expected a number in (0, 1]``."""
    if (math.isfinite(value) and (low is None or (value > low if low_open else value >= low))
            and (high is None or (value < high if high_open else value <= high))):
        return value
    what = "an integer" if isinstance(value, int) else "a finite number"
    if low is not None and high is not None:
        expected = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        expected = f"{what} {'>' if low_open else '>='} {low:g}"
    elif high is not None:
        expected = f"{what} {'<' if high_open else '<='} {high:g}"
    else:
        expected = what
    raise ConfigError(f"{flag}={value!r}: expected {expected}")


def nonfinite_keys(config: Any, prefix: str = "") -> list[str]:
    """Dotted keys of the float leaves of ``config`` that are NaN or infinite (inside tuples too).

    Bindings and config.json are checked as they are parsed; this covers the values an experiment
    file wrote in Python, so that no run starts with a NaN learning rate.
    """
    out: list[str] = []

    def walk(value: Any, key: str) -> None:
        if is_config(value):
            for f in dataclasses.fields(value):
                walk(getattr(value, f.name), f"{key}.{f.name}" if key else f.name)
        elif isinstance(value, (tuple, list)):
            for i, x in enumerate(value):
                walk(x, f"{key}[{i}]")
        elif isinstance(value, float) and not math.isfinite(value):
            out.append(key)

    walk(config, prefix)
    return out


# --- internals ----------------------------------------------------------------------------------

def _coerce(v: Any, tp: Any, key: str, source: str) -> Any:
    """Converted ``v`` or ``_Mismatch``; nested dataclass errors surface as ConfigError with keys."""
    if tp is Any or tp is object or isinstance(tp, typing.TypeVar):
        return v
    if tp is None or tp is type(None):
        if v is None:
            return None
        raise _Mismatch
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        # The member whose type is exactly the value's first (4 on `float | int` stays an int),
        # then the others, `str` last so that text which also reads as a number becomes the number.
        members = sorted(args, key=lambda a: (type(v) is not a, a is str))
        for member in members:
            try:
                return _coerce(v, member, key, source)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is Literal:
        for allowed in args:
            if type(v) is type(allowed) and v == allowed:
                return allowed
        raise _Mismatch
    if origin is typing.ClassVar or origin is typing.Final:
        return _coerce(v, args[0], key, source) if args else v
    if tp is bool:
        if isinstance(v, bool):
            return v
        if isinstance(v, str) and v.strip().lower() in ("true", "false"):
            return v.strip().lower() == "true"
        raise _Mismatch
    if tp is int:
        if isinstance(v, bool):
            raise _Mismatch
        if isinstance(v, int):
            return v
        if isinstance(v, float) and math.isfinite(v) and v.is_integer():
            return int(v)
        raise _Mismatch
    if tp is float:
        if isinstance(v, bool):
            raise _Mismatch
        if isinstance(v, str) and v.strip().lower() in _NON_FINITE:
            v = float(v)
        if isinstance(v, (int, float)):
            if not math.isfinite(v):
                raise ConfigError(f"{_where(source)}config key {key!r} must be a finite number, got {v!r}")
            return float(v)
        raise _Mismatch
    if tp is str:
        if isinstance(v, str):
            return v
        raise _Mismatch
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(v, tp):
            return v
        if isinstance(v, dict):
            return build_config(tp, v, key, source=source)
        raise _Mismatch
    if origin is tuple or tp is tuple:
        if not isinstance(v, (tuple, list)):
            raise _Mismatch
        if not args:
            return tuple(v)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(x, args[0], f"{key}[{i}]", source) for i, x in enumerate(v))
        if args == ((),):  # tuple[()]: the empty tuple
            args = ()
        if len(v) != len(args):
            raise _Mismatch
        return tuple(_coerce(x, a, f"{key}[{i}]", source) for i, (x, a) in enumerate(zip(v, args)))
    if origin in (list, collections.abc.Sequence) or tp is list:
        if not isinstance(v, (tuple, list)):
            raise _Mismatch
        return [_coerce(x, args[0], f"{key}[{i}]", source) for i, x in enumerate(v)] if args else list(v)
    if origin in (dict, collections.abc.Mapping) or tp is dict:
        if not isinstance(v, dict):
            raise _Mismatch
        if not args:
            return dict(v)
        return {_coerce(k, args[0], key, source): _coerce(x, args[1], f"{key}[{k!r}]", source) for k, x in v.items()}
    if isinstance(tp, type):
        if isinstance(v, tp):
            return v
        raise _Mismatch
    return v  # a typing construct we do not model: accept rather than reject a valid config


def _hint(text: str, parsed: Any, tp: Any, key: str) -> str:
    """The likely cause of a command-line type error, when there is a common one."""
    stripped = text.strip()
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        first = dataclasses.fields(tp)[0].name if dataclasses.fields(tp) else "field"
        return f" — set its fields instead, e.g. '{key}.{first}=…'"
    if stripped.startswith("[") and typing.get_origin(tp) not in (tuple, list) and tp not in (tuple, list):
        return " — a [...] list is a sweep axis: use `lmforge sweep`"
    if not _wants_tuple(tp):
        return ""
    # (hello), (8), ((embed, fsdp)) or a bare hello: one element whose parentheses (if any) only group
    # it. Suggested only when the text with the comma is a valid value.
    if stripped.startswith("(") and stripped.endswith(")"):
        one, what = f"{stripped[:-1]},)", "a one-element tuple needs a trailing comma"
    else:
        one, what = f"({stripped},)", "a tuple goes in parentheses, one element with a trailing comma"
    if _fits(_literal(_quote_bare_words(one)), tp, key):
        return f" — {what}: {one}"
    if parsed is _NOT_PARSED and stripped.startswith(("(", "[")):
        return " — quote strings inside a tuple that are not plain words, e.g. ('.*attn.*', 'mlp')"
    return ""


def _fits(value: Any, tp: Any, key: str) -> bool:
    if value is _NOT_PARSED:
        return False
    try:
        _coerce(value, tp, key, "")
    except (_Mismatch, ConfigError):
        return False
    return True


def _where(source: str) -> str:
    return f"{source}: " if source else ""
