"""Synthetic post-training tasks (lmforge.data.synthetic): determinism, train/test disjointness by
canonical key, correct worked solutions, graders that pass every reference and fail perturbed ones,
extractor edge cases, the HH-RLHF refusal task on the real sample, and mixture counts."""

import re

import pytest

from lmforge.data import synthetic
from lmforge.data.grading import check_answer, extract_answer
from lmforge.data.synthetic import TASKS, VERIFIABLE, generate, mixture, split_of

OFFLINE = [t for t in TASKS if t != "refusal"]   # tasks that need no file
FAMILY = {"arithmetic_answer_first": "arithmetic", "letter_count": "words", "spelling": "words"}
HH = "hh_rlhf_harmless_base_test.jsonl.gz"


@pytest.mark.parametrize("task", OFFLINE)
def test_deterministic_prefix_stable_and_well_formed(task):
    items = generate(task, 40, seed=3)
    assert items == generate(task, 40, seed=3)
    assert items[:15] == generate(task, 15, seed=3)            # the first k items do not depend on n
    assert items != generate(task, 40, seed=4)
    for it in items:
        assert it["task"] == task and set(it) == {"task", "messages", "answer", "key"}
        roles = [m["role"] for m in it["messages"]]
        tool = {"tool"} if task == "calculator" else set()   # the calculator's result (tests/infer/test_tools.py)
        assert roles[-1] == "assistant" and "user" in roles and set(roles) <= {"system", "user", "assistant"} | tool
        assert all(isinstance(m["content"], str) and m["content"].strip() for m in it["messages"])
        assert (it["answer"] is not None) == (task in VERIFIABLE)


@pytest.mark.parametrize("task", OFFLINE)
def test_train_and_test_disjoint_by_canonical_key(task):
    train = {it["key"] for it in generate(task, 600, split="train")}
    test = {it["key"] for it in generate(task, 150, split="test")}
    assert train and test and not train & test
    family = FAMILY.get(task, task)
    assert all(split_of(family, k) == "train" for k in train) and all(split_of(family, k) == "test" for k in test)


def test_shared_key_spaces_keep_test_problems_out_of_every_training_task():
    arith_test = {it["key"] for it in generate("arithmetic", 200, split="test")}
    assert not arith_test & {it["key"] for it in generate("arithmetic_answer_first", 2000, split="train")}
    test_words = {it["key"] for it in generate("spelling", 100, split="test")}
    train_words = {it["key"] for it in generate("letter_count", 2000, split="train")}
    assert not test_words & train_words                        # a test word is never spelled out in training


def _underlying(text: str) -> str:
    """A user line without the greeting, case and ending put on it."""
    text = re.sub(r"^(hi!|hey,|quick question:|hello\.|just curious:)\s*", "", text.lower())
    return re.sub(r"[?.!:) ]+$", "", text)


def test_identity_and_smalltalk_test_questions_are_new_questions_of_trained_categories():
    """The held-out identity questions are questions never trained on, with another wording or not (before,
    a test question was a training one with another greeting or case), and every category is in both
    splits; a held-out smalltalk line never appears in training."""
    from lmforge.data.synthetic import _ID_QA, held_out_lines

    train, test = generate("identity", 3000), generate("identity", 300, split="test")
    asked = lambda items: {_underlying(it["messages"][-2]["content"]) for it in items}   # noqa: E731
    assert asked(train) and not asked(train) & asked(test)
    category = {q.lower(): c for c, (questions, _) in _ID_QA.items() for q in questions}
    assert {category[q] for q in asked(test)} == {category[q] for q in asked(train)} == set(_ID_QA)
    held = {line.lower() for line in held_out_lines("smalltalk")}
    talk = generate("smalltalk", 3000)
    assert not {_underlying(m["content"]) for it in talk for m in it["messages"] if m["role"] == "user"} & held
    assert all(set(it["key"].split(" | ")) & held_out_lines("smalltalk") for it in generate("smalltalk", 100,
                                                                                              split="test"))


