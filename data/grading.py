"""Graders of the synthetic tasks (``lmforge.data.synthetic``): a model's final answer read from its
reply and compared with the reference.

The number after the *last* ``####`` (GSM8K's convention, Cobbe et al. 2021) with ``$``, thousands
commas and a trailing period dropped, compared by value; ``arithmetic_answer_first`` reads the
*first* ``####``, so a model cannot fix its committed answer afterwards; ``spelling`` compares the
letters after the last ``####``; ``identity`` looks for the name as a whole word.
``lmforge.eval.extract`` (which ``data`` may not import) uses :func:`normalize_number` too.
"""

from __future__ import annotations

import decimal
import re

from lmforge.data.synthetic import TASKS, VERIFIABLE

_FINAL = re.compile(r"####[ \t]*(-?\$?[ \t]?[\d,]*\.?\d+)")
_SPELLED = re.compile(r"####[ \t]*([A-Za-z](?:[ \t]*[-,][ \t]*[A-Za-z]|[ \t]+[A-Za-z])*)(?![A-Za-z])")
_NUMERIC = ("arithmetic", "arithmetic_answer_first", "calculator", "letter_count", "decimal_compare")


def normalize_number(text: str) -> str | None:
    """``" $1,234.50. "`` -> ``"1234.5"``, ``"-0"`` -> ``"0"``; None when ``text`` is not a number.
    The one number rule of lmforge: ``lmforge.eval.extract`` uses it too."""
    cleaned = text.strip().replace("$", "").replace(",", "").replace(" ", "").rstrip(".")
    try:
        value = decimal.Decimal(cleaned)
    except decimal.InvalidOperation:
        return None
    if not value.is_finite():
        return None
    return "0" if value == 0 else format(value.normalize(), "f")


def _check_verifiable(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"synthetic task {task!r}: expected one of {', '.join(TASKS)}")
    if task not in VERIFIABLE:
        raise ValueError(f"task {task!r} has no reference answer to grade; expected one of {', '.join(VERIFIABLE)}")


def extract_answer(task: str, completion: str) -> str | None:
    """The final answer of a model's ``completion`` for ``task``, normalised; None when it has none.

    Numeric tasks: the number after the last ``####`` (the first for ``arithmetic_answer_first``),
    via :func:`normalize_number` (``"#### 1,234."`` -> ``"1234"``, ``"#### -5"`` -> ``"-5"``).
    ``spelling``: the letters after the last ``####``, separated by ``-``, ``,`` or spaces, as
    ``"s-t-r-a-w"`` (an unseparated word is no spelling: None). ``identity``: the stripped reply.
    Raises ValueError for an unknown task or one without answers (refusal, smalltalk)."""
    _check_verifiable(task)
    if task in _NUMERIC:
        found = _FINAL.findall(completion)
        return normalize_number(found[0 if task == "arithmetic_answer_first" else -1]) if found else None
    if task == "spelling":
        found = _SPELLED.findall(completion)
        return "-".join(ch.lower() for ch in found[-1] if ch.isalpha()) if found else None
    return completion.strip() or None


def check_answer(task: str, completion: str, answer: str) -> bool:
    """Whether ``completion`` (a model's reply) gives the reference ``answer`` of a ``task`` item.

    Numeric tasks compare values (``"#### 18.0"`` passes for ``"18"``); ``spelling`` compares the
    letter sequences (case-insensitive); ``identity`` passes when the name appears as a whole word,
    any case. Raises ValueError for an unknown task, one without answers, or a numeric answer
    that is not a number."""
    _check_verifiable(task)
    if task == "identity":
        return re.search(rf"(?<!\w){re.escape(answer)}(?!\w)", completion, re.IGNORECASE) is not None
    got = extract_answer(task, completion)
    if task == "spelling":
        return got is not None and got == "-".join(ch for ch in answer.lower() if ch.isalpha())
    want = normalize_number(answer)
    if want is None:
        raise ValueError(f"answer {answer!r} of task {task!r}: expected a number")
    return got == want


__all__ = ["check_answer", "extract_answer", "normalize_number"]
