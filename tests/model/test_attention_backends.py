"""Attention backends against the ``xla`` reference: the Pallas flash (GPU) and splash (TPU) kernels
run in Pallas's interpreter on CPU, the grouped-query einsum, and cuDNN's causal mask type through
``jax.nn.dot_product_attention``'s XLA implementation."""

import dataclasses
import functools
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmforge.model import DecoderLM, EncoderLM, ModelConfig, ShardingError, create_sharded
from lmforge.model.attention import attention_mask, pallas_attention, xla_attention
from lmforge.model.sharding import use_mesh
from lmforge.train.mesh import DEFAULT_RULES, MeshConfig, make_mesh

pytestmark = pytest.mark.filterwarnings("ignore:.*Pallas's interpreter")

ONE_DEVICE = make_mesh(MeshConfig(data=1), devices=jax.devices()[:1])
B, T, N, K, H = 2, 40, 4, 2, 16          # T = 40: not a multiple of any kernel block (padded)
SEGMENTS = jnp.array([[1] * 22 + [2] * 14 + [0] * 4, [1] * 40])   # two packed documents, then padding
REAL = np.asarray(SEGMENTS) > 0


def qkv(seed=0):
    ks = jax.random.split(jax.random.key(seed), 3)
    return (jax.random.normal(ks[0], (B, T, N, H)), jax.random.normal(ks[1], (B, T, K, H)),
            jax.random.normal(ks[2], (B, T, K, H)))


def reference(q, k, v, causal):
    slots = (jnp.arange(T), jnp.arange(T)) if causal else (None, None)
    return xla_attention(q, k, v, attention_mask(SEGMENTS, SEGMENTS, *slots))


def real_rows_loss(attend):
    """A loss over the queries of real segments only (padding queries carry no weight in training)."""
    w = jnp.asarray(REAL, jnp.float32)[:, :, None, None]
    cot = jax.random.normal(jax.random.key(9), (B, T, N, H))
    return lambda q, k, v: jnp.sum(attend(q, k, v) * cot * w)


@pytest.mark.parametrize("kernel", ["flash", "splash"])
@pytest.mark.parametrize("causal", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_pallas_kernels_match_the_reference_and_its_gradients(kernel, causal):
    q, k, v = qkv()
    out = jax.jit(lambda q, k, v: pallas_attention(q, k, v, SEGMENTS, kernel=kernel, causal=causal))(q, k, v)
    ref = reference(q, k, v, causal)
    assert out.shape == (B, T, N, H)
    np.testing.assert_allclose(np.asarray(out)[REAL], np.asarray(ref)[REAL], atol=2e-6)
    grads = jax.jit(jax.grad(real_rows_loss(lambda q, k, v: pallas_attention(
        q, k, v, SEGMENTS, kernel=kernel, causal=causal)), argnums=(0, 1, 2)))(q, k, v)
    ref_grads = jax.grad(real_rows_loss(lambda q, k, v: reference(q, k, v, causal)), argnums=(0, 1, 2))(q, k, v)
    for g, r in zip(grads, ref_grads):
        np.testing.assert_allclose(g, r, atol=2e-5)


def test_pallas_kernel_errors_name_the_choice():
    q, k, v = qkv()
    with pytest.raises(ValueError, match="kernel='triton'"):
        pallas_attention(q, k, v, SEGMENTS, kernel="triton")
    seq_sharded = tuple((n, "fsdp") if n == "act_seq" else (n, ("data",)) if n == "act_batch" else (n, a)
                        for n, a in DEFAULT_RULES)
    mesh = make_mesh(MeshConfig(data=2, fsdp=4))
    with use_mesh(mesh, seq_sharded), pytest.raises(ShardingError, match="act_seq"):
        jax.jit(lambda q, k, v: pallas_attention(q, k, v, SEGMENTS, kernel="flash"))(q, k, v)


def test_grouped_einsum_equals_repeated_kv():
    q, k, v = qkv(1)
    mask = attention_mask(SEGMENTS, SEGMENTS, jnp.arange(T), jnp.arange(T))

    def loss(repeat):
        return lambda q, k, v: jnp.sum(jnp.sin(xla_attention(q, k, v, mask, repeat_kv=repeat)))
    np.testing.assert_allclose(xla_attention(q, k, v, mask, repeat_kv=False),
                               xla_attention(q, k, v, mask, repeat_kv=True), atol=1e-6)
    for a, b in zip(jax.grad(loss(False), (0, 1, 2))(q, k, v), jax.grad(loss(True), (0, 1, 2))(q, k, v)):
        np.testing.assert_allclose(a, b, atol=1e-5)


@functools.cache
def _xla_decoder_outputs():
    return _model_outputs(DecoderLM, ModelConfig.llama_tiny(), _MESH_2X2X2, TOKENS, segment_ids=SEG2)


def _model_outputs(cls, cfg, mesh, tokens, **kw):
    with use_mesh(ONE_DEVICE):
        gd, params, _ = create_sharded(lambda: cls(cfg, rngs=nnx.Rngs(0)), mesh, DEFAULT_RULES)
    with use_mesh(mesh):
        def loss(p):
            logits = nnx.merge(gd, p)(tokens, **kw)
            logits = logits[0] if isinstance(logits, tuple) else logits
            return jnp.sum(jnp.sin(logits) * jnp.asarray(REAL2, jnp.float32)[:, :, None]), logits
        (_, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    return np.asarray(logits), jax.tree.map(np.asarray, grads)


TOKENS = jax.random.randint(jax.random.key(4), (4, T), 0, 256)
SEG2 = jnp.concatenate([SEGMENTS, SEGMENTS[::-1]])
REAL2 = np.asarray(SEG2) > 0
_MESH_2X2X2 = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))


