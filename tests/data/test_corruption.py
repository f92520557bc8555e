"""BERT masking and T5 span corruption: statistics over large samples, exact inversion, determinism."""

import numpy as np
import pytest

from lmforge.data.corruption import mask_tokens, random_spans_noise_mask, span_corrupt, span_uncorrupt

V, MASK, PAD, CLS, SEP = 1000, 4, 0, 2, 3
SPECIAL = (PAD, 1, CLS, SEP)


def batch(rng, rows=2000, length=128):
    ids = rng.integers(10, V, (rows, length))
    ids[:, 0], ids[:, -1] = CLS, SEP
    ids[:, -10:-1] = PAD                           # padding before the final [SEP]
    return ids


def test_mask_tokens_statistics_match_bert():
    ids = batch(np.random.default_rng(0))
    out = mask_tokens(ids, np.random.default_rng(1), mask_id=MASK, vocab_size=V, special_ids=SPECIAL)
    chosen = out["weights"] > 0
    ordinary = ~np.isin(ids, SPECIAL)
    assert not chosen[~ordinary].any()                               # specials are never chosen ...
    assert (out["inputs"][~ordinary] == ids[~ordinary]).all()         # ... nor changed
    assert abs(chosen.sum() / ordinary.sum() - 0.15) < 0.01
    n = chosen.sum()
    masked = (out["inputs"] == MASK) & chosen
    same = (out["inputs"] == ids) & chosen
    random = chosen & ~masked & ~same
    assert abs(masked.sum() / n - 0.8) < 0.01
    # a random draw equals the original with probability 1 / (number of ordinary ids)
    assert abs(same.sum() / n - (0.1 + 0.1 / (V - 5))) < 0.01
    assert abs(random.sum() / n - 0.1 * (1 - 1 / (V - 5))) < 0.01
    assert not np.isin(out["inputs"][random], (*SPECIAL, MASK)).any()  # random ids are never special
    assert (out["inputs"] != ids).sum() == masked.sum() + random.sum()  # nothing else changed
    assert (out["targets"] == ids).all() and out["inputs"].dtype == ids.dtype
    # the random replacements cover the vocabulary
    assert len(np.unique(out["inputs"][random])) > 0.9 * (V - 10)


def test_mask_tokens_is_deterministic_per_seed():
    ids = batch(np.random.default_rng(0), rows=4)
    a, b, c = (mask_tokens(ids, np.random.default_rng(s), mask_id=MASK, vocab_size=V, special_ids=SPECIAL)
               for s in (7, 7, 8))
    assert all((a[k] == b[k]).all() for k in a) and not (a["weights"] == c["weights"]).all()


def test_mask_tokens_rejects_bad_input():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 1000\)"):
        mask_tokens(np.array([5, 1000]), rng, mask_id=MASK, vocab_size=V, special_ids=SPECIAL)
    with pytest.raises(ValueError, match="mask_id=1000 is outside"):
        mask_tokens(np.array([5]), rng, mask_id=V, vocab_size=V, special_ids=SPECIAL)
    with pytest.raises(ValueError, match="rate"):
        mask_tokens(np.array([5]), rng, mask_id=MASK, vocab_size=V, special_ids=SPECIAL, rate=0.0)


SENTINELS = list(range(V - 1, V - 101, -1))                        # T5: <extra_id_0> is the last id


@pytest.mark.parametrize("length", [2, 3, 17, 100, 512])
def test_span_corruption_round_trips_and_has_t5_shape(length):
    rng = np.random.default_rng(length)
    for _ in range(50):
        ids = rng.integers(10, V - 100, length)
        out = span_corrupt(ids, rng, sentinels=SENTINELS, eos_id=1)
        assert span_uncorrupt(out["inputs"], out["targets"], sentinels=SENTINELS, eos_id=1) == ids.tolist()
        inputs, targets = out["inputs"][:-1], out["targets"][:-1]
        k = int(np.isin(inputs, SENTINELS).sum())
        # sentinels appear in order 0, 1, ..., k-1 in both; targets start with sentinel 0
        assert inputs[np.isin(inputs, SENTINELS)].tolist() == SENTINELS[:k]
        assert targets[np.isin(targets, SENTINELS)].tolist() == SENTINELS[:k] and targets[0] == SENTINELS[0]
        noise = len(targets) - k
        assert noise == min(max(round(length * 0.15), 1), length - 1)     # exactly T5's count
        assert len(inputs) == length - noise + k
        assert inputs[0] not in SENTINELS                                 # a kept span comes first


def test_span_corruption_statistics():
    rng = np.random.default_rng(0)
    noise_tokens = spans = 0
    lengths = []
    for _ in range(2000):
        mask = random_spans_noise_mask(512, rng)
        starts = mask & ~np.concatenate([[False], mask[:-1]])
        noise_tokens += mask.sum()
        spans += starts.sum()
        edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(int), [0]])))
        lengths += (edges[1::2] - edges[::2]).tolist()
        assert not mask[0] and mask[-1]
    assert noise_tokens / (2000 * 512) == pytest.approx(77 / 512)          # round(512 * 0.15) = 77
    assert noise_tokens / spans == pytest.approx(77 / 26)                  # round(77 / 3) = 26 spans
    assert min(lengths) >= 1 and abs(np.mean(lengths) - 3.0) < 0.05
    # span lengths are a random composition, not all equal: geometric-like spread
    assert np.std(lengths) > 1.5 and max(lengths) >= 12


def test_span_corruption_is_deterministic_and_checks_sentinels():
    ids = np.arange(10, 110)
    a, b = (span_corrupt(ids, np.random.default_rng(3), sentinels=SENTINELS) for _ in range(2))
    assert (a["inputs"] == b["inputs"]).all() and (a["targets"] == b["targets"]).all()
    with pytest.raises(ValueError, match="5 noise spans need 5 sentinel ids, got 2"):
        span_corrupt(ids, np.random.default_rng(3), sentinels=SENTINELS[:2])
    with pytest.raises(ValueError, match="already contains a sentinel id"):
        span_corrupt(np.array([SENTINELS[0], 20, 30, 40]), np.random.default_rng(0), sentinels=SENTINELS)
    with pytest.raises(ValueError, match="at least 2 tokens"):
        span_corrupt(np.array([20]), np.random.default_rng(0), sentinels=SENTINELS)
