"""What a per-document stage returns: the (maybe rewritten) document or why it was dropped.

Every stage is a pure function ``stage(doc) -> Verdict``, deterministic for a given config: a
kept document is ``Verdict(doc)``, a dropped one ``Verdict(None, reason)``. ``counts`` holds what
the stage changed without dropping (``{"EMAIL": 2}`` for PII, ``{"fixed": 1}`` for normalization)
so rewrites are counted as well as drops.
"""

from __future__ import annotations

from typing import NamedTuple

from lmforge.data.curate.document import Document


class Verdict(NamedTuple):
    doc: Document | None
    reason: str = ""
    counts: dict[str, int] | None = None


def drop(reason: str) -> Verdict:
    return Verdict(None, reason)
