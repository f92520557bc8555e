"""Decoder-only Transformer language model (GPT-2 and Llama families) in Flax NNX.

Pre-norm residual blocks: ``x + attn(norm(x))`` then ``x + mlp(norm(x))``, a final norm and an
unembedding (tied to the token embedding for GPT-2). Shape letters as in ``attention.py``;
L is the number of layers, V the vocabulary.

Choices:
- The forward pass is functional about randomness and caches: dropout takes an explicit
  ``dropout_rng`` (None = deterministic) and the KV cache is a dict of arrays passed in and
  returned, so the jitted train step and the sampler own all state (DESIGN: split once at jit).
- ``scan_layers`` stacks the blocks' parameters on a leading ``layers`` axis (``nnx.vmap`` at
  creation, ``nnx.scan`` in the forward pass): one block is compiled instead of L, which keeps
  compile time flat for deep models. ``remat`` wraps each block in ``nnx.remat`` with a named
  policy (``full`` saves nothing, ``dots`` saves matmul outputs, ``save_qkv_proj`` ... ``minimal``
  save tensors by their ``checkpoint_name``: ``REMAT_POLICIES``).
- Logits are returned in float32 (the loss upcasts anyway, and sampling wants exact ties).
- With ``num_experts > 0`` each block's FFN is a mixture of experts (``moe.py``). Its router
  losses come back functionally: every block returns a dict of scalars (empty for a dense block),
  stacked by the scan or collected by the loop and averaged over layers, and
  :meth:`DecoderLM.forward_with_aux` returns them beside the logits. Nothing is stored on the
  module, so scan, remat and the jitted steps need no mutable collections.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from lmforge.model.attention import Attention
from lmforge.model.config import ModelConfig
from lmforge.model.layers import MLP, Norm, dropout, dtype_of, einsum_f32, matmul, normal, param, residual_std
from lmforge.model.moe import MoE
from lmforge.model.sharding import CACHE_KV, cache_zeros, constrain

_saved = jax.checkpoint_policies.save_only_these_names
# What each layer keeps for its backward pass beside its input (the rest is recomputed). The named
# policies save tensors that Attention and MLP name (``checkpoint_name``; MaxText's names and policies),
# from the least saved (save_qkv_proj: most recomputation) to the most (minimal: minimal recomputation,
# only the attention scores). "none" (no remat) saves everything.
REMAT_POLICIES = {
    "full": None,                                                   # nothing: the layer runs twice
    "dots": jax.checkpoint_policies.checkpoint_dots,                # every matmul output, scores included
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,   # the projections
    "save_qkv_proj": _saved("query_proj", "key_proj", "value_proj"),
    "save_dot_except_mlp": _saved("query_proj", "key_proj", "value_proj", "out_proj"),
    "save_attention": _saved("query_proj", "key_proj", "value_proj", "context", "out_proj"),
    "minimal": _saved("query_proj", "key_proj", "value_proj", "context", "out_proj", "mlpwi", "mlpwo"),
}


class Block(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        dtype, pdtype = dtype_of(cfg.dtype), dtype_of(cfg.param_dtype)
        out_std = residual_std(cfg.init_std, cfg.num_layers)
        norm = dict(kind=cfg.norm, eps=cfg.norm_eps, use_bias=cfg.use_bias, param_dtype=pdtype, rngs=rngs)
        self.dropout_rate = cfg.dropout
        self.attn_norm = Norm(cfg.embed_dim, **norm)
        self.attn = Attention(embed_dim=cfg.embed_dim, num_heads=cfg.num_heads, num_kv_heads=cfg.kv_heads,
                              head_dim=cfg.dims_per_head, use_bias=cfg.use_bias, position=cfg.position,
                              rope_theta=cfg.rope_theta, backend=cfg.attention, dropout=cfg.dropout,
                              init_std=cfg.init_std, out_std=out_std, dtype=dtype, param_dtype=pdtype, rngs=rngs,
                              qkv_bias=cfg.qkv_bias, qk_norm=cfg.qk_norm, norm_eps=cfg.norm_eps)
        self.mlp_norm = Norm(cfg.embed_dim, **norm)
        self.mlp = None if cfg.num_experts else MLP(
            embed_dim=cfg.embed_dim, mlp_dim=cfg.mlp_dim, activation=cfg.activation, use_bias=cfg.use_bias,
            init_std=cfg.init_std, out_std=out_std, dtype=dtype, param_dtype=pdtype, rngs=rngs)
        self.moe = None if not cfg.num_experts else MoE(
            embed_dim=cfg.embed_dim, mlp_dim=cfg.mlp_dim, num_experts=cfg.num_experts,
            experts_per_token=cfg.experts_per_token, capacity_factor=cfg.moe_capacity_factor,
            num_shared=cfg.num_shared_experts, activation=cfg.activation, init_std=cfg.init_std,
            out_std=out_std, dtype=dtype, param_dtype=pdtype, rngs=rngs)

    def __call__(self, x, ctx: dict, kv_cache: dict | None, rng: jax.Array | None):
        """x: (B, T, D) -> (B, T, D), (the KV cache with this layer's slot updated, or None; aux scalars).

        ``kv_cache``: every layer's {"k", "v"} (L, B, S, K, H) and this layer's index ``"layer"``
        (``Attention.__call__``)."""
        rngs = (None, None, None) if rng is None else tuple(jax.random.split(rng, 3))
        h, new_cache = self.attn(self.attn_norm(x), kv_cache=kv_cache, dropout_rng=rngs[0], **ctx)
        x = x + dropout(h, self.dropout_rate, rngs[1])
        x = constrain(x, ("act_batch", "act_seq", "act_embed"))
        if self.moe is None:
            h, aux = self.mlp(self.mlp_norm(x), None if rng is None else jax.random.fold_in(rng, 3)), {}
        else:
            h, aux = self.moe(self.mlp_norm(x), ctx["segment_ids"])
        x = x + dropout(h, self.dropout_rate, rngs[2])
        return constrain(x, ("act_batch", "act_seq", "act_embed")), (new_cache, aux)


class DecoderLM(nnx.Module):
    """Token ids (B, T) -> next-token logits (B, T, V); with a score head (``num_labels > 0``, a reward
    model) -> per-position scores (B, T, num_labels), read at the last token by :meth:`scores`."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        pdtype = dtype_of(cfg.param_dtype)
        self.embed = param(rngs, normal(cfg.init_std), (cfg.vocab_size, cfg.embed_dim), ("vocab", "embed"), pdtype)
        self.pos_embed = (param(rngs, normal(cfg.init_std), (cfg.max_seq_len, cfg.embed_dim), ("pos", "embed"), pdtype)
                          if cfg.position == "learned" else None)
        if cfg.scan_layers:
            @nnx.split_rngs(splits=cfg.num_layers)
            @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
            def make_blocks(rngs):
                return Block(cfg, rngs=rngs)
            self.blocks = make_blocks(rngs)
        else:
            self.blocks = nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.num_layers)])
        self.final_norm = Norm(cfg.embed_dim, kind=cfg.norm, eps=cfg.norm_eps, use_bias=cfg.use_bias,
                               param_dtype=pdtype, rngs=rngs)
        self.unembed = (None if cfg.tie_embeddings or cfg.num_labels else
                        param(rngs, normal(cfg.init_std), (cfg.embed_dim, cfg.vocab_size), ("embed", "vocab"), pdtype))
        # A reward model's score head (transformers' ``score``, no bias) in place of the unembedding.
        self.score = (param(rngs, normal(cfg.init_std), (cfg.embed_dim, cfg.num_labels), ("embed", None), pdtype)
                      if cfg.num_labels else None)

    def init_cache(self, batch_size: int, max_len: int, dtype=None) -> dict:
        """An empty KV cache for ``batch_size`` rows of ``max_len`` (S) slots: {"k", "v": (L, B, S, K, H)
        zeros; "segment_ids": (B, S) int32, 0 until a slot is written (a written padding token keeps
        segment 0, so no query attends to it); "index": () int32, the next slot to write, one for the
        whole batch}. A call with the cache writes its T tokens at slots index .. index + T - 1 and
        returns the next cache (a value: the one passed in is unchanged).

        Call it as the model is called, under ``jax.set_mesh`` and ``axis_rules``: the buffers are then
        born sharded by their logical axes (``CACHE_KV``); outside a mesh they are plain zeros.
        The caller keeps index + T <= S: inside jit an overflow is not detected (``dynamic_update_slice``
        moves the write back and overwrites earlier slots); a call with more tokens than slots raises
        ValueError, as does a model with a score head (a reward model scores, it does not generate)."""
        cfg = self.cfg
        if self.score is not None:
            raise ValueError(f"this model has a score head ({cfg.num_labels} labels: a reward model); it scores "
                             f"sequences (DecoderLM.scores) and does not generate")
        shape = (cfg.num_layers, batch_size, max_len, cfg.kv_heads, cfg.dims_per_head)
        dt = dtype_of(dtype or cfg.dtype)
        return {"k": cache_zeros(shape, dt, CACHE_KV), "v": cache_zeros(shape, dt, CACHE_KV),
                "segment_ids": cache_zeros((batch_size, max_len), jnp.int32, ("act_batch", "act_kv_seq")),
                "index": jnp.zeros((), jnp.int32)}

    def __call__(self, tokens: jax.Array, *, positions: jax.Array | None = None,
                 segment_ids: jax.Array | None = None, cache: dict | None = None,
                 dropout_rng: jax.Array | None = None):
        """tokens (B, T) int; positions, segment_ids (B, T) (default 0..T-1 and all ones; with a cache
        the positions default to index .. index + T - 1, one index for the whole batch, so left-padded
        rows pass their own positions, as the sampler does). Without a cache, no segment ids means
        one segment per row: the ``cudnn`` / ``dot_product`` attention then gets no dense mask.

        Returns ``(logits (B, T, V) float32, new_cache or None)``.
        """
        logits, new_cache, _ = self.forward_with_aux(tokens, positions=positions, segment_ids=segment_ids,
                                                     cache=cache, dropout_rng=dropout_rng)
        return logits, new_cache

    def forward_with_aux(self, tokens: jax.Array, *, positions: jax.Array | None = None,
                         segment_ids: jax.Array | None = None, cache: dict | None = None,
                         dropout_rng: jax.Array | None = None):
        """As ``__call__``, plus the layers' auxiliary scalars averaged over layers: the MoE router
        losses ``moe_aux_loss``, ``moe_z_loss`` and ``moe_dropped`` ({} for a dense model).

        Returns ``(logits (B, T, V) float32, new_cache or None, aux)``.
        """
        hidden, new_cache, aux = self.hidden_states(tokens, positions=positions, segment_ids=segment_ids,
                                                    cache=cache, dropout_rng=dropout_rng)
        return self.logits(hidden), new_cache, aux

    def output_head(self) -> tuple[jax.Array, None]:
        """The unembedding ``(D, V)`` in the compute dtype (the token table transposed when tied), and
        no bias: what :func:`lmforge.model.token_logprobs` multiplies the hidden states by. Raises
        ValueError for a model with a score head (``num_labels > 0``): it has no token distribution."""
        if self.score is not None:
            raise ValueError(f"this model has a score head ({self.cfg.num_labels} labels: a reward model) and no "
                             f"language-model head; it scores sequences (DecoderLM.scores) and cannot give token "
                             f"log-probs or generate")
        w = self.embed[...].T if self.unembed is None else self.unembed[...]
        return w.astype(dtype_of(self.cfg.dtype)), None

    def logits(self, hidden: jax.Array) -> jax.Array:
        """Final hidden states (B, T, D) -> logits (B, T, V) float32, the full table at once.

        A tied table (V, D) is contracted over its own minor dimension, ``x @ table^T`` as PyTorch's
        ``F.linear(x, wte.weight)``: through ``output_head``'s transposed (D, V) view, the matrix-vector
        product of a batch-1 decode step made XLA:CPU copy the whole table, transposed, every token.
        """
        if self.score is not None:     # (B, T, num_labels): every position's score, as transformers computes
            return matmul(hidden, self.score[...].astype(hidden.dtype), preferred_element_type=jnp.float32)
        if self.unembed is None:
            b, t, d = hidden.shape
            table = self.embed[...].astype(dtype_of(self.cfg.dtype))
            logits = einsum_f32("md,vd->mv", hidden.reshape(b * t, d), table).reshape(b, t, -1)
        else:
            logits = matmul(hidden, self.output_head()[0], preferred_element_type=jnp.float32)   # (B, T, V)
        return constrain(logits, ("act_batch", "act_seq", "act_vocab"))

    def scores(self, tokens: jax.Array, *, segment_ids: jax.Array | None = None, positions: jax.Array | None = None,
               dropout_rng: jax.Array | None = None, one_segment: bool | None = None) -> tuple[jax.Array, dict]:
        """A reward model's scores: tokens (B, T) -> ``(scores (B, num_labels) float32, aux)``, the score
        head applied to the final hidden state of each row's last real token (the last position whose
        ``segment_ids`` is > 0; default: position T - 1), as transformers' ``*ForSequenceClassification``
        reads the last token that is not padding. Each row is one sequence; its positions default to
        0 .. T - 1, right for rows padded on the right (padding: segment 0). Left-padded rows (the
        sampler's) pass their own ``positions`` (B, T), counted from each row's first real token, or
        their tokens sit at shifted positions (as in transformers without ``position_ids``).
        ``one_segment=True`` says every row is right-padded, so causal attention needs no segment mask.
        A row without a real token reads position 0: weigh it 0. Raises ValueError for a language
        model (``num_labels == 0``)."""
        if self.score is None:
            raise ValueError("this model has a language-model head, not a score head; a reward model is a decoder "
                             "with model.num_labels > 0 (lmforge.weights.load_params(..., num_labels=1) adds one)")
        b, t = tokens.shape
        real = jnp.ones((b, t), bool) if segment_ids is None else segment_ids > 0
        last = jnp.argmax(jnp.where(real, jnp.arange(t), -1), axis=-1)                       # (B,)
        hidden, _, aux = self.hidden_states(tokens, positions=positions, segment_ids=segment_ids,
                                            dropout_rng=dropout_rng, one_segment=one_segment)
        at_last = jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]              # (B, D)
        scores = jnp.matmul(at_last, self.score[...].astype(hidden.dtype), preferred_element_type=jnp.float32)
        return scores, aux

    def hidden_states(self, tokens: jax.Array, *, positions: jax.Array | None = None,
                      segment_ids: jax.Array | None = None, cache: dict | None = None,
                      dropout_rng: jax.Array | None = None, one_segment: bool | None = None):
        """tokens (B, T) -> ``(final hidden states (B, T, D) after the final norm, new_cache or None, aux)``.

        The input of the unembedding: value and reward heads read it, and the losses turn it into
        log-probs in vocabulary chunks (``token_logprobs``) instead of materialising (B, T, V) logits.
        ``one_segment`` (static; default: no ``segment_ids`` and no cache): every row is one segment,
        real tokens first and padding (segment 0) only after them, so causal attention needs no
        segment mask (``Attention``: cuDNN gets ``is_causal`` alone); the segment ids still mark the
        padding for the MoE router. Ignored with a cache.
        """
        cfg = self.cfg
        dtype = dtype_of(cfg.dtype)
        b, t = tokens.shape
        if cache is not None and t > cache["k"].shape[2]:
            raise ValueError(f"{t} tokens do not fit a KV cache of {cache['k'].shape[2]} slots (init_cache max_len)")
        if cache is None and t > cfg.max_seq_len:   # learned positions would clamp; a sliding window would slide
            raise ValueError(f"{t} tokens exceed model.max_seq_len={cfg.max_seq_len}, the context this model computes "
                             f"(lmforge.infer.text continues longer texts in windows)")
        if positions is None:
            start = 0 if cache is None else cache["index"]
            positions = jnp.broadcast_to(start + jnp.arange(t, dtype=jnp.int32), (b, t))
        one_segment = (segment_ids is None if one_segment is None else one_segment) and cache is None
        if segment_ids is None:
            segment_ids = jnp.ones((b, t), jnp.int32)

        # Look up in the table as it is sharded (vocab over tensor, embed over fsdp): XLA partitions the
        # lookup (an all-reduce or a small all-to-all of the looked-up rows) instead of all-gathering the
        # whole (V, D) table every step. Same losses; on 8 CPU devices, V=32000 D=256, the step's
        # all-gather bytes fell 33 -> 0 MB (tp=8) and 71 -> 38 MB (fsdp=8), steps 1.18-1.37x faster
        # (benchmarks/README.md).
        table = constrain(self.embed[...], ("vocab", "embed"))
        x = jnp.take(table, tokens, axis=0).astype(dtype)                  # (B, T, D)
        if self.pos_embed is not None:
            x = x + jnp.take(constrain(self.pos_embed[...], (None, None)), positions, axis=0).astype(dtype)
        rngs = None if dropout_rng is None else jax.random.split(dropout_rng, cfg.num_layers + 1)
        x = dropout(x, cfg.dropout, None if rngs is None else rngs[-1])
        x = constrain(x, ("act_batch", "act_seq", "act_embed"))

        ctx = {"positions": positions, "segment_ids": segment_ids}
        if one_segment:
            ctx["one_segment"] = True
        if cache is not None:
            index = cache["index"]
            kv_segments = jax.lax.dynamic_update_slice(cache["segment_ids"], segment_ids, (0, index))
            ctx.update(cache_index=index, kv_segment_ids=kv_segments)
        x, new_kv, aux = self._layers(x, ctx, cache, None if rngs is None else rngs[:-1])
        x = self.final_norm(x)
        new_cache = None
        if cache is not None:
            new_cache = {"k": new_kv["k"], "v": new_kv["v"], "segment_ids": ctx["kv_segment_ids"],
                         "index": cache["index"] + t}
        return x, new_cache, aux

    def _layers(self, x, ctx, cache, rngs):
        cfg = self.cfg

        def call(block, x, kv, rng):
            return block(x, ctx, kv, rng)
        if cfg.remat != "none":
            call = nnx.remat(call, policy=REMAT_POLICIES[cfg.remat])

        # The KV cache (L, B, S, K, H) goes through the layers whole; each writes its slot in place
        # (Attention: a cache with "layer").
        kv = None if cache is None else {"k": cache["k"], "v": cache["v"]}
        if cfg.scan_layers:
            @nnx.scan(in_axes=(0, nnx.Carry, 0, 0), out_axes=(nnx.Carry, 0))
            def body(block, carry, layer, rng):
                x, kv = carry
                x, (kv, aux) = call(block, x, None if kv is None else {**kv, "layer": layer}, rng)
                return (x, kv), aux
            (x, kv), aux = body(self.blocks, (x, kv), jnp.arange(cfg.num_layers), rngs)   # aux: (L,) per key
            return x, kv, jax.tree.map(lambda v: v.mean(0), aux)

        auxes = []
        for i, block in enumerate(self.blocks):
            x, (kv, aux) = call(block, x, None if kv is None else {**kv, "layer": i},
                                None if rngs is None else rngs[i])
            auxes.append(aux)
        return x, kv, jax.tree.map(lambda *v: jnp.mean(jnp.stack(v)), *auxes)
