"""Pieces of the encoder-only and encoder-decoder families: positions and the post-/pre-norm layer.

Shape letters as in ``attention.py``.

Choices:
- Sinusoidal positions follow "Attention Is All You Need" (sec. 3.5) exactly: even features
  ``sin(p / 10000^(2i/D))``, odd features ``cos`` of the same angle (interleaved, not two halves).
- T5's relative position bias (Raffel et al. 2020, sec. 2.1; Hugging Face
  ``T5Attention._relative_position_bucket``): key-minus-query distances fall into log-spaced
  buckets, one learned scalar per bucket and head, shared by all layers of a stack. It is computed
  from the token *positions*, so packed segments (positions restart at 0) get the right distances.
- :class:`Layer` is one encoder layer (self-attention + MLP) or one decoder layer (causal
  self-attention + cross-attention + MLP). ``norm_position="post"`` is the original Transformer and
  BERT (``norm(x + f(x))``); ``"pre"`` is T5 (``x + f(norm(x))``, plus a final norm per stack).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from lmforge.model.attention import Attention
from lmforge.model.config import ModelConfig
from lmforge.model.layers import MLP, Norm, dropout, dtype_of, normal, param, residual_std
from lmforge.model.sharding import constrain

ACT_BTD = ("act_batch", "act_seq", "act_embed")


def sinusoidal_positions(positions: jax.Array, dim: int) -> jax.Array:
    """positions (B, T) int -> (B, T, D) float32 encodings of "Attention Is All You Need"."""
    inv = jnp.exp(-math.log(10_000.0) * jnp.arange(0, dim, 2, dtype=jnp.float32) / dim)    # (D/2,)
    angle = positions.astype(jnp.float32)[..., None] * inv                                 # (B, T, D/2)
    return jnp.stack([jnp.sin(angle), jnp.cos(angle)], axis=-1).reshape(*positions.shape, -1)[..., :dim]


def relative_position_bucket(relative: jax.Array, *, bidirectional: bool, num_buckets: int,
                             max_distance: int) -> jax.Array:
    """Key-minus-query distances (int) -> bucket ids in [0, num_buckets), as T5."""
    bucket = jnp.zeros_like(relative)
    if bidirectional:
        num_buckets //= 2
        bucket = bucket + (relative > 0).astype(relative.dtype) * num_buckets
        distance = jnp.abs(relative)
    else:
        distance = -jnp.minimum(relative, 0)
    exact = num_buckets // 2
    # log-spaced buckets from `exact` up to max_distance; float32 as the reference (torch .float()).
    large = exact + (jnp.log(jnp.maximum(distance, 1).astype(jnp.float32) / exact)
                     / math.log(max_distance / exact) * (num_buckets - exact)).astype(relative.dtype)
    large = jnp.minimum(large, num_buckets - 1)
    return bucket + jnp.where(distance < exact, distance, large)


class RelativeBias(nnx.Module):
    """T5's learned relative position bias of one stack: (buckets, N) table -> (B, N, T, S) logits bias."""

    def __init__(self, cfg: ModelConfig, *, bidirectional: bool, rngs: nnx.Rngs):
        self.bidirectional, self.cfg = bidirectional, cfg
        self.table = param(rngs, normal(cfg.init_std), (cfg.relative_buckets, cfg.num_heads), ("pos", "heads"),
                           dtype_of(cfg.param_dtype))

    def __call__(self, q_positions: jax.Array, kv_positions: jax.Array) -> jax.Array:
        relative = kv_positions[:, None, :] - q_positions[:, :, None]                      # (B, T, S)
        buckets = relative_position_bucket(relative, bidirectional=self.bidirectional,
                                           num_buckets=self.cfg.relative_buckets,
                                           max_distance=self.cfg.relative_max_distance)
        bias = jnp.take(self.table[...].astype(jnp.float32), buckets, axis=0)              # (B, T, S, N)
        return bias.transpose(0, 3, 1, 2)


