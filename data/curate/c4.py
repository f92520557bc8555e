"""C4's clean-up rules (Raffel et al. 2020, "Exploring the Limits of Transfer Learning", §2.2).

Line-level rules rewrite the document; page-level rules drop it (``c4/<reason>``):
- lines: keep only lines ending in terminal punctuation (``. ! ? "`` and their closing quotes),
  with at least ``min_words_per_line`` words (C4: 3 for datatrove's default, the paper says 5), and
  without the word "javascript" or a policy/cookie notice ("terms of use", "privacy policy",
  "cookie policy", "uses cookies", "use of cookies", "use cookies"); removed lines are counted
  (``lines_removed``), and Wikipedia-style citation marks "[1]" are removed.
- pages: dropped when they hold "lorem ipsum" (``lorem_ipsum``), a curly bracket (``curly_bracket``,
  C4's cheap filter for code), no line left (``no_lines_left``) or fewer than ``min_sentences``
  sentences after the line rules (``few_sentences``).

The bad-words rule of C4 lives in the safety stage. Matching is case-insensitive.

Deviation: hard-wrapped prose. C4's rules (and datatrove's C4QualityFilter) take a line to be a
paragraph, which web text extracted one paragraph per line is; but documentation, mailing lists,
Project Gutenberg books and docstrings are wrapped at ~72 columns, and there a line that does not
end a sentence is only the middle of one: the line rules remove most of the text. So
:func:`wrapped_paragraphs` finds hard-wrapped paragraphs and the line rules judge each one
*unwrapped* (terminal punctuation at its end, its words, its javascript/policy phrases even
across a line break), keeping or removing all its lines together, with the original wrapping
kept in the output. A run of lines is a wrapped paragraph when:
- the document's wrap width (the 90th percentile of the lengths of its lines at the most common
  indentation, so code and quotes do not count) is 40-100 columns: a page of one long paragraph
  per line is never unwrapped;
- each line but the last is *full*: the next line's first word would not have fit on it within
  the wrap width, less ``_SLACK`` columns for wrapping by hand (a greedy wrapper, textwrap's or an
  editor's, leaves none); the lines have one indentation and none starts a list item;
- most lines of its block are full (``_BLOCK_FULL``), and it does not read as verse: verse
  starts each line with a capital in mid-sentence, prose seldom (``_VERSE_CAPS``, for paragraphs
  of 4+ lines); and across the document most continued lines start in lower case (``_LOWER``).
A document with no such paragraph goes through the line rules exactly as before, byte for byte.
Documents treated as wrapped are counted (``wrapped_documents``, in the report's counts table,
kept or dropped). ``C4Config(unwrap_paragraphs=False)`` restores the plain line rules.

Measured by ``python benchmarks/c4_wrapping.py`` (its docstring describes the corpora), share of
bytes the c4 stage keeps, plain line rules -> unwrapping, and documents treated as wrapped:

    stdlib docstrings as written (2,942; >= 20 words, 4+ lines)   17.6% -> 54.5%   76.6%
    the same re-wrapped with textwrap at 72 columns               14.9% -> 57.2%   84.2%
    the same one paragraph per line (what the rules assume)       55.9% -> 58.0%    6.0%
    pydoc topics and module docs (581, ``python_docs``)           19.9% -> 42.7%   64.0%
    tinyshakespeare in 737 chunks of ~40 lines                    32.2% -> 37.6%   14.3%
    hh-rlhf dialogues (2,312, one paragraph per line)             85.5% -> 85.5%    0.04%

Unwrapping brings wrapped text to what the rules keep of the same text one paragraph per line
(the remaining 6% there are indented blocks that stay wrapped). In tinyshakespeare the
unwrapped paragraphs are prose speeches (their continued lines start in lower case): of 176
joined, 2 are two-line pairs of verse, each kept or removed whole just as the plain rules judge
its two lines; the verse keeps its plain result. Of the hh-rlhf dialogues one is treated as wrapped, and it is hard-wrapped; the other
2,311 come out byte-identical. In the default per-document pipeline over the docstrings the c4
stage keeps 19.1% -> 61.9% of the 0.899 MB that reach it. Speed on ``python_docs`` (CPU time,
one process, the 2-core CPU machine): 38 MB/s plain, 17 MB/s unwrapping; the whole pipeline
runs at ~0.3 MB/s, so this is ~2% of it.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter

from lmforge.data.curate.document import Document
from lmforge.data.curate.verdict import Verdict, drop

_TERMINAL = (".", "!", "?", '"', "”", "'", "’")
_POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
_CITATION = re.compile(r"\[\d+\]|\[citation needed\]|\[edit\]", re.I)
_SENTENCE_END = re.compile(r"[.!?]+(?=\s|$|[\"”’'])")

# Hard-wrapped paragraph detection (module docstring).
_WRAP_WIDTHS = (40, 100)  # columns: wrapped text is wrapped at 60-80; a page of paragraphs is wider
_SLACK = 5  # columns a hand-wrapped line may stop short of the greedy break
_BLOCK_FULL = 0.8  # of a block's lines (but its last) that must be full for it to be wrapped prose
_VERSE_CAPS = 0.5  # a paragraph of 4+ lines whose continued lines start upper-case mid-sentence
                   # this often is verse
_LOWER = 0.5  # of continued lines in the document that must start lower-case
_LIST_ITEM = re.compile(r"(?:[-*+•·|#]|\d{1,3}[.)]|\(?[a-zA-Z]\))\s")  # bullets, "1.", "(a)", rows


@dataclasses.dataclass(frozen=True)
class C4Config:
    enabled: bool = True
    terminal_punctuation: bool = True  # keep only lines that end a sentence
    min_words_per_line: int = 3
    min_sentences: int = 3  # C4: "discarded any page with fewer than 3 sentences"
    remove_javascript_lines: bool = True
    remove_policy_lines: bool = True
    remove_citations: bool = True
    drop_lorem_ipsum: bool = True
    drop_curly_bracket: bool = True
    unwrap_paragraphs: bool = True  # judge hard-wrapped paragraphs whole (module docstring)


def _blocks(lines: list[str], indents: list[int]) -> list[tuple[int, int]]:
    """(first, last) of each run of non-blank lines with one indentation and no list item inside;
    ``indents[i]`` is line i's indentation, -1 for a blank line."""
    blocks, start = [], None
    for i, ind in enumerate(indents):
        if ind < 0:
            if start is not None:
                blocks.append((start, i - 1))
            start = None
        elif start is None:
            start = i
        elif ind != indents[i - 1] or _LIST_ITEM.match(lines[i], ind):
            blocks.append((start, i - 1))
            start = i
    if start is not None:
        blocks.append((start, len(lines) - 1))
    return blocks


