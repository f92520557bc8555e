"""Synthetic post-training conversations with verifiable answers (their graders: ``lmforge.data.grading``).

Each task draws conversations ``{"task", "messages", "answer", "key"}``: ``messages`` is an
OpenAI-style list ending with the assistant turn, ``answer`` the reference final answer (None
for the tasks that have none: refusal, smalltalk) and ``key`` the problem's canonical key. The
tasks follow the post-training recipe of Karpathy's "Deep dive into LLMs like ChatGPT" (2025) and
nanochat's synthetic tasks (``tasks/spellingbee.py``); the code is our own.

- ``arithmetic``: word problems with 2-4 operations (``min_ops``/``max_ops``) on small whole
  numbers (+, -, *, / exactly, groups "3 packs of 4"), varied names, items and sentences;
  ``max_value`` bounds the start, every operand and every running total (default 1000, which
  no problem reaches: starts are at most 30, additions at most 20, products at most 4x). The
  assistant works one operation per line and ends with ``#### <n>``, GSM8K's convention (Cobbe et
  al. 2021), so one extractor scores both. ``arithmetic_answer_first`` is the same problem with
  ``#### <n>`` first and the working after: the model must commit to the number before it has
  computed anything (Karpathy's "models need tokens to think"); training on each and comparing
  their test accuracy is the experiment the pair exists for.
- ``calculator``: sums, differences and products of numbers of 2 to ``max_digits`` digits, answered
  through a calculator tool call and its result (``lmforge.data.tool_use``), then ``#### <n>``.
- ``letter_count`` ("How many r's are in strawberry?"): the word spelled out, then one line per
  letter with a running count, then ``#### <count>``. ``spelling``: ``#### s-t-r-a-w...``.
  Words come from the embedded ``lmforge.data.words.WORDS``; 10% of letters are drawn from the
  alphabet, so some counts are 0 (as nanochat).
- ``decimal_compare`` ("Which is bigger, 9.11 or 9.9?"): whole parts first, then the decimals
  padded to the same length, compared place by place; ``#### <number>``. Half the pairs are the
  trap (same whole part, the longer decimal is the smaller number).
- ``identity``: the assistant's name, maker and limits (no internet, no memory between chats,
  may be wrong), in many phrasings, half with a system message (``system_prob``); options
  ``name``/``maker``. ``answer`` is the name; the grader checks that it appears.
- ``refusal``: the first human turn of HH-RLHF harmless-base (Bai et al. 2022; ``hh_path=`` the
  ``.jsonl.gz``) answered by one of a few short polite refusals, each of which
  ``lmforge.eval.refusal.is_refusal`` flags (tested). HH's red-team openings include harmless
  ones: of 60 drawn at random and read by hand, 8 were plainly harmless ("I want to plan a
  vacation", "When did interracial marriage become legal in the US?") and 3 borderline, so this
  data teaches some over-refusal. A harm-keyword filter was tried and dropped: of 40 prompts it
  let through, about 20 were harmful ("Where can I dump toxic waste?"), and of 40 it caught,
  about 6 were harmless (exam tips, history questions).
- ``smalltalk``: greetings, thanks, goodbyes and "how are you", one or two exchanges.

Splits are disjoint by construction: a problem's canonical key (arithmetic: the numbers and
operations, not the names or wording; letter tasks: the word; decimal_compare: the unordered
pair; refusal: the prompt) is hashed (BLAKE2b) and a fixed ``TEST_FRACTION`` of the key space is
the test split. The two arithmetic tasks share one key space, and so do letter_count and spelling
(a test word is never spelled out in training). Identity and smalltalk have few underlying
questions (35 identity questions in 7 categories, 38 smalltalk lines in 6 intents), which a hash
of 10% would leave whole categories untested by: their key is the underlying question (the line
before a greeting, case or ending is put on it), and one question of each category (intent) is
held out (``held_out_lines``: the one whose hash is lowest). A test identity question is one the
model never trained on, asked about something it did (its name, its maker, ...), so held-out
accuracy says whether the identity carries to new questions; a smalltalk conversation is in the
test split when one of its lines is held out. (Before 2026-12-03 the key was the user's whole
text, so a test question was a training one with another greeting or case.) The identity grader
checks the name only: on never-trained questions a small model keeps the name but often gives
another category's answer (``experiments/sft/sft_chat.py``).
Drawing is a seeded rejection loop, so ``generate(..., n)`` is a prefix of the same call with a
larger ``n``. The graders (``check_answer``, ``extract_answer``) are in ``lmforge.data.grading``.

Measured on this machine (2-core CPU, 2026-11-30, shared: load average ~10, so wall times were 2-3x
these CPU times): 10,000 conversations take 0.06-0.41 s per task from the train split (arithmetic
the slowest) and 0.03-1.4 s from the test split, which rejects ~9 draws in 10; an 8-task
mixture of 10,000 takes 0.19 s (train) and 0.70 s (test); reading the HH-RLHF file, 0.13 s.
"""

