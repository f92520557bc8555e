"""BERT, the original Transformer and T5: positions, buckets, bidirectional/packed attention,
encoder-decoder KV cache == full forward, sharded training == one device."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmforge.data.objectives import Objective, ObjectiveConfig
from lmforge.model import ModelConfig, axis_rules, build_model, create_sharded
from lmforge.model.stack import relative_position_bucket, sinusoidal_positions
from lmforge.train.mesh import DEFAULT_RULES, MeshConfig, make_mesh
from lmforge.train.optim import OptimConfig
from lmforge.infer import Sampler, SamplingConfig
from lmforge.train.pretrain import lm_loss
from lmforge.train.trainer import LoopConfig, Trainer
from lmforge.model.sharding import use_mesh
from lmforge.train.mesh import MeshConfig as _MeshConfig, make_mesh as _make_mesh

ONE_DEVICE = _make_mesh(_MeshConfig(data=1), devices=jax.devices()[:1])   # models are called under a mesh

FAMILIES = {"bert": ModelConfig.bert_tiny(vocab_size=64, max_seq_len=32),
            "transformer": ModelConfig.transformer_tiny(vocab_size=64, max_seq_len=32),
            "t5": ModelConfig.t5_tiny(vocab_size=64, max_seq_len=32)}


def make(cfg, seed=0):
    mesh = make_mesh(MeshConfig(data=1), devices=jax.devices()[:1])
    with use_mesh(ONE_DEVICE):
        gd, params, _ = create_sharded(lambda: build_model(cfg, rngs=nnx.Rngs(seed)), mesh, DEFAULT_RULES)
    return gd, params


@functools.partial(jax.jit, static_argnums=0)
def forward(gd, params, tokens, kw):
    """The model jitted: an eager call compiles every primitive on its own (seconds per call on CPU)."""
    return nnx.merge(gd, params)(tokens, **kw)


@functools.partial(jax.jit, static_argnums=(0, 2, 3))
def init_cache(gd, params, batch, max_len, enc, enc_seg):
    return nnx.merge(gd, params).init_cache(batch, max_len, encoder_tokens=enc, encoder_segment_ids=enc_seg)


def test_sinusoidal_positions_match_the_paper():
    pe = np.asarray(sinusoidal_positions(jnp.arange(50)[None], 16))[0]
    pos, i = np.arange(50)[:, None], np.arange(8)[None]
    np.testing.assert_allclose(pe[:, 0::2], np.sin(pos / 10000 ** (2 * i / 16)), atol=1e-5)
    np.testing.assert_allclose(pe[:, 1::2], np.cos(pos / 10000 ** (2 * i / 16)), atol=1e-5)


def test_relative_buckets_by_hand():
    rel = jnp.array([0, 1, 2, 7, 8, 20, 127, 500, -1, -8, -500])
    bi = relative_position_bucket(rel, bidirectional=True, num_buckets=32, max_distance=128)
    # 16 buckets per direction: 0..7 exact, then log-spaced up to 128; keys after the query +16.
    assert bi.tolist() == [0, 17, 18, 23, 24, 16 + 8 + int(math.log(20 / 8) / math.log(16) * 8), 31, 31, 1, 8, 15]
    uni = relative_position_bucket(rel, bidirectional=False, num_buckets=32, max_distance=128)
    # 32 buckets for the past (0..15 exact); every future key shares bucket 0.
    assert uni.tolist()[:4] == [0, 0, 0, 0] and uni.tolist()[8:] == [1, 8, 31]


def test_bert_attends_both_ways_and_not_across_segments():
    gd, params = make(FAMILIES["bert"])
    tok = jnp.array([[5, 6, 7, 8, 9, 10, 11, 12]])
    seg = jnp.array([[1, 1, 1, 1, 2, 2, 2, 2]])
    pos = jnp.array([[0, 1, 2, 3, 0, 1, 2, 3]])
    with use_mesh(ONE_DEVICE):
        base = forward(gd, params, tok, {"segment_ids": seg, "positions": pos})[0]
        later = forward(gd, params, tok.at[0, 3].set(20), {"segment_ids": seg, "positions": pos})[0]
    assert np.abs(np.asarray(later - base))[0, 0].max() > 1e-4          # an earlier token sees a later one
    np.testing.assert_allclose(later[0, 4:], base[0, 4:], atol=1e-6)     # the other document does not


@pytest.mark.parametrize("family", ["transformer", "t5"])
def test_encoder_decoder_cache_equals_full_forward_and_sampler_is_greedy(family):
    cfg = FAMILIES[family]
    gd, params = make(cfg)
    enc = jnp.array([[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 0, 0]])
    enc_seg = jnp.array([[1] * 6, [1, 1, 1, 1, 0, 0]])
    dec = jnp.array([[2, 20, 21, 22, 23], [2, 30, 31, 32, 33]])
    with use_mesh(ONE_DEVICE):
        full = forward(gd, params, dec, {"encoder_tokens": enc, "encoder_segment_ids": enc_seg})[0]
        cache = init_cache(gd, params, 2, 8, enc, enc_seg)
        a, cache = forward(gd, params, dec[:, :2], {"cache": cache})
        b, cache = forward(gd, params, dec[:, 2:3], {"cache": cache})
        c, _ = forward(gd, params, dec[:, 3:], {"cache": cache})
        np.testing.assert_allclose(jnp.concatenate([a, b, c], 1), full, atol=2e-5)
        # the shared sampler, greedy: the same tokens as an argmax loop over full forward passes
        tok = type("Tok", (), {"vocab_size": FAMILIES[family].vocab_size, "pad_id": 0, "bos_id": 2, "eos_id": -1})()
        sampled = Sampler(gd, params, tok, FAMILIES[family], ONE_DEVICE, DEFAULT_RULES).generate_ids(
            [[2], [2]], SamplingConfig(max_new_tokens=3, temperature=0.0),
            encoder_inputs=[[5, 6, 7, 8, 9, 10], [11, 12, 13, 14]])
        out = [sampled.tokens[i, :sampled.lengths[i]].tolist() for i in range(2)]
        # One fixed (2, 5) shape for every pass (the one `full` compiled): position i of a causal
        # decoder sees only tokens 0..i (the cache check above shows it), so the pad after the
        # sequence so far cannot change the argmax read at i.
        seq = jnp.zeros_like(dec).at[:, 0].set(2)
        for i in range(3):
            logits = forward(gd, params, seq, {"encoder_tokens": enc, "encoder_segment_ids": enc_seg})[0]
            seq = seq.at[:, i + 1].set(jnp.argmax(logits[:, i], -1))
    assert out == np.asarray(seq[:, 1:4]).tolist()


def objective_batches(kind, tok, n=3, b=8, t=16):
    rng = np.random.default_rng(0)
    objective = Objective(ObjectiveConfig(kind=kind), tok, t)
    out = []
    for i in range(n):
        tok = rng.integers(30, 64, size=(b, t)).astype(np.int32)
        seg = np.ones((b, t), np.int32)
        seg[0, 10:] = 0   # a padded row
        batch = {"inputs": tok, "targets": tok, "weights": seg.astype(np.float32), "segment_ids": seg,
                 "positions": np.tile(np.arange(t, dtype=np.int32), (b, 1))}
        out.append(objective(batch, np.random.default_rng(i)))
    return out


@pytest.mark.parametrize("family,kind", [("bert", "mlm"), ("transformer", "reverse"), ("t5", "span")])
def test_family_trains_sharded_like_one_device(family, kind, fake_tok):
    # eps 1e-6: see tests/train/test_trainer.py (Adam turns reduction-order noise of a zero gradient into an update)
    cfg, optim = FAMILIES[family], OptimConfig(lr=3e-3, min_lr=3e-4, warmup_steps=1, eps=1e-6)
    data = objective_batches(kind, fake_tok)
    runs = []
    for mesh_cfg in (MeshConfig(data=1), MeshConfig(data=2, fsdp=2, tensor=2)):
        mesh = make_mesh(mesh_cfg, devices=jax.devices()[:1] if mesh_cfg.data == 1 and mesh_cfg.fsdp == 1 else None)
        gd, params, sh = create_sharded(lambda: build_model(cfg, rngs=nnx.Rngs(0)), mesh, DEFAULT_RULES)
        trainer = Trainer(lm_loss(gd, cfg), params=params, param_shardings=sh, optim=optim,
                          loop=LoopConfig(steps=10), mesh=mesh, rules=DEFAULT_RULES)
        losses = [float(trainer.train_step(b, jax.random.key(0))["train/loss"]) for b in data]
        runs.append((losses, jax.device_get(trainer.params)))
    (one, p1), (eight, p8) = runs
    np.testing.assert_allclose(eight, one, rtol=1e-5)
    # atol 1e-5: a key bias has a zero gradient in exact math (softmax ignores a per-key-head shift),
    # so its value is Adam-amplified float noise of order 1e-7..1e-6 that differs with the reduction order.
    for a, b in zip(jax.tree.leaves(p8), jax.tree.leaves(p1)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert one[-1] < one[0]
