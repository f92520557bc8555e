"""C4 on hard-wrapped prose (issue 14, item B): wrapped paragraphs are judged whole and kept with
their wrapping; one-paragraph-per-line text and verse get exactly the plain line rules (checked
against a transcription of those rules); the report counts the documents treated as wrapped."""

import dataclasses
import json
import re
import textwrap

import pytest

from conftest import web_page, write_jsonl
from lmforge.data.curate import (
    C4Config,
    CurateConfig,
    Document,
    InputConfig,
    LanguageConfig,
    SafetyConfig,
    c4,
    run_curate,
)
from lmforge.data.curate.c4 import wrapped_paragraphs
from lmforge.data.curate.verdict import Verdict

PLAIN = C4Config(unwrap_paragraphs=False)


def plain_rules(cfg: C4Config, text: str) -> Verdict:
    """C4's line rules as lmforge had them before unwrapping (every line judged alone), for parity."""
    if "lorem ipsum" in text.lower():
        return Verdict(None, "lorem_ipsum")
    if "{" in text or "}" in text:
        return Verdict(None, "curly_bracket")
    kept, removed = [], 0
    for line in text.split("\n"):
        s = line.strip()
        if not s:
            kept.append(line)
            continue
        s = re.sub(r"\[\d+\]|\[citation needed\]|\[edit\]", "", s, flags=re.I).strip()
        low = s.lower()
        if (not s.endswith((".", "!", "?", '"', "”", "'", "’")) or len(s.split()) < cfg.min_words_per_line
                or "javascript" in low or any(p in low for p in ("terms of use", "privacy policy", "cookie policy",
                                                                 "uses cookies", "use of cookies", "use cookies"))):
            removed += 1
            continue
        kept.append(s)
    new = re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip()
    if not new:
        return Verdict(None, "no_lines_left")
    if len(re.findall(r"[.!?]+(?=\s|$|[\"”’'])", new)) < cfg.min_sentences:
        return Verdict(None, "few_sentences")
    return Verdict(text if new == text else new, "", {"lines_removed": removed} if removed else None)


def run(cfg, text):
    v = c4(cfg, Document("d", text, "test"))
    return Verdict(v.doc.text if v.doc else None, v.reason, v.counts)


def wrap(text, width=72):
    return "\n\n".join(textwrap.fill(p, width) for p in text.split("\n\n"))


def test_wrapped_prose_is_kept_whole_with_its_wrapping():
    for i in range(20):
        text = wrap(web_page(i))
        assert run(C4Config(), text) == Verdict(text, "", {"wrapped_documents": 1}), i
        plain = run(PLAIN, text)  # the fault: most wrapped lines do not end a sentence
        assert plain.doc is None or len(plain.doc) < 0.5 * len(text)


def test_wrapped_paragraphs_found_by_line():
    text = wrap(web_page(0))
    lines = text.split("\n")
    want, start = [], 0
    for i, line in enumerate(lines + [""]):
        if not line:
            if i - 1 > start:
                want.append((start, i - 1))
            start = i + 1
    assert wrapped_paragraphs(lines) == want and len(want) == 4
    assert wrapped_paragraphs(web_page(0).split("\n")) == []  # one paragraph per line: nothing to unwrap


@pytest.mark.parametrize("width", [60, 72, 79])
def test_a_wrapped_paragraph_is_judged_unwrapped(width):
    bad_end = ("This last paragraph ends without any terminal punctuation at all, so under the line "
               "rules it goes, and every one of its lines is counted as removed by the stage")
    cookie = ("The site owners want you to know that this page uses cookies to remember the settings "
              "you chose last time, and that the privacy policy explains all of it in plain words.")
    text = wrap("\n\n".join([web_page(3), bad_end, cookie]), width)
    v = run(C4Config(), text)
    n_bad, n_cookie = (len(textwrap.wrap(p, width)) for p in (bad_end, cookie))
    assert v.doc == wrap(web_page(3), width)
    assert v.counts == {"lines_removed": n_bad + n_cookie, "wrapped_documents": 1}


def test_policy_phrase_split_by_a_line_break_is_caught():
    text = wrap(web_page(5)) + "\n\n" + "\n".join([
        "Before you go on reading, please take a minute to look at our privacy",
        "policy and the terms that come with it, since they changed last week.",
        "We think the changes are small, but you should read them all the same."])
    assert run(C4Config(), text).doc == wrap(web_page(5))
    assert "policy and the terms" in run(PLAIN, text).doc  # line by line, no line holds the phrase


