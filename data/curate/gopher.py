"""Gopher quality and repetition filters (Rae et al. 2021, "Scaling Language Models", App. A).

Both are document-level: a document passes or is dropped with the first failing rule as reason.
Thresholds default to the paper's and each one is a config field.

Quality rules (``gopher_quality/<reason>``): ``min_words``..``max_words`` words (50..100,000);
mean word length in [3, 10] characters; symbol-to-word ratio (``#`` and ``...``/``…``) <= 0.1;
<= 90% of lines starting with a bullet; <= 30% of lines ending with an ellipsis; >= 80% of words
holding an alphabetic character; at least 2 of the stop words {the, be, to, of, and, that, have,
with}.

Repetition rules (``gopher_repetition/<reason>``): duplicate-line fraction <= 0.30 and
duplicate-paragraph fraction <= 0.30 (by count), duplicate-line / -paragraph character fraction
<= 0.20; the most frequent 2-, 3-, 4-gram covers <= 20%, 18%, 16% of the word characters; the
characters in repeated 5..10-grams are <= 15%, 14%, 13%, 12%, 11%, 10%.

Choices:
- Words are whitespace-separated tokens (``str.split``), as in the paper; datatrove runs a
  language-aware word tokenizer instead, which is slower and splits punctuation off words.
- N-gram statistics are computed in numpy: words → integer ids (first-seen order), each n-gram
  → a 64-bit polynomial hash of its ids, ``np.unique`` for the counts (a collision needs two of a
  document's ~10^5 n-grams to meet in 2^64 values: ~10^-9 per document, ignored). "Characters in repeated n-grams" counts the words covered by every occurrence of an
  n-gram after its first (the first occurrence is the original, the rest are the repetition),
  over the characters of all words (spaces excluded).
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from lmforge.data.curate.document import Document
from lmforge.data.curate.verdict import Verdict, drop

_STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})
_BULLETS = ("●", "•", "*", "-", "–", "‣", "◦", "▪", "·")
_PARAGRAPHS = re.compile(r"\n\s*\n")
_HAS_ALPHA = re.compile(r"[^\W\d_]")


@dataclasses.dataclass(frozen=True)
class GopherQualityConfig:
    enabled: bool = True
    min_words: int = 50
    max_words: int = 100_000
    min_mean_word_length: float = 3.0
    max_mean_word_length: float = 10.0
    max_symbol_word_ratio: float = 0.1
    max_bullet_lines_ratio: float = 0.9
    max_ellipsis_lines_ratio: float = 0.3
    min_alpha_words_ratio: float = 0.8
    min_stop_words: int = 2


@dataclasses.dataclass(frozen=True)
class GopherRepetitionConfig:
    enabled: bool = True
    max_dup_line_frac: float = 0.30
    max_dup_para_frac: float = 0.30
    max_dup_line_char_frac: float = 0.20
    max_dup_para_char_frac: float = 0.20
    top_ngram_max_char_frac: tuple[tuple[int, float], ...] = ((2, 0.20), (3, 0.18), (4, 0.16))
    dup_ngram_max_char_frac: tuple[tuple[int, float], ...] = (
        (5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10))


def gopher_quality(cfg: GopherQualityConfig, doc: Document) -> Verdict:
    text = doc.text
    words = text.split()
    n = len(words)
    if n < cfg.min_words:
        return drop("few_words")
    if n > cfg.max_words:
        return drop("many_words")
    mean_len = sum(map(len, words)) / n
    if mean_len < cfg.min_mean_word_length:
        return drop("short_mean_word_length")
    if mean_len > cfg.max_mean_word_length:
        return drop("long_mean_word_length")
    symbols = text.count("#") + text.count("...") + text.count("…")
    if symbols / n > cfg.max_symbol_word_ratio:
        return drop("symbol_word_ratio")
    lines = [ln for ln in text.split("\n") if ln.strip()]
    if lines:
        if sum(ln.lstrip().startswith(_BULLETS) for ln in lines) / len(lines) > cfg.max_bullet_lines_ratio:
            return drop("bullet_lines")
        if sum(ln.rstrip().endswith(("...", "…")) for ln in lines) / len(lines) > cfg.max_ellipsis_lines_ratio:
            return drop("ellipsis_lines")
    if sum(not _HAS_ALPHA.search(w) for w in words) / n > 1 - cfg.min_alpha_words_ratio:
        return drop("non_alpha_words")
    found = _STOP_WORDS.intersection(w.lower() for w in words)
    if len(found) < cfg.min_stop_words:
        return drop("few_stop_words")
    return Verdict(doc)


def gopher_repetition(cfg: GopherRepetitionConfig, doc: Document) -> Verdict:
    text = doc.text
    for unit, parts, max_frac, max_char_frac in (
            ("para", [p for p in _PARAGRAPHS.split(text.strip()) if p.strip()], cfg.max_dup_para_frac,
             cfg.max_dup_para_char_frac),
            ("line", [ln for ln in text.split("\n") if ln.strip()], cfg.max_dup_line_frac, cfg.max_dup_line_char_frac)):
        count, chars = _duplicates(parts)
        if parts and count / len(parts) > max_frac:
            return drop(f"dup_{unit}_frac")
        if parts and chars / max(len(text), 1) > max_char_frac:
            return drop(f"dup_{unit}_char_frac")
    words = text.split()
    if len(words) < 2:
        return Verdict(doc)
    vocab: dict[str, int] = {}
    ids = np.fromiter((vocab.setdefault(w, len(vocab)) for w in words), dtype=np.int32, count=len(words))
    lengths = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
    total = float(lengths.sum())
    for n, max_frac in cfg.top_ngram_max_char_frac:
        if top_ngram_char_frac(ids, lengths, n, total) > max_frac:
            return drop(f"top_{n}gram_char_frac")
    for n, max_frac in cfg.dup_ngram_max_char_frac:
        frac = dup_ngram_char_frac(ids, lengths, n, total)
        if frac > max_frac:
            return drop(f"dup_{n}gram_char_frac")
        if frac == 0.0 and n == min(m for m, _ in cfg.dup_ngram_max_char_frac):
            break  # no n-gram repeats, so no longer one does
    return Verdict(doc)


def _duplicates(parts: list[str]) -> tuple[int, int]:
    """(number of parts that repeat an earlier one, their characters)."""
    seen: set[str] = set()
    count = chars = 0
    for p in parts:
        if p in seen:
            count += 1
            chars += len(p)
        else:
            seen.add(p)
    return count, chars


_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit multiplier (golden ratio): a polynomial hash of ids


def _ngram_ids(ids: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first, inverse, counts): each distinct n-gram's first window, which one each window is, how often."""
    h = ids[: len(ids) - n + 1].astype(np.uint64)
    with np.errstate(over="ignore"):  # wrap-around is the point: arithmetic mod 2**64
        for k in range(1, n):
            h = h * _MIX + ids[k: len(ids) - n + 1 + k].astype(np.uint64) + np.uint64(1)
    _, first, inverse, counts = np.unique(h, return_index=True, return_inverse=True, return_counts=True)
    return first, inverse, counts


def top_ngram_char_frac(ids: np.ndarray, lengths: np.ndarray, n: int, total: float) -> float:
    """Characters covered by the most frequent n-gram (all its occurrences) over ``total``."""
    if len(ids) < n or total <= 0:
        return 0.0
    first, _, counts = _ngram_ids(ids, n)
    best = int(np.argmax(counts))
    if counts[best] < 2:
        return 0.0
    return float(lengths[first[best]:first[best] + n].sum()) * int(counts[best]) / total


def dup_ngram_char_frac(ids: np.ndarray, lengths: np.ndarray, n: int, total: float) -> float:
    """Characters of the words covered by repeated occurrences of any n-gram, over ``total``."""
    if len(ids) < n or total <= 0:
        return 0.0
    first, inverse, counts = _ngram_ids(ids, n)
    if counts.max() < 2:
        return 0.0
    # An occurrence is a repeat when an earlier window holds the same n-gram.
    starts = np.nonzero(first[inverse] != np.arange(len(inverse)))[0]
    cover = np.zeros(len(ids) + 1, dtype=np.int64)
    np.add.at(cover, starts, 1)
    np.add.at(cover, starts + n, -1)
    covered = np.cumsum(cover[:-1]) > 0
    return float(lengths[covered].sum()) / total
