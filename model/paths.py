"""Parameter paths: nested parameter dicts addressed by dotted paths, selected by regular expressions.

A parameter tree is the nested dict of ``nnx.to_pure_dict`` (list indices as int keys); a leaf's
path is its keys joined by dots: ``blocks.0.attn.q.kernel`` (``blocks.attn.q.kernel`` when the
layers are stacked by ``scan_layers``). Which parameters train, which decay and which get an
adapter are all lists of regular expressions matched against these paths (``re.fullmatch``), as
big_vision's ``config.schedule`` / MaxText's ``trainable_parameters_mask`` do, so the choice reads
the same everywhere and works for stacked and unstacked layers alike.

``select`` splits a tree in two by patterns and ``combine`` puts disjoint trees back together;
leaves absent from a part are absent keys (not None), so an optimizer or a checkpoint of a part
holds exactly its leaves.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

Tree = Mapping[Any, Any]


def flatten(tree: Tree, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``{"a": {"b": x}}`` -> ``("a.b", x)`` for every leaf, in key order of the nested dicts."""
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from flatten(value, path + ".")
        else:
            yield path, value


def unflatten(flat: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> dict:
    """``{"a.b": x, "a.0": y}`` -> ``{"a": {"b": x, 0: y}}`` (digit keys become int list indices)."""
    items = flat.items() if isinstance(flat, Mapping) else flat
    tree: dict = {}
    for path, value in items:
        node = tree
        keys = [int(k) if k.isdigit() else k for k in path.split(".")]
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return tree


def compile_patterns(patterns: Sequence[str], what: str) -> list[re.Pattern]:
    """Regular expressions, each compiled; a bad one is a ValueError naming ``what`` and the pattern."""
    out = []
    for p in patterns:
        try:
            out.append(re.compile(p))
        except re.error as e:
            raise ValueError(f"{what}: {p!r} is not a valid regular expression ({e})") from None
    return out


def matches(path: str, patterns: Sequence[re.Pattern]) -> bool:
    return any(p.fullmatch(path) for p in patterns)


def select(tree: Tree, patterns: Sequence[str], *, what: str = "patterns") -> tuple[dict, dict]:
    """Splits ``tree`` into (leaves whose path fully matches one of ``patterns``, the rest).

    Raises ValueError when a pattern matches no path (a typo would otherwise freeze or train
    nothing without a word); the message lists a few paths.
    """
    compiled = compile_patterns(patterns, what)
    chosen, rest, hits = [], [], {p.pattern: 0 for p in compiled}
    for path, leaf in flatten(tree):
        hit = [p for p in compiled if p.fullmatch(path)]
        for p in hit:
            hits[p.pattern] += 1
        (chosen if hit else rest).append((path, leaf))
    unused = [p for p, n in hits.items() if n == 0]
    if unused:
        paths = [p for p, _ in flatten(tree)]
        raise ValueError(f"{what}: {unused[0]!r} matches no parameter path; paths look like "
                         f"{', '.join(paths[:3])}{' ...' if len(paths) > 3 else ''} ({len(paths)} in all)")
    return unflatten(chosen), unflatten(rest)


def combine(*trees: Tree) -> dict:
    """Deep-merges parameter trees with disjoint leaves (the inverse of :func:`select`).

    Raises ValueError when two trees hold a leaf at the same path.
    """
    out: dict = {}
    for tree in trees:
        _merge_into(out, tree, "")
    return out


def _merge_into(out: dict, tree: Tree, prefix: str) -> None:
    for key, value in tree.items():
        if isinstance(value, Mapping):
            node = out.setdefault(key, {})
            if not isinstance(node, dict):
                raise ValueError(f"combine: {prefix}{key} is a leaf in one tree and a subtree in another")
            _merge_into(node, value, f"{prefix}{key}.")
        elif key in out:
            raise ValueError(f"combine: two trees hold the leaf {prefix}{key}")
        else:
            out[key] = value


def label(tree: Tree, rules: Sequence[tuple[str, Any]], default: Any) -> dict:
    """A tree of the same structure whose leaves are the value of the first rule whose pattern
    matches the leaf's path (``default`` when none does): optimizer masks and groups."""
    compiled = list(zip(compile_patterns([r for r, _ in rules], "rules"), [v for _, v in rules]))
    return unflatten((path, next((v for p, v in compiled if p.fullmatch(path)), default))
                     for path, _ in flatten(tree))
