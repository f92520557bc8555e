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
- Preference losses take sequence log-probs (DPO) or rewards (a reward model's Bradley-Terry loss)
  of (chosen, rejected) pairs on a pair axis, ``(B, 2)``, and weigh pairs, not tokens: ``weight_sum``
  counts pairs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

DPO_LOSS_TYPES = ("sigmoid", "hinge", "ipo", "robust")


def _weighted_mean(w: jax.Array):
    """``mean(x)``: ``sum(w * x) / sum(w)`` in float32 over the pair axis (0 when every weight is 0)."""
    total = jnp.maximum(w.sum(), 1e-8)
    return lambda x: (x.astype(jnp.float32) * w).sum() / total


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


def dpo_loss(policy_logps: jax.Array, reference_logps: jax.Array, weights: jax.Array, *, beta: float,
             loss_type: str = "sigmoid", label_smoothing: float = 0.0, lengths: jax.Array | None = None
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Direct Preference Optimization and its pairwise variants, as TRL's ``DPOTrainer`` computes them.

    With ``delta = (logp_c - ref_logp_c) - (logp_r - ref_logp_r)`` per pair:

    - ``sigmoid``: ``-log sigmoid(beta * delta)`` (Rafailov et al. 2023, "Direct Preference
      Optimization: Your Language Model is Secretly a Reward Model", eq. 7);
    - ``hinge``: ``relu(1 - beta * delta)`` (SLiC, Zhao et al. 2023);
    - ``ipo``: ``(delta' - 1 / (2 beta))^2`` where ``delta'`` divides each log-ratio by its
      completion's token count (Azar et al. 2023, eq. 17; TRL's length normalisation);
    - ``robust``: the sigmoid loss unbiased for preferences flipped with probability
      ``label_smoothing`` = eps (Chowdhury et al. 2024, "Provably Robust DPO"):
      ``(-(1 - eps) log sigmoid(beta delta) + eps log sigmoid(-beta delta)) / (1 - 2 eps)``.

    Args:
      policy_logps, reference_logps: (B, 2) completion log-probs summed over tokens (nats);
        ``[:, 0]`` chosen, ``[:, 1]`` rejected.
      weights: (B,) pair weights, 0 for padding rows.
      beta: the KL coefficient (IPO's regulariser tau), > 0.
      loss_type: one of ``DPO_LOSS_TYPES``.
      label_smoothing: eps in [0, 0.5) for ``robust``.
      lengths: (B, 2) completion token counts, needed for ``ipo``.

    Returns:
      (loss, metrics): the weighted mean over pairs; TRL's ``rewards/chosen``, ``rewards/rejected``
      (``beta * (logp - ref_logp)``), ``rewards/accuracies`` (chosen reward > rejected reward),
      ``rewards/margins``, ``logps/chosen``, ``logps/rejected``; ``weight_sum`` (pairs). The
      metrics come from the summed log-probs for every loss type (TRL reports ``ipo``'s from the
      length-averaged ones).

    Raises:
      ValueError: an unknown ``loss_type``, ``beta <= 0``, ``label_smoothing`` outside [0, 0.5),
        or ``ipo`` without ``lengths``.
    """
    if loss_type not in DPO_LOSS_TYPES:
        raise ValueError(f"dpo_loss: loss_type={loss_type!r}; expected one of {', '.join(DPO_LOSS_TYPES)}")
    if not beta > 0:
        raise ValueError(f"dpo_loss: beta={beta}; expected > 0")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"dpo_loss: label_smoothing={label_smoothing}; expected [0, 0.5)")
    if loss_type == "ipo" and lengths is None:
        raise ValueError("dpo_loss: loss_type='ipo' needs lengths (B, 2), the completions' token counts")
    policy_logps = policy_logps.astype(jnp.float32)
    reference_logps = reference_logps.astype(jnp.float32)
    w = weights.astype(jnp.float32)
    logratios = policy_logps - reference_logps                               # (B, 2)
    delta = logratios[:, 0] - logratios[:, 1]                                # (B,)
    if loss_type == "sigmoid":
        losses = -jax.nn.log_sigmoid(beta * delta)
    elif loss_type == "hinge":
        losses = jax.nn.relu(1.0 - beta * delta)
    elif loss_type == "ipo":
        per_token = logratios / jnp.maximum(lengths.astype(jnp.float32), 1.0)
        losses = jnp.square(per_token[:, 0] - per_token[:, 1] - 1.0 / (2.0 * beta))
    else:   # robust
        eps = label_smoothing
        losses = (-(1.0 - eps) * jax.nn.log_sigmoid(beta * delta)
                  + eps * jax.nn.log_sigmoid(-beta * delta)) / (1.0 - 2.0 * eps)
    rewards = beta * logratios                                               # (B, 2)
    weight_sum = w.sum()
    mean = _weighted_mean(w)
    loss = mean(losses)
    return loss, {
        "loss": loss,
        "rewards/chosen": mean(rewards[:, 0]),
        "rewards/rejected": mean(rewards[:, 1]),
        "rewards/accuracies": mean(rewards[:, 0] > rewards[:, 1]),
        "rewards/margins": mean(rewards[:, 0] - rewards[:, 1]),
        "logps/chosen": mean(policy_logps[:, 0]),
        "logps/rejected": mean(policy_logps[:, 1]),
        "weight_sum": weight_sum,
    }


def reward_loss(rewards: jax.Array, weights: jax.Array, *, margin: jax.Array | float = 0.0,
                center_rewards_coefficient: float = 0.0) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The pairwise (Bradley-Terry) loss of a reward model, as TRL's ``RewardTrainer`` computes it.

    ``-log sigmoid(r_chosen - r_rejected - margin)`` per pair (Ouyang et al. 2022, "Training language
    models to follow instructions with human feedback", eq. 1; Llama 2's margin, Touvron et al. 2023,
    eq. 2), plus ``center_rewards_coefficient * (r_chosen + r_rejected)^2``, which pulls the rewards
    towards zero mean (Eisenstein et al. 2023, "Helping or Herding?"; TRL's
    ``center_rewards_coefficient``).

    Args:
      rewards: (B, 2) scalar rewards, ``[:, 0]`` chosen, ``[:, 1]`` rejected.
      weights: (B,) pair weights, 0 for padding rows.
      margin: a scalar or (B,) per-pair margin the chosen reward should exceed the rejected one by.
      center_rewards_coefficient: >= 0; 0 leaves the rewards' offset free.

    Returns:
      (loss, metrics): the weighted mean over pairs; ``accuracy`` (chosen reward > rejected),
      ``margin`` (mean r_chosen - r_rejected), ``rewards/chosen``, ``rewards/rejected``,
      ``mean_reward`` (over both sides), ``weight_sum`` (pairs).

    Raises:
      ValueError: rewards not (B, 2), or a negative ``center_rewards_coefficient``.
    """
    if rewards.ndim != 2 or rewards.shape[1] != 2:
        raise ValueError(f"reward_loss: rewards of shape {rewards.shape}; expected (B, 2): chosen, rejected")
    if not center_rewards_coefficient >= 0:
        raise ValueError(f"reward_loss: center_rewards_coefficient={center_rewards_coefficient}; expected >= 0")
    rewards = rewards.astype(jnp.float32)
    w = weights.astype(jnp.float32)
    chosen, rejected = rewards[:, 0], rewards[:, 1]
    losses = -jax.nn.log_sigmoid(chosen - rejected - jnp.asarray(margin, jnp.float32))
    if center_rewards_coefficient:
        losses = losses + center_rewards_coefficient * jnp.square(chosen + rejected)
    weight_sum = w.sum()
    mean = _weighted_mean(w)
    loss = mean(losses)
    return loss, {
        "loss": loss,
        "accuracy": mean(chosen > rejected),
        "margin": mean(chosen - rejected),
        "rewards/chosen": mean(chosen),
        "rewards/rejected": mean(rejected),
        "mean_reward": mean((chosen + rejected) / 2),
        "weight_sum": weight_sum,
    }
