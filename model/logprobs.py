"""Log-probabilities of target tokens from final hidden states, in vocabulary chunks.

``token_logprobs(hidden, head, targets)`` is what every loss and scorer reads (the causal-LM and
masked-LM losses, DPO/PPO log-ratios, the evaluation harness's log-likelihoods, the sampler's
teacher-forced check): for each position, log p(target), the log-normaliser log Z and whether the
target is the most likely token. It never holds the (B, T, V) float32 logits at once, unless
``vocab_chunk`` is 0 or at least V.

Choices:
- The vocabulary is cut into C chunks of Vc columns and scanned with an online log-sum-exp
  (running max m and sum s of exp(logit - m), as in Milakov & Gimelshein 2018, "Online
  normalizer calculation for softmax", and Levanter's blockwise cross-entropy). Each chunk's
  logits (B, T, Vc) live only inside one step of the scan, and the step is rematerialised
  (``jax.checkpoint``) in the backward pass, so forward and backward peak at (B, T, Vc), not
  (B, T, V). ``benchmarks/logprobs_memory.py`` measures the peak from the compiled memory analysis.
- Chunks are contiguous column blocks sliced out of the head in place (``dynamic_slice``; the last
  one overlaps its neighbour and masks the columns already counted): no copy of the head, and the
  temporary memory of loss + gradient stays flat as the vocabulary grows (285 MB at 32k and at
  128k for B=4, T=512, D=512, chunks of 8192, float32, from XLA's compiled memory analysis on CPU).
  When the vocabulary is split over a mesh axis (``act_vocab`` -> ``tensor`` > 1) chunks are
  *strided* instead — chunk c holds the columns c, c + C, c + 2C, ... (the head viewed as
  (D, Vc, C)) — so each chunk is split over the devices like the vocabulary, at the price of a
  transposed copy of the head (352 / 755 MB in the same measurement).
- A vocabulary of at most ``vocab_chunk`` columns is one chunk, computed exactly as the full
  logits would be (one matmul, ``logsumexp``, ``argmax``): small models pay nothing and keep the
  numerics they had before chunking existed. ``vocab_chunk=0`` asks for that whatever the
  vocabulary: the whole (B, T, V) float32 logits at once, as PyTorch's cross-entropy and MaxText
  without vocabulary tiling hold them, in exchange for the chunks' recomputation in the backward
  pass (2 B T D V FLOPs, +6.7% of Llama 1B's step at 128k classes and T = 1024). The runs'
  ``vocab_chunk`` key and ``lmforge plan`` (which counts the logits' bytes) choose it per run.
- ``correct`` is "the target's logit equals the maximum logit"; the full path uses ``argmax``
  (first index on ties), the chunked one counts ties as correct. Ties of float32 logits do not
  happen in practice.
"""

from __future__ import annotations

import math
import operator
from typing import NamedTuple

import jax
import jax.numpy as jnp

from lmforge.model.layers import matmul
from lmforge.model.sharding import constrain, logical_spec

VOCAB_CHUNK = 16_384   # columns per chunk; a vocabulary this small or smaller is one chunk; 0: always one
_LOGITS = ("act_batch", "act_seq", "act_vocab")


def check_vocab_chunk(vocab_chunk: int) -> None:
    """Raises ValueError unless ``vocab_chunk`` is an int >= 0 (columns per chunk; 0: one chunk)."""
    try:
        ok = not isinstance(vocab_chunk, bool) and operator.index(vocab_chunk) >= 0   # ints, numpy's too
    except TypeError:
        ok = False
    if not ok:
        raise ValueError(f"vocab_chunk={vocab_chunk!r}: expected columns of logits per chunk (an int >= 1), or 0 "
                         f"for the whole vocabulary at once")


class TokenLogprobs(NamedTuple):
    """Per-position results of :func:`token_logprobs`, each (B, T)."""
    logprobs: jax.Array   # float32: log p(target)
    log_z: jax.Array      # float32: logsumexp of the logits (z-loss reads it)
    correct: jax.Array    # bool: the target is the most likely token


