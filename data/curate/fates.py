"""From per-document results and the global dedup decisions to each document's fate.

Shared by both runners, so a document is counted, shown and written the same way whichever
engine ran the stages.
"""

from __future__ import annotations

from lmforge.data.curate.stages import DocResult


def place(ordinal: int) -> str:
    """A human-readable input position: ``input file F, record R`` (both 0-based)."""
    return f"input file {ordinal >> 32}, record {ordinal & 0xFFFFFFFF}"


def fate(r: DocResult, exact: dict[int, int], near: dict[int, int]) -> tuple[str, str, str]:
    """(stage, reason, detail) where ``r`` was dropped, or ("", "", "") if it is kept."""
    if r.doc is None:
        return r.stage, r.reason, ""
    if r.ordinal in exact:
        return "exact_dedup", "duplicate", f"(duplicate of {place(exact[r.ordinal])})"
    if r.ordinal in near:
        return "near_dedup", "near_duplicate", f"(near-duplicate of {place(near[r.ordinal])})"
    return "", "", ""
