"""Synthetic tool-use conversations: the ``calculator`` task of ``lmforge.data.synthetic``.

A user asks for a product, sum or difference of numbers too long for a small model to work out
("What is 4821 * 377?"); the assistant calls the calculator with the expression, reads the result
and answers with it, ending in ``#### <n>`` as the other arithmetic tasks do::

    user       What is 4821 * 377?
    assistant  <|tool_call|>{"name": "calculator", "arguments": {"expression": "4821 * 377"}}
    tool       1817517
    assistant  4821 * 377 = 1817517.
               #### 1817517

Trained with loss on the assistant turns (the default), a model learns to write the call (the
expression copied from the question) and to copy the result, never the result itself: the skill
Toolformer (Schick et al. 2023) teaches by self-supervision, here given as data. Operands have
2 to ``max_digits`` digits (an option, default 4); a difference is never negative. The key is the
expression, so train and test share no problem. The tool's result is exact integer arithmetic,
what ``lmforge.infer.tools.calculator`` returns for the expression (tested).
"""

from __future__ import annotations

import random

from lmforge.data.chat import format_call

OPS = {"+": ("plus", "the sum of {a} and {b}"), "-": ("minus", "{a} minus {b}"), "*": ("times", "{a} multiplied by {b}")}
_ASK = ("What is {expr}?", "Compute {expr}.", "What is {words}?", "Calculate {expr}, please.", "How much is {words}?",
        "{expr} = ?", "Can you work out {expr}?")


def calc_sample(rng: random.Random, opts: dict, split: str):   # pylint: disable=unused-argument
    """(key, (a, op, b)): operands of 2 to ``max_digits`` digits, ``a >= b`` for a difference."""
    op = rng.choice(tuple(OPS))
    a, b = (rng.randint(10, 10 ** rng.randint(2, opts["max_digits"]) - 1) for _ in range(2))
    if op == "-" and b > a:
        a, b = b, a
    return f"{a} {op} {b}", (a, op, b)


def calc_render(rng: random.Random, params, opts: dict):   # pylint: disable=unused-argument
    """The conversation (user, call, result, answer) and the answer."""
    a, op, b = params
    expr = f"{a} {op} {b}"
    value = a + b if op == "+" else a - b if op == "-" else a * b
    words = OPS[op][1].format(a=a, b=b) if rng.random() < 0.5 else f"{a} {OPS[op][0]} {b}"
    question = rng.choice(_ASK).format(expr=expr, words=words)
    return [{"role": "user", "content": question},
            {"role": "assistant", "content": format_call("calculator", expression=expr)},
            {"role": "tool", "content": str(value)},
            {"role": "assistant", "content": f"{expr} = {value}.\n#### {value}"}], str(value)


__all__ = ["OPS", "calc_render", "calc_sample"]
