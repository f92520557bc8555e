"""Per-document stages on labeled fixtures: each rule drops what it should, with its reason,
and keeps a clean page."""

import pytest

from conftest import web_page
from lmforge.data.curate import (
    C4Config,
    DecontamConfig,
    Document,
    GopherQualityConfig,
    GopherRepetitionConfig,
    LanguageConfig,
    NormalizeConfig,
    SafetyConfig,
    c4,
    decontaminate,
    gopher_quality,
    gopher_repetition,
    language,
    normalize,
    safety,
)
from lmforge.data.curate.gopher import dup_ngram_char_frac, top_ngram_char_frac

import numpy as np


def doc(text):
    return Document("d", text, "test")


CLEAN = web_page(0)


@pytest.mark.parametrize("stage, cfg", [
    (normalize, NormalizeConfig()), (language, LanguageConfig()), (gopher_quality, GopherQualityConfig()),
    (gopher_repetition, GopherRepetitionConfig()), (c4, C4Config()), (safety, SafetyConfig())])
def test_clean_page_passes_every_stage(stage, cfg):
    v = stage(cfg, doc(CLEAN))
    assert v.doc is not None, v.reason


def test_normalize_fixes_mojibake_unicode_and_whitespace():
    v = normalize(NormalizeConfig(), doc("The cafÃ© is open\r\nâ€œtodayâ€\x9d.  \t Yes \x00  \n\n\n\n  next"))
    assert v.doc.text == "The café is open\n“today”. Yes\n\n  next" and v.counts == {"fixed": 1}
    assert normalize(NormalizeConfig(), doc("fine text")).counts is None
    assert normalize(NormalizeConfig(), doc(" \n\t\x00 ")).reason == "empty"
    assert normalize(NormalizeConfig(), doc("e\u0301")).doc.text == "\u00e9"  # NFC


@pytest.mark.parametrize("text, lang", [
    ("Das Wetter ist heute sehr schön und wir gehen im Park spazieren.", "de"),
    ("Le temps est très beau aujourd'hui et nous allons nous promener.", "fr"),
    ("El tiempo es muy bueno hoy y vamos a caminar por el parque.", "es")])
def test_language_drops_other_languages_and_tags_kept(text, lang):
    assert language(LanguageConfig(), doc(text)).reason == "other_language"
    kept = language(LanguageConfig(languages=(lang,)), doc(text)).doc
    assert kept.metadata["language"] == lang and kept.metadata["language_score"] >= 0.65


def test_language_low_confidence():
    assert language(LanguageConfig(), doc("ok 42 xz")).doc is None


def words(n, w="alpha"):
    return " ".join([w] * n)


BASE = "the cat and the dog were with the bird " * 8  # 72 words, stop words present


@pytest.mark.parametrize("text, reason", [
    ("the cat sat with a dog", "few_words"),
    ("a b c of to the " * 20, "short_mean_word_length"),
    ("the and " + words(60, "incomprehensibilities"), "long_mean_word_length"),
    (BASE + " #tag" * 10, "symbol_word_ratio"),
    ("\n".join(f"• the number {i} with several animals and their houses" for i in range(10)), "bullet_lines"),
    ("\n".join(f"the cat and dog went to item {i} ..." for i in range(5)) + "\n" + BASE, "ellipsis_lines"),
    ("the and " + " ".join(str(1000 + i) for i in range(100)), "non_alpha_words"),
    (words(80, "walking"), "few_stop_words"),
])
def test_gopher_quality_reasons(text, reason):
    assert gopher_quality(GopherQualityConfig(), doc(text)).reason == reason


@pytest.mark.parametrize("text, reason", [
    ("\n\n".join(["the same paragraph repeats here"] * 3 + [f"unique paragraph {i} about things" for i in range(3)]),
     "dup_para_frac"),
    ("\n".join(["line that repeats"] * 5 + [f"other line {i}" for i in range(5)]), "dup_line_frac"),
    ("\n".join(["a much longer line that repeats itself and takes space"] * 2 + [f"x {i}" for i in range(8)]),
     "dup_line_char_frac"),
    (" ".join(["buy now"] * 30 + [f"w{i}" for i in range(100)]), "top_2gram_char_frac"),
    (" ".join([f"w{i}" for i in range(50)] * 2), "dup_5gram_char_frac"),
])
def test_gopher_repetition_reasons(text, reason):
    assert gopher_repetition(GopherRepetitionConfig(), doc(text)).reason == reason


def test_ngram_fractions_by_hand():
    ids = np.array([0, 1, 0, 1, 2], dtype=np.int32)  # "a b a b c": bigram "a b" twice
    lengths = np.array([1, 1, 1, 1, 1])
    assert top_ngram_char_frac(ids, lengths, 2, 5.0) == pytest.approx(4 / 5)
    assert dup_ngram_char_frac(ids, lengths, 2, 5.0) == pytest.approx(2 / 5)  # the second "a b"
    assert dup_ngram_char_frac(ids, lengths, 3, 5.0) == 0.0


@pytest.mark.parametrize("text, reason", [
    (CLEAN + "\nLorem ipsum dolor sit amet.", "lorem_ipsum"),
    (CLEAN + "\nfunction f() { return 1; }", "curly_bracket"),
    ("Short line\nno punctuation here", "no_lines_left"),
    ("One real sentence is here.", "few_sentences"),
])
def test_c4_page_reasons(text, reason):
    assert c4(C4Config(), doc(text)).reason == reason


def test_c4_removes_boilerplate_lines_and_counts_them():
    text = CLEAN + "\nThis site uses cookies to improve your experience.\nPlease enable JavaScript to view this.\nMenu"
    v = c4(C4Config(), doc(text))
    assert v.doc.text == CLEAN and v.counts == {"lines_removed": 3}


def test_safety_drops_toxic_and_keeps_clean():
    toxic = CLEAN + "\n" + "\n".join(["you are a stupid fucking idiot"] * 3)
    assert safety(SafetyConfig(), doc(toxic)).reason == "toxic"
    mild = "\n".join([CLEAN] * 3) + "\nThat damn bus was late again."  # one mild line in many
    assert safety(SafetyConfig(hard_threshold=1.0), doc(mild)).doc is not None


def test_decontaminate_drops_documents_sharing_a_13gram(tmp_path):
    eval_file = tmp_path / "eval.jsonl"
    question = "Natalia sold clips to 48 of her friends in April and then she sold half as many clips in May"
    eval_file.write_text('{"question": "%s", "answer": "72"}\n' % question)
    cfg = DecontamConfig(eval_paths=(str(eval_file),), fields=("question", "answer"))
    leaked = CLEAN + "\nA forum post: natalia SOLD clips to 48 of her friends in April, and then she sold half!"
    assert decontaminate(cfg, doc(leaked)).reason == "eval_overlap"
    assert decontaminate(cfg, doc(CLEAN + " Natalia sold clips to 48 of her friends.")).doc is not None


def test_decontaminate_gsm8k_test(shared_data):
    import json

    cfg = DecontamConfig(eval_paths=(str(shared_data / "gsm8k_test.jsonl"),), fields=("question", "answer"))
    rows = [json.loads(line) for line in (shared_data / "gsm8k_test.jsonl").read_text().splitlines()[:50]]
    caught = sum(decontaminate(cfg, doc(CLEAN + "\n" + r["question"])).doc is None for r in rows)
    assert caught >= 45  # questions of >= 13 words
    assert decontaminate(cfg, doc(CLEAN)).doc is not None
