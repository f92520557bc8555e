"""Normalization: mojibake and unicode repair (ftfy), then whitespace, before any other stage.

Choices:
- ``ftfy.fix_text`` (Speer 2019) repairs mojibake (UTF-8 read as Windows-1252, "cafÃ©" → "café"),
  HTML entities left in text; curly quotes are kept (ftfy would straighten them); then Unicode NFC, so the same word is always
  the same code points for the hashes of the dedup stages. NFKC is not used: it rewrites "ﬁ" and
  full-width forms, which changes the text a model should learn from.
- Whitespace: control characters (other than tab and newline) removed, ``\\r\\n``/``\\r`` → ``\\n``,
  runs of spaces/tabs after the first non-space of a line → one space (indentation is kept: code
  and poetry need it), trailing spaces cut, 3+ newlines → 2 (one blank
  line keeps paragraph structure), and the document stripped.
- Documents that are empty after this are dropped as ``normalize/empty``.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata

from lmforge.data.curate.document import Document
from lmforge.data.curate.verdict import Verdict, drop

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_WS = r"[ \t\u00a0\u2000-\u200a\u3000]"
_SPACES = re.compile(rf"(?<=\S)(?: {_WS}+|[^\S\n ]{_WS}*)")  # inside a line: indentation is kept
_TRAILING = re.compile(r" +\n")
_BLANKS = re.compile(r"\n{3,}")


@dataclasses.dataclass(frozen=True)
class NormalizeConfig:
    enabled: bool = True
    fix_mojibake: bool = True  # ftfy.fix_text
    unicode_form: str = "NFC"  # "NFC" | "NFKC" | "" (leave as is)
    whitespace: bool = True

    def __post_init__(self):
        if self.unicode_form not in ("NFC", "NFKC", ""):
            raise ValueError(f"normalize.unicode_form={self.unicode_form!r}: expected 'NFC', 'NFKC' or ''")


def normalize_text(cfg: NormalizeConfig, text: str) -> str:
    if cfg.fix_mojibake:
        import ftfy  # pylint: disable=import-outside-toplevel

        text = ftfy.fix_text(text, normalization=None, uncurl_quotes=False)
    if cfg.unicode_form:
        text = unicodedata.normalize(cfg.unicode_form, text)
    if cfg.whitespace:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        text = _CONTROL.sub("", text)
        text = _SPACES.sub(" ", text)
        text = _TRAILING.sub("\n", text)
        text = _BLANKS.sub("\n\n", text).strip()
    return text


def normalize(cfg: NormalizeConfig, doc: Document) -> Verdict:
    text = normalize_text(cfg, doc.text)
    if not text:
        return drop("empty")
    if text == doc.text:
        return Verdict(doc)
    return Verdict(dataclasses.replace(doc, text=text), counts={"fixed": 1})
