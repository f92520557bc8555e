"""Multiple choice by log-likelihood: each choice scored as a continuation of the context.

    items = load_multiple_choice("task.jsonl")      # {"context": str, "choices": [str, ...], "answer": int}
    result = multiple_choice(scorer, items)
    result["metrics"]["acc"], result["metrics"]["acc_norm"]

Each choice's log-likelihood ``log p(choice | context)`` (nats, summed over its tokens) comes from
one teacher-forced forward pass (``Scorer``), never from sampling. The choice text follows the
context directly: put any separating space at the start of the choices (``" Paris"``), as
lm-evaluation-harness does with its ``target_delimiter``. The prediction is the argmax (the first
choice on a tie) of:

- ``acc``: the summed log-likelihood — favours short choices, which have fewer tokens to pay for;
- ``acc_norm``: the log-likelihood per *character* of the choice, counted without its leading
  whitespace (``len(choice.lstrip())`` in Unicode characters; the whole choice when it is only
  whitespace): lm-evaluation-harness's ``acc_norm`` (Gao et al. 2021, "A framework for few-shot
  language model evaluation"; reported for HellaSwag, ARC, PIQA), which divides by the length of
  the choice without its ``target_delimiter``: ``" Paris"`` here counts 5, as ``"Paris"`` after the
  harness's ``" "`` does. Independent of the tokenizer;
- ``acc_per_token``: the log-likelihood per token of the choice (the mean token log-probability,
  as in GPT-3's evaluation; Brown et al. 2020) — depends on the tokenizer.

The three come from the same scores; the per-item ``samples`` hold every choice's summed
log-likelihood and token count, so any other normalisation can be recomputed from the JSON.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Sequence

import numpy as np

from lmforge.eval.jsonl import TaskFileError, field, read_jsonl
from lmforge.eval.scoring import Scorer, encode_pair


@dataclasses.dataclass(frozen=True)
class ChoiceItem:
    context: str
    choices: tuple[str, ...]
    answer: int
    where: str                          # file:line


def load_multiple_choice(path: str | pathlib.Path, *, limit: int | None = None) -> list[ChoiceItem]:
    """``{"context": str, "choices": [str, ...] (>= 2, non-empty), "answer": int index}`` per line; a
    malformed line is a TaskFileError naming file:line."""
    items = []
    for number, obj in read_jsonl(path):
        if limit is not None and len(items) >= limit:
            break
        where = f"{path}:{number}"
        context = field(obj, "context", str, where)
        choices = field(obj, "choices", list, where)
        answer = field(obj, "answer", int, where)
        if len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
            raise TaskFileError(f"{where}: 'choices' must be a list of at least 2 non-empty strings")
        if not 0 <= answer < len(choices):
            raise TaskFileError(f"{where}: 'answer' {answer} is not an index into its {len(choices)} choices")
        items.append(ChoiceItem(context, tuple(choices), answer, where))
    if not items:
        raise TaskFileError(f"{path}: holds no items")
    return items


def choice_chars(choice: str) -> int:
    """The length ``acc_norm`` divides by: the choice's characters without the separator before it
    (its leading whitespace), as lm-evaluation-harness leaves its ``target_delimiter`` out."""
    return len(choice.lstrip()) or len(choice)


def choice_predictions(logprobs: Sequence[float], chars: Sequence[int], tokens: Sequence[int]) -> dict[str, int]:
    """The chosen index under each rule (module docstring), from one item's per-choice sums (nats),
    lengths in characters and in tokens."""
    lp = np.asarray(logprobs, np.float64)
    return {"acc": int(np.argmax(lp)), "acc_norm": int(np.argmax(lp / np.asarray(chars, np.float64))),
            "acc_per_token": int(np.argmax(lp / np.asarray(tokens, np.float64)))}


def choice_requests(tok, items: Sequence[ChoiceItem]) -> list[tuple[list[int], list[int]]]:
    """One ``(context ids, choice ids)`` request per choice, item-major."""
    out = []
    for it in items:
        for choice in it.choices:
            try:
                out.append(encode_pair(tok, it.context, choice))
            except ValueError as e:
                raise TaskFileError(f"{it.where}: {e}") from None
    return out


def multiple_choice(scorer: Scorer, items: Sequence[ChoiceItem], *, progress: bool = False) -> dict:
    """``{"metrics": {"acc", "acc_norm", "acc_per_token", "n"}, "samples": [...]}`` (module docstring)."""
    scores = scorer.score(choice_requests(scorer.tok, items), progress=progress, desc="multiple choice")
    hits = {"acc": 0, "acc_norm": 0, "acc_per_token": 0}
    samples, k = [], 0
    for it in items:
        mine = scores[k:k + len(it.choices)]
        k += len(it.choices)
        picks = choice_predictions([s.logprob for s in mine], [choice_chars(c) for c in it.choices],
                                   [s.num_tokens for s in mine])
        for rule, pick in picks.items():
            hits[rule] += pick == it.answer
        samples.append({"where": it.where, "answer": it.answer, "logprobs": [s.logprob for s in mine],
                        "tokens": [s.num_tokens for s in mine], "greedy": [s.greedy for s in mine], "picks": picks})
    n = len(items)
    return {"metrics": {**{rule: h / n for rule, h in hits.items()}, "n": n}, "samples": samples}
