"""Answer extraction (tier a: hand-made cases) and the GSM8K / generation / multiple-choice loaders'
one-line errors naming file:line."""

import pytest

from lmforge.eval import (
    TaskFileError,
    choice_predictions,
    exact_match,
    extract_number,
    gsm8k_final,
    gsm8k_prompt,
    load_generation,
    load_gsm8k,
    load_multiple_choice,
    normalize_number,
    numeric_match,
    regex_extract,
    regex_match,
)
from lmforge.eval.generation import GSM8KItem, matcher


@pytest.mark.parametrize("text, want", [
    ("18", "18"), (" $1,234.50. ", "1234.5"), ("-0", "0"), ("18.00", "18"), ("$70,000", "70000"),
    ("3.25", "3.25"), ("-12", "-12"), ("1e3", "1000"), ("twelve", None), ("", None), ("1,2,3", "123"),
])
def test_normalize_number(text, want):
    assert normalize_number(text) == want


@pytest.mark.parametrize("output, strict, flexible", [
    ("She sells 16 - 3 - 4 = 9 eggs, so 9 * 2 = $18.\n#### 18", "18", "18"),
    ("The answer is 18.", None, "18"),                               # no ####: only the flexible rule finds it
    ("He pays $1,200 then $300, total $1,500", None, "1500"),        # last number, commas and $ stripped
    ("#### 5\nWait, actually 7", "5", "5"),                         # a #### wins over later numbers
    ("first #### 3 then #### 4", "4", "4"),                         # the last ####
    ("It costs -5 dollars", None, "-5"),
    ("#### $2,000.", "2000", "2000"),
    ("version v2 of item a1 costs 12.5 each", None, "12.5"),        # digits inside words are not answers
    ("no numbers here", None, None),
    ("The total is 0.5 hours, i.e. 30 minutes", None, "30"),
])
def test_extract_number_strict_and_flexible(output, strict, flexible):
    assert extract_number(output, strict=True) == strict
    assert extract_number(output) == flexible


def test_numeric_exact_and_regex_match():
    assert numeric_match("so the answer is $1,000.", "1000")
    assert numeric_match("#### 18.0", "18") and not numeric_match("#### 19", "18")
    assert not numeric_match("#### 18", "eighteen")                  # an answer that is not a number never matches
    assert not numeric_match("The answer is 18.", "18", strict=True)
    assert exact_match("  Paris \n", "Paris") and exact_match("New   York", "New York")
    assert not exact_match("paris", "Paris")                         # case is kept
    assert regex_extract("The answer is (B).", r"\(([A-D])\)") == "B"
    assert regex_extract("answer: 42", r"\d+") == "42"              # no group: the whole match
    assert regex_extract("nothing", r"\d+") is None
    assert regex_match("Final answer: Paris.", "Paris", r"answer: (\w+)")
    assert matcher("regex", r"is (\w+)")("it is Rome", "Rome")
    with pytest.raises(ValueError, match="needs a pattern"):
        matcher("regex")
    with pytest.raises(ValueError, match="expected one of auto, exact, numeric, regex"):
        matcher("fuzzy")
    with pytest.raises(ValueError, match="not a regular expression"):
        matcher("regex", "(")


def test_gsm8k_final_and_prompt():
    assert gsm8k_final("He makes 9 * 2 = $<<9*2=18>>18.\n#### 18") == "18"
    assert gsm8k_final("So he made a profit of 70,000\n#### 70000") == "70000"
    assert gsm8k_final("no final line") is None
    shot = GSM8KItem("1+1?", "1+1=2\n#### 2", "2", "x:1")
    assert gsm8k_prompt("2+2?", [shot]) == "Question: 1+1?\nAnswer: 1+1=2\n#### 2\n\nQuestion: 2+2?\nAnswer:"


def test_choice_predictions_normalisations():
    # Choice 0 is short and likely in sum; choice 1 is long with a better per-character and per-token rate.
    lp, chars, tokens = [-2.0, -3.0, -9.0], [2, 12, 3], [1, 6, 1]
    assert choice_predictions(lp, chars, tokens) == {"acc": 0, "acc_norm": 1, "acc_per_token": 1}
    # per-character and per-token disagree when the tokenizer packs characters unevenly
    lp, chars, tokens = [-4.0, -6.0], [4, 12], [4, 3]
    assert choice_predictions(lp, chars, tokens) == {"acc": 0, "acc_norm": 1, "acc_per_token": 0}
    assert choice_predictions([-1.0, -1.0], [1, 1], [1, 1])["acc"] == 0        # ties: the first choice


