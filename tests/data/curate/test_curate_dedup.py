"""Dedup: exact (normalized hash) fixtures; near-dup catch rate >= 0.95 for copies with <= 10% of
their words edited and <= 1% of unrelated documents flagged, on real prose."""

import random

import numpy as np

from lmforge.data.curate import NearDedupConfig, exact_duplicates, exact_key, jaccard, near_duplicates, signature
from lmforge.data.curate.dedup import bucket_edges, clusters, normalized_words


def unrelated(texts: list[str], max_jaccard: float = 0.3) -> list[str]:
    """Greedily keeps texts whose exact word-bigram Jaccard with every kept one is < max_jaccard
    (Python's docs hold true near-copies, e.g. the "if" statement topic twice)."""
    kept, sets = [], []
    for t in texts:
        w = normalized_words(t)
        s = set(zip(w, w[1:]))
        if all(len(s & o) / len(s | o) < max_jaccard for o in sets):
            kept.append(t)
            sets.append(s)
    return kept


def perturb(text: str, rate: float, r: random.Random, vocab: list[str]) -> str:
    """Edits round(rate * words) positions: substitute, insert or delete a word, chosen at random."""
    words = text.split()
    for _ in range(max(1, round(rate * len(words)))):
        i = r.randrange(len(words))
        op = r.choice(("sub", "ins", "del"))
        if op == "sub":
            words[i] = r.choice(vocab)
        elif op == "ins":
            words.insert(i, r.choice(vocab))
        elif len(words) > 1:
            del words[i]
    return " ".join(words)


def test_exact_dedup_keeps_first_and_ignores_case_space_punctuation():
    texts = ["Hello, World!  Again.", "hello world again", "Hello World Again?", "Something else."]
    keys = [(i, exact_key(t)) for i, t in enumerate(texts)]
    assert exact_duplicates(reversed(keys)) == {1: 0, 2: 0}


def test_near_dedup_catch_and_false_positive_rates(prose):
    cfg = NearDedupConfig()
    r = random.Random(0)
    originals = unrelated(prose)[:200]
    vocab = sorted({w for t in prose[250:] for w in t.split()})
    copies = [perturb(t, r.uniform(0.01, 0.10), r, vocab) for t in originals]
    sigs = [(i, signature(cfg, t)) for i, t in enumerate(originals + copies)]
    dropped = near_duplicates(cfg, sigs)
    n = len(originals)
    caught = sum(dropped.get(n + i) == i for i in range(n)) / n
    false = sum(i in dropped for i in range(n)) / n
    assert caught >= 0.95, caught
    assert false <= 0.01, (false, [(i, dropped[i]) for i in range(n) if i in dropped])


def test_unrelated_documents_are_not_near_duplicates(prose):
    cfg = NearDedupConfig()
    docs = unrelated(prose)
    assert len(docs) > 200
    sigs = [(i, signature(cfg, t)) for i, t in enumerate(docs)]
    assert len(near_duplicates(cfg, sigs)) <= 0.01 * len(docs)


def test_minhash_estimates_jaccard():
    cfg = NearDedupConfig(num_perm=256)
    a = " ".join(f"w{i}" for i in range(400))
    b = " ".join(f"w{i}" for i in range(100, 500))  # bigram sets: 299 shared of 499
    assert abs(jaccard(signature(cfg, a), signature(cfg, b)) - 299 / 499) < 0.08
    assert np.array_equal(signature(cfg, a), signature(cfg, a))


def test_union_find_keeps_smallest_and_is_order_free():
    edges = [(3, 7), (1, 3), (10, 11), (7, 9)]
    assert clusters(edges) == {3: 1, 7: 1, 9: 1, 11: 10}
    assert clusters(reversed(edges)) == clusters(edges)
    s = np.arange(8, dtype=np.uint64)
    other = s + 100
    assert bucket_edges([(5, s), (2, s), (9, other)], 0.5) == [(2, 5)]