def _perturb(task, reply, answer):
    """The same reply with a wrong final answer."""
    if task == "identity":
        return re.sub(re.escape(answer), "Bob", reply)
    if task == "spelling":
        letters = answer.split("-")
        i = next((i for i in range(len(letters) - 1) if letters[i] != letters[i + 1]), None)
        wrong = letters[:-1] if i is None else letters[:i] + [letters[i + 1], letters[i]] + letters[i + 2:]
        return reply.replace(f"#### {answer}", "#### " + "-".join(wrong))
    wrong = str(int(answer) + 1) if "." not in answer else answer + "1"
    return reply.replace(f"#### {answer}", f"#### {wrong}", 1)


@pytest.mark.parametrize("task", VERIFIABLE)
def test_every_reference_passes_its_grader_and_a_perturbed_one_fails(task):
    for it in generate(task, 150, seed=1) + generate(task, 50, split="test", seed=1):
        reply, answer = it["messages"][-1]["content"], it["answer"]
        assert check_answer(task, reply, answer), (reply, answer)
        bad = _perturb(task, reply, answer)
        assert bad != reply and not check_answer(task, bad, answer), bad


_STEP = re.compile(r"(-?\d+) ([-+*/]) (\d+) = (-?\d+)")


@pytest.mark.parametrize("task", ["arithmetic", "arithmetic_answer_first"])
def test_arithmetic_working_is_correct_with_two_to_four_operations(task):
    for it in generate(task, 300):
        reply = it["messages"][-1]["content"]
        steps = _STEP.findall(reply)
        assert 2 <= len(steps) <= 4, reply
        for a, op, b, c in steps:
            a, b, c = int(a), int(b), int(c)
            assert {"+": a + b, "-": a - b, "*": a * b, "/": a / b}[op] == c and c >= 0, reply
        assert int(it["answer"]) == int(steps[-1][3])
        final = reply.index(f"#### {it['answer']}")
        assert (final == 0) if task == "arithmetic_answer_first" else reply.endswith(f"#### {it['answer']}")
        assert reply.count("####") == 1
    # min_ops/max_ops arrive as strings from CLI bindings
    assert all(len(_STEP.findall(it["messages"][-1]["content"])) == 4
               for it in generate("arithmetic", 50, min_ops="4", max_ops="4"))


def test_max_value_bounds_every_number_and_running_total():
    for split in ("train", "test"):
        small = generate("arithmetic", 300, split=split, min_ops=2, max_ops=2, max_value="20")
        for it in small:
            reply = it["messages"][-1]["content"]
            steps = _STEP.findall(reply)
            assert len(steps) == 2 and all(int(n) <= 20 for step in steps for n in (step[0], step[2], step[3])), reply
            assert all(int(n) <= 20 for n in re.findall(r"\d+", it["messages"][0]["content"])), it
    # the bound changes which problems exist, nothing else: unbounded problems exceed 20, and the
    # default (1000, above any problem) draws exactly what no bound draws
    assert max(int(it["answer"]) for it in generate("arithmetic", 300)) > 20
    assert generate("arithmetic", 100, seed=3) == generate("arithmetic", 100, seed=3, max_value=10**6)


def test_letter_count_spelling_and_decimal_answers_are_right():
    for it in generate("letter_count", 200):
        word, reply = it["key"], it["messages"][-1]["content"]
        letter = re.search(r"The letter (\w) appears", reply).group(1)
        assert it["answer"] == str(word.count(letter)) and "-".join(word) in reply
    assert any(it["answer"] == "0" for it in generate("letter_count", 300))   # letters not in the word occur
    for it in generate("spelling", 50):
        assert it["answer"] == "-".join(it["key"])
    traps = 0
    for it in generate("decimal_compare", 300):
        a, b = it["key"].split("|")
        bigger = re.search(r"bigger|larger|greater", it["messages"][0]["content"]) is not None
        assert it["answer"] == (max if bigger else min)(a, b, key=float), it
        (wa, fa), (wb, fb) = a.split("."), b.split(".")
        longer, shorter = (a, b) if len(fa) > len(fb) else (b, a)
        traps += wa == wb and len(fa) != len(fb) and float(longer) < float(shorter)
    assert traps > 100                                          # the 9.11 vs 9.9 kind is well represented


