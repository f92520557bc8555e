"""Causal self-attention with grouped-query heads, RoPE, packed segments and a KV cache.

Shape letters: B batch, T query length, S key length, D embed, N query heads, K key/value heads,
G = N // K query heads per key/value head, H head dimension.

Choices:
- One mask for every use: a query attends to a key iff the key's *slot* is not after the query's
  slot (causal), both carry the same non-zero segment id (packing: no attention across documents;
  left-padding in batched sampling is segment 0). Training uses slots 0..T-1; decoding with a cache
  uses the absolute slot in the cache buffer.
- Masked logits get the most negative finite float, not -inf, so a fully masked row (a padding
  query) gives a finite uniform softmax instead of NaN; its loss weight is 0 anyway.
- Softmax in float32 whatever the compute dtype.
- Backends: ``xla`` is the einsum path written here (the reference); ``dot_product`` calls
  ``jax.nn.dot_product_attention`` (XLA), ``cudnn`` the same with ``implementation="cudnn"``
  (flash attention on NVIDIA GPUs; bf16/fp16 only).
- RoPE uses the "rotate half" layout of Llama / Hugging Face (first half of the head dimension
  paired with the second half), so imported Llama weights need no permutation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from lmforge.model.layers import Dense, dropout
from lmforge.model.sharding import constrain


def rope(x: jax.Array, positions: jax.Array, theta: float) -> jax.Array:
    """Rotary position embedding. x: (B, T, N, H); positions: (B, T) int."""
    h = x.shape[-1]
    freq = theta ** (-jnp.arange(0, h, 2, dtype=jnp.float32) / h)            # (H/2,)
    angle = positions.astype(jnp.float32)[..., None] * freq                 # (B, T, H/2)
    sin, cos = jnp.sin(angle)[:, :, None, :], jnp.cos(angle)[:, :, None, :]  # (B, T, 1, H/2)
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)


def attention_mask(q_segments: jax.Array, kv_segments: jax.Array, q_slots: jax.Array | None,
                   kv_slots: jax.Array | None) -> jax.Array:
    """(B, T), (B, S), (T,), (S,) -> boolean (B, 1, T, S): True where the query may attend.

    ``q_slots=None`` (bidirectional: encoders, cross-attention) drops the causal part.
    """
    same = (q_segments[:, :, None] == kv_segments[:, None, :]) & (kv_segments[:, None, :] != 0)
    if q_slots is None:
        return same[:, None]
    causal = kv_slots[None, :] <= q_slots[:, None]                                   # (T, S)
    return (causal[None] & same)[:, None]


def xla_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, *,
                  dropout_rate: float = 0.0, dropout_rng: jax.Array | None = None,
                  bias: jax.Array | None = None, scale: float | None = None) -> jax.Array:
    """q: (B, T, N, H); k, v: (B, S, K, H); mask: (B, 1, T, S); bias: (B|1, N, T, S) -> (B, T, N, H).

    ``scale`` multiplies the logits (default ``H ** -0.5``); ``bias`` is added to them (T5's
    relative position bias).
    """
    h, groups = q.shape[-1], q.shape[2] // k.shape[2]
    if groups > 1:
        # GQA: repeat each key/value head for its G query heads. The grouped 5-D einsum
        # ('BTKGH,BSKH->BKGTS') is the same math, but XLA:CPU runs its backward pass ~5x slower.
        k, v = jnp.repeat(k, groups, axis=2), jnp.repeat(v, groups, axis=2)
    logits = jnp.einsum("BTNH,BSNH->BNTS", q, k, preferred_element_type=jnp.float32)
    logits = logits * (h ** -0.5 if scale is None else scale)
    if bias is not None:
        logits = logits + bias.astype(jnp.float32)
    logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1)
    probs = dropout(probs, dropout_rate, dropout_rng).astype(v.dtype)
    return jnp.einsum("BNTS,BSNH->BTNH", probs, v)


def _adapter_rng(rng: jax.Array | None, i: int) -> jax.Array | None:
    """The key of adapter dropout on a projection, folded from the attention's dropout key."""
    return None if rng is None else jax.random.fold_in(rng, i)


