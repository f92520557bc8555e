"""Gin-style ``KEY=VALUE`` overrides on a tree of frozen dataclasses, and sweep grids of them.

``apply_bindings(config, ["model.num_layers=4", "optim.lr=3e-4"])`` returns a new config: the
dotted key walks the tree, the text is parsed with ``ast.literal_eval`` (raw text for strings) and
checked against the field's annotation (see ``typecheck.py``), and every changed node is rebuilt
with ``dataclasses.replace``.

Notable choices:
- All bindings are grouped per node and applied in one ``replace`` per node, so a
  ``__post_init__`` check sees the final values together: ``model.num_heads=5 model.embed_dim=320``
  must not fail on the half-applied state ``num_heads=5, embed_dim=768``.
- A key bound twice takes the later value, as in gin (a script's defaults, then the command line's
  override), and a note on stderr names both values, so a typo in a long command line does not
  pass unseen. Binding both a section and a key inside it is an error: the order would silently
  decide which one counts. A sweep never repeats a key (``split_sweep``).
- A tuple of configs that each have a ``name`` (``data.mixture``'s ``MixtureSource`` items) is
  addressed by item name: ``data.mixture.web.weight=0.5`` binds the weight of the item named
  ``web``, so a sweep over one source's weight is ``data.mixture.web.weight=[0.25,0.5]``. Items are
  not added or removed by bindings (the experiment lists them).
- Unknown keys suggest the nearest dotted key of the whole tree (``errors.did_you_mean``), and
  nanoGPT's names (``max_iters``, ``n_layer``, ``learning_rate``, ...) the key they are here.
- In a sweep, a value written ``[a, b, ...]`` at the top level of a binding is a sweep axis; a
  tuple-typed field is given with parentheses, ``mesh.shape=(2, 4)``. Axis items are split on
  top-level commas and kept as the user wrote them, so ``optim.lr=[1e-3,3e-4]`` names its runs
  ``optim.lr=1e-3`` rather than ``optim.lr=0.001``, and ``model.family=[gpt2,llama]`` needs no quotes.
"""

from __future__ import annotations

import ast
import dataclasses
import itertools
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .errors import ConfigError, did_you_mean, nanogpt_key, one_line
from .typecheck import field_types, is_config, parse_text

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_MISSING = dataclasses.MISSING