@pytest.mark.parametrize("backend", ["flash", pytest.param("splash", marks=pytest.mark.slow),
                                     pytest.param("dot_product", marks=pytest.mark.slow)])
def test_decoder_backends_match_xla_under_a_2x2x2_mesh(backend):
    """Logits of real tokens and every parameter's gradient, llama_tiny (GQA 4/2) on data 2 x fsdp 2 x tensor 2:
    the kernels run per device (shard_map), batch and heads split."""
    ref_logits, ref_grads = _xla_decoder_outputs()
    logits, grads = _model_outputs(DecoderLM, ModelConfig.llama_tiny(attention=backend), _MESH_2X2X2, TOKENS,
                                   segment_ids=SEG2)
    np.testing.assert_allclose(logits[REAL2], ref_logits[REAL2], atol=2e-5, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-5), grads, ref_grads)   # sums of ~1e4 terms


@pytest.mark.slow
def test_encoder_flash_matches_xla():
    """Bidirectional self-attention (BERT) through the flash kernel: causal=False, segment ids only."""
    base = ModelConfig.bert_tiny()
    ref_logits, ref_grads = _model_outputs(EncoderLM, base, ONE_DEVICE, TOKENS, segment_ids=SEG2)
    logits, grads = _model_outputs(EncoderLM, dataclasses.replace(base, attention="flash"), ONE_DEVICE, TOKENS,
                                   segment_ids=SEG2)
    np.testing.assert_allclose(logits[REAL2], ref_logits[REAL2], atol=2e-5, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-5), grads, ref_grads)   # sums of ~1e4 terms


@pytest.mark.slow
def test_decoding_with_a_cache_under_a_flash_model_equals_its_full_forward():
    """With a KV cache the flash backend uses the xla path (no kernel for T != S); prefill + decode
    equal the kernel's full forward."""
    cfg = ModelConfig.llama_tiny(attention="flash")
    with use_mesh(ONE_DEVICE):
        gd, params, _ = create_sharded(lambda: DecoderLM(cfg, rngs=nnx.Rngs(0)), ONE_DEVICE, DEFAULT_RULES)
        step = jax.jit(lambda p, x, c: nnx.merge(gd, p)(x, cache=c))
        full, _ = jax.jit(lambda p, x: nnx.merge(gd, p)(x))(params, TOKENS[:2, :12])
        cache = nnx.merge(gd, params).init_cache(2, 16)
        first, cache = step(params, TOKENS[:2, :8], cache)
        rest = []
        for t in range(8, 12):
            logits, cache = step(params, TOKENS[:2, t:t + 1], cache)
            rest.append(logits)
    np.testing.assert_allclose(np.concatenate([first, *rest], 1), full, atol=2e-5)


def test_kernel_inside_a_per_device_program_runs_on_the_local_arrays():
    """Inside shard_map, as in the Trainer's per-device data-parallel step (mesh axes Manual, logical
    axes local, check_vma off), the kernel runs on each device's rows and equals the reference."""
    from jax.sharding import PartitionSpec as P

    from lmforge.model import axis_rules
    from lmforge.train.step import LOCAL_RULES
    mesh = make_mesh(MeshConfig(data=2), devices=jax.devices()[:2])
    q, k, v = qkv(2)

    def per_device(q, k, v, seg):
        with axis_rules(LOCAL_RULES):
            return pallas_attention(q, k, v, seg, kernel="splash")
    with jax.set_mesh(mesh):
        out = jax.jit(jax.shard_map(per_device, in_specs=P("data"), out_specs=P("data"), check_vma=False))(
            q, k, v, SEGMENTS)   # check_vma=False as in train/step.py
    np.testing.assert_allclose(np.asarray(out)[REAL], np.asarray(reference(q, k, v, True))[REAL], atol=2e-6)


