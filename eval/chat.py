"""Chat evaluation: an assistant's replies to conversations, graded against reference answers.

A chat model is asked through its chat template (``lmforge.data.chat``: the conversation so far,
then the assistant marker) and its reply ends at the template's end-of-turn id (or eos). Each
item is a conversation whose last message is the reference assistant turn; the prompt is every
message before it, and ``grade(task, reply, answer) -> bool`` decides (for the synthetic tasks,
``lmforge.data.grading.check_answer``; for GSM8K the ``#### <number>`` convention). Items of no
known task (``GENERIC``: a file's items that name none) are graded by a generation matcher instead
(:func:`with_generic`; ``lmforge.eval.generation.matcher``: exact, numeric or regex).

A tool-use item (the synthetic ``calculator`` task: user, call, result, answer) is answered through
its tool: graded without the tool-call loop, its reply is the call itself and never the answer, so
a caller asks :func:`reference_tools` (or :func:`task_tools`) which tools an item needs before
grading it, and passes them to :func:`chat_accuracy`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from lmforge.data import synthetic
from lmforge.infer import SamplingConfig, chat_replies, replier
from lmforge.infer.tools import Tool, read_calls, run_tools

Grader = Callable[[str, str, str], bool]   # (task, reply, answer) -> correct
GENERIC = "chat"   # the task of an item that names none: graded by a matcher, not by a task's own grader


def prompt_messages(messages: Sequence[Mapping[str, str]]) -> list[dict]:
    """What the model is asked: a conversation that ends in a user turn as it is (a prompt, as GRPO's
    and TRL's prompt-only records are); else the messages up to the last user turn's reply, i.e.
    before the first assistant turn after the last user message (the last assistant turn when there
    is no user turn). A tool-use item (user, call, result, answer) is asked from the user's turn: the
    calls are the model's to make.

    Raises ValueError if there is no assistant turn or nothing before it."""
    if messages and messages[-1]["role"] == "user":
        return [dict(m) for m in messages]
    users = [i for i, m in enumerate(messages) if m["role"] == "user"]
    after = users[-1] if users else 0
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant" and i > after]
    first = turns[0] if users and turns else max((i for i, m in enumerate(messages) if m["role"] == "assistant"),
                                                 default=-1)
    if first <= 0:
        raise ValueError(f"a chat evaluation item needs a reference assistant turn after at least one message; got "
                         f"roles {[m['role'] for m in messages]}")
    return [dict(m) for m in messages[:first]]


def chat_accuracy(sampler, template, items: Sequence[Mapping], grade: Grader, *,
                  sampling: SamplingConfig = SamplingConfig(max_new_tokens=128, temperature=0.0),
                  seed: int = 0, batch: int = 0, progress: bool = False, desc: str = "replies",
                  tools: Sequence[Tool] = (), max_calls: int = 4) -> dict:
    """Replies to ``items`` (dicts with ``messages``, ``answer``, ``task``) graded by ``grade``.

    Returns ``{"metrics": {"accuracy", "n", "accuracy/<task>" per task}, "samples": [{task, prompt,
    answer, reply, correct}]}`` (``prompt``: the messages asked); with ``sampling.n > 1`` the accuracy is over all replies (pass@1 estimated
    from n samples). ``batch``, ``progress``, ``desc``: as :func:`chat_replies`. With ``tools``, each
    reply goes through the tool-call loop (``lmforge.infer.tools.run_tools``, at most ``max_calls``
    calls; needs ``sampling.n == 1``): the last reply is graded, the metrics add ``tool_calls``
    (calls per item) and ``tool_errors`` (the share of calls that failed), each sample its
    ``calls``. An item's ``tools`` (a chat file's function schemas, ``lmforge.data.chat.check_tools``)
    are shown in its prompt, as SFT trained it (:func:`lmforge.infer.chat_replies`)."""
    items = [it for it in items if it.get("answer") is not None]
    if not items:
        return {"metrics": {"accuracy": float("nan"), "n": 0}, "samples": []}
    prompts = [prompt_messages(it["messages"]) for it in items]
    schemas = [it.get("tools") for it in items]
    schemas = schemas if any(schemas) else None   # none at all: a reply callable without tools= still serves
    runs = None
    if tools:
        if sampling.n != 1:
            raise ValueError(f"chat_accuracy: the tool loop samples one reply per conversation; got n={sampling.n}")
        runs = run_tools(replier(sampler, template, sampling, seed=seed, batch=batch, progress=progress, desc=desc),
                         prompts, tools, max_calls=max_calls, tool_schemas=schemas)
        replies = [run.reply for run in runs]
    else:
        replies = chat_replies(sampler, template, prompts, sampling, seed=seed, batch=batch, progress=progress,
                               desc=desc, tools=schemas)
    n = sampling.n
    samples, by_task = [], {}
    for r, reply in enumerate(replies):
        it = items[r // n]
        ok = bool(grade(it["task"], reply, it["answer"]))
        by_task.setdefault(it["task"], []).append(ok)
        samples.append({"task": it["task"], "prompt": prompts[r // n], "answer": it["answer"], "reply": reply,
                        "correct": ok})
        if runs is not None:
            samples[-1]["calls"] = [dataclasses.asdict(c) for c in runs[r].calls]
    metrics = {"accuracy": float(np.mean([s["correct"] for s in samples])), "n": len(items)}
    if runs is not None:
        calls = sum(len(run.calls) for run in runs)
        metrics.update(tool_calls=calls / len(runs), tool_errors=sum(run.errors for run in runs) / max(calls, 1))
    if len(by_task) > 1:
        metrics.update({f"accuracy/{t}": float(np.mean(v)) for t, v in sorted(by_task.items())})
    return {"metrics": metrics, "samples": samples}


def reference_tools(messages: Sequence[Mapping[str, str]]) -> tuple[str, ...]:
    """The tools a reference conversation's assistant turns call, each name once in order of first call
    (``lmforge.infer.tools.parse_tool_calls``): what a reply must go through to reach the reference
    answer. ``()`` for a conversation answered in text; a malformed call is not counted."""
    calls = [c for m in messages if m["role"] == "assistant" and isinstance(m.get("content"), str)
             for c in read_calls(m["content"]) if not c.error]
    return tuple(dict.fromkeys(c.name for c in calls))


@functools.lru_cache(maxsize=None)
def task_tools(task: str) -> tuple[str, ...]:
    """The tools synthetic ``task``'s conversations call: ``("calculator",)`` for ``calculator``
    (``lmforge.data.tool_use``), ``()`` for a task answered in text. Read off one drawn item with
    :func:`reference_tools` (every item of a task has the same turns), so a tool-use task added to
    ``lmforge.data.synthetic`` needs no list kept here. ``task``: one of ``synthetic.VERIFIABLE``
    (``refusal`` draws from the HH-RLHF file). Raises ValueError for an unknown task."""
    return reference_tools(synthetic.generate(task, 1)[0]["messages"])


def with_generic(grade: Grader, is_correct: Callable[[str, str], bool]) -> Grader:
    """``grade`` for items of a named task; ``is_correct(reply, answer)`` (a ``generation.matcher``) for
    items of task ``GENERIC``, which no task grader knows."""
    def graded(task: str, reply: str, answer: str) -> bool:
        return is_correct(reply, answer) if task == GENERIC else grade(task, reply, answer)
    return graded


__all__ = ["GENERIC", "chat_accuracy", "chat_replies", "prompt_messages", "reference_tools", "task_tools",
           "with_generic"]
