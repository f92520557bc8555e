"""From per-document results and the global dedup decisions to each document's fate.

Shared by both runners, so a document is counted, shown and written the same way whichever
engine ran the stages.
"""

from __future__ import annotations

from collections.abc import Sequence

from lmforge.data.curate.stages import DocResult


def place(ordinal: int, files: Sequence[tuple[str, str]]) -> str:
    """Where a record came from, as the skipped-record lines say it: ``PATH:LINE`` (jsonl, 1-based;
    ``PATH:1`` for a whole-file text document), ``PATH:row N`` (parquet) or ``PATH:item N`` (a JSON
    array; both 1-based). ``files`` are
    the run's inputs in order as ``(path, format)`` (``document.file_format``; an ordinal's file index)."""
    (path, fmt), index = files[ordinal >> 32], ordinal & 0xFFFFFFFF
    unit = {"parquet": "row ", "json": "item "}.get(fmt, "")
    return f"{path}:{unit}{index + 1}"


def fate(r: DocResult, exact: dict[int, int], near: dict[int, int],
         files: Sequence[tuple[str, str]]) -> tuple[str, str, str]:
    """(stage, reason, detail) where ``r`` was dropped, or ("", "", "") if it is kept; a duplicate's
    detail names the kept document it repeats (``place``)."""
    if r.doc is None:
        return r.stage, r.reason, ""
    if r.ordinal in exact:
        return "exact_dedup", "duplicate", f"(duplicate of {place(exact[r.ordinal], files)})"
    if r.ordinal in near:
        return "near_dedup", "near_duplicate", f"(near-duplicate of {place(near[r.ordinal], files)})"
    return "", "", ""
