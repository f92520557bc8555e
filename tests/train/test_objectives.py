"""Objectives and the optimizer schedule against hand-computed numbers."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmforge.train.objectives import causal_lm_loss, masked_lm_loss, token_log_likelihood
from lmforge.train.optim import OptimConfig, learning_rate_schedule, make_optimizer


def test_causal_lm_loss_by_hand():
    # Two positions, vocab 3. Position 0: logits (0, ln 2, 0) → p(target=1) = 2/4; position 1 masked.
    logits = jnp.array([[[0.0, math.log(2.0), 0.0], [5.0, 0.0, 0.0]]])
    targets = jnp.array([[1, 2]])
    weights = jnp.array([[1.0, 0.0]])
    loss, m = causal_lm_loss(logits, targets, weights)
    assert float(loss) == pytest.approx(-math.log(0.5), rel=1e-6)
    assert float(m["accuracy"]) == 1.0            # argmax of position 0 is token 1
    assert float(m["weight_sum"]) == 1.0
    assert float(m["nll_sum"]) == pytest.approx(math.log(2.0), rel=1e-6)


def test_z_loss_by_hand():
    logits = jnp.zeros((1, 1, 4))                  # log Z = log 4
    loss, m = causal_lm_loss(logits, jnp.array([[0]]), jnp.ones((1, 1)), z_loss=1e-2)
    assert float(m["z_loss"]) == pytest.approx(math.log(4.0) ** 2, rel=1e-6)
    assert float(loss) == pytest.approx(math.log(4.0) + 1e-2 * math.log(4.0) ** 2, rel=1e-6)


def test_loss_weights_and_dtype():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 5, 7)).astype(np.float32)
    targets = rng.integers(0, 7, size=(2, 5))
    weights = rng.integers(0, 2, size=(2, 5)).astype(np.float32)
    log_p = logits[np.arange(2)[:, None], np.arange(5), targets] - np.log(np.exp(logits).sum(-1))
    expected = -(log_p * weights).sum() / weights.sum()
    loss, _ = causal_lm_loss(jnp.asarray(logits, jnp.bfloat16), targets, weights)
    assert loss.dtype == jnp.float32
    assert float(loss) == pytest.approx(expected, rel=2e-2)   # bf16 input, float32 math
    loss32, _ = causal_lm_loss(jnp.asarray(logits), targets, weights)
    assert float(loss32) == pytest.approx(expected, rel=1e-5)
    lp, _ = token_log_likelihood(jnp.asarray(logits), jnp.asarray(targets))
    np.testing.assert_allclose(lp, log_p, rtol=1e-5)


def test_schedule_warmup_and_cosine():
    cfg = OptimConfig(lr=1e-3, min_lr=1e-4, warmup_steps=10, decay_steps=110)
    s = learning_rate_schedule(cfg, total_steps=1000)
    assert float(s(0)) == 0.0
    assert float(s(5)) == pytest.approx(5e-4)
    assert float(s(10)) == pytest.approx(1e-3)
    assert float(s(60)) == pytest.approx(1e-4 + 0.5 * (1e-3 - 1e-4), rel=1e-5)   # half way down the cosine
    assert float(s(110)) == pytest.approx(1e-4)
    assert float(s(500)) == pytest.approx(1e-4)


def test_weight_decay_skips_vectors():
    tx, _ = make_optimizer(OptimConfig(lr=1.0, min_lr=1.0, warmup_steps=0, weight_decay=0.5, grad_clip=0), 10)
    params = {"w": jnp.ones((2, 2)), "b": jnp.ones((2,))}
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zeros, tx.init(params), params)
    np.testing.assert_allclose(updates["w"], -0.5 * np.ones((2, 2)))       # decayed: -lr * wd * w
    np.testing.assert_allclose(updates["b"], np.zeros(2))                  # not decayed


def test_optim_config_errors():
    with pytest.raises(ValueError, match="min_lr"):
        OptimConfig(lr=1e-4, min_lr=1e-3)


def test_masked_lm_loss_counts_chosen_positions_only():
    # two positions, vocabulary 3; only position 1 was chosen: loss = -log softmax([0, 2, 0])[1]
    logits = jnp.array([[[5.0, 0.0, 0.0], [0.0, 2.0, 0.0]]])
    loss, m = masked_lm_loss(logits, jnp.array([[2, 1]]), jnp.array([[0.0, 1.0]]))
    expected = -(2.0 - math.log(math.exp(0) + math.exp(2) + math.exp(0)))
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert float(m["accuracy"]) == 1.0 and float(m["weight_sum"]) == 1.0