def token_logprobs(hidden: jax.Array, head: jax.Array, targets: jax.Array, *, bias: jax.Array | None = None,
                   vocab_chunk: int = VOCAB_CHUNK) -> TokenLogprobs:
    """Log-probabilities of ``targets`` under ``softmax(hidden @ head + bias)``.

    Args:
      hidden: (B, T, D) final hidden states (any float dtype; the matmul accumulates in float32).
      head: (D, V) unembedding, e.g. from ``model.output_head()``.
      targets: (B, T) int token ids in [0, V).
      bias: optional (V,) output bias (BERT's MLM head).
      vocab_chunk: columns per chunk; V <= vocab_chunk, or 0, computes the full logits in one go.

    Returns:
      TokenLogprobs of (B, T) arrays: ``logprobs`` and ``log_z`` float32, ``correct`` bool.

    Raises:
      ValueError: if the shapes disagree or ``vocab_chunk < 0``.
    """
    if hidden.ndim != 3 or head.ndim != 2 or hidden.shape[-1] != head.shape[0] or targets.shape != hidden.shape[:2]:
        raise ValueError(f"token_logprobs: hidden (B, T, D), head (D, V), targets (B, T); got {hidden.shape}, "
                         f"{head.shape}, {targets.shape}")
    check_vocab_chunk(vocab_chunk)
    targets = targets.astype(jnp.int32)
    v = head.shape[1]
    if v <= vocab_chunk or vocab_chunk == 0:
        logits = constrain(matmul(hidden, head, preferred_element_type=jnp.float32), _LOGITS)   # (B, T, V)
        if bias is not None:
            logits = logits + bias.astype(jnp.float32)
        log_z = jax.nn.logsumexp(logits, axis=-1)
        target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
        return TokenLogprobs(target_logit - log_z, log_z, jnp.argmax(logits, axis=-1) == targets)
    chunks = math.ceil(v / vocab_chunk)
    if _vocab_shards() > 1:
        return _strided(hidden, head, targets, bias, chunks)
    return _contiguous(hidden, head, targets, bias, chunks)


def _vocab_shards() -> int:
    """How many ways the active mesh splits the vocabulary axis of the logits."""
    axes = logical_spec(("act_vocab",))[0]
    mesh = jax.sharding.get_abstract_mesh()
    if axes is None or mesh is None or mesh.empty:
        return 1
    return math.prod(mesh.shape[a] for a in ((axes,) if isinstance(axes, str) else axes) if a in mesh.shape)


def _online_step(carry, logits, here, in_chunk):
    """One chunk of the online log-sum-exp: (running max, running sum, the target's logit)."""
    m, s, target_logit = carry
    new_m = jnp.maximum(m, logits.max(-1))
    s = s * jnp.exp(m - new_m) + jnp.exp(logits - new_m[..., None]).sum(-1)
    return new_m, s, jnp.where(in_chunk, here, target_logit)


def _finish(carry) -> TokenLogprobs:
    m, s, target_logit = carry
    log_z = m + jnp.log(s)
    return TokenLogprobs(target_logit - log_z, log_z, target_logit >= m)


def _init(targets):
    b, t = targets.shape
    return (jnp.full((b, t), -jnp.inf, jnp.float32), jnp.zeros((b, t), jnp.float32), jnp.zeros((b, t), jnp.float32))