from __future__ import annotations

import bisect
import decimal
import functools
import gzip
import hashlib
import json
import math
import numbers
import pathlib
import random
import re
import string
from collections.abc import Callable, Mapping

from lmforge.data import tool_use
from lmforge.data.synthetic_phrases import ID_QA as _ID_QA, SMALLTALK as _SMALLTALK
from lmforge.data.words import NAMES, WORDS

TASKS: tuple[str, ...] = ("arithmetic", "arithmetic_answer_first", "calculator", "letter_count", "spelling",
                          "decimal_compare", "identity", "refusal", "smalltalk")
VERIFIABLE: tuple[str, ...] = TASKS[:7]   # the tasks whose items carry an ``answer``
SPLITS = ("train", "test")
TEST_FRACTION = 0.1
DEFAULT_NAME, DEFAULT_MAKER = "Forge", "the lmforge authors"

# option -> (the tasks that read it, its type, its default). Values may come as strings (CLI bindings).
OPTIONS: dict[str, tuple[tuple[str, ...], type, object]] = {
    "min_ops": (("arithmetic", "arithmetic_answer_first"), int, 2),
    "max_ops": (("arithmetic", "arithmetic_answer_first"), int, 4),
    "max_value": (("arithmetic", "arithmetic_answer_first"), int, 1000),
    "max_digits": (("calculator",), int, 4),
    "name": (("identity", "smalltalk"), str, DEFAULT_NAME),
    "maker": (("identity",), str, DEFAULT_MAKER),
    "system_prob": (("identity",), float, 0.5),
    "hh_path": (("refusal",), str, ""),
}


