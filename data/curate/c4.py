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
"""

from __future__ import annotations

import dataclasses
import re

from lmforge.data.curate.document import Document
from lmforge.data.curate.verdict import Verdict, drop

_TERMINAL = (".", "!", "?", '"', "”", "'", "’")
_POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
_CITATION = re.compile(r"\[\d+\]|\[citation needed\]|\[edit\]", re.I)
_SENTENCE_END = re.compile(r"[.!?]+(?=\s|$|[\"”’'])")


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


def c4(cfg: C4Config, doc: Document) -> Verdict:
    text = doc.text
    low = text.lower()
    if cfg.drop_lorem_ipsum and "lorem ipsum" in low:
        return drop("lorem_ipsum")
    if cfg.drop_curly_bracket and ("{" in text or "}" in text):
        return drop("curly_bracket")
    kept, removed = [], 0
    for line in text.split("\n"):
        stripped = line.strip()
        if not stripped:
            kept.append(line)  # blank lines keep paragraph structure; they are collapsed below
            continue
        if cfg.remove_citations:
            stripped = _CITATION.sub("", stripped).strip()
        lower = stripped.lower()
        if ((cfg.terminal_punctuation and not stripped.endswith(_TERMINAL))
                or len(stripped.split()) < cfg.min_words_per_line
                or (cfg.remove_javascript_lines and "javascript" in lower)
                or (cfg.remove_policy_lines and any(p in lower for p in _POLICY))):
            removed += 1
            continue
        kept.append(stripped)
    new = re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip()
    if not new:
        return drop("no_lines_left")
    if len(_SENTENCE_END.findall(new)) < cfg.min_sentences:
        return drop("few_sentences")
    if new == text:
        return Verdict(doc)
    return Verdict(dataclasses.replace(doc, text=new), counts={"lines_removed": removed} if removed else None)