def wrapped_paragraphs(lines: list[str]) -> list[tuple[int, int]]:
    """(first, last) line indices, inclusive, of each hard-wrapped paragraph of 2+ lines in
    ``lines``, in order; [] if the document is not hard-wrapped prose (module docstring)."""
    stripped = [line.strip() for line in lines]
    indents = [line.index(st[0]) if st else -1 for line, st in zip(lines, stripped)]
    ends = [ind + len(st) for ind, st in zip(indents, stripped)]  # the length without trailing space
    counts = Counter(ind for ind in indents if ind >= 0)
    if sum(counts.values()) < 2:
        return []
    body = counts.most_common(1)[0][0]  # the prose's indentation; code and quotes are elsewhere
    lengths = sorted(e for e, ind in zip(ends, indents) if ind == body)
    width = lengths[-((-90 * (len(lengths) - 1)) // 100)]  # the 90th percentile, rounded up
    if not _WRAP_WIDTHS[0] <= width <= _WRAP_WIDTHS[1]:
        return []
    paragraphs, continued, lower = [], 0, 0
    for a, b in _blocks(lines, indents):
        if a == b:
            continue
        full = [ends[i] + 1 + len(stripped[i + 1].split(None, 1)[0]) > width - _SLACK for i in range(a, b)]
        if sum(full) < _BLOCK_FULL * len(full):
            continue
        i = a
        while i < b:
            if not full[i - a]:
                i += 1
                continue
            j = i
            while j < b and full[j - a]:
                j += 1
            starts = [stripped[k][0] for k in range(i + 1, j + 1)]
            mid_caps = sum(c.isupper() and not stripped[k - 1].endswith(_TERMINAL)
                           for k, c in zip(range(i + 1, j + 1), starts))
            if len(starts) < 3 or mid_caps < _VERSE_CAPS * len(starts):
                paragraphs.append((i, j))
                continued += len(starts)
                lower += sum(c.islower() for c in starts)
            i = j + 1
    if not paragraphs or lower < _LOWER * continued:
        return []
    return paragraphs


def _bad(cfg: C4Config, text: str) -> bool:
    """Whether C4's line rules remove this line (or unwrapped paragraph), already stripped."""
    lower = text.lower()
    return ((cfg.terminal_punctuation and not text.endswith(_TERMINAL))
            or len(text.split()) < cfg.min_words_per_line
            or (cfg.remove_javascript_lines and "javascript" in lower)
            or (cfg.remove_policy_lines and any(p in lower for p in _POLICY)))


def c4(cfg: C4Config, doc: Document) -> Verdict:
    """C4's rules on one document: the page rules drop it, the line rules (on hard-wrapped
    paragraphs whole) rewrite it; counts ``lines_removed`` and ``wrapped_documents``."""
    text = doc.text
    low = text.lower()
    if cfg.drop_lorem_ipsum and "lorem ipsum" in low:
        return drop("lorem_ipsum")
    if cfg.drop_curly_bracket and ("{" in text or "}" in text):
        return drop("curly_bracket")
    lines = text.split("\n")
    paragraphs = wrapped_paragraphs(lines) if cfg.unwrap_paragraphs else []
    ends = {a: b for a, b in paragraphs}
    kept, removed, i = [], 0, 0
    while i < len(lines):
        line = lines[i]
        if i in ends:  # a wrapped paragraph: judged unwrapped, kept or removed whole, wrapping kept
            b = ends[i]
            parts = [lines[k].strip() for k in range(i, b + 1)]
            if cfg.remove_citations:
                parts = [_CITATION.sub("", p).strip() for p in parts]
            parts = [p for p in parts if p]
            if parts and not _bad(cfg, " ".join(parts)):
                kept.extend(parts)
            else:
                removed += b - i + 1
            i = b + 1
            continue
        i += 1
        stripped = line.strip()
        if not stripped:
            kept.append(line)  # blank lines keep paragraph structure; they are collapsed below
            continue
        if cfg.remove_citations:
            stripped = _CITATION.sub("", stripped).strip()
        if _bad(cfg, stripped):
            removed += 1
            continue
        kept.append(stripped)
    wrapped = {"wrapped_documents": 1} if paragraphs else None  # counted whether kept or dropped
    new = re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip()
    if not new:
        return Verdict(None, "no_lines_left", wrapped)
    if len(_SENTENCE_END.findall(new)) < cfg.min_sentences:
        return Verdict(None, "few_sentences", wrapped)
    counts = {**({"lines_removed": removed} if removed else {}), **(wrapped or {})} or None
    if new == text:
        return Verdict(doc, counts=counts)
    return Verdict(dataclasses.replace(doc, text=new), counts=counts)
