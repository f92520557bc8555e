"""Exact and near-duplicate removal: normalized-text hashes, MinHash LSH (datasketch), union-find.

Both are *global* stages: each document gets a key or a signature in the per-document pass (in
parallel), and the decision needs all of them. Everything here is a pure function of the keys, so
the local runner and the Beam runner (which groups by the same keys) remove the same documents.
In every group the document with the smallest ordinal (the first one read) is kept.

Choices:
- Exact: blake2b-64 of the text lowercased, punctuation removed and whitespace collapsed
  (``exact_dedup/duplicate``), so copies that differ only in case or spacing are caught.
- Near (Broder 1997; Lee et al. 2022 "Deduplicating Training Data Makes Language Models Better"):
  word ``ngram``-shingles of the same normalized words, MinHash with ``num_perm`` permutations
  from datasketch (its ``update_batch``; shingles hashed with xxh32, much faster than its default
  SHA-1), LSH banding with the (b, r) that datasketch's ``MinHashLSH`` picks for ``threshold``.
  Documents sharing a band bucket are candidates; a candidate is linked to the first earlier
  member of the bucket whose estimated Jaccard similarity is >= ``threshold`` (this check cuts
  LSH's false positives); linked documents form clusters with union-find and all but the first of
  each cluster are dropped (``near_dedup/near_duplicate``).
- Defaults (word bigrams, threshold 0.5, 128 permutations, b=25 r=5): a copy with 10% of its
  words edited keeps a bigram Jaccard of ~0.7, well above 0.5, while unrelated English pages share
  < 0.1. Lee et al. used 5-grams and 0.8 for web-scale near-exact copies; both are config fields.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
from collections import defaultdict
from collections.abc import Iterable

import numpy as np

_PUNCT = re.compile(r"[^\w\s]|_")
_MAX_COMPARISONS = 50  # per document per bucket: a bucket of unrelated pages cannot go quadratic


@dataclasses.dataclass(frozen=True)
class ExactDedupConfig:
    enabled: bool = True


@dataclasses.dataclass(frozen=True)
class NearDedupConfig:
    enabled: bool = True
    threshold: float = 0.5  # Jaccard similarity of word-shingle sets above which documents are duplicates
    ngram: int = 2  # words per shingle
    num_perm: int = 128
    seed: int = 1

    def __post_init__(self):
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"near_dedup.threshold={self.threshold}: expected a Jaccard similarity in (0, 1)")
        if self.ngram < 1 or self.num_perm < 2:
            raise ValueError(f"near_dedup.ngram={self.ngram}, num_perm={self.num_perm}: expected >= 1 and >= 2")


def normalized_words(text: str) -> list[str]:
    return _PUNCT.sub(" ", text.lower()).split()


def exact_key(text: str) -> bytes:
    """The 8-byte hash that identical-after-normalization documents share."""
    return hashlib.blake2b(" ".join(normalized_words(text)).encode("utf-8"), digest_size=8).digest()


@functools.lru_cache(maxsize=4)
def _template(num_perm: int, seed: int):
    import xxhash  # pylint: disable=import-outside-toplevel
    from datasketch import MinHash  # pylint: disable=import-outside-toplevel

    return MinHash(num_perm=num_perm, seed=seed, hashfunc=xxhash.xxh32_intdigest)


@functools.lru_cache(maxsize=4)
def bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(b, r): the LSH bands and rows datasketch's MinHashLSH chooses for ``threshold``."""
    from datasketch import MinHashLSH  # pylint: disable=import-outside-toplevel

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    return lsh.b, lsh.r


def signature(cfg: NearDedupConfig, text: str) -> np.ndarray:
    """(num_perm,) uint64 MinHash of the word-shingle set of ``text``."""
    ws = normalized_words(text)
    n = cfg.ngram
    shingles = {" ".join(ws[i:i + n]).encode("utf-8") for i in range(max(len(ws) - n + 1, 1))}
    m = _template(cfg.num_perm, cfg.seed).copy()
    m.update_batch(sorted(shingles))
    return np.asarray(m.hashvalues, dtype=np.uint64)


def band_keys(cfg: NearDedupConfig, sig: np.ndarray) -> list[bytes]:
    """One bucket key per band: the band index and a hash of its rows."""
    b, r = bands(cfg.threshold, cfg.num_perm)
    return [bytes([i]) + hashlib.blake2b(sig[i * r:(i + 1) * r].tobytes(), digest_size=8).digest() for i in range(b)]


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """MinHash estimate of the Jaccard similarity of the two shingle sets."""
    return float(np.count_nonzero(a == b)) / len(a)


def bucket_edges(members: Iterable[tuple[int, np.ndarray]], threshold: float) -> list[tuple[int, int]]:
    """Within one bucket: (earlier, later) ordinals, each later one linked to its first match."""
    members = sorted(members, key=lambda m: m[0])
    edges = []
    for j in range(1, len(members)):
        oj, sj = members[j]
        for oi, si in members[: min(j, _MAX_COMPARISONS)]:
            if jaccard(si, sj) >= threshold:
                edges.append((oi, oj))
                break
    return edges


def clusters(edges: Iterable[tuple[int, int]]) -> dict[int, int]:
    """Union-find over the edges: {dropped ordinal: the kept (smallest) ordinal of its cluster}."""
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        root = x
        while parent.get(root, root) != root:
            root = parent[root]
        while parent.get(x, x) != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    for a, b in sorted(edges):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {x: find(x) for x in sorted(parent) if find(x) != x}


def exact_duplicates(keys: Iterable[tuple[int, bytes]]) -> dict[int, int]:
    """{dropped ordinal: kept ordinal} for documents whose exact key an earlier document has."""
    first: dict[bytes, int] = {}
    dropped = {}
    for ordinal, key in sorted(keys):
        if key in first:
            dropped[ordinal] = first[key]
        else:
            first[key] = ordinal
    return dropped


def near_duplicates(cfg: NearDedupConfig, sigs: Iterable[tuple[int, np.ndarray]]) -> dict[int, int]:
    """{dropped ordinal: kept ordinal} over all signatures (the local runner's whole stage)."""
    buckets: dict[bytes, list[tuple[int, np.ndarray]]] = defaultdict(list)
    for ordinal, sig in sigs:
        for key in band_keys(cfg, sig):
            buckets[key].append((ordinal, sig))
    edges = []
    for key in sorted(buckets):
        if len(buckets[key]) > 1:
            edges += bucket_edges(buckets[key], cfg.threshold)
    return clusters(edges)
