"""The ready reward functions of ``lmforge.align.rewards``: each checked on replies it must pass and
fail, and on the reference replies of the synthetic math tasks and of GSM8K (which they must pass)."""

import json
import pathlib

import pytest

from lmforge.align import rewards
from lmforge.data import synthetic

GSM8K = pathlib.Path(__file__).resolve().parents[3] / "shared" / "data" / "gsm8k_train.jsonl"


@pytest.mark.parametrize("text, want", [
    ("Getting 3 more: 14 + 6 = 20.", [True]), ("Adding them: 14 + 6 = 21.", [False]),
    ("2 * 3 * 4 = 24 and (2+3)*4=20", [True, True]), ("5 × 3 = 15, 15 ÷ 4 = 3", [True, False]),
    ("Natalia sold 48/2 = <<48/2=24>>24 clips, then <<48+24=71>>71", [True, False]),   # GSM8K's annotations
    ("$1,200 - 200 = $1,000.", [True]), ("7 / 2 = 3.5 but 7 / 2 = 3", [True, False]), ("1/2 * 1/2 = 1/4", [True]),
    ("2 * 23 - 4 = 46 - 4 = 42", [True, True]), ("3 * 4 = 12, 12 + 1 = 13", [True, True]), ("-5 + 3 = -2", [True]),
    ("apples. 5 + 3 = 8, so", [True]), ("5 / 0 = 1", [False]),
    ("x = 5, total = 12, a == b", []), ("M + 4 + 2 = 8", []), ("100/5 = 5A/5", []), ("no equation", []),
])
def test_equations_are_checked_exactly(text, want):
    """An expression with an operator, ``=``, then a number or (in a chain) the next expression, compared
    exactly; text that is not such an equation is not counted."""
    assert rewards.equations(text) == want
    assert rewards.equation_accuracy("arithmetic", text, None) == (sum(want) / len(want) if want else 0.0)


def test_the_reference_replies_earn_every_reward():
    """The worked and answer-first replies of the synthetic arithmetic task are right, well formed and
    all their equations hold; a reply with a wrong step or a wrong answer loses only that reward."""
    for task in ("arithmetic", "arithmetic_answer_first"):
        for it in synthetic.generate(task, 200, split="test", seed=3):
            reply = it["messages"][-1]["content"]
            assert rewards.accuracy(task, reply, it["answer"]) == 1.0
            assert rewards.answer_format(task, reply, it["answer"]) == 1.0
            found = rewards.equations(reply)
            assert found and all(found), reply
    it = synthetic.generate("arithmetic", 1, split="test", seed=3)[0]
    reply, answer = it["messages"][-1]["content"], it["answer"]
    assert rewards.accuracy("arithmetic", reply.replace(f"#### {answer}", f"#### {int(answer) + 1}"), answer) == 0.0
    first = rewards.equations(reply)
    broken = reply.replace(" = ", " = 1", 1)   # the first result gets a leading 1: that step is wrong
    assert rewards.equations(broken) == [False, *first[1:]] and rewards.accuracy("arithmetic", broken, answer) == 1.0


def test_accuracy_grades_a_files_answers_by_auto_match():
    """An item without a task (a file's answer column) is graded by value when the answer is a number
    (stored as a number or text), else as exact text; no answer is a one-line error."""
    assert rewards.accuracy("chat", "3 + 4 = 7", 7) == 1.0 and rewards.accuracy("chat", "It is 7.0", "7") == 1.0
    assert rewards.accuracy("chat", "It is 8", 7) == 0.0
    assert rewards.accuracy("chat", "Paris", "Paris") == 1.0 and rewards.accuracy("chat", "Lyon", "Paris") == 0.0
    with pytest.raises(ValueError, match="accuracy needs a reference answer"):
        rewards.accuracy("chat", "7", None)


def test_format_rewards():
    """``answer_format``: one ``####`` line, last (first too for answer-first); ``think_format``: one
    non-empty ``<think>`` block, then an answer."""
    fmt = rewards.answer_format
    assert [fmt("arithmetic", t, None) for t in ("So 7.\n#### 7\n", "#### 7\nSo 7.", "#### 7\n#### 8", "So 7.")] == [
        1.0, 0.0, 0.0, 0.0]
    assert fmt("arithmetic_answer_first", "#### 7\n\nHere is the working:\n3 + 4 = 7.", None) == 1.0
    think = rewards.think_format
    assert [think("chat", t, None) for t in ("<think>3 + 4 = 7</think>\n7", "<think></think>7", "<think>a</think>",
                                             "<think>a<think>b</think>7", "7 <think>a</think>7")] == [
        1.0, 0.0, 0.0, 0.0, 0.0]


def test_gsm8k_reference_solutions_pass():
    """GSM8K's own training solutions: every final answer is graded right, and their equations (the
    ``<<a*b=c>>`` annotations and the prose) are judged right but for a few in a thousand, the data
    set's own slips (``4080 + 4080 / 2 = 4000 + 2040``)."""
    if not GSM8K.exists():
        pytest.skip(f"GSM8K is not at {GSM8K} (../shared/data holds it)")
    rows = [json.loads(line) for line in GSM8K.read_text().splitlines()]
    assert all(rewards.accuracy("gsm8k", r["answer"], r["answer"].rpartition("####")[2].strip()) for r in rows)
    found = [ok for r in rows for ok in rewards.equations(r["answer"])]
    assert len(found) > 3 * len(rows) and sum(found) / len(found) > 0.995