def test_identity_and_smalltalk_use_the_options():
    items = generate("identity", 200, name="Quill", maker="Example Labs")
    assert all(it["answer"] == "Quill" and "Quill" in it["messages"][-1]["content"] for it in items)
    assert any("Example Labs" in it["messages"][-1]["content"] for it in items)
    with_system = sum(it["messages"][0]["role"] == "system" for it in items)
    assert 60 < with_system < 140                               # system_prob=0.5 by default
    assert all(it["messages"][0]["role"] != "system" for it in generate("identity", 30, system_prob=0))
    assert len({it["messages"][-2]["content"] for it in items}) > 50   # many phrasings
    talk = generate("smalltalk", 200, name="Quill")
    assert any("Quill" in it["messages"][-1]["content"] for it in talk)
    users = {" | ".join(m["content"] for m in it["messages"] if m["role"] == "user") for it in talk}
    assert any(len(it["messages"]) == 4 for it in talk) and len(users) > 60
    for bad in ({"name": ""}, {"maker": "  "}):   # "I'm , an AI assistant": refused, not rendered
        with pytest.raises(ValueError, match=rf"option {next(iter(bad))}=.* expected a non-empty string"):
            generate("identity", 2, **bad)
    assert generate("identity", 1, name="Q", system_prob=0)[0]["answer"] == "Q"


@pytest.mark.parametrize("completion, want", [
    ("so 9 * 2 = 18\n#### 18", "18"),
    ("#### 1,234", "1234"),
    ("#### -5", "-5"),
    ("#### 17.", "17"),
    ("#### $2,000.50.", "2000.5"),
    ("####42", "42"),
    ("#### 3 ... no wait\n#### 4", "4"),                       # the last #### counts
    ("The answer is 18.", None),                               # no ####: no answer
    ("#### eighteen", None),
])
def test_extract_answer_numeric_edge_cases(completion, want):
    assert extract_answer("arithmetic", completion) == want


def test_extract_answer_first_spelling_identity_and_errors():
    assert extract_answer("arithmetic_answer_first", "#### 3\n\nworking...\n#### 4") == "3"   # committed first
    assert check_answer("arithmetic", "#### 18.0", "18") and not check_answer("arithmetic", "18", "18")
    assert check_answer("decimal_compare", "#### 9.90", "9.9")
    assert not check_answer("decimal_compare", "#### 9.11", "9.9")
    assert extract_answer("spelling", "#### S, T, R") == "s-t-r"
    assert extract_answer("spelling", "#### s t r") == "s-t-r"
    assert extract_answer("spelling", "#### str") is None      # a word written whole is no spelling
    assert check_answer("spelling", "ok\n#### C-a-T", "c-a-t") and not check_answer("spelling", "#### c-a", "c-a-t")
    assert check_answer("identity", "hi, i'm forge!", "Forge") and not check_answer("identity", "I'm Forgery", "Forge")
    assert extract_answer("identity", "  I'm Forge. ") == "I'm Forge."
    with pytest.raises(ValueError, match="'refusal' has no reference answer"):
        check_answer("refusal", "I can't help", "x")
    with pytest.raises(ValueError, match="expected a number"):
        check_answer("arithmetic", "#### 3", "three")
    with pytest.raises(ValueError, match="synthetic task 'poetry'"):
        extract_answer("poetry", "x")


