"""Filtering and sampling one step: the top-p boundary (with float32 rounding), top-k,
temperature 0 as argmax, sampled frequencies against the softmax, and SamplingConfig's checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmforge.infer import SamplingConfig, filter_logits, sample_token
from lmforge.infer.sampler import NEG_INF


def kept(logits) -> np.ndarray:
    return np.asarray(logits) > NEG_INF / 2


# ------------------------------------------------------------------------------ filter / sample
def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05], [0.05, 0.15, 0.3, 0.5]]))
    np.testing.assert_array_equal(kept(filter_logits(logits, 0, 0.8)),
                                  [[1, 1, 0, 0], [0, 0, 1, 1]])
    np.testing.assert_array_equal(kept(filter_logits(logits, 0, 0.9)),
                                  [[1, 1, 1, 0], [0, 1, 1, 1]])
    # The top token survives however small top_p is; kept logits are unchanged.
    out = filter_logits(logits, 0, 1e-6)
    np.testing.assert_array_equal(kept(out), [[1, 0, 0, 0], [0, 0, 0, 1]])
    np.testing.assert_allclose(out[0, 0], logits[0, 0])
    np.testing.assert_array_equal(filter_logits(logits, 0, 1.0), logits)   # off


def test_top_k_keeps_the_k_largest():
    logits = jnp.array([[0.1, 2.0, -1.0, 0.7, 1.5], [3.0, -2.0, 0.0, 0.5, 0.2]])
    np.testing.assert_array_equal(kept(filter_logits(logits, 1, 1.0)),
                                  [[0, 1, 0, 0, 0], [1, 0, 0, 0, 0]])
    np.testing.assert_array_equal(kept(filter_logits(logits, 3, 1.0)),
                                  [[0, 1, 0, 1, 1], [1, 0, 0, 1, 1]])
    # top-k then top-p: of the top 3 of row 0 (softmax over them ≈ .53, .32, .15) top_p=0.6 keeps 2.
    np.testing.assert_array_equal(kept(filter_logits(logits[:1], 3, 0.6)), [[0, 1, 0, 0, 1]])


def test_top_p_boundary_is_robust_to_float32_rounding():
    # 0.5 + 0.3 rounds to 0.79999995 in float32: the mass before the third token must still count
    # as reaching top_p=0.8 (issue 14: lmforge kept {0, 1, 3}).
    logits = jnp.log(jnp.array([[0.3, 0.1, 0.1, 0.5]], jnp.float32))
    np.testing.assert_array_equal(kept(filter_logits(logits, 0, 0.8)), [[1, 0, 0, 1]])
    # per-row parameters: row 0 top-p 0.8, row 1 top-k 1
    both = jnp.concatenate([logits, logits])
    np.testing.assert_array_equal(kept(filter_logits(both, jnp.array([0, 1]), jnp.array([0.8, 1.0]))),
                                  [[1, 0, 0, 1], [0, 0, 0, 1]])


def test_temperature_zero_is_argmax():
    logits = jax.random.normal(jax.random.key(0), (16, 50))
    for kw in (dict(top_k=0, top_p=1.0), dict(top_k=5, top_p=0.3)):
        out, lp = sample_token(logits, jax.random.key(1), 0.0, kw["top_k"], kw["top_p"])
        np.testing.assert_array_equal(out, np.argmax(logits, -1))
        assert out.dtype == jnp.int32 and out.shape == (16,)
        np.testing.assert_array_equal(lp, 0.0)                     # a point mass


def test_sampling_frequencies_match_softmax_and_filters_hold():
    n = 20_000
    logits = jnp.log(jnp.array([0.4, 0.3, 0.2, 0.07, 0.03]))
    batch = jnp.broadcast_to(logits, (n, 5))                     # n independent draws in one call
    draws = np.asarray(sample_token(batch, jax.random.key(0), 1.0, 0, 1.0)[0])
    np.testing.assert_allclose(np.bincount(draws, minlength=5) / n, [0.4, 0.3, 0.2, 0.07, 0.03], atol=0.015)
    # temperature 2 flattens: p ∝ sqrt(p0)
    hot = np.asarray(sample_token(batch, jax.random.key(1), 2.0, 0, 1.0)[0])
    np.testing.assert_allclose(np.bincount(hot, minlength=5) / n, jax.nn.softmax(logits / 2), atol=0.015)
    # top-k 2: only the two largest, renormalized (0.4 : 0.3)
    top2 = np.asarray(sample_token(batch, jax.random.key(2), 1.0, 2, 1.0)[0])
    assert set(np.unique(top2)) <= {0, 1}
    np.testing.assert_allclose(np.mean(top2 == 0), 4 / 7, atol=0.015)
    # top-p 0.65: mass before token 2 is 0.7 >= 0.65, so {0, 1}
    nucleus, nlp = sample_token(batch, jax.random.key(3), 1.0, 0, 0.65)
    nucleus = np.asarray(nucleus)
    assert set(np.unique(nucleus)) <= {0, 1}
    # the sampling log-prob is under the renormalised nucleus: log(0.4 / 0.7) for token 0
    np.testing.assert_allclose(np.asarray(nlp)[nucleus == 0][:5], np.log(0.4 / 0.7), rtol=1e-5)


def test_sampling_config_rejects_bad_values():
    for kw in (dict(max_new_tokens=0), dict(temperature=-1.0), dict(top_k=-1), dict(top_p=0.0), dict(top_p=1.5),
               dict(n=0), dict(stop_strings=("",))):
        with pytest.raises(ValueError, match="sampling"):
            SamplingConfig(**kw)
