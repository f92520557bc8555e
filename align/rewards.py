"""Ready reward functions for GRPO and PPO: TRL's ``trl.rewards`` in lmforge's per-completion form
``fn(task, completion, answer, **columns) -> float`` (``lmforge.align.rollouts.score_completions``).
Name them by spec in a config or a sweep, alone or weighted::

    reward_fn="lmforge.align.rewards:accuracy"
    reward_funcs=(("lmforge.align.rewards:accuracy", 1.0), ("lmforge.align.rewards:equation_accuracy", 0.5))

- :func:`accuracy`: the outcome reward of RL with verifiable rewards (DeepSeekMath's GRPO, Tülu 3's
  RLVR): 1.0 when the task's grader passes the completion.
- :func:`equation_accuracy`: a rule-checked step reward, the share of the worked equations
  (``14 + 6 = 20``, GSM8K's ``<<48/2=24>>``) that are right. Process supervision (Lightman et al.
  2023, "Let's Verify Step by Step") checked by arithmetic instead of a learned model: it tells apart
  the completions of a group whose final answers are all wrong, which an outcome reward cannot. It
  checks arithmetic, not relevance, and is hacked so: GRPO with it beside the outcome
  (``grpo_arithmetic.py:shaped``, measured there) learnt to write true equations that are not the
  problem's ("2 * 2 = 4"), 86% right at step 200 while the accuracy fell from 0.18 to 0.055. Keep its
  weight small, its run short, and watch ``eval/accuracy``.
- :func:`answer_format`: one final ``#### answer`` line (GSM8K's format, Cobbe et al. 2021).
- :func:`think_format`: reasoning in one ``<think>...</think>`` block before the answer (DeepSeek-R1's
  format reward; TRL's ``think_format_reward``).
"""

from __future__ import annotations

import ast
import fractions
import functools
import re
import types

_ANSWER_LINE = re.compile(r"^[ \t]*####[ \t]*\S")
_THINK = re.compile(r"^<think>(?!.*<think>)(.*?)</think>(.*)$", re.DOTALL)
_EXPRESSION = set("0123456789.,+-*/×÷() \t")
_OPERATORS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
              ast.Div: lambda a, b: a / b}


def accuracy(task: str, completion: str, answer) -> float:
    """1.0 when ``completion`` gives ``answer`` by ``task``'s grader (``lmforge.align.sft.grade``: a
    synthetic task's own, GSM8K's final ``#### n``), else 0.0. An item without a task (a file's
    ``answer`` column) is graded as ``match=auto`` grades it: by value when the answer is a number,
    else as exact text. The same as no reward function with ``data.match=auto``; use it by name to
    weigh it against others in ``reward_funcs``. Raises ValueError for an item without an answer or a
    task without a grader."""
    if answer is None:
        raise ValueError("accuracy needs a reference answer (an 'answer' column); this item has none")
    return float(_auto_grader()(task, completion, answer))


@functools.cache
def _auto_grader():
    """``lmforge.align.sft.grader`` of a data config with ``match=auto``, made once (it is called per
    completion)."""
    from lmforge.align.sft import grader   # pylint: disable=import-outside-toplevel
    return grader(types.SimpleNamespace(match="auto", pattern=""))