ONE_PARAGRAPH_PER_LINE = [
    web_page(7),
    web_page(8) + "\nThis site uses cookies to improve your experience.\nPlease enable JavaScript to view this.\nMenu",
    "Home\nAbout us\nContact\n" + web_page(9).replace("\n\n", "\n") + "\nShare this article\nfacebook twitter email",
    "\n".join(web_page(10).split(". ")),  # a sentence per line, lines of uneven length
    "Short line\nno punctuation here",
    "One real sentence is here.",
    web_page(11) + "\nThe menu has many entries such as home, news and more that run on and on\nand end here.",
]


@pytest.mark.parametrize("text", ONE_PARAGRAPH_PER_LINE)
def test_one_paragraph_per_line_is_byte_identical_to_the_plain_rules(text):
    assert run(C4Config(), text) == plain_rules(C4Config(), text) == run(PLAIN, text)


SONNET_18 = """Shall I compare thee to a summer's day?
Thou art more lovely and more temperate:
Rough winds do shake the darling buds of May,
And summer's lease hath all too short a date;
Sometime too hot the eye of heaven shines,
And often is his gold complexion dimm'd;
And every fair from fair sometime declined,
By chance or nature's changing course untrimm'd;
But thy eternal summer shall not fade,
Nor lose possession of that fair thou owest;
Nor shall Death brag thou wander'st in his shade,
When in eternal lines to time thou growest:
So long as men can breathe or eyes can see,
So long lives this, and this gives life to thee."""


def test_verse_is_not_unwrapped():
    assert wrapped_paragraphs(SONNET_18.split("\n")) == []
    text = web_page(12) + "\n\n" + SONNET_18
    assert run(C4Config(), text) == plain_rules(C4Config(), text)


def test_tinyshakespeare_verse_keeps_the_plain_rules(shared_data):
    """Only prose speeches are unwrapped: every joined paragraph of 4+ lines continues in lower case,
    and a chunk with no joined paragraph is judged exactly as before."""
    speeches = (shared_data / "tinyshakespeare.txt").read_text(encoding="utf-8").split("\n\n")[:1200]
    chunks = ["\n\n".join(speeches[i:i + 12]) for i in range(0, len(speeches), 12)]
    treated = 0
    for text in chunks:
        lines = text.split("\n")
        paragraphs = wrapped_paragraphs(lines)
        treated += bool(paragraphs)
        for a, b in paragraphs:
            if b - a >= 3:
                assert sum(lines[k].lstrip()[:1].islower() for k in range(a + 1, b + 1)) * 2 >= b - a, lines[a:b + 1]
        if not paragraphs:
            assert run(C4Config(), text) == plain_rules(C4Config(), text)
    assert treated < 0.3 * len(chunks)


def test_unwrapping_keeps_more_of_pythons_docs(prose):
    """pydoc text is hard-wrapped: the plain rules keep ~20% of its bytes, unwrapping ~40%."""
    plain = sum(len(v.doc) for v in (run(PLAIN, t) for t in prose) if v.doc)
    unwrapping = sum(len(v.doc) for v in (run(C4Config(), t) for t in prose) if v.doc)
    assert unwrapping > 1.6 * plain, (plain, unwrapping)


def test_report_counts_wrapped_documents_kept_and_dropped(tmp_path):
    wrapped_kept = [wrap(web_page(i)) for i in range(20, 23)]
    wrapped_dropped = wrap("A single wrapped paragraph that runs on for a while without ever ending "
                           "a sentence, which leaves too few sentences for the page to stay on")
    rows = [{"text": t, "id": f"w{i}"} for i, t in enumerate(wrapped_kept + [wrapped_dropped])]
    rows += [{"text": web_page(30), "id": "flat"}]
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    cfg = CurateConfig(inputs=(InputConfig(paths=(str(path),)),), workers=1,
                       language=LanguageConfig(enabled=False), safety=SafetyConfig(enabled=False))
    cfg = dataclasses.replace(cfg, gopher_quality=dataclasses.replace(cfg.gopher_quality, enabled=False))
    run_curate(cfg, tmp_path / "run")
    funnel = json.loads((tmp_path / "run" / "funnel.json").read_text())
    assert funnel["rewrites"]["c4/wrapped_documents"] == 4  # 3 kept, 1 dropped
    assert funnel["drops"]["c4/no_lines_left"]["documents"] == 1
    assert "| c4/wrapped_documents | 4 |" in (tmp_path / "run" / "report.md").read_text()
