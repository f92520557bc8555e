"""Objectives, chunked log-probs and the optimizer schedule against hand-computed numbers."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmforge.model import DEFAULT_RULES, token_logprobs, use_mesh
from lmforge.train.mesh import MeshConfig, make_mesh
from lmforge.train.objectives import causal_lm_loss, masked_lm_loss
from lmforge.train.optim import OptimConfig, learning_rate_schedule, make_optimizer

ONE_DEVICE = make_mesh(MeshConfig(data=1), devices=jax.devices()[:1])


def from_logits(logits, targets, **kw):
    """token_logprobs of given logits: hidden = the logits, head = the identity."""
    logits = jnp.asarray(logits)
    with use_mesh(ONE_DEVICE):
        return token_logprobs(logits, jnp.eye(logits.shape[-1], dtype=logits.dtype), jnp.asarray(targets), **kw)


def lm_loss_of(logits, targets, weights, **kw):
    lp = from_logits(logits, targets)
    return causal_lm_loss(lp.logprobs, jnp.asarray(weights), correct=lp.correct, log_z=lp.log_z, **kw)


def test_causal_lm_loss_by_hand():
    # Two positions, vocab 3. Position 0: logits (0, ln 2, 0) → p(target=1) = 2/4; position 1 masked.
    logits = jnp.array([[[0.0, math.log(2.0), 0.0], [5.0, 0.0, 0.0]]])
    targets = jnp.array([[1, 2]])
    weights = jnp.array([[1.0, 0.0]])
    loss, m = lm_loss_of(logits, targets, weights)
    assert float(loss) == pytest.approx(-math.log(0.5), rel=1e-6)
    assert float(m["token_accuracy"]) == 1.0            # argmax of position 0 is token 1
    assert float(m["weight_sum"]) == 1.0
    assert float(m["loss"]) == pytest.approx(math.log(2.0), rel=1e-6)


def test_z_loss_by_hand():
    logits = jnp.zeros((1, 1, 4))                  # log Z = log 4
    loss, m = lm_loss_of(logits, jnp.array([[0]]), jnp.ones((1, 1)), z_loss=1e-2)
    assert float(m["z_loss"]) == pytest.approx(math.log(4.0) ** 2, rel=1e-6)
    assert float(loss) == pytest.approx(math.log(4.0) + 1e-2 * math.log(4.0) ** 2, rel=1e-6)
    assert float(m["loss"]) == pytest.approx(math.log(4.0), rel=1e-6)          # the metric: cross-entropy alone
    with pytest.raises(ValueError, match="needs log_z"):
        causal_lm_loss(jnp.zeros((1, 1)), jnp.ones((1, 1)), z_loss=1e-2)


def test_loss_weights_and_dtype():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 5, 7)).astype(np.float32)
    targets = rng.integers(0, 7, size=(2, 5))
    weights = rng.integers(0, 2, size=(2, 5)).astype(np.float32)
    log_p = logits[np.arange(2)[:, None], np.arange(5), targets] - np.log(np.exp(logits).sum(-1))
    expected = -(log_p * weights).sum() / weights.sum()
    loss, _ = lm_loss_of(jnp.asarray(logits, jnp.bfloat16), targets, weights)
    assert loss.dtype == jnp.float32
    assert float(loss) == pytest.approx(expected, rel=2e-2)   # bf16 input, float32 math
    loss32, _ = lm_loss_of(jnp.asarray(logits), targets, weights)
    assert float(loss32) == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(from_logits(logits, targets).logprobs, log_p, rtol=1e-5)


@pytest.mark.parametrize("chunk", [7, 64, 100])       # 1000 = 143 x 7 (+1 padded), 16 x 64 (-24), 10 x 100
def test_chunked_logprobs_equal_the_full_computation(chunk):
    ks = jax.random.split(jax.random.key(0), 4)
    hidden = jax.random.normal(ks[0], (2, 9, 16))
    head, bias = jax.random.normal(ks[1], (16, 1000)), jax.random.normal(ks[2], (1000,))
    targets = jax.random.randint(ks[3], (2, 9), 0, 1000)
    with use_mesh(ONE_DEVICE):
        full = token_logprobs(hidden, head, targets, bias=bias)
        part = token_logprobs(hidden, head, targets, bias=bias, vocab_chunk=chunk)
        np.testing.assert_allclose(part.logprobs, full.logprobs, atol=1e-5)
        np.testing.assert_allclose(part.log_z, full.log_z, atol=1e-5)
        np.testing.assert_array_equal(part.correct, full.correct)
        grad = lambda c: jax.grad(lambda h, w: token_logprobs(h, w, targets, bias=bias, vocab_chunk=c).logprobs.sum(),
                                  argnums=(0, 1))(hidden, head)
        for a, b in zip(grad(chunk), grad(10**6)):
            np.testing.assert_allclose(a, b, atol=1e-5)


def _dot_dtypes(jaxpr) -> list[tuple[str, str]]:
    """The operand dtypes of every dot_general in a jaxpr and its sub-jaxprs (scan, checkpoint, custom_vjp)."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            found.append(tuple(str(v.aval.dtype) for v in eqn.invars))
        for p in eqn.params.values():
            for sub in (p if isinstance(p, (list, tuple)) else [p]):
                inner = sub if hasattr(sub, "eqns") else getattr(sub, "jaxpr", None)
                if hasattr(inner, "eqns"):
                    found += _dot_dtypes(inner)
    return found