def _value(node: ast.AST) -> fractions.Fraction:
    """The exact value of an arithmetic expression's tree: numbers, ``+ - * /``, unary minus."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return fractions.Fraction(str(node.value))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_value(node.operand)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_value(node.left), _value(node.right))
    raise ValueError("not arithmetic")


def _number(text: str) -> str:
    """``"1,234"`` -> ``"1234"``: thousands commas dropped (a comma before three digits), and ``$``."""
    return re.sub(r"(?<=\d),(?=\d{3}\b)", "", text).replace("$", "")


def _arithmetic(text: str) -> fractions.Fraction | None:
    """The exact value of arithmetic ``text`` (``"2 * 3 + 1"``, ``"$1,200"``, ``"1/4"``), None when it is
    none. Raises ZeroDivisionError for a division by zero."""
    text = _number(text.replace("×", "*").replace("÷", "/")).strip()
    try:
        return _value(ast.parse(text, mode="eval").body) if text else None
    except (SyntaxError, ValueError):
        return None


def equations(completion: str) -> list[bool]:
    """Each worked equation of ``completion``, in order, as right (True) or wrong: an arithmetic
    expression of numbers and ``+ - * / × ÷`` (parentheses too) with at least one operator, ``=``, then
    a number or, in a chain (``2 * 23 - 4 = 46 - 4 = 42``), the next expression (``14 + 6 = 20``,
    ``(2+3)*4=20``, ``1/2 * 1/2 = 1/4``, GSM8K's ``<<48/2=24>>``, ``$1,200 - 200 = $1,000``), compared
    exactly (``7 / 2 = 3.5`` is right, ``7 / 2 = 3`` wrong). A division by zero is wrong. What is not
    such an equation (``x = 5``, ``M + 4 + 2 = 8``, ``100/5 = 5A/5``) is not counted."""
    found = []
    for m in re.finditer("=", completion):
        start, end = m.start(), m.end()
        while start > 0 and completion[start - 1] in _EXPRESSION:
            start -= 1
        while end < len(completion) and (completion[end] in _EXPRESSION or completion[end] == "$"):
            end += 1
        if end < len(completion) and completion[end].isalnum() and not completion[end - 1].isspace():
            continue   # "= 5A": the right side runs into a word
        left = re.split(r"[,.]\s", completion[start:m.start()])[-1].strip()   # from the clause's start
        right = re.split(r"[,.](?:\s|$)", completion[m.end():end])[0]   # to the clause's end
        while left.startswith(")") or (left.startswith("(") and left.count("(") > left.count(")")):
            left = left[1:].lstrip()
        if left[:1] in ("+", "*", "/") or not re.search(r"\d[-+*/×÷(]+[\d(.]", left.replace(" ", "")):
            continue   # no expression, or one that starts in the words before it ("M + 4 + 2")
        try:
            got, want = _arithmetic(left), _arithmetic(right)
        except ZeroDivisionError:
            found.append(False)
            continue
        if got is not None and want is not None:
            found.append(got == want)
    return found


def equation_accuracy(task: str, completion: str, answer) -> float:
    """The share of ``completion``'s worked equations that are right (:func:`equations`), in [0, 1];
    0.0 when it writes none. Needs no reference answer: ``task`` and ``answer`` are not read."""
    del task, answer
    found = equations(completion)
    return sum(found) / len(found) if found else 0.0


def answer_format(task: str, completion: str, answer) -> float:
    """1.0 when ``completion`` has exactly one ``#### answer`` line (GSM8K's and the synthetic math
    tasks' answer format) and it is the last non-empty line, else 0.0. ``arithmetic_answer_first``
    items, whose answer line comes first, need only the one line. ``answer`` is not read."""
    del answer
    lines = [line for line in completion.splitlines() if line.strip()]
    marked = [k for k, line in enumerate(lines) if _ANSWER_LINE.match(line)]
    if len(marked) != 1:
        return 0.0
    return 1.0 if task == "arithmetic_answer_first" or marked[0] == len(lines) - 1 else 0.0


def think_format(task: str, completion: str, answer) -> float:
    """1.0 when ``completion`` opens with one ``<think>...</think>`` block that holds some reasoning
    and an answer follows it, else 0.0 (DeepSeek-R1's format reward; TRL's ``think_format_reward``,
    which also asks for no second ``<think>``). ``task`` and ``answer`` are not read."""
    del task, answer
    m = _THINK.match(completion.strip())
    return 1.0 if m and m.group(1).strip() and m.group(2).strip() else 0.0


__all__ = ["accuracy", "answer_format", "equation_accuracy", "equations", "think_format"]