def split_binding(binding: str) -> tuple[str, str]:
    """``"optim.lr=3e-4"`` → ``("optim.lr", "3e-4")``; the value is everything after the first ``=``."""
    key, sep, text = binding.partition("=")
    key = key.strip()
    if not sep or not _KEY.fullmatch(key):
        raise ConfigError(f"binding {binding!r} is not KEY=VALUE with a dotted key, e.g. 'optim.lr=3e-4'")
    return key, text


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """``{dotted key: leaf value}`` over the whole tree, in field order (for diffs and tables)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if is_config(value):
            out.update(flatten(value, f"{prefix}{f.name}."))
        elif _named_items(value):   # data.mixture.web.weight, ...: a diff names the field that changed
            for item in value:
                out.update(flatten(item, f"{prefix}{f.name}.{item.name}."))
        else:
            out[prefix + f.name] = value
    return out


def config_keys(config: Any, prefix: str = "") -> list[str]:
    """Every dotted key of the tree, sections (``model``) as well as leaves (``model.num_layers``)."""
    keys = []
    for f in dataclasses.fields(config):
        keys.append(prefix + f.name)
        value = getattr(config, f.name)
        if is_config(value):
            keys.extend(config_keys(value, f"{prefix}{f.name}."))
        for item in _named_items(value):   # data.mixture.web, data.mixture.web.weight, ...
            keys.append(f"{prefix}{f.name}.{item.name}")
            keys.extend(config_keys(item, f"{prefix}{f.name}.{item.name}."))
    return keys


def apply_bindings(config: Any, bindings: Iterable[str]) -> Any:
    """A copy of ``config`` with each ``KEY=VALUE`` binding applied; ConfigError names any bad one."""
    if not is_config(config):
        raise TypeError(f"apply_bindings needs a dataclass instance, got {type(config).__name__}")
    if isinstance(bindings, str):
        raise TypeError("apply_bindings takes a list of 'KEY=VALUE' strings, not one string")
    tree: dict[str, Any] = {}
    given: dict[str, str] = {}
    for binding in bindings:
        key, text = split_binding(binding)
        if key in given:   # the later one wins, as in gin; said, so that a typo does not pass unseen
            print(f"lmforge: config key {key!r} bound twice ({given[key]}, then {text}): {text} counts",
                  file=sys.stderr, flush=True)
        given[key] = text
    for key in given:
        for other in given:
            if other.startswith(key + "."):
                raise ConfigError(f"bindings set both {key!r} and {other!r}; set one or the other")
    for key, text in given.items():
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = text
    out = _apply(config, tree, "", config)
    for key in given:
        if key.split(".")[-1] == "family":
            _family_note(key, out)
    return out


def _family_note(key: str, config: Any) -> None:
    """A note on stderr when a bound ``family`` leaves its model config another family's network
    (``ModelConfig.family_differences``: ``model.family=llama`` over a GPT-2 experiment)."""
    model = config
    for part in key.split(".")[:-1]:
        model = getattr(model, part, None)
    differences = getattr(model, "family_differences", None)
    if not callable(differences) or not (found := differences()):
        return
    prefix = key.rpartition(".")[0]
    keeps = ", ".join(f"{k}={v!r}" for k, (v, _) in found.items())
    wants = " ".join(f"{prefix + '.' if prefix else ''}{k}={format_value(w)}" for k, (_, w) in found.items())
    print(f"lmforge: {key}={model.family} keeps {keeps} from the experiment; a {model.family} model has {wants} "
          f"(bind those too, or start from an experiment of that family)", file=sys.stderr, flush=True)


def diff(old: Any, new: Any) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (old value, new value)}`` for every leaf that differs between two configs."""
    a, b = flatten(old), flatten(new)
    out = {}
    for key in list(a) + [k for k in b if k not in a]:
        va, vb = a.get(key, _MISSING), b.get(key, _MISSING)
        if not _same(va, vb):
            out[key] = (va, vb)
    return out


def non_default(config: Any) -> dict[str, Any]:
    """``{dotted key: value}`` for leaves that differ from the dataclass defaults.

    A nested config whose field default is an instance (``model: ModelConfig = ModelConfig.tiny()``)
    is compared with that instance; one without is compared with its own class's field defaults.
    This is what ``lmforge run`` prints: what the experiment and the bindings changed.
    """
    out: dict[str, Any] = {}
    _non_default(config, None, "", out)
    return out


def split_sweep(bindings: Iterable[str]) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """``(fixed bindings, [(key, [value text, ...]), ...])``; ``KEY=[a,b]`` values are sweep axes."""
    fixed, axes, seen = [], [], set()
    for binding in bindings:
        key, text = split_binding(binding)
        if key in seen:
            raise ConfigError(f"sweep binds {key!r} twice; give each key once (a list makes it a sweep axis)")
        seen.add(key)
        stripped = text.strip()
        if stripped.startswith("[") and not stripped.endswith("]"):
            raise ConfigError(f"sweep binding {binding!r}: malformed list, no closing ']'; expected {key}=[a,b,...] "
                              f"(quote the whole binding if its list has spaces)")
        if stripped.startswith("[") and stripped.endswith("]"):
            items = _split_items(stripped[1:-1], key)
            if not items:
                raise ConfigError(f"sweep axis {key!r} is an empty list; give at least one value")
            axes.append((key, items))
        else:
            fixed.append(binding)
    return fixed, axes


def parse_sweep(bindings: Iterable[str]) -> list[list[str]]:
    """The grid: the cartesian product of the list-valued bindings, each point a list of plain bindings.

    ``parse_sweep(["optim.lr=[1e-3,3e-4]", "model.num_layers=[2,4]", "seed=1"])`` gives 4 points,
    the first being ``["seed=1", "optim.lr=1e-3", "model.num_layers=2"]`` (fixed bindings first,
    then one per axis; the first axis varies slowest).
    """
    fixed, axes = split_sweep(bindings)
    keys = [k for k, _ in axes]
    return [fixed + [f"{k}={v}" for k, v in zip(keys, values)]
            for values in itertools.product(*(items for _, items in axes))]