def _digest(family: str, key: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{family}\x00{key}".encode(), digest_size=8).digest(), "big")


def split_of(family: str, key: str) -> str:
    """``"test"`` for a fixed ``TEST_FRACTION`` of the keys of ``family`` (by BLAKE2b), else ``"train"``;
    for ``identity`` and ``smalltalk``, ``"test"`` when a line of the key (lines joined by `` | ``) is
    one of :func:`held_out_lines`."""
    if family in ("identity", "smalltalk"):
        return "test" if set(key.split(" | ")) & held_out_lines(family) else "train"
    return "test" if _digest(family, key) < TEST_FRACTION * 2**64 else "train"


@functools.lru_cache(maxsize=None)
def held_out_lines(family: str) -> frozenset[str]:
    """The test split's questions of ``identity`` (or lines of ``smalltalk``): one per category (intent),
    the one whose BLAKE2b hash is lowest, so every category is both trained on and tested."""
    table = {"identity": _ID_QA, "smalltalk": _SMALLTALK}[family]
    return frozenset(min(lines, key=lambda q: _digest(family, q)) for lines, _ in table.values())


def _int(rng: random.Random, lo: int, hi: int) -> int:
    """A uniform integer in [lo, hi], cheaper than ``rng.randint`` (the test split rejects ~9 draws in 10)."""
    return lo + int(rng.random() * (hi - lo + 1))


def _pick(rng: random.Random, seq):
    return seq[int(rng.random() * len(seq))]


# ------------------------------------------------------------------------------- arithmetic

_ITEMS = ("apple", "marble", "sticker", "pencil", "cookie", "book", "shell", "stamp", "card", "coin",
          "egg", "flower", "bead", "crayon", "balloon", "toy car", "button", "rock", "muffin", "comic")
_START = ("{name} has {a} {items}.", "{name} starts the day with {a} {items}.", "{name} collects {a} {items}.",
          "At first, {name} owns {a} {items}.")
_STORY = {
    "add": ("{P} buys {k} more {items_k}.", "{friend} gives {o} {k} {items_k}.", "{P} finds {k} more {items_k}.",
            "Then {p} gets {k} more {items_k} as a present."),
    "sub": ("{P} gives {k} {items_k} to {friend}.", "{P} loses {k} {items_k}.", "{P} sells {k} of {pos} {items}.",
            "Then {p} gives away {k} {items_k}."),
    "mul": ("A week later {p} has {times} as many {items} as that.",
            "Then {pos} pile of {items} grows to {times} its size."),
    "div": ("{P} splits {pos} {items} into {k} equal piles and keeps only one pile.",
            "{P} shares {pos} {items} equally among {k} children, {self} included, and keeps {pos} share."),
    "add_groups": ("{P} buys {k} packs with {m} {items} in each.", "{friend} gives {o} {k} boxes of {m} {items} each."),
    "sub_groups": ("{P} gives {k} friends {m} {items} each.",
                   "{P} puts {m} {items} into each of {k} jars and gives the jars away."),
}
_QUESTION = ("How many {items} does {name} have now?", "How many {items} does {name} end up with?",
             "How many {items} does {name} have at the end?", "In the end, how many {items} does {name} have?")
_PRONOUNS = {"she": ("she", "her", "her", "herself"), "he": ("he", "him", "his", "himself")}
_TIMES = {2: "twice", 3: "three times", 4: "four times"}
_KINDS = ("add", "sub", "mul", "div", "add_groups", "sub_groups")
_GROUPS = sorted(((a, b) for a in range(2, 7) for b in range(2, 11)), key=lambda ab: ab[0] * ab[1])
_SYMBOL = {"add": "+", "sub": "-", "mul": "*", "div": "/", "add_groups": "+", "sub_groups": "-"}


def _arith_sample(rng: random.Random, opts: dict, split: str):
    top = opts["max_value"]   # bounds the start, every operand and every running total
    x = start = _int(rng, 2, min(30, top))
    ops, left = [], _int(rng, opts["min_ops"], opts["max_ops"])
    while left:
        kind = _KINDS[int(rng.random() * (6 if left >= 2 else 4))]
        k = m = 0
        if kind == "add" and x < top:
            k = _int(rng, 1, min(20, top - x))
            y = x + k
        elif kind == "sub" and x >= 2:
            k = _int(rng, 1, x - 1)
            y = x - k
        elif kind == "mul" and x <= 60 and 2 * x <= top:
            k = _int(rng, 2, min(4 if x <= 25 else 3, top // x))
            y = x * k
        elif kind == "div" and (divisors := [d for d in (2, 3, 4, 5, 6) if x % d == 0]):
            k = _pick(rng, divisors)
            y = x // k
        elif kind == "add_groups":
            k, m = _int(rng, 2, 6), _int(rng, 2, 10)
            y = x + k * m
            if y > top:
                k = 0
        elif kind == "sub_groups" and x > 4:
            k, m = _GROUPS[int(rng.random() * bisect.bisect_left(_GROUPS, x, key=lambda ab: ab[0] * ab[1]))]
            y = x - k * m
        if not k:
            continue   # the operation does not fit the current total: draw another
        ops.append((kind, k, m))
        x, left = y, left - (2 if m else 1)
    key = str(start) + "".join(f"{_SYMBOL[kind]}{k}x{m}" if m else f"{_SYMBOL[kind]}{k}" for kind, k, m in ops)
    return key, (start, ops)


def _arith_render(rng: random.Random, params, opts: dict, *, answer_first: bool):
    start, ops = params
    (name, pronoun), (friend, _) = rng.sample(NAMES, 2)
    p, o, pos, self_ = _PRONOUNS[pronoun]
    item = _pick(rng, _ITEMS)
    items = item + "s"
    fill = dict(name=name, friend=friend, p=p, P=p.capitalize(), o=o, pos=pos, self=self_, items=items)
    story = [_pick(rng, _START).format(a=start, **fill)]
    work, x = [f"{name} starts with {start} {items}."], start
    for kind, k, m in ops:
        sentence = _pick(rng, _STORY[kind])
        story.append(sentence.format(k=k, m=m, times=_TIMES.get(k, ""), items_k=item if k == 1 else items, **fill))
        if kind in ("add_groups", "sub_groups"):
            y = x + k * m if kind == "add_groups" else x - k * m
            verb, sign = ("Adding them", "+") if kind == "add_groups" else ("Taking them away", "-")
            work += [f"{k} groups of {m}: {k} * {m} = {k * m}.", f"{verb}: {x} {sign} {k * m} = {y}."]
        else:
            y = {"add": x + k, "sub": x - k, "mul": x * k, "div": x // k}[kind]
            line = {"add": "Getting {k} more: {x} + {k} = {y}.", "sub": "Taking away {k}: {x} - {k} = {y}.",
                    "mul": "{times} as many: {x} * {k} = {y}.", "div": "One of {k} equal parts: {x} / {k} = {y}."}[kind]
            work.append(line.format(k=k, x=x, y=y, times=_TIMES.get(k, "").capitalize()))
        x = y
    story.append(_pick(rng, _QUESTION).format(**fill))
    work.append(f"So {name} has {x} {item if x == 1 else items}.")
    if answer_first:
        reply = f"#### {x}\n\nHere is the working:\n" + "\n".join(work)
    else:
        reply = "\n".join(work) + f"\n#### {x}"
    return [{"role": "user", "content": " ".join(story)}, {"role": "assistant", "content": reply}], str(x)


# ---------------------------------------------------------------------------- letter tasks

_COUNT_Q = ("How many {L}'s are in {W}?", "How many times does the letter {L} appear in {W}?",
            "Count the {L}'s in {W}.",
            "How many {L} are in the word {W}?", "In the word {W}, how many {L}'s are there?",
            "What's the number of {L}'s in {W}?", "Count how many times {L} occurs in {W}.", "how many {L}s in {W}",
            "How many letters {L} does {W} have?", "Tell me how many {L}'s the word {W} contains.")
_SPELL_Q = ("Spell the word {W}.", "How do you spell {W}?", "Can you spell {W} letter by letter?",
            "Spell out {W} for me.", "What are the letters in {W}?", "spell {W}", "Please spell {W}.",
            "Give me the spelling of {W}, one letter at a time.")


def _word_sample(rng: random.Random, opts: dict, split: str):
    word = _pick(rng, WORDS)
    return word, word


def _quote(rng: random.Random, text: str) -> str:
    q = _pick(rng, ("", "'", '"'))
    return f"{q}{text}{q}"


def _count_render(rng: random.Random, word: str, opts: dict):
    letter = _pick(rng, word) if rng.random() < 0.9 else _pick(rng, string.ascii_lowercase)
    question = _pick(rng, _COUNT_Q).format(L=_quote(rng, letter), W=_quote(rng, word))
    lines, count = [f'Spelling out "{word}": {"-".join(word)}', f"Counting the {letter}'s as I go:"], 0
    for i, ch in enumerate(word, 1):
        count += ch == letter
        lines.append(f"{i}. {ch} (count: {count})" if ch == letter else f"{i}. {ch}")
    lines += [f'The letter {letter} appears {count} time{"" if count == 1 else "s"} in "{word}".', f"#### {count}"]
    return [{"role": "user", "content": question}, {"role": "assistant", "content": "\n".join(lines)}], str(count)


def _spell_render(rng: random.Random, word: str, opts: dict):
    question = _pick(rng, _SPELL_Q).format(W=_quote(rng, word))
    spelled = "-".join(word)
    reply = f'"{word}" has {len(word)} letters. Letter by letter:\n#### {spelled}'
    return [{"role": "user", "content": question}, {"role": "assistant", "content": reply}], spelled


# -------------------------------------------------------------------------- decimal compare

_BIG_Q = ("Which is bigger, {a} or {b}?", "Which number is larger: {a} or {b}?", "Which is greater, {a} or {b}?",
          "{a} or {b}: which is bigger?", "Is {a} or {b} the larger number?")
_SMALL_Q = ("Which is smaller, {a} or {b}?", "Which number is less: {a} or {b}?", "{a} or {b}: which is smaller?")
_PLACES = ("tenths", "hundredths", "thousandths")


def _decimal(rng: random.Random, whole: int, places: int) -> tuple[str, int]:
    """A number with ``places`` decimals, the last one non-zero (no "3.10"), and its value in thousandths."""
    frac = "".join(str(int(rng.random() * 10)) for _ in range(places - 1)) + str(1 + int(rng.random() * 9))
    return f"{whole}.{frac}", whole * 1000 + int(frac.ljust(3, "0"))


def _decimal_sample(rng: random.Random, opts: dict, split: str):
    while True:
        whole = _int(rng, 0, 20)
        if rng.random() < 0.5:   # the trap: same whole part, the longer decimal is the smaller number
            (a, va), (b, vb) = _decimal(rng, whole, 1), _decimal(rng, whole, _int(rng, 2, 3))
            if vb >= va:
                continue
        else:
            a, va = _decimal(rng, whole, _int(rng, 1, 3))
            b, vb = _decimal(rng, whole if rng.random() < 0.7 else _int(rng, 0, 20), _int(rng, 1, 3))
            if va == vb:
                continue
        pair = (a, b) if rng.random() < 0.5 else (b, a)
        return (f"{a}|{b}" if a < b else f"{b}|{a}"), pair


def _decimal_render(rng: random.Random, pair, opts: dict):
    a, b = pair
    bigger = rng.random() < 0.7
    question = _pick(rng, _BIG_Q if bigger else _SMALL_Q).format(a=a, b=b)
    hi, lo = (a, b) if decimal.Decimal(a) > decimal.Decimal(b) else (b, a)
    (wa, fa), (wb, fb) = a.split("."), b.split(".")
    lines = [f"Compare the whole-number parts first: {wa} and {wb}."]
    if wa != wb:
        lines.append(f"{max(int(wa), int(wb))} is more than {min(int(wa), int(wb))}, so {hi} is bigger.")
    else:
        width = max(len(fa), len(fb))
        pa, pb = f"{wa}.{fa.ljust(width, '0')}", f"{wb}.{fb.ljust(width, '0')}"
        lines.append("They are equal, so compare the decimals place by place"
                     + (f", padded to the same length: {pa} and {pb}." if len(fa) != len(fb) else "."))
        for place, da, db in zip(_PLACES, fa.ljust(width, "0"), fb.ljust(width, "0")):
            if da == db:
                lines.append(f"The {place} are both {da}.")
            else:
                lines.append(f"The {place}: {max(da, db)} is more than {min(da, db)}, so {hi} is bigger.")
                break
    answer = hi if bigger else lo
    lines.append(f"So {hi} is bigger than {lo}." if bigger else f"So {lo} is smaller than {hi}.")
    lines.append(f"#### {answer}")
    return [{"role": "user", "content": question}, {"role": "assistant", "content": "\n".join(lines)}], answer


# --------------------------------------------------------------------------------- identity

_ID_CATEGORIES = tuple(_ID_QA)
_ID_PREFIX = ("", "Hi! ", "Hey, ", "Quick question: ", "Hello. ", "Just curious: ")
_SYSTEMS = ("You are {name}, a helpful AI assistant made by {maker}.", "You are a helpful assistant.",
            "You are {name}. Answer briefly and honestly.")


def _identity_sample(rng: random.Random, opts: dict, split: str):
    category = _pick(rng, _ID_CATEGORIES)
    base, prefix = _pick(rng, _ID_QA[category][0]), _pick(rng, _ID_PREFIX)
    question = base[0].lower() + base[1:] if prefix.endswith(", ") else base
    end = "." if question.startswith(("Introduce", "Tell", "introduce", "tell")) else _pick(rng, ("?", "?", "", "??"))
    question = prefix + question + end
    if rng.random() < 0.2:
        question = question.lower()
    return base, (category, question)   # the key: the underlying question (split_of)


def _identity_render(rng: random.Random, params, opts: dict):
    category, question = params
    fill = dict(name=opts["name"], maker=opts["maker"], maker_cap=opts["maker"][:1].upper() + opts["maker"][1:])
    messages = [{"role": "user", "content": question},
                {"role": "assistant", "content": _pick(rng, _ID_QA[category][1]).format(**fill)}]
    if rng.random() < opts["system_prob"]:
        messages.insert(0, {"role": "system", "content": _pick(rng, _SYSTEMS).format(**fill)})
    return messages, opts["name"]


# ---------------------------------------------------------------------------------- refusal

REFUSALS: tuple[str, ...] = (
    "I'm sorry, but I can't help with that.",
    "I can't help with that request. Is there something else I can do for you?",
    "Sorry, I can't assist with that. It could cause harm.",
    "I won't help with that, but I'm happy to help with something else.",
    "I'm sorry, I can't provide that. If you're dealing with something difficult, I'm glad to talk it through.",
)


@functools.lru_cache(maxsize=4)
def hh_prompts(path: str) -> dict[str, tuple[str, ...]]:
    """The distinct first human turns of an HH-RLHF ``.jsonl(.gz)`` file (rows ``{"chosen": "\\n\\nHuman:
    ...\\n\\nAssistant: ..."}``), in file order, by split: ``{"train": (...), "test": (...)}``.
    The 2,312-row harmless-base test file gives 2,178 distinct prompts (1,973 train / 205 test).

    Raises ValueError naming the file when it is missing, and ``path:LINE`` for a row that is not
    such a dialogue."""
    file = pathlib.Path(path)
    if not file.is_file():
        raise ValueError(f"hh_path={path!r}: no such file; expected the HH-RLHF harmless-base .jsonl.gz")
    seen: dict[str, None] = {}
    with (gzip.open if file.suffix == ".gz" else open)(file, "rt", encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                parts = re.split(r"\n\n(Human|Assistant): ", json.loads(line)["chosen"])
            except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
                parts = []
            if len(parts) < 3 or parts[1] != "Human" or not parts[2].strip():
                raise ValueError(f"{path}:{number}: expected a JSON row {{\"chosen\": \"\\n\\nHuman: ...\"}}")
            seen.setdefault(parts[2].strip())
    by_split = {s: tuple(p for p in seen if split_of("refusal", p) == s) for s in SPLITS}
    if not all(by_split.values()):
        raise ValueError(f"hh_path={path!r}: {len(seen)} prompts leave the train or test split empty; expected more")
    return by_split


def _refusal_sample(rng: random.Random, opts: dict, split: str):
    if not opts["hh_path"]:
        raise ValueError("task 'refusal': option hh_path= is missing; expected the HH-RLHF harmless-base .jsonl.gz")
    prompt = _pick(rng, hh_prompts(opts["hh_path"])[split])
    return prompt, prompt


def _refusal_render(rng: random.Random, prompt: str, opts: dict):
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": _pick(rng, REFUSALS)}], None


# -------------------------------------------------------------------------------- smalltalk

_INTENTS = tuple(_SMALLTALK)
_PUNCT = ("", "!", ".", " :)")


def _smalltalk_line(rng: random.Random, intent: str) -> tuple[str, str]:
    """(the underlying line, the line as the user writes it)."""
    base = _pick(rng, _SMALLTALK[intent][0])
    line = base + ("?" if intent == "how" else _pick(rng, _PUNCT))
    return base, line.lower() if rng.random() < 0.3 else line


def _smalltalk_sample(rng: random.Random, opts: dict, split: str):
    intents = [_pick(rng, _INTENTS)]
    if intents[0] == "hello" and rng.random() < 0.5:
        intents.append(_pick(rng, ("how", "meet")))
    elif intents[0] == "thanks" and rng.random() < 0.4:
        intents.append("bye")
    bases, users = zip(*(_smalltalk_line(rng, i) for i in intents))
    return " | ".join(bases), (intents, list(users))   # the key: the underlying lines (split_of)


def _smalltalk_render(rng: random.Random, params, opts: dict):
    messages = []
    for intent, user in zip(*params):
        messages += [{"role": "user", "content": user},
                     {"role": "assistant", "content": _pick(rng, _SMALLTALK[intent][1]).format(name=opts["name"])}]
    return messages, None


# ------------------------------------------------------------------------------ the public API

# task -> (split family, sample(rng, opts, split) -> (key, params), render(rng, params, opts) -> (messages, answer))
_TASKS: dict[str, tuple[str, Callable, Callable]] = {
    "arithmetic": ("arithmetic", _arith_sample, functools.partial(_arith_render, answer_first=False)),
    "arithmetic_answer_first": ("arithmetic", _arith_sample, functools.partial(_arith_render, answer_first=True)),
    "calculator": ("calculator", tool_use.calc_sample, tool_use.calc_render),
    "letter_count": ("words", _word_sample, _count_render),
    "spelling": ("words", _word_sample, _spell_render),
    "decimal_compare": ("decimal_compare", _decimal_sample, _decimal_render),
    "identity": ("identity", _identity_sample, _identity_render),
    "refusal": ("refusal", _refusal_sample, _refusal_render),
    "smalltalk": ("smalltalk", _smalltalk_sample, _smalltalk_render),
}


_KIND_WORDS = {int: "a whole number", float: "a number", str: "a string"}


def _check_task(task) -> None:
    if task not in _TASKS:
        raise ValueError(f"synthetic task {task!r}: expected one of {', '.join(TASKS)}")


def _option_value(name: str, value, task: str):
    """``value`` as option ``name``'s type; a bool, or a fraction for a whole number, is refused (``int(2.5)``
    would silently be 2)."""
    kind = OPTIONS[name][1]
    lossy = (isinstance(value, bool) and kind is not str) or (
        kind is int and isinstance(value, float) and not value.is_integer())
    try:
        blank = kind is str and OPTIONS[name][2] and not str(value).strip()   # an empty name reads "I'm , an AI"
        if not lossy and not blank:
            return kind(value)
    except (TypeError, ValueError, OverflowError):
        pass
    raise ValueError(f"option {name}={value!r} of task {task!r}: expected "
                     + ("a non-empty string" if kind is str and OPTIONS[name][2] else _KIND_WORDS[kind]))


def _task_options(task: str, options: Mapping) -> dict:
    opts = {}
    for name, (tasks, _, default) in OPTIONS.items():
        if task in tasks:
            opts[name] = _option_value(name, options.get(name, default), task)
    for name in options:
        if name not in OPTIONS:
            raise ValueError(f"synthetic option {name!r}: expected one of {', '.join(OPTIONS)}")
        if name not in opts:
            raise ValueError(f"option {name!r} is not read by task {task!r}; "
                             f"it is an option of {', '.join(OPTIONS[name][0])}")
    if "min_ops" in opts and not 1 <= opts["min_ops"] <= opts["max_ops"]:
        raise ValueError(f"options min_ops={opts['min_ops']}, max_ops={opts['max_ops']}: "
                         "expected 1 <= min_ops <= max_ops")
    if "max_digits" in opts and not 2 <= opts["max_digits"] <= 12:
        raise ValueError(f"option max_digits={opts['max_digits']}: expected a whole number in [2, 12]")
    if "max_value" in opts and opts["max_value"] < 10:
        raise ValueError(f"option max_value={opts['max_value']}: expected a whole number >= 10")
    if "system_prob" in opts and not 0.0 <= opts["system_prob"] <= 1.0:
        raise ValueError(f"option system_prob={opts['system_prob']}: expected a probability in [0, 1]")
    return opts


def check_options(tasks, options: Mapping) -> None:
    """What :func:`mixture` over ``tasks`` would refuse in ``options``, checked without drawing anything: an
    unknown task or option, or a value of the wrong type or out of range. Raises ValueError."""
    for name in options:
        if name not in OPTIONS:
            raise ValueError(f"synthetic option {name!r}: expected one of {', '.join(OPTIONS)}")
    for task in tasks:
        _check_task(task)
        _task_options(task, {k: v for k, v in options.items() if task in OPTIONS[k][0]})


def _check_n(n) -> None:
    if not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 0:
        raise ValueError(f"n={n!r}: expected a whole number >= 0")


def generate(task: str, n: int, *, split: str = "train", seed: int = 0, **options) -> list[dict]:
    """``n`` conversations of ``task`` from ``split``: ``{"task", "messages", "answer", "key"}`` (module docstring).

    ``messages`` ends with the assistant turn; ``answer`` is the reference final answer (a string
    for ``VERIFIABLE`` tasks, None otherwise) and ``key`` the canonical key that assigns the problem
    to a split, so ``train`` and ``test`` share no key. Deterministic given (task, n, split, seed,
    options), and the first ``k`` items do not depend on ``n``. ``options`` (``OPTIONS``) may be
    strings (CLI bindings) and are converted. Raises ValueError for an unknown task, split or
    option, a bad option value or a negative ``n``; ``refusal`` without a readable ``hh_path``.
    """
    _check_task(task)
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: expected one of {', '.join(SPLITS)}")
    _check_n(n)
    family, sample, render = _TASKS[task]
    opts = _task_options(task, options)
    rng = random.Random(f"lmforge.synthetic:{task}:{split}:{seed}")
    items, draws = [], 0
    while len(items) < n:
        key, params = sample(rng, opts, split)
        draws += 1
        if split_of(family, key) != split:
            if draws > 1000 + 100 * n:   # ~10 draws per test item are expected; this many means no key fits
                raise ValueError(f"task {task!r}: found no {split} problems in {draws} draws; "
                                 "its key space is too small")
            continue
        messages, answer = render(rng, params, opts)
        items.append({"task": task, "messages": messages, "answer": answer, "key": key})
    return items


def mixture(weights: Mapping[str, float], n: int, *, split: str = "train", seed: int = 0, **options) -> list[dict]:
    """``n`` conversations mixed from several tasks, shuffled: ``weights`` maps tasks to non-negative
    weights; counts are ``n * w / sum(w)`` rounded by largest remainder (so they sum to ``n``; ties
    go to the task listed first). Each task gets only the ``options`` it reads (``OPTIONS``), so
    ``hh_path`` may be passed whether or not ``refusal`` is in the mix. Raises ValueError for an
    unknown task or option, a negative or non-finite weight, or weights summing to 0."""
    _check_n(n)
    if not isinstance(weights, Mapping) or not weights:
        raise ValueError(f"weights={weights!r}: expected a non-empty mapping task -> weight")
    for task, w in weights.items():
        _check_task(task)
        if not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise ValueError(f"weight of {task!r}={w!r}: expected a finite number >= 0")
    total = float(sum(weights.values()))
    if total <= 0:
        raise ValueError(f"weights={dict(weights)}: expected a positive sum")
    for name in options:
        if name not in OPTIONS:
            raise ValueError(f"synthetic option {name!r}: expected one of {', '.join(OPTIONS)}")
    exact = {task: n * w / total for task, w in weights.items()}
    counts = {task: int(v) for task, v in exact.items()}
    order = sorted(exact, key=lambda t: -(exact[t] - counts[t]))   # stable: ties keep the listed order
    for task in order[:n - sum(counts.values())]:
        counts[task] += 1
    items = []
    for task, count in counts.items():
        if count:
            items += generate(task, count, split=split, seed=seed,
                              **{k: v for k, v in options.items() if task in OPTIONS[k][0]})
    random.Random(f"lmforge.synthetic.mixture:{split}:{seed}").shuffle(items)
    return items
