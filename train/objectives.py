"""Training objectives as pure array functions: ``loss(logits, targets, weights, **hp) -> (loss, metrics)``.

No model, config or mesh inside. Everything is upcast to float32 and reduced with explicit
weights, so padding and packed-segment boundaries (weight 0) never count.

Choices:
- The causal-LM loss is the weighted mean token cross-entropy, ``sum(w * nll) / sum(w)``; the
  metrics also return the *sums* (``nll_sum``, ``weight_sum``) so evaluation over many batches can
  reduce exactly (mean of means would weight short batches wrongly).
- The masked-LM loss (BERT) is the same weighted cross-entropy with *unshifted* targets: the
  weights from ``lmforge.data.corruption.mask_tokens`` are 1 exactly at the chosen positions.
- z-loss (PaLM, Chowdhery et al. 2022, sec. 5): ``z_loss * log(Z)^2`` per token keeps the softmax
  normalizer near 1 for bf16 stability; reported separately and added to the loss.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def token_log_likelihood(logits: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
    """logits (B, T, V), targets (B, T) -> (log p(target) (B, T), log Z (B, T)), float32."""
    logits = logits.astype(jnp.float32)
    log_z = jax.nn.logsumexp(logits, axis=-1)
    target_logit = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return target_logit - log_z, log_z


def causal_lm_loss(logits: jax.Array, targets: jax.Array, weights: jax.Array, *,
                   z_loss: float = 0.0) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Weighted next-token cross-entropy (+ optional z-loss).

    logits (B, T, V) predict ``targets`` (B, T) (already shifted: targets[t] is the token after
    inputs[t]); weights (B, T) are 0 where a position must not count.
    """
    weights = weights.astype(jnp.float32)
    log_p, log_z = token_log_likelihood(logits, targets)
    weight_sum = weights.sum()
    denom = jnp.maximum(weight_sum, 1e-8)
    nll_sum = -(log_p * weights).sum()
    loss = nll_sum / denom
    z = (jnp.square(log_z) * weights).sum() / denom
    correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
    metrics = {
        "loss": loss,
        "z_loss": z,
        "accuracy": (correct * weights).sum() / denom,
        "nll_sum": nll_sum,
        "weight_sum": weight_sum,
    }
    return loss + z_loss * z, metrics


def masked_lm_loss(logits: jax.Array, targets: jax.Array, weights: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """BERT's masked-LM loss: mean cross-entropy over the chosen positions only.

    logits (B, T, V) at each input position predict ``targets`` (B, T), the original token at that
    same position (no shift); ``weights`` (B, T) is 1 where the token was chosen for masking.
    """
    return causal_lm_loss(logits, targets, weights)
