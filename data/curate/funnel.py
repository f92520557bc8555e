"""The funnel: documents and bytes left after each stage, drops per reason, examples, rewrites.

A :class:`Funnel` is a commutative, associative accumulator over per-document fates, so the local
runner adds them one by one and the Beam runner combines partial funnels from its workers
(``beam.CombineFn``) and both get the same numbers. Examples are the dropped documents with the
smallest ordinals per reason, so they too do not depend on the order of arrival.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from lmforge.data.curate.stages import DocResult


@dataclasses.dataclass
class Funnel:
    stages: tuple[str, ...]
    examples_per_reason: int = 3
    input_docs: int = 0
    input_bytes: int = 0
    docs: list[int] = dataclasses.field(default_factory=list)  # left after each stage
    bytes: list[int] = dataclasses.field(default_factory=list)
    drops: dict[str, int] = dataclasses.field(default_factory=dict)  # "stage/reason" -> documents
    dropped_bytes: dict[str, int] = dataclasses.field(default_factory=dict)
    counts: dict[str, int] = dataclasses.field(default_factory=dict)  # "stage/what" -> rewrites
    examples: dict[str, list[tuple[int, str]]] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        self.docs = self.docs or [0] * len(self.stages)
        self.bytes = self.bytes or [0] * len(self.stages)

    def add(self, r: DocResult, stage: str = "", reason: str = "", detail: str = "") -> None:
        """Adds one document's fate; ``stage``/``reason`` override ``r``'s (global dedup drops)."""
        stage, reason = stage or r.stage, reason or r.reason
        self.input_docs += 1
        self.input_bytes += r.raw_size
        passed = self.stages.index(stage) if stage else len(self.stages)
        for i in range(passed):
            self.docs[i] += 1
            self.bytes[i] += r.sizes[min(i, len(r.sizes) - 1)]
        for k, v in r.counts:
            self.counts[k] = self.counts.get(k, 0) + v
        if stage:
            key = f"{stage}/{reason}"
            self.drops[key] = self.drops.get(key, 0) + 1
            self.dropped_bytes[key] = self.dropped_bytes.get(key, 0) + (r.sizes[-1] if r.sizes else r.raw_size)
            self._example(key, r.ordinal, r.snippet + (f" {detail}" if detail else ""))

    def top_drops(self, n: int = 3) -> str:
        """The ``n`` reasons that dropped the most documents, for a console line: ``"; dropped: read/
        malformed_json 2, quality/too_short 1"`` (empty when nothing was dropped)."""
        top = sorted(self.drops.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
        more = len(self.drops) - len(top)
        return ("; dropped: " + ", ".join(f"{k} {v:,}" for k, v in top) + (f" and {more} more reasons" if more else "")
                if top else "")

    def _example(self, key: str, ordinal: int, text: str) -> None:
        ex = self.examples.setdefault(key, [])
        ex.append((ordinal, text))
        ex.sort()
        del ex[self.examples_per_reason:]

    def merge(self, other: Funnel) -> Funnel:
        if other.stages != self.stages:
            raise ValueError(f"cannot merge funnels of different stages: {self.stages} vs {other.stages}")
        self.input_docs += other.input_docs
        self.input_bytes += other.input_bytes
        self.docs = [a + b for a, b in zip(self.docs, other.docs)]
        self.bytes = [a + b for a, b in zip(self.bytes, other.bytes)]
        for mine, theirs in ((self.drops, other.drops), (self.dropped_bytes, other.dropped_bytes),
                             (self.counts, other.counts)):
            for k, v in theirs.items():
                mine[k] = mine.get(k, 0) + v
        for k, ex in other.examples.items():
            for ordinal, text in ex:
                self._example(k, ordinal, text)
        return self

    def to_json(self) -> dict[str, Any]:
        return {
            "stages": list(self.stages),
            "input": {"documents": self.input_docs, "bytes": self.input_bytes},
            "left": [{"stage": s, "documents": d, "bytes": b} for s, d, b in zip(self.stages, self.docs, self.bytes)],
            "drops": {k: {"documents": self.drops[k], "bytes": self.dropped_bytes.get(k, 0)} for k in sorted(self.drops)},
            "rewrites": dict(sorted(self.counts.items())),
            "examples": {k: [t for _, t in v] for k, v in sorted(self.examples.items())},
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True, ensure_ascii=False)
