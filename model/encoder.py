"""Encoder-only Transformer (BERT family) in Flax NNX: bidirectional self-attention and an MLM head.

BERT (Devlin et al. 2019): word + learned position + token-type embeddings, a LayerNorm on their
sum, post-LN layers (``norm(x + f(x))``) with exact-erf GELU, and a masked-LM head
``dense -> GELU -> LayerNorm -> unembedding (tied to the word embeddings) + bias``. Shape letters
as in ``attention.py``.

Choices:
- Padding and packing use the same segment ids as the decoder: a token attends to every token of
  its own non-zero segment, in both directions.
- ``lm_head=False`` builds the encoder alone (a sentence encoder such as all-MiniLM-L6-v2);
  :meth:`EncoderLM.encode` returns the hidden states and :func:`mean_pool` the sentence embedding
  that sentence-transformers computes (the mean over real tokens).
- A pre-norm encoder (``norm_position="pre"``) has no embedding norm and a final norm instead.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from lmforge.model.config import ModelConfig
from lmforge.model.layers import Dense, Norm, activate, dropout, dtype_of, matmul, normal, param, zeros
from lmforge.model.sharding import constrain
from lmforge.model.stack import ACT_BTD, Layer, default_positions, sinusoidal_positions


class Embeddings(nnx.Module):
    """Token (+ learned or sinusoidal position) (+ token type) embeddings -> (B, T, D)."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        pdtype = dtype_of(cfg.param_dtype)
        self.cfg = cfg
        self.tokens = param(rngs, normal(cfg.init_std), (cfg.vocab_size, cfg.embed_dim), ("vocab", "embed"), pdtype)
        self.positions = (param(rngs, normal(cfg.init_std), (cfg.max_seq_len, cfg.embed_dim), ("pos", "embed"), pdtype)
                          if cfg.position == "learned" else None)
        # token types: a handful of rows, never split over `tensor` like the vocabulary
        self.types = (param(rngs, normal(cfg.init_std), (cfg.type_vocab_size, cfg.embed_dim), ("pos", "embed"),
                            pdtype) if cfg.type_vocab_size else None)

    def __call__(self, tokens, positions, token_types=None):
        cfg, dtype = self.cfg, dtype_of(self.cfg.dtype)
        # Gather from the table as it is sharded (as DecoderLM): no all-gather of the whole table.
        x = jnp.take(constrain(self.tokens[...], ("vocab", "embed")), tokens, axis=0).astype(dtype)
        if cfg.embed_scale:
            x = x * jnp.sqrt(jnp.asarray(cfg.embed_dim, dtype))
        if self.positions is not None:
            x = x + jnp.take(constrain(self.positions[...], (None, None)), positions, axis=0).astype(dtype)
        elif cfg.position == "sinusoidal":
            x = x + sinusoidal_positions(positions, cfg.embed_dim).astype(dtype)
        if self.types is not None:
            types = jnp.zeros_like(tokens) if token_types is None else token_types
            x = x + jnp.take(constrain(self.types[...], (None, None)), types, axis=0).astype(dtype)
        return x