@pytest.mark.slow
def test_trainer_steps_with_flash_equal_xla_in_the_per_device_step():
    """The Trainer's step with ``attention="flash"`` on a pure data mesh: the per-device step runs the
    kernel inside its own shard_map (Manual axes: the arrays are already local). Losses of two steps
    equal the xla model's. (GSPMD meshes: test_decoder_backends_match_xla_under_a_2x2x2_mesh.)"""
    from lmforge.train.optim import OptimConfig
    from lmforge.train.pretrain import lm_loss
    from lmforge.train.trainer import LoopConfig, Trainer

    rng = np.random.default_rng(0)
    tok = rng.integers(0, 256, size=(8, 17)).astype(np.int32)
    batch = {"inputs": tok[:, :-1], "targets": tok[:, 1:], "weights": np.ones((8, 16), np.float32),
             "segment_ids": np.repeat([[1] * 10 + [2] * 6], 8, 0).astype(np.int32),
             "positions": np.repeat([list(range(10)) + list(range(6))], 8, 0).astype(np.int32)}

    def losses(attention, mesh_cfg):
        cfg = ModelConfig.llama_tiny(attention=attention)
        mesh = make_mesh(mesh_cfg)
        with use_mesh(ONE_DEVICE):
            gd, params, sh = create_sharded(lambda: DecoderLM(cfg, rngs=nnx.Rngs(0)), mesh, DEFAULT_RULES)
        trainer = Trainer(lm_loss(gd, cfg), params=params, param_shardings=sh, optim=OptimConfig(lr=1e-2),
                          loop=LoopConfig(steps=2), mesh=mesh, rules=DEFAULT_RULES)
        return [float(trainer.train_step(batch, jax.random.key(0))["train/loss"]) for _ in range(2)]

    ref = losses("xla", MeshConfig(data=8))
    np.testing.assert_allclose(losses("flash", MeshConfig(data=8)), ref, rtol=1e-5)


def test_a_kernel_without_bias_is_refused_for_t5_and_missing_attention_dropout_is_said():
    with pytest.raises(ValueError, match="model.attention='splash': its kernel takes no bias"):
        ModelConfig.t5_tiny(attention="splash")
    from lmforge.model import attention
    attention._warn_no_attention_dropout.cache_clear()          # said once per process
    cfg = ModelConfig.gpt2_tiny(attention="dot_product", dropout=0.1)
    with use_mesh(ONE_DEVICE), pytest.warns(UserWarning, match="'dot_product' applies no attention-probability dropout"):
        create_sharded(lambda: DecoderLM(cfg, rngs=nnx.Rngs(0)), ONE_DEVICE, DEFAULT_RULES)


def test_one_segment_rows_reach_dot_product_attention_without_a_mask(monkeypatch):
    """A decoder called without segment ids (every row one segment) hands ``jax.nn.dot_product_attention``
    (the ``cudnn`` and ``dot_product`` backends) ``is_causal`` and no dense mask, as PyTorch's SDPA; with
    segment ids, or with a cache, the mask is there. Same logits and gradients either way."""
    seen = []
    real = jax.nn.dot_product_attention

    def spy(*args, mask=None, **kw):
        seen.append(mask is None)
        return real(*args, mask=mask, **kw)

    monkeypatch.setattr(jax.nn, "dot_product_attention", spy)
    cfg = ModelConfig.llama_tiny(attention="dot_product")
    ones = jnp.ones((4, T), jnp.int32)
    ref_logits, ref_grads = _model_outputs(DecoderLM, cfg, ONE_DEVICE, TOKENS, segment_ids=ones)
    assert seen and not any(seen)                                   # segment ids given: a mask
    seen.clear()
    logits, grads = _model_outputs(DecoderLM, cfg, ONE_DEVICE, TOKENS)
    assert seen and all(seen)                                       # one segment: none
    np.testing.assert_allclose(logits, ref_logits, atol=1e-5, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-5), grads, ref_grads)
    seen.clear()
    with use_mesh(ONE_DEVICE):
        gd, params, _ = create_sharded(lambda: DecoderLM(cfg, rngs=nnx.Rngs(0)), ONE_DEVICE, DEFAULT_RULES)
        model = nnx.merge(gd, params)
        jax.jit(lambda tokens: model(tokens, cache=model.init_cache(4, T))[0])(TOKENS)
    assert seen and not any(seen)                                   # a cache: the mask of its slots