def test_gsm8k_loader_reads_the_real_file_and_names_a_bad_line(shared_data, tmp_path):
    items = load_gsm8k(shared_data / "gsm8k_test.jsonl")
    assert len(items) == 1319 and items[0].answer == "18" and items[0].where.endswith("gsm8k_test.jsonl:1")
    assert len(load_gsm8k(shared_data / "gsm8k_test.jsonl", limit=5)) == 5
    bad = tmp_path / "gsm.jsonl"
    bad.write_text('{"question": "q", "answer": "a\\n#### 1"}\n{"question": "q2", "answer": "the answer is 4"}\n')
    with pytest.raises(TaskFileError, match=r"gsm\.jsonl:2: GSM8K answer has no final '#### N' line"):
        load_gsm8k(bad)


@pytest.mark.parametrize("line, message", [
    ('{"context": "a", "choices": ["x", "y"], "answer": 0', r"mc\.jsonl:2: not valid JSON"),
    ('["a", "b"]', r"mc\.jsonl:2: expected a JSON object, got list"),
    ('{"context": "a", "choices": ["x", "y"]}', r"mc\.jsonl:2: missing key 'answer'"),
    ('{"context": "a", "choices": ["x", "y"], "answer": 2}', r"mc\.jsonl:2: 'answer' 2 is not an index into its 2"),
    ('{"context": "a", "choices": ["x", "y"], "answer": true}', r"mc\.jsonl:2: 'answer' must be an int, got bool"),
    ('{"context": "a", "choices": ["x"], "answer": 0}', r"mc\.jsonl:2: 'choices' must be a list of at least 2"),
    ('{"context": 3, "choices": ["x", "y"], "answer": 0}', r"mc\.jsonl:2: 'context' must be a str, got int"),
])
def test_multiple_choice_file_errors_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "mc.jsonl"
    path.write_text('{"context": "ok", "choices": [" a", " b"], "answer": 1}\n' + line + "\n")
    with pytest.raises(TaskFileError, match=message) as e:
        load_multiple_choice(path)
    assert "\n" not in str(e.value)


def test_generation_file_and_missing_files(tmp_path):
    path = tmp_path / "gen.jsonl"
    path.write_text('{"prompt": "2+2=", "answer": "4"}\n\n{"prompt": "Capital?", "answer": ["Paris", "paris"], '
                    '"stop": ["."]}\n')
    items = load_generation(path)
    assert [it.answers for it in items] == [("4",), ("Paris", "paris")] and items[1].stop == (".",)
    assert items[1].where == f"{path}:3"                                # blank lines keep the numbering
    path.write_text('{"prompt": "x", "answer": []}\n')
    with pytest.raises(TaskFileError, match=r"gen\.jsonl:1: 'answer' must be a string or a non-empty list"):
        load_generation(path)
    with pytest.raises(FileNotFoundError):
        load_multiple_choice(tmp_path / "absent.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(TaskFileError, match="holds no items"):
        load_multiple_choice(tmp_path / "empty.jsonl")


def test_acc_norm_counts_a_choice_without_the_separator_before_it():
    """lm-evaluation-harness divides by the choice without its target_delimiter: " forsooth" counts 8, not
    9. On the audit's item (log-likelihoods -5.714 and -28.868 from a Llama run) the pick flipped."""
    from lmforge.data.tokenizer import CharTokenizer
    from lmforge.eval import ChoiceItem, multiple_choice
    from lmforge.eval.multiple_choice import choice_chars
    from lmforge.eval.scoring import Score

    class Fixed:   # a scorer stand-in: the run's log-likelihoods of " a" and " forsooth"
        tok = CharTokenizer("".join(sorted(set("ROMEO:\nWhat a forsooth"))))

        def score(self, requests, **_):
            assert len(requests) == 2
            return [Score(-5.714, False, 2), Score(-28.868, False, 9)]

    result = multiple_choice(Fixed(), [ChoiceItem("ROMEO:\nWhat", (" a", " forsooth"), 1, "mc2.jsonl:1")])
    assert result["samples"][0]["picks"] == {"acc": 0, "acc_norm": 1, "acc_per_token": 0}   # -28.868 / 8 > -5.714
    assert [choice_chars(c) for c in (" forsooth", "Paris", "\n yes", " ")] == [8, 5, 3, 1]   # only spaces: itself
