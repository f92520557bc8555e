"""Answer extraction and matching: pure functions from a model's output text to a verdict.

- :func:`gsm8k_final` reads the ``#### N`` final answer that GSM8K's reference solutions end with
  (Cobbe et al. 2021, "Training Verifiers to Solve Math Word Problems").
- :func:`extract_number` finds a model's numeric answer: the number after the last ``####`` when
  there is one ("strict", lm-evaluation-harness's ``strict-match`` filter for gsm8k), else the
  last number in the text ("flexible", its ``flexible-extract``).
- :func:`normalize_number` strips ``$``, thousands commas, a trailing period and surrounding
  space, and writes the value canonically (``"1,000.50"`` -> ``"1000.5"``, ``"-0"`` -> ``"0"``),
  so numeric matching compares values, not spellings.
- :func:`exact_match` compares stripped strings with internal whitespace runs collapsed;
  :func:`regex_extract` returns the first match's group 1 (or the whole match when the pattern
  has no group).
"""

from __future__ import annotations

import re

from lmforge.data.grading import normalize_number as _normalize_number

# A number as people write answers: optional sign and $, digits with optional thousands commas,
# optional decimals. The lookarounds keep "v2.3" or "a1" parts of words from counting as answers.
NUMBER = re.compile(r"(?<![\w.])-?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\w])")
FINAL = re.compile(r"####\s*(-?\$?\s?[\d,]*\.?\d+)")


# The one number rule of lmforge (``" $1,234.50. "`` -> ``"1234.5"``), shared with the synthetic tasks'
# graders in ``lmforge.data.synthetic`` (eval may import data, not the other way round).
normalize_number = _normalize_number


def gsm8k_final(answer: str) -> str | None:
    """The normalised ``#### N`` of a GSM8K reference answer, or None when it has none."""
    found = FINAL.findall(answer)
    return normalize_number(found[-1]) if found else None


def extract_number(output: str, *, strict: bool = False) -> str | None:
    """A model's numeric answer, normalised (module docstring); None when there is none."""
    final = FINAL.findall(output)
    if final:
        return normalize_number(final[-1])
    if strict:
        return None
    numbers = NUMBER.findall(output)
    return normalize_number(numbers[-1]) if numbers else None


def numeric_match(output: str, answer: str, *, strict: bool = False) -> bool:
    """The number extracted from ``output`` equals ``answer``'s value."""
    got, want = extract_number(output, strict=strict), normalize_number(answer)
    return got is not None and got == want


def _squash(text: str) -> str:
    return " ".join(text.split())


def exact_match(output: str, answer: str) -> bool:
    """Equal after stripping and collapsing whitespace runs (case kept)."""
    return _squash(output) == _squash(answer)


def regex_extract(output: str, pattern: str | re.Pattern) -> str | None:
    """The first match of ``pattern`` in ``output``: its group 1, or the whole match without groups."""
    match = re.search(pattern, output)
    if match is None:
        return None
    return match.group(1) if match.re.groups else match.group(0)


def regex_match(output: str, answer: str, pattern: str | re.Pattern) -> bool:
    """What ``pattern`` extracts from ``output`` exactly matches ``answer`` (:func:`exact_match`)."""
    got = regex_extract(output, pattern)
    return got is not None and exact_match(got, answer)