class Layer(nnx.Module):
    """One encoder layer (``cross=False``) or decoder layer (``cross=True``: causal self-attention,
    then cross-attention to the encoder output, then the MLP)."""

    def __init__(self, cfg: ModelConfig, *, causal: bool, cross: bool, depth: int, rngs: nnx.Rngs):
        dtype, pdtype = dtype_of(cfg.dtype), dtype_of(cfg.param_dtype)
        self.post_norm, self.dropout_rate = cfg.norm_position == "post", cfg.dropout
        out_std = residual_std(cfg.init_std, depth) if cfg.norm_position == "pre" else cfg.init_std
        norm = dict(kind=cfg.norm, eps=cfg.norm_eps, use_bias=cfg.use_bias, param_dtype=pdtype, rngs=rngs)
        attn = dict(embed_dim=cfg.embed_dim, num_heads=cfg.num_heads, num_kv_heads=cfg.kv_heads,
                    head_dim=cfg.dims_per_head, use_bias=cfg.use_bias, position=cfg.position,
                    rope_theta=cfg.rope_theta, backend=cfg.attention, dropout=cfg.dropout, init_std=cfg.init_std,
                    out_std=out_std, dtype=dtype, param_dtype=pdtype, rngs=rngs, scale=cfg.attention_scale)
        self.attn = Attention(causal=causal, **attn)
        self.attn_norm = Norm(cfg.embed_dim, **norm)
        self.cross_attn = Attention(causal=False, **attn) if cross else None
        self.cross_norm = Norm(cfg.embed_dim, **norm) if cross else None
        self.mlp = MLP(embed_dim=cfg.embed_dim, mlp_dim=cfg.mlp_dim, activation=cfg.activation, use_bias=cfg.use_bias,
                       init_std=cfg.init_std, out_std=out_std, dtype=dtype, param_dtype=pdtype, rngs=rngs)
        self.mlp_norm = Norm(cfg.embed_dim, **norm)

    def _residual(self, x, norm, f, rng):
        if self.post_norm:
            return constrain(norm(x + dropout(f(x), self.dropout_rate, rng)), ACT_BTD)
        return constrain(x + dropout(f(norm(x)), self.dropout_rate, rng), ACT_BTD)

    def __call__(self, x, ctx: dict, *, kv_cache: dict | None = None, memory_kv: dict | None = None,
                 rng: jax.Array | None = None):
        """x (B, T, D) -> (B, T, D), new self-attention cache (or None).

        ``ctx`` holds positions, segment_ids, the position bias, and for decoding the cache index and
        kv segment ids; ``memory_kv`` the cross-attention keys/values and ``ctx["memory_segment_ids"]``.
        """
        rngs = (None,) * 6 if rng is None else tuple(jax.random.split(rng, 6))
        new_cache = None

        def self_attn(h):
            nonlocal new_cache
            y, new_cache = self.attn(h, positions=ctx["positions"], segment_ids=ctx["segment_ids"],
                                     kv_cache=kv_cache, cache_index=ctx.get("cache_index"),
                                     kv_segment_ids=ctx.get("kv_segment_ids"), bias=ctx.get("bias"),
                                     dropout_rng=rngs[0])
            return y
        x = self._residual(x, self.attn_norm, self_attn, rngs[1])
        if self.cross_attn is not None:
            x = self._residual(x, self.cross_norm, lambda h: self.cross_attn.cross(
                h, memory_kv, segment_ids=ctx["segment_ids"], kv_segment_ids=ctx["memory_segment_ids"],
                dropout_rng=rngs[2]), rngs[3])
        x = self._residual(x, self.mlp_norm, lambda h: self.mlp(h, rngs[5]), rngs[4])
        return x, new_cache


def default_positions(tokens: jax.Array, start=0) -> jax.Array:
    b, t = tokens.shape
    return jnp.broadcast_to(start + jnp.arange(t, dtype=jnp.int32), (b, t))
