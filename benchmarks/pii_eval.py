"""PII detection quality per kind on a generated labeled set, and the stage's throughput.

    python benchmarks/pii_eval.py [--n 1000] [--seed 0] [--throughput]

The set: for each kind, ``n`` positives (a value in a sentence: plain sentences and sentences
whose words say what it is, e.g. "Our office number is 7589590183.", "The server at 10.2.3.4 is
down.", "paid with Visa 4111 1111 1111 1111") and, for the numeric kinds, ``n`` look-alikes that
the string alone would mistake for it (versions, releases, sections and build numbers for IP;
16-digit ids starting with 8 or 9, order ids with a card prefix and a valid Luhn digit, ISBN-13,
IMEI and badly grouped digit lists for CARD; bare ids, order ids, part numbers, dates and
timestamps, ISBN-10, decimals, versions, platform tags, digit lists, amounts and counts for PHONE). Per kind it prints:

- recall: positives whose text came back with exactly that one placeholder;
- precision: those, over every placeholder of that kind produced on the whole set;
- survival: look-alikes that came back unchanged;
- uncued_survival (IP, CARD): the same for look-alikes with no cue word at all ("Firefox
  3.6.28.1", a Luhn-valid 16-digit id starting with 4): the string alone cannot tell these, so
  they are redacted; reported to show the limit, not a goal, and left out of precision.

``--throughput`` adds documents/s and MB/s of ``pii`` over Python's own docs (best of 3, one
process). tests/data/curate/test_curate_pii.py asserts the thresholds on a smaller sample of the
same generator. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import time

from stdnum import ean, luhn

KINDS = ("EMAIL", "PHONE", "IP", "CARD")
PLAIN = ["Please contact {} for details.", "The record lists {} as the only entry.", "Reach us at {} today!",
         "Value: {}", "({}) was written on the form.", "Her note said {}, nothing more."]
NEUTRAL = ["The record lists {} as the only entry.", "Value: {}", "({}) was written on the form.",
           "Her note said {}, nothing more.", "See {} below.", "The log shows {} twice."]


def _digits(r, n):
    return "".join(str(r.randrange(10)) for _ in range(n))


def _isbn10(r):
    body = _digits(r, 9)
    check = (11 - sum((10 - i) * int(c) for i, c in enumerate(body)) % 11) % 11
    return body + ("X" if check == 10 else str(check))


def _luhn_complete(r, prefix, length):
    body = prefix + _digits(r, length - len(prefix) - 1)
    return body + luhn.calc_check_digit(body)


# ---- positives ----------------------------------------------------------------------------------

def email(r):
    user = r.choice(["john", "a.smith", "maria_garcia", "li.wei+news", "o'neil", "x99"]) + str(r.randrange(100))
    value = f"{user}@{r.choice(['example.com', 'mail.co.uk', 'uni-bonn.de', 'sub.domain.org', 'test.io'])}"
    return r.choice(PLAIN + ["Write to {} with questions.", "E-mail: {}"]), value


def phone(r):
    a, b, c = r.randrange(200, 999), r.randrange(200, 999), r.randrange(0, 10000)
    formatted = r.choice([f"({a}) {b}-{c:04d}", f"{a}-{b}-{c:04d}", f"{a}.{b}.{c:04d}", f"+1 {a} {b} {c:04d}",
                          f"+1-{a}-{b}-{c:04d}", f"{a} {b} {c:04d}", f"+1 ({a}) {b}-{c:04d} ext. {r.randrange(1, 999)}",
                          f"+44 20 {r.randrange(1000, 9999)} {r.randrange(1000, 9999)}",
                          f"+44 7{r.randrange(100, 999)} {r.randrange(100000, 999999)}",
                          f"+49 30 {r.randrange(1000000, 9999999)}", f"+49 89 {r.randrange(10000, 99999)}-0",
                          f"+33 1 {a % 90 + 10} {b % 90 + 10} {c % 90 + 10} 42",
                          f"+81 3 {r.randrange(1000, 9999)} {r.randrange(1000, 9999)}",
                          f"+91 98{r.randrange(100, 999)} {r.randrange(10000, 99999)}",
                          f"+61 2 {r.randrange(1000, 9999)} {r.randrange(1000, 9999)}"])
    bare = f"{r.randrange(2, 10)}{_digits(r, 9)}"
    cued = ["Our office number is {}.", "Call me at {} tomorrow.", "Phone: {}", "Fax {} to the clinic.",
            "Her mobile is {}.", "Tel. {}", "You can reach the front desk on {}.", "Text {} for updates.",
            "Call {} about order 88412.", "For release 2.1 questions, phone {} after noon."]
    return r.choice([(r.choice(PLAIN), formatted), (r.choice(cued), formatted), (r.choice(cued), bare),
                     (r.choice(cued), f"{b}-{c:04d}")])  # a local number, which only the words make a phone


def ip(r):
    if r.random() < 0.7:
        value = ".".join(str(r.randrange(256)) for _ in range(4))
    else:
        groups = [f"{r.randrange(65536):x}" for _ in range(8)]
        value = ":".join(groups) if r.random() < 0.5 else f"2001:db8::{groups[0]}:{groups[1]}"
    cued = ["The server at {} is down.", "Connect to {} on port 22.", "IP address: {}", "ping {} first",
            "Login from host {} was blocked.", "The gateway {} drops packets.",
            "Version 2 of the server at {} is live.", "Connect to {} after the release 3.2 upgrade."]
    return r.choice([r.choice(PLAIN), r.choice(cued)]), value


NETWORKS = [("4", 16), ("4", 13), ("4", 19), ("51", 16), ("55", 16), ("2221", 16), ("2720", 16), ("34", 15),
            ("37", 15), ("6011", 16), ("645", 16), ("65", 16), ("3530", 16), ("3589", 19), ("36", 14),
            ("300", 14), ("62", 16), ("62", 19), ("6759", 16), ("5018", 18), ("2201", 16), ("9792", 16)]


def _group(r, number):
    sep = r.choice(["", " ", "-"])
    if not sep:
        return number
    if len(number) == 15 and r.random() < 0.5:
        return sep.join((number[:4], number[4:10], number[10:]))  # Amex 4-6-5
    if len(number) == 14 and r.random() < 0.5:
        return sep.join((number[:4], number[4:10], number[10:]))  # Diners 4-6-4
    return sep.join(number[i:i + 4] for i in range(0, len(number), 4))


def card(r):
    prefix, length = r.choice(NETWORKS)
    cued = ["Card number: {}", "She paid with Visa {} yesterday.", "Charge it to {}, expiry 04/27.",
            "credit card {} was declined", "Billing: {}", "Paid by card {} for order 55123."]
    return r.choice([r.choice(PLAIN), r.choice(cued)]), _group(r, _luhn_complete(r, prefix, length))


POSITIVES = {"EMAIL": email, "PHONE": phone, "IP": ip, "CARD": card}


# ---- look-alikes --------------------------------------------------------------------------------

def ip_lookalike(r):
    v = f"{r.randrange(0, 30)}.{r.randrange(0, 30)}.{r.randrange(0, 30)}.{r.randrange(0, 256)}"
    return r.choice(["Upgrade to release {} of the engine.", "Version {} is out.", "See section {} below.",
                     "The build {} fixed it.", "{} release notes", "Firmware {} adds Wi-Fi.",
                     "as required by § {}", "kernel {} and later", "Apply patch {} first.",
                     "rev. {} of the spec", "Figure {} shows it."]).format(v)


def card_lookalike(r):
    kind = r.randrange(6)
    if kind == 0:  # 16-digit ids starting with 8 or 9 that happen to pass Luhn (one in ten do)
        return r.choice(NEUTRAL + ["order id {} shipped"]).format(_luhn_complete(r, r.choice("89"), 16))
    if kind == 1:  # an order id with a real card prefix and Luhn digit: only the words tell
        value = _group(r, _luhn_complete(r, r.choice(["4", "51", "6011", "37"]), r.choice([16, 15])))
        return r.choice(["order id {} shipped", "Tracking number {} was updated.", "Invoice {} is due.",
                         "Your reference {} is below.", "Serial {} on the label.",
                         "customer id: {}"]).format(value)
    if kind == 2:  # ISBN-13
        body = r.choice(["978", "979"]) + _digits(r, 9)
        value = body + ean.calc_check_digit(body)
        value = r.choice([value, f"{value[:3]}-{value[3]}-{value[4:8]}-{value[8:12]}-{value[12]}"])
        return r.choice(["ISBN {}", "ISBN-13: {}", "The record lists {} as the only entry."]).format(value)
    if kind == 3:  # IMEI: 15 digits with a Luhn digit
        value = _luhn_complete(r, r.choice(["35", "86", "01", "99"]), 15)
        return r.choice(["IMEI {}", "The log shows {} twice.", "Her note said {}, nothing more."]).format(value)
    if kind == 4:  # a list of small numbers whose digits spell a Luhn-valid Visa-like run
        while True:
            parts = [str(r.randrange(1, 60)) for _ in range(r.randrange(8, 12))]
            joined = "".join(parts)
            if 13 <= len(joined) <= 19 and joined[0] == "4" and luhn.is_valid(joined):
                return r.choice(["Pick {} from the list.", "Scores: {}"]).format(" ".join(parts))
    value = _luhn_complete(r, "4", 16)  # a card prefix and Luhn, grouped unlike any card
    return r.choice(NEUTRAL).format(f"{value[:3]} {value[3:8]} {value[8:12]} {value[12:]}")


def phone_lookalike(r):
    bare = f"{r.randrange(2, 10)}{_digits(r, 9)}"
    isbn10 = _isbn10(r)
    a, b, c = r.randrange(200, 999), r.randrange(200, 999), r.randrange(0, 10000)
    y, m, d = r.randrange(1990, 2030), r.randrange(1, 13), r.randrange(1, 29)
    choices = [
        r.choice(NEUTRAL).format(bare),  # a bare 10-digit id with no phone word near
        r.choice(["order {} shipped", "Order ID: {}", "invoice {} is due", "Account {} is closed.",
                  "ticket {} was resolved", "Tracking number {} arrives Monday."]).format(bare),
        f"Part {a}-{b}-{c:04d} is out of stock.", f"Serial number {a}.{b}.{c:04d}",
        r.choice(NEUTRAL).format(r.choice([f"{y}-{m:02d}-{d:02d}", f"{d:02d}.{m:02d}.{y}", f"{m:02d}/{d:02d}/{y}",
                                           f"{y}/{m:02d}/{d:02d} {r.randrange(24)}:{r.randrange(60):02d}",
                                           f"{y}-{m:02d}-{d:02d} {r.randrange(24):02d}:{r.randrange(60):02d}:00"])),
        f"Use the aix-{r.randrange(5000, 8000)}-{r.randrange(1000, 9999)}-{r.choice([32, 64])} wheel.",
        r.choice([f"ISBN {isbn10}", f"ISBN {isbn10[0]}-{isbn10[1:4]}-{isbn10[4:9]}-{isbn10[9]}",
                  r.choice(NEUTRAL).format(f"{isbn10[0]}-{isbn10[1:4]}-{isbn10[4:9]}-{isbn10[9]}")]),
        f"Windows version 10.0.{r.randrange(10000, 30000)}.{r.randrange(1000, 9999)}",
        f"build {y}{m:02d}{d:02d}.{r.randrange(1, 9)}",
        r.choice(NEUTRAL).format(f"{r.randrange(10)}.{_digits(r, r.randrange(6, 12))}"),  # a decimal
        r.choice(NEUTRAL).format(", ".join(str(r.randrange(100)) for _ in range(r.randrange(6, 10)))),
        r.choice(NEUTRAL).format(" ".join(str(r.randrange(10, 100)) for _ in range(r.randrange(5, 8)))),
        f"It cost ${r.randrange(1, 999)},{r.randrange(100, 999)},{r.randrange(100, 999)}.{r.randrange(10, 99)}.",
        f"The city has {r.randrange(1, 9)} {r.randrange(100, 999)} {r.randrange(100, 999)} inhabitants.",
        f"population {r.randrange(1, 9)},{r.randrange(100, 999)},{r.randrange(100, 999)}",
        f"{bare} bytes were copied.",
    ]
    return r.choice(choices)


LOOKALIKES = {"PHONE": phone_lookalike, "IP": ip_lookalike, "CARD": card_lookalike}


# Look-alikes with no cue word, which the string alone cannot tell apart: reported, not a goal.
def ip_uncued(r):
    v = f"{r.randrange(1, 30)}.{r.randrange(0, 30)}.{r.randrange(0, 30)}.{r.randrange(0, 256)}"
    return r.choice(["Firefox {} crashed on start.", "Python {} ships it.", "The {} tag is signed."]).format(v)


def card_uncued(r):
    return r.choice(NEUTRAL).format(_luhn_complete(r, r.choice(["4", "51", "55"]), 16))


UNCUED = {"IP": ip_uncued, "CARD": card_uncued}


def labeled_set(n: int = 1000, seed: int = 0) -> list[tuple[str, str, str | None, str]]:
    """[(text, kind, expected output, "positive" | "lookalike" | "uncued")]; ``n`` positives and ``n``
    look-alikes per kind, and ``n // 10`` look-alikes with no cue word for IP and CARD."""
    r = random.Random(seed)
    items = []
    for kind in KINDS:
        for _ in range(n):
            template, value = POSITIVES[kind](r)
            items.append((template.format(value), kind, template.format(f"<{kind}>"), "positive"))
        if kind in LOOKALIKES:
            for _ in range(n):
                text = LOOKALIKES[kind](r)
                items.append((text, kind, text, "lookalike"))
        if kind in UNCUED:
            for _ in range(n // 10):
                text = UNCUED[kind](r)
                items.append((text, kind, text, "uncued"))
    return items


def evaluate(items, scrub) -> tuple[dict[str, dict[str, float]], list[tuple[str, str, str]]]:
    """Recall, precision and look-alike survival per kind of ``scrub`` on ``items``, and the misses."""
    tp, produced = dict.fromkeys(KINDS, 0), dict.fromkeys(KINDS, 0)
    n_pos, n_look, survived = dict.fromkeys(KINDS, 0), dict.fromkeys(KINDS, 0), dict.fromkeys(KINDS, 0)
    n_uncued, uncued_survived = dict.fromkeys(KINDS, 0), dict.fromkeys(KINDS, 0)
    misses = []
    for text, kind, expected, role in items:
        out, counts = scrub(text)
        if role == "uncued":
            n_uncued[kind] += 1
            uncued_survived[kind] += out == text
            continue
        for k in KINDS:
            produced[k] += counts.get(k, 0)
        if role == "positive":
            n_pos[kind] += 1
            hit = out == expected and counts == {kind: 1}
            tp[kind] += hit
        elif role == "lookalike":
            n_look[kind] += 1
            hit = out == text
            survived[kind] += hit
        if not hit:
            misses.append((role, kind, text, out))
    scores = {k: {"recall": tp[k] / max(n_pos[k], 1), "precision": tp[k] / max(produced[k], 1),
                  "positives": n_pos[k]} for k in KINDS}
    for k in KINDS:
        if n_look[k]:
            scores[k].update(survival=survived[k] / n_look[k], lookalikes=n_look[k])
        if n_uncued[k]:
            scores[k].update(uncued_survival=uncued_survived[k] / n_uncued[k], uncued=n_uncued[k])
    return scores, misses


def throughput(repeat: int = 3) -> dict[str, float]:
    from lmforge.data import SourceConfig, read_documents  # pylint: disable=import-outside-toplevel
    from lmforge.data.curate import Document, PIIConfig, pii  # pylint: disable=import-outside-toplevel

    docs = [Document(str(i), t, "python_docs") for i, t in enumerate(read_documents(SourceConfig(kind="python_docs")))]
    mb = sum(len(d.text.encode()) for d in docs) / 1e6
    cfg = PIIConfig()
    [pii(cfg, d) for d in docs]  # warm up: imports
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        for d in docs:
            pii(cfg, d)
        best = min(best, time.perf_counter() - t)
    return {"documents": len(docs), "mb": round(mb, 3), "documents_per_s": round(len(docs) / best, 1),
            "mb_per_s": round(mb / best, 3)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="positives and look-alikes per kind")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--misses", type=int, default=0, help="print this many misses per kind to stderr")
    parser.add_argument("--throughput", action="store_true")
    args = parser.parse_args()
    from lmforge.data.curate import scrub  # pylint: disable=import-outside-toplevel

    scores, misses = evaluate(labeled_set(args.n, args.seed), scrub)
    out = {"set": {"generator": "benchmarks/pii_eval.py labeled_set", "n_per_kind": args.n, "seed": args.seed},
           "scores": {k: {m: round(v, 4) if isinstance(v, float) else v for m, v in s.items()} for k, s in scores.items()}}
    if args.throughput:
        out["throughput"] = throughput()
    if args.misses:
        import sys  # pylint: disable=import-outside-toplevel

        for k in KINDS:
            for m in [m for m in misses if m[1] == k][:args.misses]:
                print(m, file=sys.stderr)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