def _contiguous(hidden, head, targets, bias, chunks: int) -> TokenLogprobs:
    v = head.shape[1]
    width = math.ceil(v / chunks)                  # Vc; the last chunk is slid back to fit in [0, V)

    @jax.checkpoint
    def step(carry, c):
        start = jnp.minimum(c * width, v - width)
        logits = constrain(matmul(hidden, jax.lax.dynamic_slice_in_dim(head, start, width, axis=1),
                                  preferred_element_type=jnp.float32), _LOGITS)                 # (B, T, Vc)
        if bias is not None:
            logits = logits + jax.lax.dynamic_slice_in_dim(bias.astype(jnp.float32), start, width)
        ids = start + jnp.arange(width)
        logits = jnp.where(ids >= c * width, logits, -jnp.inf)           # columns an earlier chunk counted
        here = jnp.take_along_axis(logits, jnp.clip(targets - start, 0, width - 1)[..., None], axis=-1)[..., 0]
        return _online_step(carry, logits, here, targets // width == c), None

    carry, _ = jax.lax.scan(step, _init(targets), jnp.arange(chunks))
    return _finish(carry)


def _strided(hidden, head, targets, bias, chunks: int) -> TokenLogprobs:
    d, v = head.shape
    width = math.ceil(v / chunks)                  # Vc
    pad = chunks * width - v
    if pad:   # padded columns are masked to -inf below
        head = jnp.pad(head, ((0, 0), (0, pad)))
        bias = None if bias is None else jnp.pad(bias, (0, pad))
    # Column j * C + c of the head is column j of chunk c: (D, V) -> (D, Vc, C) -> (C, D, Vc).
    heads = jnp.moveaxis(head.reshape(d, width, chunks), -1, 0)
    biases = (jnp.zeros((chunks, width), jnp.float32) if bias is None
              else jnp.moveaxis(bias.astype(jnp.float32).reshape(width, chunks), -1, 0))
    column = targets // chunks                     # (B, T): the target's column within its chunk

    @jax.checkpoint
    def step(carry, xs):
        c, w, bias_c = xs
        logits = constrain(matmul(hidden, w, preferred_element_type=jnp.float32), _LOGITS) + bias_c   # (B, T, Vc)
        logits = jnp.where(jnp.arange(width) * chunks + c < v, logits, -jnp.inf)
        here = jnp.take_along_axis(logits, column[..., None], axis=-1)[..., 0]
        return _online_step(carry, logits, here, targets % chunks == c), None

    carry, _ = jax.lax.scan(step, _init(targets), (jnp.arange(chunks), heads, biases))
    return _finish(carry)


def forward_logprobs(model, inputs: jax.Array, targets: jax.Array, *, positions: jax.Array | None = None,
                     segment_ids: jax.Array | None = None, dropout_rng: jax.Array | None = None,
                     vocab_chunk: int = VOCAB_CHUNK, temperature: float = 1.0, **family_inputs
                     ) -> tuple[TokenLogprobs, dict]:
    """A model's log-probs of ``targets`` (B, T) given ``inputs`` (B, T), teacher-forced: its final
    hidden states, then :func:`token_logprobs` in vocabulary chunks. Any family: ``family_inputs``
    carries what it needs beside the tokens (``encoder_tokens``, ... for an encoder-decoder).
    ``temperature`` (> 0, static) gives the log-probs under ``softmax(logits / temperature)``, the
    distribution a sampler at that temperature draws from (RL losses at a sampling temperature,
    as TRL's ``GRPOTrainer`` scales its logits). The head is divided by it (a (D, V) copy per call), so
    with a bfloat16 head the result is the bfloat16-rounded one, not float32 ``logits / T``.

    Returns ``(TokenLogprobs of (B, T) arrays, aux)`` — aux: the MoE router losses ({} when dense),
    for the caller to add to its loss.
    """
    hidden, _, aux = model.hidden_states(inputs, positions=positions, segment_ids=segment_ids,
                                         dropout_rng=dropout_rng, **family_inputs)
    head, bias = model.output_head()
    if temperature != 1.0:
        if not temperature > 0:
            raise ValueError(f"forward_logprobs: temperature={temperature}; expected > 0")
        head = head / jnp.asarray(temperature, head.dtype)
        bias = None if bias is None else bias / temperature
    return token_logprobs(hidden, head, targets, bias=bias, vocab_chunk=vocab_chunk), aux
