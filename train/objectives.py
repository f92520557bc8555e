"""Language-model objectives as pure array functions over log-probabilities.

``loss(logprobs, weights, **hp) -> (loss, metrics)``: no model, config or mesh inside. The forward
pass that produces the log-probs (``lmforge.model.token_logprobs``, in vocabulary chunks) is a
separate function (STYLE rule 2). Everything is float32 and reduced with explicit weights, so
padding and packed-segment boundaries (weight 0) never count.

Choices:
- The loss is the weighted mean token cross-entropy ``-sum(w * log p) / sum(w)``; the metrics are
  means over the same weight plus ``weight_sum``, which the trainer uses to combine
  micro-batches and evaluation batches exactly (``lmforge.train.step``).
- The masked-LM loss (BERT) is the same weighted cross-entropy with *unshifted* targets: the
  weights from ``lmforge.data.corruption.mask_tokens`` are 1 exactly at the chosen positions.
- z-loss (PaLM, Chowdhery et al. 2022, sec. 5): ``z_loss * log(Z)^2`` per token keeps the softmax
  normalizer near 1 for bf16 stability; reported separately (``z_loss``) and added to the loss,
  while the ``loss`` metric stays the cross-entropy.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def causal_lm_loss(logprobs: jax.Array, weights: jax.Array, *, log_z: jax.Array | None = None,
                   correct: jax.Array | None = None, z_loss: float = 0.0) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Weighted next-token cross-entropy (+ optional z-loss).

    Args:
      logprobs: (B, T) log p(target) (``token_logprobs(...).logprobs``; targets already shifted).
      weights: (B, T), 0 where a position must not count.
      log_z: (B, T) log-normalisers, needed for ``z_loss > 0``.
      correct: (B, T) bool, the target is the argmax (for the ``accuracy`` metric).
      z_loss: weight of the z-loss.

    Returns:
      (loss, metrics): ``loss`` (cross-entropy), ``accuracy`` (with ``correct``), ``z_loss`` (with
      ``log_z``) — means over the weight — and ``weight_sum``.

    Raises:
      ValueError: ``z_loss > 0`` without ``log_z``.
    """
    weights = weights.astype(jnp.float32)
    weight_sum = weights.sum()
    denom = jnp.maximum(weight_sum, 1e-8)
    nll = -(logprobs.astype(jnp.float32) * weights).sum() / denom
    metrics = {"loss": nll, "weight_sum": weight_sum}
    if correct is not None:
        metrics["accuracy"] = (correct.astype(jnp.float32) * weights).sum() / denom
    total = nll
    if log_z is not None:
        metrics["z_loss"] = (jnp.square(log_z.astype(jnp.float32)) * weights).sum() / denom
        total = nll + z_loss * metrics["z_loss"]
    elif z_loss:
        raise ValueError("causal_lm_loss: z_loss > 0 needs log_z")
    return total, metrics


def masked_lm_loss(logprobs: jax.Array, weights: jax.Array, *, correct: jax.Array | None = None
                   ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """BERT's masked-LM loss: mean cross-entropy over the chosen positions only.

    ``logprobs`` (B, T) of the original token at each input position (no shift); ``weights`` (B, T)
    is 1 where the token was chosen for masking.
    """
    return causal_lm_loss(logprobs, weights, correct=correct)
