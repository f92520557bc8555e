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
- Backends (``model.attention``), all the same function of their inputs:
  ``xla`` is the einsum path written here (the reference; it materializes the (B, N, T, S) scores).
  ``dot_product`` calls ``jax.nn.dot_product_attention`` (XLA), ``cudnn`` the same with
  ``implementation="cudnn"`` (cuDNN flash attention on NVIDIA GPUs; bf16/fp16 only). For causal
  self-attention without a cache both pass ``is_causal=True`` and a mask of the segments only, so
  cuDNN runs its causal mask type and skips the blocks above the diagonal (the segments still
  come as a dense (B, 1, T, T) mask, which cuDNN turns into a bias -- unless the caller says every
  row is one segment, ``one_segment``: a decoder called without segment ids, or a loss over
  unpacked data, ``lm_loss(document_mask=False)``; then ``is_causal`` alone, as PyTorch's SDPA).
  ``flash`` is the Pallas flash-attention kernel for NVIDIA GPUs (Triton;
  ``jax.experimental.pallas.ops.gpu.attention``, Dao et al. 2022) and ``splash`` the Pallas splash
  kernel for TPUs (``jax.experimental.pallas.ops.tpu.splash_attention``): both take segment ids and
  causality as such, never a dense mask, and skip fully masked blocks. They serve self-attention
  without a cache and without a bias (training, scoring, encoders); a decode step with a cache,
  cross-attention and T5's biased attention use the ``xla`` path. On CPU both run in Pallas's
  interpreter (exact, slow: for tests). Queries of segment 0 (padding) attend to other padding
  there instead of to nothing: their outputs differ, but carry no loss weight, so losses and
  gradients are the same.
- Attention-probability dropout is applied by ``xla`` only; the other backends' kernels have none
  (residual and embedding dropout still apply).
- GQA: ``xla`` repeats each key/value head for its query heads on CPU (XLA:CPU ran the grouped
  einsum's backward ~5x slower) and uses the grouped einsum ('BTKGH,BSKH->BKGTS', no copy of K/V)
  elsewhere; ``splash`` reads the K/V heads as they are; ``flash`` repeats them (its kernel has
  one K/V head per query head).
- Remat names (``jax.ad_checkpoint.checkpoint_name``, MaxText's): ``query_proj``, ``key_proj``,
  ``value_proj`` (the projections, before RoPE), ``context`` (attention's output, before the output
  projection) and ``out_proj``; the remat policies of ``transformer.py`` save them by name.
- RoPE uses the "rotate half" layout of Llama / Hugging Face (first half of the head dimension
  paired with the second half), so imported Llama weights need no permutation.
"""

from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name
from jax.sharding import PartitionSpec

from lmforge.model.layers import Dense, Norm, dropout, einsum_f32
from lmforge.model.sharding import ShardingError, _mesh_axis_size, constrain, logical_spec

PALLAS_BACKENDS = ("flash", "splash")
_Q = ("act_batch", "act_seq", "act_heads", "act_head_dim")
_KV = ("act_batch", "act_seq", "act_kv_heads", "act_head_dim")


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
                  bias: jax.Array | None = None, scale: float | None = None,
                  repeat_kv: bool | None = None) -> jax.Array:
    """q: (B, T, N, H); k, v: (B, S, K, H); mask: (B, 1, T, S); bias: (B|1, N, T, S) -> (B, T, N, H).

    ``scale`` multiplies the logits (default ``H ** -0.5``); ``bias`` is added to them (T5's
    relative position bias). With grouped-query heads (K < N), ``repeat_kv`` repeats each key/value
    head for its G = N / K query heads; otherwise a grouped einsum reads them as they are. The
    default repeats on CPU only: XLA:CPU runs the grouped einsum's backward ~5x slower. Decoding
    (no backward) passes False: there the repeat is the slower one.
    """
    b, t, n, h = q.shape
    kh, s = k.shape[2], k.shape[1]
    groups = n // kh
    if repeat_kv is None:
        repeat_kv = jax.default_backend() == "cpu"
    grouped = groups > 1 and not repeat_kv
    if grouped:     # (B, T, K, G, H) against (B, S, K, H): no copy of K/V
        logits = einsum_f32("BTKGH,BSKH->BKGTS", q.reshape(b, t, kh, groups, h), k).reshape(b, n, t, s)
    else:           # 4-D einsums: with G = 1 the 5-D ones ran fwd+bwd ~35% slower on XLA:CPU
        if groups > 1:
            k, v = jnp.repeat(k, groups, axis=2), jnp.repeat(v, groups, axis=2)
        logits = einsum_f32("BTNH,BSNH->BNTS", q, k)
    logits = logits * (h ** -0.5 if scale is None else scale)
    if bias is not None:
        logits = logits + bias.astype(jnp.float32)
    logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1)
    probs = dropout(probs, dropout_rate, dropout_rng).astype(v.dtype)
    if grouped:
        return jnp.einsum("BKGTS,BSKH->BTKGH", probs.reshape(b, kh, groups, t, s), v).reshape(b, t, n, h)
    return jnp.einsum("BNTS,BSNH->BTNH", probs, v)


@functools.cache
def _warn_interpret(kernel: str) -> None:
    warnings.warn(f"model.attention={kernel!r} on CPU runs in Pallas's interpreter: exact, but far slower "
                  f"than 'xla' (use it for tests)", stacklevel=3)


# Sequence blocks of the kernels: powers of two in [smallest, largest] (Triton tiles of 16+; TPU 128+).
_BLOCKS = {"flash": (16, 128), "splash": (128, 512)}


@functools.cache
def _warn_no_attention_dropout(backend: str) -> None:
    warnings.warn(f"model.attention={backend!r} applies no attention-probability dropout (its kernel has none); "
                  f"model.dropout still applies to the residual stream and embeddings, as 'xla' does to both",
                  stacklevel=4)


def _block(t: int, kernel: str) -> int:
    """The kernel's block for sequences of length ``t``: the next power of two, within its range.
    Sequences are padded to a multiple of it."""
    smallest, largest = _BLOCKS[kernel]
    return max(smallest, min(largest, 1 << max(t - 1, 1).bit_length()))


def _flash_local(q, k, v, segment_ids, *, block: int, causal: bool, scale: float, interpret: bool):
    """Pallas's Triton flash attention on one device's shard: q (B, T, N, H), k/v (B, T, K, H)."""
    from jax.experimental.pallas.ops.gpu import attention as gpu_attention
    groups = q.shape[2] // k.shape[2]
    if groups > 1:   # the kernel reads K/V head i for query head i
        k, v = jnp.repeat(k, groups, axis=2), jnp.repeat(v, groups, axis=2)
    bwd = min(block, 32)
    sizes = gpu_attention.BlockSizes(block_q=block, block_k=block, block_q_dkv=bwd, block_kv_dkv=bwd,
                                     block_q_dq=bwd, block_kv_dq=bwd)
    return gpu_attention.mha(q, k, v, segment_ids, sm_scale=scale, causal=causal, block_sizes=sizes,
                             interpret=interpret)


def _splash_local(q, k, v, segment_ids, *, block: int, causal: bool, scale: float, interpret: bool):
    """Pallas's TPU splash attention on one device's shard: q (B, T, N, H), k/v (B, T, K, H)."""
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as masks
    t, n = q.shape[1], q.shape[2]
    head_mask = masks.CausalMask((t, t)) if causal else masks.FullMask((t, t))
    sizes = splash.BlockSizes(**{f: block for f in ("block_q", "block_kv", "block_kv_compute", "block_q_dkv",
                                                    "block_kv_dkv", "block_kv_dkv_compute", "block_q_dq", "block_kv_dq")})
    kernel = splash.make_splash_mha(masks.MultiHeadMask([head_mask] * n), head_shards=1, q_seq_shards=1,
                                    block_sizes=sizes, interpret=interpret)
    heads_first = lambda x: jnp.swapaxes(x, 1, 2)                         # (B, N|K, T, H)
    out = jax.vmap(kernel)(heads_first(q * jnp.asarray(scale, q.dtype)), heads_first(k), heads_first(v),
                           splash.SegmentIds(q=segment_ids, kv=segment_ids))
    return heads_first(out)


def pallas_attention(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array, *, kernel: str,
                     causal: bool = True, scale: float | None = None) -> jax.Array:
    """Self-attention through a Pallas kernel: q (B, T, N, H); k, v (B, T, K, H); segment_ids (B, T) -> (B, T, N, H).

    ``kernel`` is ``"flash"`` (NVIDIA GPUs; Triton) or ``"splash"`` (TPUs). A query attends to the
    keys of its own segment (and, if ``causal``, not after it), as :func:`attention_mask` says for
    every query of a non-zero segment. T is padded up to the kernel's block with segment-0 rows.
    Under a mesh the kernel runs per device (``jax.shard_map``): batch over the batch axes when they
    divide it, heads over the axes of ``act_heads`` (K/V repeated to N heads if their axes differ);
    the sequence must not be sharded. On CPU the kernel runs in Pallas's interpreter.

    Raises ValueError for an unknown kernel, or a kernel on the wrong accelerator (``splash`` on a
    GPU, ``flash`` on a TPU); ShardingError if ``act_seq`` is sharded or the heads are indivisible.
    """
    platform = jax.default_backend()
    if kernel not in PALLAS_BACKENDS:
        raise ValueError(f"pallas_attention: kernel={kernel!r}; expected one of {PALLAS_BACKENDS}")
    wanted = {"flash": "gpu", "splash": "tpu"}[kernel]
    if platform not in (wanted, "cpu"):
        raise ValueError(f"model.attention={kernel!r} runs on {wanted.upper()}s (or on CPU, interpreted), not on "
                         f"{platform}; use {'flash' if platform == 'gpu' else 'splash' if platform == 'tpu' else 'xla'!r}")
    interpret = platform == "cpu"
    if interpret:
        _warn_interpret(kernel)
    b, t, n, h = q.shape
    scale = h ** -0.5 if scale is None else scale
    block = _block(t, kernel)
    local = functools.partial(_flash_local if kernel == "flash" else _splash_local, block=block, causal=causal,
                              scale=scale, interpret=interpret)
    pad = -t % block
    if pad:   # padding keys of segment 0: no query of a real segment attends to them
        q, k, v = (jnp.pad(x, ((0, 0), (0, pad), (0, 0), (0, 0))) for x in (q, k, v))
        segment_ids = jnp.pad(segment_ids, ((0, 0), (0, pad)))

    mesh = jax.sharding.get_abstract_mesh()
    # Under GSPMD, run the kernel per device; inside a per-device program (shard_map: the data-parallel
    # step, its axes Manual) the arrays are already local.
    partitioned = (mesh is not None and not mesh.empty and
                   any(size > 1 and name not in mesh.manual_axes for name, size in mesh.shape.items()))
    if partitioned:
        q_spec, kv_spec = logical_spec(_Q, mesh=mesh), logical_spec(_KV, mesh=mesh)
        if q_spec[1] is not None:
            raise ShardingError(f"model.attention={kernel!r} needs whole sequences on each device; act_seq maps to "
                                f"{q_spec[1]!r}")
        if n % _mesh_axis_size(mesh, q_spec[2]):
            raise ShardingError(f"model.attention={kernel!r}: {n} query heads are not divisible by mesh axes "
                                f"{q_spec[2]!r} of size {_mesh_axis_size(mesh, q_spec[2])}")
        if kv_spec[2] != q_spec[2] or k.shape[2] % _mesh_axis_size(mesh, kv_spec[2]):
            k, v = jnp.repeat(k, n // k.shape[2], axis=2), jnp.repeat(v, n // k.shape[2], axis=2)
        batch = q_spec[0] if b % _mesh_axis_size(mesh, q_spec[0]) == 0 else None   # else every device: all rows
        heads = PartitionSpec(batch, None, q_spec[2], None)
        local = jax.shard_map(local, in_specs=(heads, heads, heads, PartitionSpec(batch, None)), out_specs=heads,
                              check_vma=False)
    out = local(q, k, v, segment_ids)
    return out[:, :t] if pad else out


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
                 out_std: float, dtype, param_dtype, rngs: nnx.Rngs, causal: bool = True, scale: bool = True,
                 qkv_bias: bool = False, qk_norm: bool = False, norm_eps: float = 1e-6):
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.position, self.rope_theta, self.backend = position, rope_theta, backend
        self.dropout_rate, self.dtype, self.causal = dropout, dtype, causal
        self.scale = None if scale else 1.0
        if dropout and backend != "xla":
            _warn_no_attention_dropout(backend)
        d, n, k, h = embed_dim, num_heads, num_kv_heads, head_dim
        proj = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        qkv = dict(use_bias=use_bias or qkv_bias, **proj)   # qkv_bias: Qwen2's biases on q, k, v alone
        self.q = Dense((d,), (n, h), ("embed",), ("heads", "head_dim"), init_std=init_std, **qkv)
        self.k = Dense((d,), (k, h), ("embed",), ("kv_heads", "head_dim"), init_std=init_std, **qkv)
        self.v = Dense((d,), (k, h), ("embed",), ("kv_heads", "head_dim"), init_std=init_std, **qkv)
        self.o = Dense((n, h), (d,), ("heads", "head_dim"), ("embed",), init_std=out_std, use_bias=use_bias, **proj)
        # QK-norm (Qwen3): RMSNorm over each head's H dims of q and k, before RoPE; the cache holds normed keys
        norm = dict(kind="rmsnorm", eps=norm_eps, use_bias=False, param_dtype=param_dtype, rngs=rngs)
        self.q_norm = Norm(h, **norm) if qk_norm else None
        self.k_norm = Norm(h, **norm) if qk_norm else None

    def _project(self, x, dense: Dense, names, rng):
        return constrain(dense(x, rng), names)                              # (B, T, N|K, H)

    def _q(self, x, rng=None):
        return checkpoint_name(self._project(x, self.q, _Q, rng), "query_proj")

    def memory_kv(self, memory: jax.Array, rng: jax.Array | None = None) -> dict:
        """Cross-attention keys/values of the encoder output ``memory`` (B, S, D): {"k", "v"} (B, S, K, H)."""
        rngs = (None, None) if rng is None else tuple(jax.random.split(rng, 2))
        return {"k": checkpoint_name(self._project(memory, self.k, _KV, rngs[0]), "key_proj"),
                "v": checkpoint_name(self._project(memory, self.v, _KV, rngs[1]), "value_proj")}

    def _attend(self, q, k, v, *, segments, slots, self_attention, bias, dropout_rng, one_segment=False,
                cached=False):
        """segments: (query (B, T), key (B, S)) segment ids; slots: (query (T,), key (S,)) slots in the
        key buffer for a causal mask, None for bidirectional attention; ``self_attention``: the keys
        are the queries' own tokens, no cache (T == S), which the flash kernels and cuDNN's causal
        mask type serve; ``one_segment``: see ``__call__``; ``cached``: the keys are a KV cache's
        (decoding, no backward pass), so grouped-query heads read it as it is on every backend: on
        XLA:CPU, repeating K/V copied each layer's cache G times per token, and decoding a GQA model
        ran 1.4-2.9x slower (benchmarks/README.md, "Decoding GQA on CPU")."""
        causal_self = self_attention and slots is not None
        if self.backend in PALLAS_BACKENDS and self_attention and bias is None:
            out = pallas_attention(q, k, v, segments[0], kernel=self.backend, causal=causal_self, scale=self.scale)
        elif self.backend in ("dot_product", "cudnn") and bias is None:
            # The causal part as is_causal (cuDNN's causal mask type), the segments as a mask (none
            # when every row is one segment). jax.nn.dot_product_attention offers no attention dropout.
            mask = None if one_segment and causal_self else attention_mask(
                *segments, *(None, None) if causal_self or slots is None else slots)
            out = jax.nn.dot_product_attention(q, k, v, mask=mask, scale=self.scale, is_causal=causal_self,
                                               implementation="cudnn" if self.backend == "cudnn" else None)
        else:
            rng = None if dropout_rng is None else jax.random.fold_in(dropout_rng, 1)
            mask = attention_mask(*segments, *(None, None) if slots is None else slots)
            out = xla_attention(q, k, v, mask, dropout_rate=self.dropout_rate, dropout_rng=rng, bias=bias,
                                scale=self.scale, repeat_kv=False if cached else None)
        out = checkpoint_name(constrain(out, _Q), "context")
        # Adapter dropout of the output projection: a key of its own, unused by attention dropout.
        out = self.o(out, None if dropout_rng is None else jax.random.fold_in(dropout_rng, 2))     # (B, T, D)
        return checkpoint_name(out, "out_proj")

    def cross(self, x: jax.Array, kv: dict, *, segment_ids: jax.Array, kv_segment_ids: jax.Array,
              dropout_rng: jax.Array | None = None) -> jax.Array:
        """x (B, T, D) attends to all of ``kv`` (from :meth:`memory_kv`) in its own segment -> (B, T, D)."""
        k, v = kv["k"].astype(self.dtype), kv["v"].astype(self.dtype)
        return self._attend(self._q(x, _adapter_rng(dropout_rng, 3)), k, v, segments=(segment_ids, kv_segment_ids),
                            slots=None, self_attention=False, bias=None, dropout_rng=dropout_rng)

    def __call__(self, x: jax.Array, *, positions: jax.Array, segment_ids: jax.Array,
                 kv_cache: dict | None = None, cache_index: jax.Array | None = None,
                 kv_segment_ids: jax.Array | None = None, dropout_rng: jax.Array | None = None,
                 bias: jax.Array | None = None, one_segment: bool = False):
        """x: (B, T, D); positions, segment_ids: (B, T); bias: (B|1, N, T, S) added to the logits.

        ``one_segment`` (static): the caller promises every row is one segment of real tokens (no
        packing; trailing padding is allowed, causal attention never reaches it), so the ``cudnn`` and
        ``dot_product`` backends get ``is_causal`` alone and no dense (B, 1, T, T) mask, which cuDNN
        would turn into a bias (PyTorch's ``is_causal=True``). Ignored with a cache.

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
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
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
        slots = (q_slots, kv_slots) if self.causal else None
        return self._attend(q, k, v, segments=(segment_ids, kv_segment_ids), slots=slots,
                            self_attention=kv_cache is None, bias=bias, dropout_rng=dropout_rng,
                            one_segment=one_segment and kv_cache is None, cached=kv_cache is not None), new_cache
