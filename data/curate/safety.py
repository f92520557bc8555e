"""Content safety: drop toxic / NSFW documents with alt-profanity-check's shipped model.

Choices:
- alt-profanity-check (the maintained successor of profanity-check, Zhou 2019): a calibrated
  linear SVM over TF-IDF word n-grams, trained on ~200K human-labeled comments (Wikipedia Talk
  "toxic" and Twitter hate-speech sets), shipped inside the wheel, so it runs offline and fast.
  Like C4's bad-words list it is a lexical filter; unlike a list it weighs context a little and
  gives a probability, so the threshold is tunable.
- The model was trained on comment-sized texts, so a document is scored per line (non-empty,
  at most ``max_lines`` of them, each cut at 1,000 characters): it is dropped
  (``safety/toxic``) when the share of lines with probability >= ``line_threshold`` exceeds
  ``max_toxic_line_fraction``, or when any line scores >= ``hard_threshold``. A single bad word in
  a long page does not drop it (C4's all-or-nothing list removed much benign text; Dodge et al.
  2021 "Documenting Large Webtext Corpora").
"""

from __future__ import annotations

import dataclasses
import functools
import warnings

from lmforge.data.curate.document import Document
from lmforge.data.curate.verdict import Verdict, drop


@dataclasses.dataclass(frozen=True)
class SafetyConfig:
    enabled: bool = True
    line_threshold: float = 0.8
    max_toxic_line_fraction: float = 0.1
    hard_threshold: float = 0.995
    max_lines: int = 2_000

    def __post_init__(self):
        for name in ("line_threshold", "max_toxic_line_fraction", "hard_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"safety.{name}={getattr(self, name)}: expected a number in [0, 1]")


@functools.lru_cache(maxsize=1)
def _predict_prob():
    with warnings.catch_warnings():  # sklearn version-skew warnings from the pickled model
        warnings.simplefilter("ignore")
        from profanity_check import predict_prob  # pylint: disable=import-outside-toplevel

    return predict_prob


def toxicity(lines: list[str]) -> list[float]:
    """Probability that each line is offensive, from the shipped model."""
    if not lines:
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [float(p) for p in _predict_prob()(lines)]


def _lines(cfg: SafetyConfig, doc: Document) -> list[str]:
    return [ln[:1000] for ln in doc.text.split("\n") if ln.strip()][: cfg.max_lines]


def safety(cfg: SafetyConfig, doc: Document) -> Verdict:
    return _decide(cfg, doc, toxicity(_lines(cfg, doc)))


def safety_batch(cfg: SafetyConfig, docs: list[Document]) -> list[Verdict]:
    """``[safety(cfg, d) for d in docs]`` with one model call for all their lines (sklearn's
    per-call overhead, ~3 ms, dominates on single documents)."""
    per_doc = [_lines(cfg, d) for d in docs]
    probs = toxicity([ln for lines in per_doc for ln in lines])
    out, start = [], 0
    for d, lines in zip(docs, per_doc):
        out.append(_decide(cfg, d, probs[start:start + len(lines)]))
        start += len(lines)
    return out


def _decide(cfg: SafetyConfig, doc: Document, probs: list[float]) -> Verdict:
    if not probs:
        return Verdict(doc)
    if max(probs) >= cfg.hard_threshold:
        return drop("toxic")
    if sum(p >= cfg.line_threshold for p in probs) / len(probs) > cfg.max_toxic_line_fraction:
        return drop("toxic")
    return Verdict(doc)
