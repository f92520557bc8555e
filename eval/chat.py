"""Chat evaluation: an assistant's replies to conversations, graded against reference answers.

A chat model is asked through its chat template (``lmforge.data.chat``: the conversation so far,
then the assistant marker) and its reply ends at the template's end-of-turn id (or eos). Each
item is a conversation whose last message is the reference assistant turn; the prompt is every
message before it, and ``grade(task, reply, answer) -> bool`` decides (for the synthetic tasks,
``lmforge.data.synthetic.check_answer``; for GSM8K the ``#### <number>`` convention). Items of no
known task (``GENERIC``: a file's items that name none) are graded by a generation matcher instead
(:func:`with_generic`; ``lmforge.eval.generation.matcher``: exact, numeric or regex).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from lmforge.infer import SamplingConfig, chat_replies

Grader = Callable[[str, str, str], bool]   # (task, reply, answer) -> correct
GENERIC = "chat"   # the task of an item that names none: graded by a matcher, not by a task's own grader


def prompt_messages(messages: Sequence[Mapping[str, str]]) -> list[dict]:
    """The messages before the last assistant turn (what the model is asked).

    Raises ValueError if there is no assistant turn or nothing before it."""
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=-1)
    if last <= 0:
        raise ValueError(f"a chat evaluation item needs a reference assistant turn after at least one message; got "
                         f"roles {[m['role'] for m in messages]}")
    return [dict(m) for m in messages[:last]]


def chat_accuracy(sampler, template, items: Sequence[Mapping], grade: Grader, *,
                  sampling: SamplingConfig = SamplingConfig(max_new_tokens=128, temperature=0.0),
                  seed: int = 0, batch: int = 0, progress: bool = False, desc: str = "replies") -> dict:
    """Replies to ``items`` (dicts with ``messages``, ``answer``, ``task``) graded by ``grade``.

    Returns ``{"metrics": {"accuracy", "n", "accuracy/<task>" per task}, "samples": [{task, answer,
    reply, correct}]}``; with ``sampling.n > 1`` the accuracy is over all replies (pass@1 estimated
    from n samples). ``batch``, ``progress``, ``desc``: as :func:`chat_replies`."""
    items = [it for it in items if it.get("answer") is not None]
    if not items:
        return {"metrics": {"accuracy": float("nan"), "n": 0}, "samples": []}
    replies = chat_replies(sampler, template, [prompt_messages(it["messages"]) for it in items], sampling, seed=seed,
                           batch=batch, progress=progress, desc=desc)
    n = sampling.n
    samples, by_task = [], {}
    for r, reply in enumerate(replies):
        it = items[r // n]
        ok = bool(grade(it["task"], reply, it["answer"]))
        by_task.setdefault(it["task"], []).append(ok)
        samples.append({"task": it["task"], "answer": it["answer"], "reply": reply, "correct": ok})
    metrics = {"accuracy": float(np.mean([s["correct"] for s in samples])), "n": len(items)}
    if len(by_task) > 1:
        metrics.update({f"accuracy/{t}": float(np.mean(v)) for t, v in sorted(by_task.items())})
    return {"metrics": metrics, "samples": samples}


def with_generic(grade: Grader, is_correct: Callable[[str, str], bool]) -> Grader:
    """``grade`` for items of a named task; ``is_correct(reply, answer)`` (a ``generation.matcher``) for
    items of task ``GENERIC``, which no task grader knows."""
    def graded(task: str, reply: str, answer: str) -> bool:
        return is_correct(reply, answer) if task == GENERIC else grade(task, reply, answer)
    return graded


__all__ = ["GENERIC", "chat_accuracy", "chat_replies", "prompt_messages", "with_generic"]