@pytest.mark.parametrize("chunk", [16, 10**6])
def test_bf16_logits_backward_runs_bf16_matmuls(chunk):
    """The logits are float32 (float32 accumulation) but their backward multiplies bf16 by bf16
    (``layers.einsum_f32``): autodiff of a float32 result gave (float32, bf16) dots, which XLA runs as
    float32 / TF32 matmuls. The xla attention's scores likewise. Gradients within bf16 rounding of
    float32's; in float32, exactly autodiff's."""
    from lmforge.model.attention import xla_attention

    ks = jax.random.split(jax.random.key(2), 3)
    hidden, head = jax.random.normal(ks[0], (2, 8, 16)), 0.3 * jax.random.normal(ks[1], (16, 64))
    targets = jax.random.randint(ks[2], (2, 8), 0, 64)
    loss = lambda h, w: token_logprobs(h, w, targets, vocab_chunk=chunk).logprobs.sum()
    grad = jax.grad(loss, argnums=(0, 1))
    bf16 = (hidden.astype(jnp.bfloat16), head.astype(jnp.bfloat16))
    with use_mesh(ONE_DEVICE):
        dots = _dot_dtypes(jax.make_jaxpr(grad)(*bf16).jaxpr)
        assert len(dots) >= 3 and set(dots) == {("bfloat16", "bfloat16")}, dots
        exact = jax.grad(lambda h, w: jnp.take_along_axis(jax.nn.log_softmax(
            jnp.matmul(h, w, preferred_element_type=jnp.float32)), targets[..., None], -1).sum(), argnums=(0, 1))
        for got, ref, low in zip(grad(hidden, head), exact(hidden, head), grad(*bf16)):
            np.testing.assert_allclose(got, ref, atol=1e-5)
            np.testing.assert_allclose(low.astype(jnp.float32), ref, atol=2e-2 * float(jnp.abs(ref).max()))
    q, k = (x.astype(jnp.bfloat16) for x in jax.random.normal(ks[0], (2, 2, 8, 4, 16)))
    mask = jnp.ones((2, 1, 8, 8), bool)
    attn = jax.grad(lambda q, k: xla_attention(q, k, k, mask).astype(jnp.float32).sum(), argnums=(0, 1))
    assert all(d == ("bfloat16", "bfloat16") for d in _dot_dtypes(jax.make_jaxpr(attn)(q, k).jaxpr))


def test_float16_logits_keep_autodiff_float32_derivatives():
    """float16 has no exponent range for the cotangents of a mean loss over many tokens (p / N flushes
    to zero below 6e-8), so ``einsum_f32`` rounds them to 16 bits for bf16 only: float16 operands get
    exactly autodiff's derivatives; forward mode works too (a custom_jvp)."""
    from lmforge.model.layers import einsum_f32

    ks = jax.random.split(jax.random.key(3), 3)
    a, b = jax.random.normal(ks[0], (8192, 16)).astype(jnp.float16), jax.random.normal(ks[1], (16, 512)).astype(jnp.float16)
    targets = jax.random.randint(ks[2], (8192,), 0, 512)

    def loss(product):
        return lambda a, b: jnp.take_along_axis(jax.nn.log_softmax(product(a, b)), targets[:, None], -1).mean()
    plain = lambda a, b: jnp.einsum("mk,kn->mn", a, b, preferred_element_type=jnp.float32)
    ours = functools.partial(einsum_f32, "mk,kn->mn")
    for got, ref in zip(jax.grad(loss(ours), (0, 1))(a, b), jax.grad(loss(plain), (0, 1))(a, b)):
        np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(jax.jvp(ours, (a, b), (a, b))[1], jax.jvp(plain, (a, b), (a, b))[1])


