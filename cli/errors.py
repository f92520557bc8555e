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
        if _abbreviates(leaf, cleaf):   # attn -> attention (the shorter of the names it abbreviates wins)
            score = max(score, (0.75 + 0.1 * len(leaf) / len(cleaf)) * same_parent)
        if score > best_score:
            best, best_score = cand, score
    return best


def _abbreviates(short: str, name: str) -> bool:
    """``short`` (3+ letters) is ``name``'s first letter, then some of its later letters in order."""
    if len(short) < 3 or len(short) >= len(name) or short[0] != name[0]:
        return False
    rest = iter(name[1:])
    return all(c in rest for c in short[1:])


# nanoGPT's config names (its train.py globals, which people type from habit) → lmforge's keys.
NANOGPT_KEYS: dict[str, tuple[str, ...]] = {
    "max_iters": ("steps",),
    "block_size": ("data.seq_len", "model.max_seq_len"),
    "n_layer": ("model.num_layers",),
    "n_head": ("model.num_heads",),
    "n_embd": ("model.embed_dim",),
    "learning_rate": ("optim.lr",),
    "batch_size": ("data.batch_size",),
    "dropout": ("model.dropout",),
    "eval_interval": ("eval_every",),
    "eval_iters": ("eval_max_batches",),
    "log_interval": ("log_every",),
    "weight_decay": ("optim.weight_decay",),
    "beta1": ("optim.b1",),
    "beta2": ("optim.b2",),
    "grad_clip": ("optim.grad_clip",),
    "gradient_accumulation_steps": ("optim.grad_accum",),
    "warmup_iters": ("optim.warmup_steps",),
    "lr_decay_iters": ("optim.decay_steps",),
    "min_lr": ("optim.min_lr",),
    "bias": ("model.use_bias",),
}


def nanogpt_key(key: str, candidates: Iterable[str]) -> str | None:
    """``"nanoGPT's max_iters is 'steps' here"`` when the last part of ``key`` is a nanoGPT config
    name whose lmforge key exists among ``candidates``; None otherwise."""
    name = key.rpartition(".")[2]
    known = set(candidates)
    targets = [t for t in NANOGPT_KEYS.get(name, ()) if t in known and t != key]
    if not targets:
        return None
    note = " (the global batch, all processes together)" if name == "batch_size" else ""
    return f"nanoGPT's {name} is {' and '.join(repr(t) for t in targets)} here{note}"


def _initials(name: str) -> str:
    parts = [p for p in name.split("_") if p]
    return "".join(p[0] for p in parts) if len(parts) > 1 else ""
