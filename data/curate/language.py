"""Language identification with py3langid, whose model ships inside the package (no download).

Choices:
- py3langid (a maintained fork of langid.py, Lui & Baldwin 2012): a multinomial naive Bayes over
  byte n-grams, 97 languages, about 1 MB of model in the wheel, so curation runs offline. fastText
  lid.176 (used by CCNet and datatrove) is more accurate but must be downloaded at run time.
- Probabilities are normalized (``norm_probs=True``) and a document is kept when its top language
  is in ``languages`` with probability >= ``min_score`` (0.65, datatrove's default threshold).
  Drops are ``language/other_language`` or ``language/low_confidence``.
- Only the first ``max_chars`` characters are classified (default 20,000): the language of a long
  page is settled long before its end, and this bounds the cost of a 10 MB document.
- The kept document's metadata gains ``language`` and ``language_score`` (rounded to 4 places).
"""

from __future__ import annotations

import dataclasses
import functools

from lmforge.data.curate.document import Document
from lmforge.data.curate.verdict import Verdict, drop


@dataclasses.dataclass(frozen=True)
class LanguageConfig:
    enabled: bool = True
    languages: tuple[str, ...] = ("en",)  # ISO 639-1 codes to keep; () keeps every language
    min_score: float = 0.65
    max_chars: int = 20_000

    def __post_init__(self):
        if not 0.0 <= self.min_score <= 1.0:
            raise ValueError(f"language.min_score={self.min_score}: expected a probability in [0, 1]")


@functools.lru_cache(maxsize=1)
def _identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier  # pylint: disable=import-outside-toplevel

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def identify(text: str, max_chars: int = 20_000) -> tuple[str, float]:
    """(ISO 639-1 code, probability) of the most likely language of ``text``."""
    lang, score = _identifier().classify(text[:max_chars] if max_chars else text)
    return lang, float(score)


def language(cfg: LanguageConfig, doc: Document) -> Verdict:
    lang, score = identify(doc.text, cfg.max_chars)
    if cfg.languages and lang not in cfg.languages:
        return drop("other_language")
    if score < cfg.min_score:
        return drop("low_confidence")
    meta = {**doc.metadata, "language": lang, "language_score": round(score, 4)}
    return Verdict(dataclasses.replace(doc, metadata=meta))