def axis_bindings(sweep: Mapping[str, Sequence[Any]]) -> list[str]:
    """An experiment's ``sweep()`` dict (``{"optim.lr": [1e-3, 3e-4]}``) as ``KEY=[...]`` bindings."""
    if not isinstance(sweep, Mapping):
        raise ConfigError(f"sweep() must return a dict of KEY: [values], got {type(sweep).__name__}")
    out = []
    for key, values in sweep.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
            raise ConfigError(f"sweep() value for {key!r} must be a list of values, got {values!r}")
        out.append(f"{key}=[{', '.join(format_value(v, key) for v in values)}]")
    return out


def format_value(value: Any, key: str = "value") -> str:
    """Binding text that ``parse_text`` turns back into ``value`` (strings unquoted when safe)."""
    if is_config(value):
        raise ConfigError(f"{key!r}: a whole {type(value).__qualname__} cannot be written as a binding; "
                          f"bind its fields instead, e.g. '{key}.{dataclasses.fields(value)[0].name}=…'")
    if isinstance(value, str):
        plain = value and value == value.strip() and not re.search(r"[,\[\](){}'\"=\s]", value)
        if plain:
            try:
                ast.literal_eval(value)
            except (ValueError, SyntaxError):
                return value  # reads back as the same string
        return repr(value)
    return repr(value)


# --- internals ----------------------------------------------------------------------------------

def _apply(obj: Any, tree: dict[str, Any], prefix: str, root: Any) -> Any:
    types_ = field_types(type(obj))
    changes = {}
    for name, sub in tree.items():
        key = prefix + name
        if name not in types_:
            raise _unknown(key, root)
        if isinstance(sub, dict):
            child = getattr(obj, name)
            if _named_items(child):
                changes[name] = _apply_items(child, sub, key + ".", root)
                continue
            if child == ():
                raise ConfigError(f"config key {key!r} is empty in this config, so {_first_leaf(key, sub)!r} cannot be "
                                  f"set: bindings set fields of its named items, they do not add items (the experiment "
                                  f"lists them)")
            if child is None:
                raise ConfigError(f"config key {key!r} is None in this config, so {_first_leaf(key, sub)!r} "
                                  f"cannot be set; the experiment must give {key!r} a value first")
            if not is_config(child):
                raise ConfigError(f"config key {key!r} holds a {type(child).__name__} value, not a config section, "
                                  f"so {_first_leaf(key, sub)!r} does not exist")
            changes[name] = _apply(child, sub, key + ".", root)
        else:
            changes[name] = parse_text(sub, types_[name], key)
    try:
        return dataclasses.replace(obj, **changes)
    except (ValueError, TypeError, AssertionError) as e:
        where = prefix[:-1] or "the top level"
        keys = ", ".join(prefix + n for n in changes)
        raise ConfigError(f"binding {keys} makes an invalid {type(obj).__qualname__} ({where}): {one_line(e)}") from e


def _named_items(value: Any) -> tuple:
    """``value``'s items when it is a non-empty tuple of configs that each have a string ``name``, else ()."""
    if isinstance(value, tuple) and value and all(is_config(v) and isinstance(getattr(v, "name", None), str)
                                                  for v in value):
        return value
    return ()


def _apply_items(items: tuple, tree: dict[str, Any], prefix: str, root: Any) -> tuple:
    """``items`` with each ``{item name: bindings}`` of ``tree`` applied to the item of that name."""
    index = {item.name: i for i, item in enumerate(items)}
    out = list(items)
    for item_name, sub in tree.items():
        key = prefix + item_name
        if item_name not in index:
            raise ConfigError(f"unknown config key {key!r}: {prefix[:-1]} has no item named {item_name!r}; its items "
                              f"are {', '.join(index)}")
        if not isinstance(sub, dict):
            field = dataclasses.fields(items[index[item_name]])[-1].name
            raise ConfigError(f"config key {key!r} is a whole item of {prefix[:-1]}; bind its fields, e.g. "
                              f"'{key}.{field}=…'")
        out[index[item_name]] = _apply(items[index[item_name]], sub, key + ".", root)
    return tuple(out)