def test_chunked_logprobs_sharded_2x2x2_equal_one_device():
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    ks = jax.random.split(jax.random.key(1), 3)
    hidden, head = jax.random.normal(ks[0], (4, 6, 8)), jax.random.normal(ks[1], (8, 256))
    targets = jax.random.randint(ks[2], (4, 6), 0, 256)
    f = jax.jit(lambda h, w, t: token_logprobs(h, w, t, vocab_chunk=32).logprobs)
    with use_mesh(mesh):
        h = jax.device_put(hidden, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp"))))
        w = jax.device_put(head, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, "tensor")))
        sharded = f(h, w, targets)
    with use_mesh(ONE_DEVICE):
        single = token_logprobs(hidden, head, targets).logprobs
    np.testing.assert_allclose(sharded, single, atol=1e-5)


def test_schedule_warmup_and_cosine():
    cfg = OptimConfig(lr=1e-3, min_lr=1e-4, warmup_steps=10, decay_steps=110)
    s = learning_rate_schedule(cfg, total_steps=1000)
    assert float(s(0)) == pytest.approx(1e-3 / 11)          # nanoGPT's (it + 1) / (warmup + 1): never 0
    assert float(s(5)) == pytest.approx(6e-3 / 11)
    assert float(s(9)) == pytest.approx(1e-3 * 10 / 11)
    assert float(s(10)) == pytest.approx(1e-3)
    assert float(s(60)) == pytest.approx(1e-4 + 0.5 * (1e-3 - 1e-4), rel=1e-5)   # half way down the cosine
    assert float(s(110)) == pytest.approx(1e-4)
    assert float(s(500)) == pytest.approx(1e-4)


def test_weight_decay_skips_biases_and_norm_scales_by_path():
    tx, _ = make_optimizer(OptimConfig(lr=1.0, min_lr=1.0, warmup_steps=0, weight_decay=0.5, grad_clip=0), 10)
    params = {"proj": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones((2,))}, "norm": {"scale": jnp.ones((3, 2))},
              "vec": jnp.ones((2,))}
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zeros, tx.init(params), params)
    np.testing.assert_allclose(updates["proj"]["kernel"], -0.5 * np.ones((2, 2)))   # decayed: -lr * wd * w
    np.testing.assert_allclose(updates["proj"]["bias"], np.zeros(2))                # not decayed
    np.testing.assert_allclose(updates["norm"]["scale"], np.zeros((3, 2)))          # 2-D (stacked), not decayed
    np.testing.assert_allclose(updates["vec"], -0.5 * np.ones(2))                   # a path rule, not a rank rule


def test_optim_config_errors():
    with pytest.raises(ValueError, match="min_lr"):
        OptimConfig(lr=1e-4, min_lr=1e-3)


def test_masked_lm_loss_counts_chosen_positions_only():
    # two positions, vocabulary 3; only position 1 was chosen: loss = -log softmax([0, 2, 0])[1]
    logits = jnp.array([[[5.0, 0.0, 0.0], [0.0, 2.0, 0.0]]])
    lp = from_logits(logits, jnp.array([[2, 1]]))
    loss, m = masked_lm_loss(lp.logprobs, jnp.array([[0.0, 1.0]]), correct=lp.correct)
    expected = -(2.0 - math.log(math.exp(0) + math.exp(2) + math.exp(0)))
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert float(m["token_accuracy"]) == 1.0 and float(m["weight_sum"]) == 1.0


@pytest.mark.parametrize("warmup", [0, 1, 100])
def test_the_first_update_moves_the_parameters(warmup):
    """Issue 14: a warmup starting at 0 made update 0 a no-op that still counted as a step."""
    cfg = OptimConfig(lr=1e-3, min_lr=1e-4, warmup_steps=warmup, decay_steps=1000, weight_decay=0.0)
    assert float(learning_rate_schedule(cfg, 1000)(0)) > 0
    tx, _ = make_optimizer(cfg, 1000)
    params = {"kernel": jnp.ones((3, 3))}
    updates, _ = tx.update({"kernel": jnp.full((3, 3), 0.5)}, tx.init(params), params)
    assert float(jnp.abs(updates["kernel"]).min()) > 0


