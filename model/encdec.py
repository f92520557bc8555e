"""Encoder-decoder Transformer in Flax NNX: the original Transformer and T5.

- Original ("Attention Is All You Need", Vaswani et al. 2017): sinusoidal positions added to
  token embeddings scaled by sqrt(D), post-LN layers, ReLU FFN, one embedding matrix shared by the
  encoder input, the decoder input and the output layer.
- T5 (Raffel et al. 2020) and T5 v1.1: pre-RMSNorm without biases and a final norm per stack,
  a relative position bias per stack (bidirectional buckets in the encoder, causal ones in the
  decoder) and no other position signal, no ``1/sqrt(H)`` attention scale, ReLU (T5) or gated GELU
  (v1.1). T5 with tied embeddings scales the decoder output by ``D ** -0.5`` before the tied
  unembedding (``output_scale``; as the Mesh TensorFlow and Hugging Face code do).

Shape letters as in ``attention.py``; S is the encoder length when it differs from T.

Decoding: :meth:`EncoderDecoderLM.init_cache` runs the encoder once and keeps each decoder layer's
cross-attention keys/values in the cache next to the growing self-attention cache, so the one
sampler in ``lmforge.infer`` decodes these models with the same prefill/decode loop.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from lmforge.model.config import ModelConfig
from lmforge.model.encoder import Embeddings
from lmforge.model.layers import Norm, dropout, dtype_of, matmul, normal, param
from lmforge.model.sharding import CACHE_KV, cache_zeros, constrain
from lmforge.model.stack import ACT_BTD, Layer, RelativeBias, default_positions


class EncoderDecoderLM(nnx.Module):
    """(encoder tokens (B, S), decoder tokens (B, T)) -> next-token logits (B, T, V) of the decoder."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        if cfg.architecture != "encoder_decoder":
            raise ValueError(f"EncoderDecoderLM needs an encoder-decoder family (transformer, t5), "
                             f"got model.family={cfg.family!r}")
        pdtype = dtype_of(cfg.param_dtype)
        self.cfg = cfg
        self.embed = Embeddings(cfg, rngs=rngs)
        self.encoder_layers = nnx.List([Layer(cfg, causal=False, cross=False, depth=cfg.num_layers, rngs=rngs)
                                        for _ in range(cfg.num_layers)])
        self.decoder_layers = nnx.List([Layer(cfg, causal=True, cross=True, depth=cfg.decoder_layers, rngs=rngs)
                                        for _ in range(cfg.decoder_layers)])
        relative = cfg.position == "relative"
        self.encoder_bias = RelativeBias(cfg, bidirectional=True, rngs=rngs) if relative else None
        self.decoder_bias = RelativeBias(cfg, bidirectional=False, rngs=rngs) if relative else None
        pre = cfg.norm_position == "pre"
        norm = dict(kind=cfg.norm, eps=cfg.norm_eps, use_bias=cfg.use_bias, param_dtype=pdtype, rngs=rngs)
        self.encoder_norm = Norm(cfg.embed_dim, **norm) if pre else None
        self.decoder_norm = Norm(cfg.embed_dim, **norm) if pre else None
        self.unembed = (None if cfg.tie_embeddings else
                        param(rngs, normal(cfg.init_std), (cfg.embed_dim, cfg.vocab_size), ("embed", "vocab"), pdtype))

    # --- encoder -----------------------------------------------------------------------------------
    def encode(self, tokens: jax.Array, *, positions: jax.Array | None = None, segment_ids: jax.Array | None = None,
               dropout_rng: jax.Array | None = None) -> jax.Array:
        """Encoder tokens (B, S) -> memory (B, S, D); segment id 0 marks padding."""
        cfg = self.cfg
        positions = default_positions(tokens) if positions is None else positions
        segment_ids = jnp.ones_like(tokens) if segment_ids is None else segment_ids
        rngs = None if dropout_rng is None else jax.random.split(dropout_rng, cfg.num_layers + 2)
        x = self._embed(tokens, positions, None if rngs is None else rngs[-1])
        ctx = {"positions": positions, "segment_ids": segment_ids}
        if self.encoder_bias is not None:
            ctx["bias"] = self.encoder_bias(positions, positions)
        for i, layer in enumerate(self.encoder_layers):
            x, _ = layer(x, ctx, rng=None if rngs is None else rngs[i])
        if self.encoder_norm is not None:
            x = dropout(self.encoder_norm(x), cfg.dropout, None if rngs is None else rngs[-2])
        return x

    def _embed(self, tokens, positions, rng):
        x = self.embed(tokens, positions)
        return constrain(dropout(x, self.cfg.dropout, rng), ACT_BTD)

    def memory_kv(self, memory: jax.Array) -> list[dict]:
        """Each decoder layer's cross-attention keys/values of ``memory``: [{"k", "v"} (B, S, K, H)] * L."""
        return [layer.cross_attn.memory_kv(memory) for layer in self.decoder_layers]

    # --- decoder -----------------------------------------------------------------------------------
    def init_cache(self, batch_size: int, max_len: int, dtype=None, *, encoder_tokens: jax.Array,
                   encoder_segment_ids: jax.Array | None = None, encoder_positions: jax.Array | None = None) -> dict:
        """Runs the encoder on ``encoder_tokens`` (B, S) and returns an empty decoder cache holding
        the cross-attention keys/values (L, B, S, K, H) and self-attention buffers (L, B, max_len, K, H)."""
        cfg = self.cfg
        if encoder_segment_ids is None:
            encoder_segment_ids = jnp.ones_like(encoder_tokens)
        memory = self.encode(encoder_tokens, positions=encoder_positions, segment_ids=encoder_segment_ids)
        dt = dtype_of(dtype or cfg.dtype)
        cross = self.memory_kv(memory)
        shape = (cfg.decoder_layers, batch_size, max_len, cfg.kv_heads, cfg.dims_per_head)
        return {"k": cache_zeros(shape, dt, CACHE_KV), "v": cache_zeros(shape, dt, CACHE_KV),
                "segment_ids": cache_zeros((batch_size, max_len), jnp.int32, ("act_batch", "act_kv_seq")),
                "positions": cache_zeros((batch_size, max_len), jnp.int32, ("act_batch", "act_kv_seq")),
                "index": jnp.zeros((), jnp.int32),
                "memory_k": jnp.stack([kv["k"] for kv in cross]).astype(dt),      # (L, B, S, K, H)
                "memory_v": jnp.stack([kv["v"] for kv in cross]).astype(dt),
                "memory_segment_ids": encoder_segment_ids.astype(jnp.int32)}

    def __call__(self, tokens: jax.Array, *, positions: jax.Array | None = None,
                 segment_ids: jax.Array | None = None, cache: dict | None = None,
                 dropout_rng: jax.Array | None = None, encoder_tokens: jax.Array | None = None,
                 encoder_positions: jax.Array | None = None, encoder_segment_ids: jax.Array | None = None):
        """Decoder tokens (B, T) (teacher-forced inputs) -> ``(logits (B, T, V) float32, new cache or None)``.

        Without a cache the encoder runs on ``encoder_tokens`` (B, S); with one (from
        :meth:`init_cache`) the cached cross-attention keys/values are used.
        """
        h, new_cache, _ = self.hidden_states(
            tokens, positions=positions, segment_ids=segment_ids, cache=cache, dropout_rng=dropout_rng,
            encoder_tokens=encoder_tokens, encoder_positions=encoder_positions,
            encoder_segment_ids=encoder_segment_ids)
        w, _ = self.output_head()
        logits = matmul(h, w, preferred_element_type=jnp.float32)                         # (B, T, V)
        return constrain(logits, ("act_batch", "act_seq", "act_vocab")), new_cache

    def output_head(self) -> tuple[jax.Array, None]:
        """The unembedding (D, V) in the compute dtype (the shared table transposed when tied), no bias."""
        w = self.embed.tokens[...].T if self.unembed is None else self.unembed[...]
        return w.astype(dtype_of(self.cfg.dtype)), None

    def hidden_states(self, tokens: jax.Array, *, positions: jax.Array | None = None,
                      segment_ids: jax.Array | None = None, cache: dict | None = None,
                      dropout_rng: jax.Array | None = None, encoder_tokens: jax.Array | None = None,
                      encoder_positions: jax.Array | None = None, encoder_segment_ids: jax.Array | None = None):
        """As ``__call__``, but ``(decoder hidden states (B, T, D), new cache or None, {})``: the input of
        :meth:`output_head` (after the final norm and, for the original T5, the output scale)."""
        cfg = self.cfg
        b, t = tokens.shape
        if cache is not None and t > cache["k"].shape[2]:
            raise ValueError(f"{t} tokens do not fit a KV cache of {cache['k'].shape[2]} slots (init_cache max_len)")
        if positions is None:
            positions = default_positions(tokens, 0 if cache is None else cache["index"])
        if segment_ids is None:
            segment_ids = jnp.ones((b, t), jnp.int32)
        rngs = None if dropout_rng is None else jax.random.split(dropout_rng, cfg.decoder_layers + 2)
        if cache is None:
            if encoder_tokens is None:
                raise ValueError("an encoder-decoder model needs encoder_tokens (or a cache from init_cache)")
            memory = self.encode(encoder_tokens, positions=encoder_positions, segment_ids=encoder_segment_ids,
                                 dropout_rng=None if rngs is None else rngs[-2])
            memory_kv = self.memory_kv(memory)
            memory_segments = jnp.ones_like(encoder_tokens) if encoder_segment_ids is None else encoder_segment_ids
        else:
            memory_kv = [{"k": cache["memory_k"][i], "v": cache["memory_v"][i]} for i in range(cfg.decoder_layers)]
            memory_segments = cache["memory_segment_ids"]

        x = self._embed(tokens, positions, None if rngs is None else rngs[-1])
        ctx = {"positions": positions, "segment_ids": segment_ids, "memory_segment_ids": memory_segments}
        kv_positions = positions
        if cache is not None:
            index = cache["index"]
            ctx["cache_index"] = index
            ctx["kv_segment_ids"] = jax.lax.dynamic_update_slice(cache["segment_ids"], segment_ids, (0, index))
            kv_positions = jax.lax.dynamic_update_slice(cache["positions"], positions, (0, index))
        if self.decoder_bias is not None:
            ctx["bias"] = self.decoder_bias(positions, kv_positions)
        kv = None if cache is None else {"k": cache["k"], "v": cache["v"]}   # (L, B, S, K, H), in place
        for i, layer in enumerate(self.decoder_layers):
            x, kv = layer(x, ctx, kv_cache=None if kv is None else {**kv, "layer": i},
                          memory_kv=memory_kv[i], rng=None if rngs is None else rngs[i])
        if self.decoder_norm is not None:
            x = self.decoder_norm(x)
        if cfg.output_scale:   # the original T5 rescales before its tied unembedding (Mesh TF)
            x = x * (cfg.embed_dim ** -0.5)
        new_cache = None
        if cache is not None:
            new_cache = {**cache, "k": kv["k"], "v": kv["v"],
                         "segment_ids": ctx["kv_segment_ids"], "positions": kv_positions, "index": cache["index"] + t}
        return x, new_cache, {}