def _unknown(key: str, root: Any) -> ConfigError:
    # nanoGPT's names are bare globals there (max_iters=...): they win for a bare key; a dotted key
    # was written with lmforge's sections in mind, so the nearest key wins there.
    keys = _other_items_left_out(key, root, config_keys(root))
    nanogpt, near = nanogpt_key(key, keys), did_you_mean(key, keys)
    if nanogpt and ("." not in key or not near):
        return ConfigError(f"unknown config key {key!r} — {nanogpt}")
    if near:
        return ConfigError(f"unknown config key {key!r} — did you mean {near!r}?")
    parent = key.rpartition(".")[0]
    section = root
    for part in parent.split(".") if parent else ():
        items = {item.name: item for item in _named_items(section)}
        section = items[part] if part in items else getattr(section, part)
    names = ", ".join(f.name for f in dataclasses.fields(section))
    return ConfigError(f"unknown config key {key!r}; {parent or 'the top level'} has: {names}")


def _other_items_left_out(key: str, root: Any, keys: list[str]) -> list[str]:
    """``keys`` without those inside the *other* named items of a tuple that ``key`` goes through, so
    ``data.mixture.web.source.knd`` is told ``data.mixture.web.source.kind``, not ``code``'s."""
    node, prefix, out = root, "", keys
    for part in key.split(".")[:-1]:
        items = {item.name: item for item in _named_items(node)}
        if part in items:
            others = tuple(f"{prefix}{name}." for name in items if name != part)
            out = [k for k in out if not k.startswith(others)]
            node = items[part]
        elif is_config(node) and part in field_types(type(node)):
            node = getattr(node, part)
        else:
            break
        prefix += part + "."
    return out


def _first_leaf(prefix: str, tree: dict[str, Any]) -> str:
    name, sub = next(iter(tree.items()))
    return _first_leaf(f"{prefix}.{name}", sub) if isinstance(sub, dict) else f"{prefix}.{name}"


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not _MISSING:
        return f.default
    if f.default_factory is not _MISSING:
        return f.default_factory()
    return _MISSING


def _non_default(obj: Any, ref: Any, prefix: str, out: dict[str, Any]) -> None:
    """Walks ``obj`` against ``ref`` (same-type instance) or, when ``ref`` is None, field defaults."""
    for f in dataclasses.fields(obj):
        if not f.init:
            continue
        value = getattr(obj, f.name)
        default = getattr(ref, f.name) if ref is not None else _field_default(f)
        if is_config(value):
            same_type = is_config(default) and type(default) is type(value)
            _non_default(value, default if same_type else None, f"{prefix}{f.name}.", out)
        elif _named_items(value) and not _same(value, default):   # data.mixture.web.weight = 0.5, ...
            for item in value:
                item_out: dict[str, Any] = {}
                _non_default(item, None, f"{prefix}{f.name}.{item.name}.", item_out)
                item_out.pop(f"{prefix}{f.name}.{item.name}.name", None)
                for g in dataclasses.fields(item):   # its plain fields (weight) always: the whole list shows
                    if g.name != "name" and not is_config(getattr(item, g.name)):
                        item_out.setdefault(f"{prefix}{f.name}.{item.name}.{g.name}", getattr(item, g.name))
                out.update(item_out)
        elif default is _MISSING or not _same(value, default):
            out[prefix + f.name] = value


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    try:
        return bool(a == b) or (a != a and b != b)  # NaN equals NaN for "did it change"
    except Exception:  # an array-valued field compares element-wise; treat as changed
        return False


def _split_items(inner: str, key: str) -> list[str]:
    """Top-level comma split of a sweep list's inside, respecting brackets and quotes."""
    items, depth, quote, start, i = [], 0, None, 0, 0
    while i < len(inner):
        ch = inner[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(inner[start:i])
            start = i + 1
        i += 1
    if quote or depth:
        raise ConfigError(f"sweep axis {key!r}: unbalanced brackets or quotes in [{inner}]")
    items.append(inner[start:])
    items = [s.strip() for s in items]
    if items and not items[-1]:
        items.pop()  # a trailing comma
    if any(not s for s in items):
        raise ConfigError(f"sweep axis {key!r} has an empty item in [{inner}]")
    return items