class Attention(nnx.Module):
    """Multi-head (grouped-query) attention: causal or bidirectional self-attention, or cross-attention.

    ``causal=False`` is an encoder's self-attention; cross-attention (a decoder reading the
    encoder's output, "memory") is :meth:`cross`, with keys/values from :meth:`memory_kv`, which a
    sampler computes once per prompt and keeps in its cache. ``scale=False`` drops the
    ``1/sqrt(H)`` factor (T5 folds it into the initialization of ``q``).
    """

    def __init__(self, *, embed_dim: int, num_heads: int, num_kv_heads: int, head_dim: int, use_bias: bool,
                 position: str, rope_theta: float, backend: str, dropout: float, init_std: float,
                 out_std: float, dtype, param_dtype, rngs: nnx.Rngs, causal: bool = True, scale: bool = True):
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.position, self.rope_theta, self.backend = position, rope_theta, backend
        self.dropout_rate, self.dtype, self.causal = dropout, dtype, causal
        self.scale = None if scale else 1.0
        d, n, k, h = embed_dim, num_heads, num_kv_heads, head_dim
        proj = dict(use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.q = Dense((d,), (n, h), ("embed",), ("heads", "head_dim"), init_std=init_std, **proj)
        self.k = Dense((d,), (k, h), ("embed",), ("kv_heads", "head_dim"), init_std=init_std, **proj)
        self.v = Dense((d,), (k, h), ("embed",), ("kv_heads", "head_dim"), init_std=init_std, **proj)
        self.o = Dense((n, h), (d,), ("heads", "head_dim"), ("embed",), init_std=out_std, **proj)

    def _project(self, x, dense: Dense, names, rng):
        return constrain(dense(x, rng), names)                              # (B, T, N|K, H)

    def _q(self, x, rng=None):
        return self._project(x, self.q, ("act_batch", "act_seq", "act_heads", "act_head_dim"), rng)

    def memory_kv(self, memory: jax.Array, rng: jax.Array | None = None) -> dict:
        """Cross-attention keys/values of the encoder output ``memory`` (B, S, D): {"k", "v"} (B, S, K, H)."""
        names = ("act_batch", "act_seq", "act_kv_heads", "act_head_dim")
        rngs = (None, None) if rng is None else tuple(jax.random.split(rng, 2))
        return {"k": self._project(memory, self.k, names, rngs[0]),
                "v": self._project(memory, self.v, names, rngs[1])}

    def _attend(self, q, k, v, mask, bias, dropout_rng):
        if self.backend == "xla" or bias is not None:
            rng = None if dropout_rng is None else jax.random.fold_in(dropout_rng, 1)
            out = xla_attention(q, k, v, mask, dropout_rate=self.dropout_rate, dropout_rng=rng, bias=bias,
                                scale=self.scale)
        else:  # attention-probability dropout is not offered by jax.nn.dot_product_attention
            impl = "cudnn" if self.backend == "cudnn" else None
            out = jax.nn.dot_product_attention(q, k, v, mask=mask, scale=self.scale, implementation=impl)
        out = constrain(out, ("act_batch", "act_seq", "act_heads", "act_head_dim"))
        # Adapter dropout of the output projection: a key of its own, unused by attention dropout.
        return self.o(out, None if dropout_rng is None else jax.random.fold_in(dropout_rng, 2))   # (B, T, D)

    def cross(self, x: jax.Array, kv: dict, *, segment_ids: jax.Array, kv_segment_ids: jax.Array,
              dropout_rng: jax.Array | None = None) -> jax.Array:
        """x (B, T, D) attends to all of ``kv`` (from :meth:`memory_kv`) in its own segment -> (B, T, D)."""
        mask = attention_mask(segment_ids, kv_segment_ids, None, None)
        k, v = kv["k"].astype(self.dtype), kv["v"].astype(self.dtype)
        return self._attend(self._q(x, _adapter_rng(dropout_rng, 3)), k, v, mask, None, dropout_rng)

    def __call__(self, x: jax.Array, *, positions: jax.Array, segment_ids: jax.Array,
                 kv_cache: dict | None = None, cache_index: jax.Array | None = None,
                 kv_segment_ids: jax.Array | None = None, dropout_rng: jax.Array | None = None,
                 bias: jax.Array | None = None):
        """x: (B, T, D); positions, segment_ids: (B, T); bias: (B|1, N, T, S) added to the logits.

        ``kv_cache`` holds every layer's keys and values, {"k", "v"}: (L, B, S, K, H), and ``"layer"``,
        this layer's index (an int or a traced scalar). The new keys/values are written at
        (layer, ``cache_index``) in place, and the queries attend to this layer's whole buffer, whose
        segment ids ``kv_segment_ids`` (B, S) the caller has already updated. Returns
        (y (B, T, D), {"k", "v"}: the whole updated (L, B, S, K, H) cache). One buffer through all
        layers: slicing each layer's cache out and stacking them again copied the whole cache three
        times per decoded token.
        """
        q = self._q(x, _adapter_rng(dropout_rng, 3))
        kv = self.memory_kv(x, _adapter_rng(dropout_rng, 4))
        k, v = kv["k"], kv["v"]
        if self.position == "rope":
            q, k = rope(q, positions, self.rope_theta), rope(k, positions, self.rope_theta)

        t = x.shape[1]
        if kv_cache is None:
            new_cache = None
            q_slots = kv_slots = jnp.arange(t)
            kv_segment_ids = segment_ids
        else:   # every layer's cache, (L, B, S, K, H): this layer's slot written in place
            layer = kv_cache["layer"]
            start = (layer, 0, cache_index, 0, 0)
            k = jax.lax.dynamic_update_slice(kv_cache["k"], k.astype(kv_cache["k"].dtype)[None], start)
            v = jax.lax.dynamic_update_slice(kv_cache["v"], v.astype(kv_cache["v"].dtype)[None], start)
            new_cache = {"k": k, "v": v}
            k, v = (jax.lax.dynamic_index_in_dim(c, layer, 0, keepdims=False).astype(self.dtype) for c in (k, v))
            q_slots = cache_index + jnp.arange(t)
            kv_slots = jnp.arange(k.shape[1])
        if not self.causal:
            q_slots = kv_slots = None
        mask = attention_mask(segment_ids, kv_segment_ids, q_slots, kv_slots)
        return self._attend(q, k, v, mask, bias, dropout_rng), new_cache