class MLMHead(nnx.Module):
    """BERT's masked-LM head: dense -> activation -> norm -> unembedding (+ bias)."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        pdtype = dtype_of(cfg.param_dtype)
        self.cfg = cfg
        self.dense = Dense((cfg.embed_dim,), (cfg.embed_dim,), ("embed",), ("mlp",), use_bias=True,
                           init_std=cfg.init_std, dtype=dtype_of(cfg.dtype), param_dtype=pdtype, rngs=rngs)
        self.norm = Norm(cfg.embed_dim, kind=cfg.norm, eps=cfg.norm_eps, use_bias=cfg.use_bias, param_dtype=pdtype,
                         rngs=rngs)
        self.unembed = (None if cfg.tie_embeddings else
                        param(rngs, normal(cfg.init_std), (cfg.embed_dim, cfg.vocab_size), ("embed", "vocab"), pdtype))
        self.bias = param(rngs, zeros, (cfg.vocab_size,), ("vocab",), pdtype)

    def transform(self, x: jax.Array) -> jax.Array:
        """Encoder output (B, T, D) -> the head's hidden states (B, T, D): dense, activation, norm."""
        act = "gelu_exact" if self.cfg.activation == "gelu_exact" else "gelu"
        # Back to full rows before the norm: left sharded over `tensor`, XLA's SPMD partitioner gave
        # wrong gradients for this norm on a (2, 2, 2) mesh (right forward values).
        return self.norm(constrain(activate(self.dense(x), act), ACT_BTD))

    def output_head(self, embed_table: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(the unembedding (D, V) in the compute dtype, the output bias (V,) float32)."""
        w = embed_table.T if self.unembed is None else self.unembed[...]
        return w.astype(dtype_of(self.cfg.dtype)), self.bias[...].astype(jnp.float32)

    def __call__(self, x, embed_table):
        w, b = self.output_head(embed_table)
        logits = matmul(self.transform(x), w, preferred_element_type=jnp.float32) + b
        return constrain(logits, ("act_batch", "act_seq", "act_vocab"))


class EncoderLM(nnx.Module):
    """Token ids (B, T) -> masked-LM logits (B, T, V) (or hidden states (B, T, D) without a head)."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        if cfg.architecture != "encoder":
            raise ValueError(f"EncoderLM needs an encoder-only family (bert), got model.family={cfg.family!r}")
        pdtype = dtype_of(cfg.param_dtype)
        self.cfg = cfg
        self.embed = Embeddings(cfg, rngs=rngs)
        norm = dict(kind=cfg.norm, eps=cfg.norm_eps, use_bias=cfg.use_bias, param_dtype=pdtype, rngs=rngs)
        post = cfg.norm_position == "post"
        self.embed_norm = Norm(cfg.embed_dim, **norm) if post else None
        self.layers = nnx.List([Layer(cfg, causal=False, cross=False, depth=cfg.num_layers, rngs=rngs)
                                for _ in range(cfg.num_layers)])
        self.final_norm = None if post else Norm(cfg.embed_dim, **norm)
        self.head = MLMHead(cfg, rngs=rngs) if cfg.lm_head else None

    def encode(self, tokens: jax.Array, *, token_types: jax.Array | None = None, positions: jax.Array | None = None,
               segment_ids: jax.Array | None = None, dropout_rng: jax.Array | None = None) -> jax.Array:
        """tokens (B, T) -> hidden states (B, T, D); segment id 0 marks padding."""
        cfg = self.cfg
        positions = default_positions(tokens) if positions is None else positions
        segment_ids = jnp.ones_like(tokens) if segment_ids is None else segment_ids
        rngs = None if dropout_rng is None else jax.random.split(dropout_rng, cfg.num_layers + 1)
        x = self.embed(tokens, positions, token_types)
        if self.embed_norm is not None:
            x = self.embed_norm(x)
        x = constrain(dropout(x, cfg.dropout, None if rngs is None else rngs[-1]), ACT_BTD)
        ctx = {"positions": positions, "segment_ids": segment_ids}
        for i, layer in enumerate(self.layers):
            x, _ = layer(x, ctx, rng=None if rngs is None else rngs[i])
        return x if self.final_norm is None else self.final_norm(x)

    def hidden_states(self, tokens: jax.Array, *, token_types: jax.Array | None = None,
                      positions: jax.Array | None = None, segment_ids: jax.Array | None = None,
                      dropout_rng: jax.Array | None = None, cache=None):
        """tokens (B, T) -> ``(the MLM head's hidden states (B, T, D), None, {})``: the input of
        :meth:`output_head`, in the decoder's signature (encoders have no cache and no aux losses)."""
        if cache is not None:
            raise ValueError("an encoder-only model has no KV cache: it does not generate text")
        if self.head is None:
            raise ValueError("this encoder was built with model.lm_head=False; call encode() for hidden states")
        x = self.encode(tokens, token_types=token_types, positions=positions, segment_ids=segment_ids,
                        dropout_rng=dropout_rng)
        return self.head.transform(x), None, {}

    def output_head(self) -> tuple[jax.Array, jax.Array]:
        """(the tied unembedding (D, V) in the compute dtype, the MLM output bias (V,) float32)."""
        if self.head is None:
            raise ValueError("this encoder was built with model.lm_head=False: it has no output head")
        return self.head.output_head(self.embed.tokens[...])

    def __call__(self, tokens: jax.Array, *, token_types: jax.Array | None = None,
                 positions: jax.Array | None = None, segment_ids: jax.Array | None = None,
                 dropout_rng: jax.Array | None = None, cache=None):
        """Returns ``(logits (B, T, V) float32, None)`` (the decoder's signature; encoders have no cache)."""
        h, _, _ = self.hidden_states(tokens, token_types=token_types, positions=positions, segment_ids=segment_ids,
                                     dropout_rng=dropout_rng, cache=cache)
        w, b = self.output_head()
        logits = matmul(h, w, preferred_element_type=jnp.float32) + b
        return constrain(logits, ("act_batch", "act_seq", "act_vocab")), None


def mean_pool(hidden: jax.Array, segment_ids: jax.Array) -> jax.Array:
    """(B, T, D) hidden states, (B, T) segment ids (0 = padding) -> (B, D) mean over real tokens."""
    w = (segment_ids != 0).astype(jnp.float32)[..., None]
    return (hidden.astype(jnp.float32) * w).sum(1) / jnp.maximum(w.sum(1), 1e-9)