def test_bad_requests_are_one_line_errors():
    cases = [
        (lambda: generate("poetry", 3), "synthetic task 'poetry': expected one of arithmetic"),
        (lambda: generate("arithmetic", 3, split="val"), "split='val': expected one of train, test"),
        (lambda: generate("arithmetic", -1), "n=-1"),
        (lambda: generate("arithmetic", 3, colour="red"), "synthetic option 'colour'"),
        (lambda: generate("arithmetic", 3, name="Quill"), "option 'name' is not read by task 'arithmetic'"),
        (lambda: generate("arithmetic", 3, min_ops="many"),
         "option min_ops='many' of task 'arithmetic': expected a whole number"),
        (lambda: generate("arithmetic", 3, min_ops=3, max_ops=2), "expected 1 <= min_ops <= max_ops"),
        (lambda: generate("arithmetic", 3, max_value=5), "option max_value=5: expected a whole number >= 10"),
        (lambda: generate("refusal", 3), "option hh_path= is missing"),
        (lambda: generate("refusal", 3, hh_path="/nonexistent/hh.jsonl.gz"),
         "hh_path='/nonexistent/hh.jsonl.gz': no such file"),
        (lambda: mixture({}, 3), "expected a non-empty mapping"),
        (lambda: mixture({"arithmetic": -1.0}, 3), "weight of 'arithmetic'=-1.0"),
        (lambda: mixture({"arithmetic": 0.0}, 3), "expected a positive sum"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=re.escape(message)) as info:
            call()
        assert "\n" not in str(info.value)


def test_mixture_counts_shuffle_and_options():
    items = mixture({"arithmetic": 3, "spelling": 1, "identity": 0.0}, 101, seed=2, name="Quill", hh_path="unused")
    counts = {t: sum(it["task"] == t for it in items) for t in ("arithmetic", "spelling", "identity")}
    assert counts == {"arithmetic": 76, "spelling": 25, "identity": 0}   # 75.75 and 25.25, largest remainder
    assert items == mixture({"arithmetic": 3, "spelling": 1, "identity": 0.0}, 101, seed=2)
    assert [it["task"] for it in items[:30]].count("spelling") > 0       # shuffled, not in blocks
    assert sum(it["task"] == "arithmetic" for it in mixture({t: 1 for t in OFFLINE}, 1000 * len(OFFLINE))) == 1000
    test = mixture({"arithmetic": 1, "identity": 1}, 50, split="test", name="Quill")
    assert all(it["answer"] == "Quill" for it in test if it["task"] == "identity")


def test_refusal_reads_the_hh_rlhf_sample(shared_data):
    from lmforge.eval.refusal import is_refusal, load_hh_prompts

    path = str(shared_data / HH)
    prompts = set(load_hh_prompts(path))                      # the eval harness's reading of the same file
    train = generate("refusal", 300, hh_path=path)
    test = generate("refusal", 100, split="test", hh_path=path)
    train_keys, test_keys = {it["key"] for it in train}, {it["key"] for it in test}
    assert not train_keys & test_keys and len(train_keys) > 250 and len(test_keys) > 80
    for it in train + test:
        user, reply = it["messages"][-2]["content"], it["messages"][-1]["content"]
        assert user in prompts and user == it["key"] and it["answer"] is None
        assert is_refusal(reply), reply                       # the harness counts our refusals as refusals
    assert all(is_refusal(r) for r in synthetic.REFUSALS)
    split = synthetic.hh_prompts(path)
    assert len(split["train"]) + len(split["test"]) == len(prompts) == 2178
    mixed = mixture({"refusal": 1, "smalltalk": 1}, 20, hh_path=path)
    assert sum(it["task"] == "refusal" for it in mixed) == 10


def test_refusal_rejects_a_bad_line(tmp_path):
    bad = tmp_path / "hh.jsonl"
    bad.write_text('{"chosen": "\\n\\nHuman: hi\\n\\nAssistant: hello"}\n{"text": "no dialogue"}\n')
    with pytest.raises(ValueError, match=re.escape(f"{bad}:2: expected a JSON row")):
        generate("refusal", 1, hh_path=str(bad))
