"""The per-document pass: every record through the enabled stages, in order, into a DocResult.

The order is fixed (normalization first, since every later stage reads its output; the costly
model-based stages after the cheap heuristics; PII last among the per-document stages so the
placeholders do not feed the quality rules). The result also carries the exact-dedup key and the
MinHash signature, so the global dedup stages need no second pass over the text.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from lmforge.data.curate.c4 import c4
from lmforge.data.curate.config import CurateConfig
from lmforge.data.curate.decontam import decontaminate
from lmforge.data.curate.dedup import exact_key, signature
from lmforge.data.curate.document import Document, Record
from lmforge.data.curate.gopher import gopher_quality, gopher_repetition
from lmforge.data.curate.language import language
from lmforge.data.curate.normalize import normalize
from lmforge.data.curate.pii import pii
from lmforge.data.curate.safety import safety, safety_batch
from lmforge.data.curate.verdict import Verdict

DOC_STAGES: tuple[tuple[str, Callable], ...] = (
    ("normalize", normalize),
    ("language", language),
    ("gopher_repetition", gopher_repetition),
    ("gopher_quality", gopher_quality),
    ("c4", c4),
    ("safety", safety),
    ("decontaminate", decontaminate),
    ("pii", pii),
)
# Stages whose model is cheaper called once per batch of documents; same verdicts as one by one.
BATCHED: dict[str, Callable] = {"safety": safety_batch}
GLOBAL_STAGES = ("exact_dedup", "near_dedup")
SNIPPET_CHARS = 300


class DocResult(NamedTuple):
    ordinal: int
    doc: Document | None  # the rewritten document if it passed every per-document stage
    stage: str = ""  # where it was dropped ("" if it passed)
    reason: str = ""
    sizes: tuple[int, ...] = ()  # UTF-8 bytes after "read" and after each stage it passed
    counts: tuple[tuple[str, int], ...] = ()  # ("pii/EMAIL", 2), ... sorted
    snippet: str = ""  # for a dropped document: its id / place and text as that stage saw it
    exact: bytes = b""
    sig: np.ndarray | None = None
    raw_size: int = 0  # bytes of the input record as stored (Record.raw_size)


def enabled_stages(cfg: CurateConfig) -> tuple[str, ...]:
    """The funnel's rows: "read", the enabled per-document stages, the enabled global ones."""
    names = [n for n, _ in DOC_STAGES] + list(GLOBAL_STAGES)
    return ("read", *(n for n in names if getattr(cfg, n).enabled))


@functools.lru_cache(maxsize=4)
def _chain(cfg: CurateConfig) -> tuple[tuple[str, Callable[[Document], Verdict]], ...]:
    return tuple((n, functools.partial(fn, getattr(cfg, n))) for n, fn in DOC_STAGES if getattr(cfg, n).enabled)


def process(cfg: CurateConfig, rec: Record) -> DocResult:
    """Runs one record through the per-document stages; a pure function of (cfg, record)."""
    return process_many(cfg, [rec])[0]


def process_many(cfg: CurateConfig, records: list[Record]) -> list[DocResult]:
    """``[process(cfg, r) for r in records]``, stage by stage so batched stages see many documents."""
    out: list[DocResult | None] = [None] * len(records)
    live: list[tuple[int, Document, list[int], dict[str, int]]] = []
    for j, rec in enumerate(records):
        if rec.doc is None:
            why = f"{rec.why} " if rec.why else ""
            out[j] = DocResult(rec.ordinal, None, "read", rec.reason, (), (), f"[{rec.where}] {why}({rec.size} bytes)",
                               raw_size=rec.raw_size)
        else:
            live.append((j, rec.doc, [rec.size], {}))
    for name, fn in _chain(cfg):
        if not live:
            break
        batched = BATCHED.get(name)
        docs = [doc for _, doc, _, _ in live]
        verdicts = batched(getattr(cfg, name), docs) if batched else [fn(d) for d in docs]
        still = []
        for (j, doc, sizes, counts), verdict in zip(live, verdicts):
            rec = records[j]
            for k, v in (verdict.counts or {}).items():  # a dropping stage may count too (c4/wrapped_documents)
                counts[f"{name}/{k}"] = counts.get(f"{name}/{k}", 0) + v
            if verdict.doc is None:
                out[j] = DocResult(rec.ordinal, None, name, verdict.reason, tuple(sizes), tuple(sorted(counts.items())),
                                   f"[{doc.id}] {doc.text[:SNIPPET_CHARS]}", raw_size=rec.raw_size)
                continue
            changed = verdict.doc.text is not doc.text
            sizes.append(len(verdict.doc.text.encode("utf-8")) if changed else sizes[-1])
            still.append((j, verdict.doc, sizes, counts))
        live = still
    for j, doc, sizes, counts in live:
        rec = records[j]
        exact = exact_key(doc.text) if cfg.exact_dedup.enabled else b""
        sig = signature(cfg.near_dedup, doc.text) if cfg.near_dedup.enabled else None
        out[j] = DocResult(rec.ordinal, doc, "", "", tuple(sizes), tuple(sorted(counts.items())),
                           f"[{doc.id}] {doc.text[:SNIPPET_CHARS]}", exact, sig, rec.raw_size)
    return out
