"""The one error type the CLI raises for a user's mistake, and how it is shown.

A user's mistake (an unknown config key, a value of the wrong type, a missing experiment file, a
run folder that holds a different config) is a :class:`ConfigError`: ``lmforge`` prints it as one
line, ``lmforge: error: <message>``, and exits 2. Anything else keeps its traceback, because it is
a bug to fix rather than an input to correct.

``ConfigError`` subclasses ``ValueError`` so library code and tests that already expect a
``ValueError`` for bad input keep working.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ConfigError(ValueError):
    """A bad config, binding, experiment spec or run folder; the message is one actionable line."""


def one_line(message: object, limit: int = 500) -> str:
    """``message`` as a single line (whitespace runs collapsed), cut at ``limit`` characters.

    Errors raised by library code (a ``__post_init__`` check, a data reader) may span lines; the
    CLI promises one line per error, so they are folded here rather than at every raise site.
    """
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def did_you_mean(key: str, candidates: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The candidate dotted key nearest to ``key``, or None when nothing is close.

    Plain ``difflib`` similarity over whole dotted keys misses the two mistakes people make most:
    the right field under the wrong or missing section (``lr`` for ``optim.lr``) and a spelled-out
    name for an abbreviation (``optim.learning_rate`` for ``optim.lr``). Those are scored by the
    last component, and by its initials, on top of the whole-key ratio.
    """
    parent, _, leaf = key.rpartition(".")
    best, best_score = None, cutoff
    for cand in candidates:
        if key.startswith(cand + "."):
            continue  # a section the key is already inside is never the fix
        cparent, _, cleaf = cand.rpartition(".")
        same_parent = 1.0 if cparent == parent else 0.85
        leaf_ratio = difflib.SequenceMatcher(None, leaf, cleaf).ratio()
        # Under the same section the shared prefix says nothing, so only the last part counts.
        score = leaf_ratio if cparent == parent else max(
            difflib.SequenceMatcher(None, key, cand).ratio(), same_parent * leaf_ratio)
        if leaf == cleaf:
            score = max(score, 0.9)
        if _initials(leaf) == cleaf or _initials(cleaf) == leaf:
            score = max(score, 0.8 * same_parent)
        if score > best_score:
            best, best_score = cand, score
    return best


def _initials(name: str) -> str:
    parts = [p for p in name.split("_") if p]
    return "".join(p[0] for p in parts) if len(parts) > 1 else ""
