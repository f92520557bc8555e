"""Objective transforms of packed batches: MLM weights, span corruption round trip, reversal."""

import re
import numpy as np
import pytest

from lmforge.data.corruption import span_uncorrupt
from lmforge.data.objectives import Objective, ObjectiveConfig, seq2seq_lengths


def packed(b=4, t=32, seed=0):
    tok = np.random.default_rng(seed).integers(30, 64, size=(b, t)).astype(np.int32)
    seg = np.ones((b, t), np.int32)
    seg[1, :10], seg[1, 10:28], seg[1, 28:] = 1, 2, 0   # two documents, then padding
    return {"inputs": tok, "targets": tok, "weights": (seg != 0).astype(np.float32), "segment_ids": seg,
            "positions": np.tile(np.arange(t, dtype=np.int32), (b, 1))}


def test_mlm_scores_only_chosen_real_tokens(fake_tok):
    batch = packed(b=64, t=64)
    out = Objective(ObjectiveConfig(kind="mlm"), fake_tok, 64)(batch, np.random.default_rng(0))
    np.testing.assert_array_equal(out["targets"], batch["inputs"])
    assert set(np.unique(out["weights"])) <= {0.0, 1.0}
    assert not out["weights"][batch["segment_ids"] == 0].any()
    changed = out["inputs"] != batch["inputs"]
    assert not (changed & (out["weights"] == 0)).any()                      # only chosen tokens change
    assert abs(out["weights"].mean() - 0.15) < 0.01
    np.testing.assert_array_equal(out["segment_ids"], batch["segment_ids"])


@pytest.mark.parametrize("t", [32, 64, 128])
def test_span_rows_reconstruct_and_have_fixed_shapes(t, fake_tok):
    batch = packed(t=t)
    enc_len, dec_len = seq2seq_lengths(ObjectiveConfig(kind="span"), t)
    out = Objective(ObjectiveConfig(kind="span"), fake_tok, t)(batch, np.random.default_rng(1))
    assert out["encoder_inputs"].shape == (4, enc_len) and out["targets"].shape == (4, dec_len)
    sentinels = list(range(10, 26))
    for row in range(4):
        real = batch["inputs"][row][batch["segment_ids"][row] != 0]
        enc = out["encoder_inputs"][row][out["encoder_segment_ids"][row] != 0]
        tgt = out["targets"][row][out["weights"][row] != 0]
        assert enc[-1] == 3 and tgt[-1] == 3                               # both end with EOS
        np.testing.assert_array_equal(span_uncorrupt(enc[:-1], tgt[:-1], sentinels=sentinels), real)
        # teacher forcing: decoder inputs are BOS + targets shifted right
        n = len(tgt)
        np.testing.assert_array_equal(out["inputs"][row][:n], np.concatenate([[2], tgt[:-1]]))


def test_reverse_task(fake_tok):
    batch = packed(t=16)
    out = Objective(ObjectiveConfig(kind="reverse"), fake_tok, 16)(batch, np.random.default_rng(0))
    lengths = out["encoder_segment_ids"].sum(1)
    assert len(set(lengths.tolist())) > 1 and lengths.max() <= 15          # random prefix lengths
    for row in range(4):
        n = lengths[row]
        real = batch["inputs"][row][:n]
        np.testing.assert_array_equal(out["encoder_inputs"][row][:n], real)
        np.testing.assert_array_equal(out["targets"][row][:n + 1], np.concatenate([real[::-1], [3]]))
        assert out["weights"][row].sum() == n + 1 and not out["encoder_inputs"][row][n:].any()


def test_objective_errors():
    with pytest.raises(ValueError, match=r"objective.kind='clm'; expected one of"):
        ObjectiveConfig(kind="clm")

    class CharTok:
        vocab_size, bos_id, eos_id = 40, -1, -1

        def token_id(self, piece):
            raise KeyError(piece)
    with pytest.raises(ValueError, match=r"needs a sentencepiece tokenizer"):
        Objective(ObjectiveConfig(kind="mlm"), CharTok(), 16)


@pytest.mark.parametrize("field, value, expected", [
    ("mask_rate", 1.5, "objective.mask_rate=1.5: expected a fraction in (0, 1)"),
    ("noise_density", 0.0, "objective.noise_density=0.0: expected a fraction in (0, 1)"),
    ("mean_span_length", 0.5, "objective.mean_span_length=0.5: expected >= 1 (tokens)"),
])
def test_objective_fields_are_checked_when_the_config_is_made(field, value, expected):
    """Before, mask_rate=1.5 was caught at the first batch (after the tokenizer was trained), naming a function."""
    from lmforge.data.objectives import ObjectiveConfig
    with pytest.raises(ValueError, match=re.escape(expected)):
        ObjectiveConfig(kind="mlm", **{field: value})