def test_lm_loss_vocab_chunk_changes_memory_not_the_loss():
    """``lm_loss(vocab_chunk=...)``: chunks of the vocabulary (recomputed in the backward pass) and
    the whole vocabulary in one (a chunk as wide, or 0) give the same loss and gradients; the runs'
    configs refuse a negative chunk."""
    from lmforge.align.sft import SFTConfig
    from lmforge.train.pretrain import PretrainConfig
    from flax import nnx

    from lmforge.model import ModelConfig, axis_rules, build_model, create_sharded
    from lmforge.train.pretrain import lm_loss

    cfg = ModelConfig.gpt2_tiny(vocab_size=512, max_seq_len=32)
    mesh = make_mesh(MeshConfig(data=1), devices=jax.devices()[:1])
    with axis_rules(DEFAULT_RULES):
        graphdef, params, _ = create_sharded(lambda: build_model(cfg, rngs=nnx.Rngs(0)), mesh, DEFAULT_RULES)
    tokens = np.random.default_rng(0).integers(0, 512, (2, 17)).astype(np.int32)
    batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "weights": np.ones((2, 16), np.float32),
             "segment_ids": np.ones((2, 16), np.int32), "positions": np.tile(np.arange(16, dtype=np.int32), (2, 1))}

    def loss_and_grad(chunk):
        fn = jax.value_and_grad(lm_loss(graphdef, cfg, vocab_chunk=chunk), has_aux=True)
        with jax.set_mesh(mesh), axis_rules(DEFAULT_RULES):
            scans = str(jax.make_jaxpr(fn)(params, {}, batch, jax.random.key(0))).count("scan[")
            (loss, _), grads = jax.jit(fn)(params, {}, batch, jax.random.key(0))
        return loss, grads, scans

    (chunked, g_chunked, scans), (whole, g_whole, no_scans) = loss_and_grad(96), loss_and_grad(512)
    assert scans > 0 and no_scans == 0   # 96 columns a chunk: scanned; 512: the whole vocabulary at once
    np.testing.assert_allclose(chunked, whole, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), g_chunked, g_whole)
    zero, g_zero, zero_scans = loss_and_grad(0)
    assert zero_scans == 0 and float(zero) == float(whole)
    jax.tree.map(np.testing.assert_array_equal, g_zero, g_whole)
    for config in (PretrainConfig, SFTConfig):
        assert config(vocab_chunk=0).vocab_chunk == 0 and config(vocab_chunk=np.int64(96)).vocab_chunk == 96
        for bad in (-1, True, 2.5):
            with pytest.raises(ValueError, match=rf"vocab_chunk={bad!r}: expected"):
                config(vocab_chunk=bad)


@pytest.mark.parametrize("kind", ["dense", "moe_capacity"])
def test_lm_loss_without_a_document_mask_equals_the_masked_loss_on_windows(kind):
    """``lm_loss(document_mask=False)`` (nanoGPT's windows: one document per row, trailing padding of
    weight 0) gives the loss, metrics and gradients of the masked one -- also for an MoE model with
    expert capacity, whose router must still skip the padding; an encoder model refuses it."""
    from flax import nnx

    from lmforge.model import ModelConfig, axis_rules, build_model, create_sharded
    from lmforge.train.pretrain import lm_loss

    cfg = (ModelConfig.llama_tiny(attention="dot_product") if kind == "dense" else
           ModelConfig.llama_moe_tiny(attention="dot_product", moe_capacity_factor=1.0))
    mesh = make_mesh(MeshConfig(data=1), devices=jax.devices()[:1])
    with axis_rules(DEFAULT_RULES):
        graphdef, params, _ = create_sharded(lambda: build_model(cfg, rngs=nnx.Rngs(0)), mesh, DEFAULT_RULES)
    tokens = np.random.default_rng(1).integers(0, cfg.vocab_size, (2, 33)).astype(np.int32)
    real = np.ones((2, 32), np.int32)
    real[1, 20:] = 0                                       # the last window's tail is padding
    batch = {"inputs": tokens[:, :-1] * real, "targets": tokens[:, 1:] * real, "weights": real.astype(np.float32),
             "segment_ids": real, "positions": np.tile(np.arange(32, dtype=np.int32), (2, 1))}

    def loss_and_grad(document_mask):
        fn = jax.value_and_grad(lm_loss(graphdef, cfg, document_mask=document_mask), has_aux=True)
        with jax.set_mesh(mesh), axis_rules(DEFAULT_RULES):
            (loss, metrics), grads = jax.jit(fn)(params, {}, batch, jax.random.key(0))
        return (loss, metrics), grads

    (masked, g_masked), (plain, g_plain) = loss_and_grad(True), loss_and_grad(False)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), plain, masked)   # loss and metrics
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5), g_plain, g_masked)
    with pytest.raises(ValueError, match="document_mask=False needs a decoder-only model"):
        lm_loss(graphdef, ModelConfig.bert_tiny(), document_mask=False)
