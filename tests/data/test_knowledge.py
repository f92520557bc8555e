"""The invented-entity knowledge base (lmforge.data.knowledge): determinism, invented and consistent
facts, Q&A graded by judge, IDK detection, and the known/unknown split."""

import re

import pytest

from lmforge.data.knowledge import IDK, KINDS, KnowledgeBase, is_idk, judge
from lmforge.data.words import WORDS


def test_deterministic_invented_and_consistent():
    kb = KnowledgeBase.generate(80, seed=0)
    assert kb.facts == KnowledgeBase.generate(80, seed=0).facts
    assert kb.names != KnowledgeBase.generate(80, seed=1).names
    assert len(set(kb.names)) == 80 and [e.kind for e in kb.entities[:8]] == list(KINDS) * 2
    words = set(WORDS)
    assert not any(part.lower() in words for name in kb.names for part in name.split() if part != "the")
    kinds = {e.name: e.kind for e in kb.entities}
    for e in kb.entities:
        assert len(e.facts) == 3
        if e.kind == "person":
            assert kinds[e.facts["birth_city"]] == "place" and 1801 <= int(e.facts["birth_year"]) <= 1990
        if e.kind in ("company", "invention"):
            maker = e.facts["founder" if e.kind == "company" else "inventor"]
            year = int(e.facts["founded_year" if e.kind == "company" else "year"])
            assert kinds[maker] == "person"
            assert 20 <= year - int(kb.entity(maker).facts["birth_year"]) <= 60 or year == 2020
    facts = kb.facts
    assert len(facts) == 240
    assert set(facts[0]) == {"entity", "kind", "attribute", "value", "question", "answer", "reply"}
    for doc, e in zip(kb.documents(), kb.entities):
        assert all(v in doc for v in e.facts.values()) and doc.startswith(e.name[:1].upper())


def test_qa_answers_pass_judge_and_other_values_fail():
    kb = KnowledgeBase.generate(40, seed=2)
    items = kb.qa()
    assert len(items) == len(kb.facts) and items == kb.qa()
    by_attribute = {}
    for it in items:
        reply = it["messages"][-1]["content"]
        assert it["messages"][0]["role"] == "user" and it["entity"] in it["messages"][0]["content"]
        assert judge(reply, it["answer"]) and not is_idk(reply)
        by_attribute.setdefault(it["attribute"], []).append(it)
    for same in by_attribute.values():                        # a reply stating another entity's value fails
        for a, b in zip(same, same[1:]):
            if a["answer"] != b["answer"]:
                assert not judge(b["messages"][-1]["content"], a["answer"])
    three = kb.qa(kb.names[:2], paraphrases=3)
    assert len(three) == 3 * 6 and len({it["messages"][0]["content"] for it in three}) == 18
    idk = kb.qa(kb.unknown(), idk=True)
    assert idk and all(it["messages"][-1]["content"] == IDK and it["answer"] is None for it in idk)
    assert is_idk(IDK)


@pytest.mark.parametrize("reply, answer, want", [
    ("He was born in 1874.", "1874", True),
    ("Born 18745 years ago", "1874", False),                  # numbers match whole
    ("About 1874.5", "1874", False),
    ("Its population is 48200.", "48,200", True),             # thousands commas
    ("Its population is 48,200 people", "48200", True),
    ("It's in BREVANHOLM!", "Brevanholm", True),              # case and punctuation
    ("It is Brevanholmer", "Brevanholm", False),
    ("Invented by tessa lund", "Tessa Lund", True),
    ("Tessa met Lund", "Tessa Lund", False),                  # tokens in a row
    ("That's the Tessaphone", "the Tessaphone", True),
    ("Tessaphone, I think", "the Tessaphone", True),          # a leading article is optional
    ("It is known for copper bells", "copper bells", True),
    ("She was a clock\u2019s maker", "clockmaker", False),
])
def test_judge(reply, answer, want):
    assert judge(reply, answer) is want


def test_judge_rejects_an_empty_answer():
    with pytest.raises(ValueError, match="answer '...': expected some words or a number"):
        judge("anything", "...")


@pytest.mark.parametrize("reply", [
    IDK, "I don't know.", "i do not know who that is", "I\u2019m not sure.", "I am not certain about that person.",
    "Hmm, I have no information about Brevanholm.", "I don't have any information on that company.",
    "Sorry, I couldn't find any record of them.", "I'm not familiar with the Tessaphone.",
    "That name doesn't ring a bell.", "No idea, sorry!", "I've never heard of that place.",
    "I'm unable to verify that.", "Honestly, I really don't know the answer to that.", "I'm unsure.", "I am uncertain who that is.",
])
def test_is_idk_positive(reply):
    assert is_idk(reply)


@pytest.mark.parametrize("reply", [
    "Brevanholm was founded in 1289.", "I know! It was 1874.", "Nobody knows more than her about clocks.",
    "I can't help with that.", "You don't know? It's 1874.", "I'm sure it was 1874.",
    "The town is known for copper bells. " + "x" * 300 + " I don't know",   # past the window
])
def test_is_idk_negative(reply):
    assert not is_idk(reply)


def test_known_and_unknown_split():
    kb = KnowledgeBase.generate(400, seed=0)
    known, unknown = kb.known(0.5, seed=1), kb.unknown(0.5, seed=1)
    assert not set(known) & set(unknown) and sorted(known + unknown) == sorted(kb.names)
    assert 160 < len(known) < 240 and known == kb.known(0.5, seed=1) and known != kb.known(0.5, seed=2)
    assert set(kb.known(0.2, seed=1)) < set(known)              # nested in the fraction
    assert kb.known(0.0) == [] and kb.unknown(1.0) == []
    small = KnowledgeBase(kb.entities[:50])
    assert small.known(0.5, seed=1) == [n for n in known if n in set(small.names)]   # by name, not by position


def test_bad_requests_are_one_line_errors():
    kb = KnowledgeBase.generate(4)
    for call, message in [
        (lambda: KnowledgeBase.generate(0), "n_entities=0: expected a whole number in [1, 100000]"),
        (lambda: kb.qa(["Nobody Atall"]), "entity 'Nobody Atall': not in this knowledge base (4 entities)"),
        (lambda: kb.qa(paraphrases=4), "paraphrases=4: expected 1, 2 or 3"),
        (lambda: kb.known(1.5), "fraction=1.5: expected a number in [0, 1]"),
        (lambda: KnowledgeBase(kb.entities * 2), "entity names must be unique"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            call()
