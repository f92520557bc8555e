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
- Policy-gradient losses (GRPO and its DAPO / Dr. GRPO variants) take per-token log-probs of
  sampled completions ``(B, T)`` with a completion mask, and one advantage per completion ``(B,)``
  (:func:`group_advantages`, computed over the whole batch before the loss: batch-wide statistics
  cannot live inside a per-device loss). Each loss type weighs by its own unit (``weight_sum``):
  tokens for ``dapo``, completions for ``grpo``, completions times ``max_completion_length`` for
  ``dr_grpo``.
- PPO for RLHF (:func:`ppo_loss`) takes per-token advantages and returns ``(B, T)`` from
  :func:`gae_advantages` over per-token rewards (the reward model's score at a completion's last token,
  a KL penalty on every token: :func:`kl_penalty`), whitened over the whole rollout
  (:func:`masked_whiten`) before the loss, for the same reason; it weighs tokens.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

DPO_LOSS_TYPES = ("sigmoid", "hinge", "ipo", "robust")
GRPO_LOSS_TYPES = ("dapo", "grpo", "dr_grpo")
IMPORTANCE_SAMPLING_LEVELS = ("token", "sequence")   # grpo_loss: a ratio per token (GRPO) or per completion (GSPO)
SCALE_REWARDS = ("group", "batch", "none")
KL_ESTIMATORS = ("k1", "k3")


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
      correct: (B, T) bool, the target is the argmax (for the ``token_accuracy`` metric).
      z_loss: weight of the z-loss.

    Returns:
      (loss, metrics): ``loss`` (cross-entropy), ``token_accuracy`` (with ``correct``; TRL's
      ``mean_token_accuracy``, named apart from graded replies' ``accuracy``), ``z_loss`` (with
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
        metrics["token_accuracy"] = (correct.astype(jnp.float32) * weights).sum() / denom
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
             loss_type: str = "sigmoid", label_smoothing: float = 0.0, lengths: jax.Array | None = None,
             labels: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Direct Preference Optimization and its pairwise variants, as TRL's ``DPOTrainer`` computes them.

    With ``delta = (logp_c - ref_logp_c) - (logp_r - ref_logp_r)`` per pair:

    - ``sigmoid``: ``-log sigmoid(beta * delta)`` (Rafailov et al. 2023, "Direct Preference
      Optimization: Your Language Model is Secretly a Reward Model", eq. 7); with soft ``labels``
      ``p`` (the probability that chosen is better), the cross-entropy against them,
      ``-p log sigmoid(beta delta) - (1 - p) log sigmoid(-beta delta)``: conservative DPO (Mitchell
      2023, "A note on DPO with noisy preferences"), which TRL's sigmoid loss computes with one
      ``label_smoothing`` = 1 - p for every pair; per pair, it takes AI feedback's confidences
      (Constitutional AI's soft preference labels, Bai et al. 2022);
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
      labels: (B,) soft labels in [0, 1] for ``sigmoid`` (None: every pair's is 1).

    Returns:
      (loss, metrics): the weighted mean over pairs; TRL's ``rewards/chosen``, ``rewards/rejected``
      (``beta * (logp - ref_logp)``), ``rewards/accuracies`` (chosen reward > rejected reward),
      ``rewards/margins``, ``logps/chosen``, ``logps/rejected``; ``weight_sum`` (pairs). The
      metrics come from the summed log-probs for every loss type (TRL reports ``ipo``'s from the
      length-averaged ones).

    Raises:
      ValueError: an unknown ``loss_type``, ``beta <= 0``, ``label_smoothing`` outside [0, 0.5),
        ``ipo`` without ``lengths``, or ``labels`` with a loss other than ``sigmoid``.
    """
    if loss_type not in DPO_LOSS_TYPES:
        raise ValueError(f"dpo_loss: loss_type={loss_type!r}; expected one of {', '.join(DPO_LOSS_TYPES)}")
    if not beta > 0:
        raise ValueError(f"dpo_loss: beta={beta}; expected > 0")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"dpo_loss: label_smoothing={label_smoothing}; expected [0, 0.5)")
    if loss_type == "ipo" and lengths is None:
        raise ValueError("dpo_loss: loss_type='ipo' needs lengths (B, 2), the completions' token counts")
    if labels is not None and loss_type != "sigmoid":
        raise ValueError(f"dpo_loss: soft labels are read by loss_type='sigmoid' only, not {loss_type!r}")
    policy_logps = policy_logps.astype(jnp.float32)
    reference_logps = reference_logps.astype(jnp.float32)
    w = weights.astype(jnp.float32)
    logratios = policy_logps - reference_logps                               # (B, 2)
    delta = logratios[:, 0] - logratios[:, 1]                                # (B,)
    if loss_type == "sigmoid" and labels is not None:
        p = labels.astype(jnp.float32)
        losses = -p * jax.nn.log_sigmoid(beta * delta) - (1.0 - p) * jax.nn.log_sigmoid(-beta * delta)
    elif loss_type == "sigmoid":
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


def group_advantages(rewards: jax.Array, num_generations: int, *, scale_rewards: str = "group"
                     ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """GRPO's group-relative advantages: each completion's reward minus the mean reward of the
    completions of its prompt, divided by their standard deviation (Shao et al. 2024, "DeepSeekMath",
    sec. 4.1.2, outcome supervision), as TRL's ``GRPOTrainer`` computes them.

    ``A_i = (r_i - mean(r_group)) / (std + 1e-4)`` with the Bessel-corrected std of the group
    (``scale_rewards="group"``), of the whole batch (``"batch"``), or
    no division at all (``"none"``: Liu et al. 2025, "Understanding R1-Zero-Like Training", Dr.
    GRPO, which shows the division favours prompts that are too easy or too hard). Group mean with
    the batch's std is Liu et al. 2025's LitePPO ("Tricks or Traps?"). A group whose
    completions all scored the same gets advantage 0 everywhere: it carries no signal.

    Args:
      rewards: (P * G,) float rewards, prompt-major (row ``r`` answers prompt ``r // G``, as the
        sampler's ``n`` rows come out).
      num_generations: G, completions per prompt, >= 2.
      scale_rewards: one of ``SCALE_REWARDS``.

    Returns:
      (advantages (P * G,) float32, metrics): ``reward`` (the batch's mean), ``reward_std`` (the
      mean over completions of the std they are scaled by: their group's, or with ``"batch"`` the
      batch's; ``"none"`` logs the group's), ``frac_reward_zero_std`` (the share of completions
      whose std is 0), TRL's names and definitions (``GRPOTrainer._generate_and_score_completions``).

    Raises:
      ValueError: rewards not 1-D or not a whole number of groups, G < 2, or an unknown
        ``scale_rewards``.
    """
    if scale_rewards not in SCALE_REWARDS:
        raise ValueError(f"group_advantages: scale_rewards={scale_rewards!r}; expected one of {', '.join(SCALE_REWARDS)}")
    if num_generations < 2:
        raise ValueError(f"group_advantages: num_generations={num_generations}; expected >= 2 (a group's mean needs two)")
    if rewards.ndim != 1 or rewards.shape[0] % num_generations:
        raise ValueError(f"group_advantages: rewards of shape {rewards.shape}; expected (P * G,) with G="
                         f"{num_generations}")
    r = jnp.asarray(rewards, jnp.float32)
    groups = r.reshape(-1, num_generations)
    centred = (groups - groups.mean(-1, keepdims=True)).reshape(-1)
    group_std = jnp.repeat(groups.std(-1, ddof=1), num_generations)
    batch_std = r.std(ddof=1) if r.shape[0] > 1 else jnp.zeros(())
    if scale_rewards == "group":
        advantages = centred / (group_std + 1e-4)
    elif scale_rewards == "batch":
        advantages = centred / (batch_std + 1e-4)
    else:
        advantages = centred
    std = jnp.broadcast_to(batch_std, group_std.shape) if scale_rewards == "batch" else group_std
    zero = jnp.isclose(std, 0.0)
    return advantages, {"reward": r.mean(), "reward_std": std.mean(), "frac_reward_zero_std": zero.mean()}


def per_token_kl(logprobs: jax.Array, ref_logprobs: jax.Array) -> jax.Array:
    """Schulman's k3 estimator of KL(policy || reference) per sampled token:
    ``exp(ref - logp) - (ref - logp) - 1`` (unbiased for tokens sampled from the policy, and >= 0;
    http://joschu.net/blog/kl-approx.html), GRPO's KL term (DeepSeekMath eq. 4). Any shape; float32.
    As a loss term its gradient is not the gradient of the KL (Tang & Munos 2025, "On a few pitfalls
    in KL divergence gradient estimation for RL"); at a sampling temperature both log-probs are of the
    temperature-scaled distributions."""
    d = ref_logprobs.astype(jnp.float32) - logprobs.astype(jnp.float32)
    return jnp.exp(d) - d - 1.0


def grpo_loss(logprobs: jax.Array, old_logprobs: jax.Array, advantages: jax.Array, mask: jax.Array, *,
              ref_logprobs: jax.Array | None = None, beta: float = 0.0, epsilon_low: float = 0.2,
              epsilon_high: float = 0.2, loss_type: str = "dapo", max_completion_length: int | None = None,
              importance_sampling_level: str = "token") -> tuple[jax.Array, dict[str, jax.Array]]:
    """The clipped policy-gradient loss of GRPO (Shao et al. 2024, "DeepSeekMath", eq. 3), as TRL's
    ``GRPOTrainer`` computes it.

    Per completion token, with ``ratio = exp(logp - old_logp)`` (``importance_sampling_level="token"``)
    or, with ``"sequence"``, one ratio per completion, the exponential of its tokens' mean log-ratio,
    ``exp(mean_t(logp - old_logp))``, given to each of its tokens (GSPO: Zheng et al. 2025, "Group
    Sequence Policy Optimization"; TRL's ``importance_sampling_level="sequence"``, which pairs it with
    ``loss_type="grpo"`` to optimise the paper's per-sequence objective)::

        loss_t = -min(ratio * A, clip(ratio, 1 - epsilon_low, 1 + epsilon_high) * A) + beta * kl_t

    (``kl_t``: :func:`per_token_kl` against the reference; asymmetric clipping as DAPO's
    "clip-higher", Yu et al. 2025). The tokens' losses are then reduced by ``loss_type``:

    - ``dapo``: the sum over every completion token of the batch divided by their count (Yu et al.
      2025, DAPO, token-level loss; TRL's default; TRL's ``bnpo`` is the same over one global batch);
    - ``grpo``: each completion's mean over its tokens, then the mean over every completion, one
      with no token in the loss counting as 0 (the paper's ``1/|o_i|`` normalisation, which favours
      short correct and long wrong answers);
    - ``dr_grpo``: the sum over every token divided by ``B * max_completion_length``, a constant
      (Liu et al. 2025, "Understanding R1-Zero-Like Training").

    With ``old_logprobs = stop_gradient(logprobs)`` (one update per rollout, TRL's
    ``num_iterations=1``) the ratio is 1 and the gradient is the plain policy gradient.

    Args:
      logprobs: (B, T) log p(token) under the policy being trained (nats).
      old_logprobs: (B, T) under the policy that sampled the tokens (no gradient flows through it).
      advantages: (B,) one advantage per completion (:func:`group_advantages`).
      mask: (B, T), 1 on completion tokens (0 on padding, or a truncated completion left out).
      ref_logprobs: (B, T) under the frozen reference, needed when ``beta > 0``.
      beta: the KL coefficient, >= 0.
      epsilon_low, epsilon_high: the clip range, each >= 0.
      loss_type: one of ``GRPO_LOSS_TYPES``.
      max_completion_length: the constant of ``dr_grpo`` (required there: T may include the prompt).
      importance_sampling_level: ``"token"`` or ``"sequence"`` (GSPO), one of ``IMPORTANCE_SAMPLING_LEVELS``.

    Returns:
      (loss, metrics): ``loss``; ``kl`` (with ``beta > 0``); TRL's ``clip_ratio/low_mean`` (ratio below
      ``1 - epsilon_low`` where A < 0), ``clip_ratio/high_mean`` (above ``1 + epsilon_high`` where A > 0),
      ``clip_ratio/region_mean`` (either); ``ratio``; ``weight_sum``. For ``dapo`` the metrics are means
      over tokens, as TRL logs them; for ``grpo`` and ``dr_grpo``, whose unit is the completion, means
      over completions of each one's token mean, so that they combine across devices by ``weight_sum``
      like the loss (``lmforge.train.step``). At the sequence level a completion's ratio (and so its
      clipping) is shared by its tokens: under ``grpo`` the clip ratios are then shares of completions,
      as TRL logs them; under ``dapo`` shares of tokens (TRL: of completions).

    Raises:
      ValueError: an unknown ``loss_type`` or ``importance_sampling_level``, a negative ``beta`` or
        epsilon, ``beta > 0`` without ``ref_logprobs``, ``dr_grpo`` without ``max_completion_length``, or
        shapes that disagree.
    """
    if loss_type not in GRPO_LOSS_TYPES:
        raise ValueError(f"grpo_loss: loss_type={loss_type!r}; expected one of {', '.join(GRPO_LOSS_TYPES)}")
    if importance_sampling_level not in IMPORTANCE_SAMPLING_LEVELS:
        raise ValueError(f"grpo_loss: importance_sampling_level={importance_sampling_level!r}; expected one of "
                         f"{', '.join(IMPORTANCE_SAMPLING_LEVELS)}")
    if not (beta >= 0 and epsilon_low >= 0 and epsilon_high >= 0):
        raise ValueError(f"grpo_loss: beta={beta}, epsilon_low={epsilon_low}, epsilon_high={epsilon_high}; "
                         f"expected each >= 0")
    if loss_type == "dr_grpo" and not max_completion_length:
        raise ValueError("grpo_loss: loss_type='dr_grpo' needs max_completion_length, its normalising constant")
    if beta > 0 and ref_logprobs is None:
        raise ValueError("grpo_loss: beta > 0 needs ref_logprobs (B, T), the reference's log-probs")
    if logprobs.ndim != 2 or old_logprobs.shape != logprobs.shape or mask.shape != logprobs.shape or \
            advantages.shape != logprobs.shape[:1]:
        raise ValueError(f"grpo_loss: logprobs, old_logprobs and mask (B, T), advantages (B,); got {logprobs.shape}, "
                         f"{old_logprobs.shape}, {mask.shape}, {advantages.shape}")
    lp = logprobs.astype(jnp.float32)
    m = mask.astype(jnp.float32)
    adv = advantages.astype(jnp.float32)[:, None]
    on = m > 0
    log_ratio = lp - jax.lax.stop_gradient(old_logprobs.astype(jnp.float32))
    if importance_sampling_level == "sequence":   # one ratio per completion: its tokens' mean log-ratio
        seq = jnp.where(on, log_ratio, 0.0).sum(-1, keepdims=True) / jnp.maximum(m.sum(-1, keepdims=True), 1.0)
        log_ratio = jnp.broadcast_to(seq, lp.shape)
    ratio = jnp.exp(log_ratio)
    clipped = jnp.clip(ratio, 1.0 - epsilon_low, 1.0 + epsilon_high)
    per_token = -jnp.minimum(ratio * adv, clipped * adv)
    kl = per_token_kl(lp, ref_logprobs) if beta > 0 else None
    if kl is not None:
        per_token = per_token + beta * kl
    # Padding positions are selected out, not multiplied by 0: an overflow there (inf * 0) would be NaN.
    per_token = jnp.where(on, per_token, 0.0)
    kl = None if kl is None else jnp.where(on, kl, 0.0)
    ratio_seen = jnp.where(on, ratio, 1.0)
    low = (ratio < 1.0 - epsilon_low) & (adv < 0)
    high = (ratio > 1.0 + epsilon_high) & (adv > 0)
    tokens = m.sum(-1)                                                            # (B,)
    if loss_type == "dapo":
        weight_sum = m.sum()
        mean = lambda x: (x.astype(jnp.float32) * m).sum() / jnp.maximum(weight_sum, 1e-8)    # noqa: E731
    else:
        # Each completion's token mean, then a weighted mean over completions: weight 1 per completion
        # (grpo, as TRL: one with no token counts as 0) or max_completion_length (dr_grpo, whose loss is
        # the token sum over B times that constant).
        row_w = jnp.ones_like(tokens) if loss_type == "grpo" else jnp.full_like(tokens, float(max_completion_length))
        weight_sum = row_w.sum()
        row_mean = lambda x: (x.astype(jnp.float32) * m).sum(-1) / jnp.maximum(tokens, 1.0)    # noqa: E731
        mean = lambda x: (row_mean(x) * row_w).sum() / jnp.maximum(weight_sum, 1e-8)          # noqa: E731
    if loss_type == "dr_grpo":
        loss = (per_token * m).sum() / jnp.maximum(weight_sum, 1e-8)
    else:
        loss = mean(per_token)
    metrics = {"loss": loss, "ratio": mean(ratio_seen), "clip_ratio/low_mean": mean(low), "clip_ratio/high_mean": mean(high),
               "clip_ratio/region_mean": mean(low | high), "weight_sum": weight_sum}
    if kl is not None:
        metrics["kl"] = mean(kl)
    return loss, metrics


def kl_penalty(logprobs: jax.Array, ref_logprobs: jax.Array, estimator: str = "k1") -> jax.Array:
    """A per-token estimate of KL(policy || reference) from the sampled tokens' log-probs, any shape,
    float32: ``k1 = logp - ref_logp`` (unbiased, can be negative per token; the KL penalty of InstructGPT,
    Ouyang et al. 2022, eq. 2, and TRL's ``PPOTrainer`` default) or ``k3`` (:func:`per_token_kl`, >= 0;
    http://joschu.net/blog/kl-approx.html). Raises ValueError for an estimator not in ``KL_ESTIMATORS``."""
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"kl_penalty: estimator={estimator!r}; expected one of {', '.join(KL_ESTIMATORS)}")
    if estimator == "k3":
        return per_token_kl(logprobs, ref_logprobs)
    return logprobs.astype(jnp.float32) - ref_logprobs.astype(jnp.float32)


def masked_whiten(values: jax.Array, mask: jax.Array, *, shift_mean: bool = True) -> jax.Array:
    """``(x - mean) / sqrt(var + 1e-8)`` with the mean and the Bessel-corrected variance taken over the
    positions where ``mask`` is 1 (any shape, float32), as TRL's ``masked_whiten``; ``shift_mean=False``
    adds the mean back (whitening rewards keeps their sign). Positions outside the mask come out
    whitened too: mask them after. With one position in the mask the variance is uncorrected (TRL
    divides by zero there); with none the result is ``x`` scaled by 1e4."""
    x = values.astype(jnp.float32)
    on = mask > 0
    n = on.sum().astype(jnp.float32)
    # Positions outside the mask are selected out, not multiplied by 0: an inf there would give NaN.
    mean = jnp.where(on, x, 0.0).sum() / jnp.maximum(n, 1.0)
    var = (jnp.where(on, (x - mean) ** 2, 0.0).sum() / jnp.maximum(n, 1.0)
           * jnp.where(n > 1, n / jnp.maximum(n - 1, 1.0), 1.0))
    out = (x - mean) * jax.lax.rsqrt(var + 1e-8)
    return out if shift_mean else out + mean


def gae_advantages(rewards: jax.Array, values: jax.Array, mask: jax.Array, *, gamma: float = 1.0, lam: float = 0.95
                   ) -> tuple[jax.Array, jax.Array]:
    """Generalized Advantage Estimation (Schulman et al. 2016, "High-Dimensional Continuous Control Using
    Generalized Advantage Estimation", eq. 16) over each row's completion tokens, as TRL's
    ``PPOTrainer`` computes it::

        delta_t = r_t + gamma * V_{t+1} - V_t        A_t = delta_t + gamma * lam * A_{t+1}

    where an episode is a run of consecutive positions with ``mask`` 1 and the value after its last
    token is 0 (the episode ends there). ``returns = advantages + values``, the value head's target.

    Args:
      rewards: (B, T) per-token rewards (RLHF: ``-kl_coef * kl`` on every token, plus the reward
        model's score on the last).
      values: (B, T) the value model's estimates at the same positions (before each token is drawn).
      mask: (B, T), 1 on completion tokens.
      gamma, lam: the discount and the GAE lambda, each in [0, 1].

    Returns:
      (advantages, returns), each (B, T) float32, 0 outside the mask.

    Raises:
      ValueError: shapes that disagree or are not (B, T), or gamma / lam outside [0, 1].
    """
    if rewards.ndim != 2 or values.shape != rewards.shape or mask.shape != rewards.shape:
        raise ValueError(f"gae_advantages: rewards, values and mask (B, T); got {rewards.shape}, {values.shape}, "
                         f"{mask.shape}")
    if not (0.0 <= gamma <= 1.0 and 0.0 <= lam <= 1.0):
        raise ValueError(f"gae_advantages: gamma={gamma}, lam={lam}; expected each in [0, 1]")
    r, v = rewards.astype(jnp.float32), values.astype(jnp.float32)
    on = mask > 0

    def back(carry, t):
        next_adv, next_value = carry
        delta = r[:, t] + gamma * next_value - v[:, t]
        adv = jnp.where(on[:, t], delta + gamma * lam * next_adv, 0.0)
        return (adv, jnp.where(on[:, t], v[:, t], 0.0)), adv

    zero = jnp.zeros(r.shape[:1], jnp.float32)
    _, adv = jax.lax.scan(back, (zero, zero), jnp.arange(r.shape[1] - 1, -1, -1))
    advantages = adv[::-1].T
    return advantages, jnp.where(on, advantages + v, 0.0)


def ppo_loss(logprobs: jax.Array, old_logprobs: jax.Array, advantages: jax.Array, values: jax.Array,
             old_values: jax.Array, returns: jax.Array, mask: jax.Array, *, cliprange: float = 0.2,
             cliprange_value: float = 0.2, vf_coef: float = 0.1) -> tuple[jax.Array, dict[str, jax.Array]]:
    """PPO's clipped surrogate and clipped value loss (Schulman et al. 2017, "Proximal Policy Optimization
    Algorithms", eq. 7 and 9), per token, as TRL's ``PPOTrainer`` computes them for RLHF (Ouyang et al.
    2022; Huang et al. 2024, "The N+ Implementation Details of RLHF with PPO")::

        ratio = exp(logp - old_logp)
        pg_t  = max(-A_t * ratio, -A_t * clip(ratio, 1 - cliprange, 1 + cliprange))
        vf_t  = max((V_t - R_t)^2, (clip(V_t, old_V_t - cliprange_value, old_V_t + cliprange_value) - R_t)^2)
        loss  = mean(pg) + vf_coef * 0.5 * mean(vf)

    means over the completion tokens of the batch (TRL's value loss also counts one position past each
    completion's end, where its reward sits; here the reward is on the last token and the value loss
    covers the completion's tokens alone).

    Args:
      logprobs: (B, T) log p(token) under the policy being trained (nats).
      old_logprobs: (B, T) under the policy that sampled the rollout (no gradient flows through it).
      advantages: (B, T) per-token advantages (:func:`gae_advantages`, whitened: :func:`masked_whiten`).
      values: (B, T) the value model's current estimates.
      old_values: (B, T) its estimates at the rollout (the clip's centre).
      returns: (B, T) the value targets (:func:`gae_advantages`).
      mask: (B, T), 1 on completion tokens (a weight: the means are weighted by it).
      cliprange, cliprange_value: the clip ranges of the ratio and of the value, each >= 0.
      vf_coef: the value loss's weight, >= 0.

    Returns:
      (loss, metrics): ``loss``; TRL's ``loss/policy``, ``loss/value``, ``policy/approxkl``
      (``0.5 * (logp - old_logp)^2``), ``policy/clipfrac`` (tokens where the clipped surrogate is the
      larger), ``val/clipfrac``, ``val/ratio`` (TRL logs them with an ``_avg`` suffix, as means over its
      micro-batches; its approxkl also averages over padding), and ``val/vpred`` (the mean value); token
      means here, ``weight_sum`` the tokens.

    Raises:
      ValueError: shapes that are not all (B, T), or a negative clip range or vf_coef.
    """
    arrays = (logprobs, old_logprobs, advantages, values, old_values, returns, mask)
    if logprobs.ndim != 2 or any(a.shape != logprobs.shape for a in arrays):
        raise ValueError(f"ppo_loss: every input (B, T); got {', '.join(str(a.shape) for a in arrays)}")
    if not (cliprange >= 0 and cliprange_value >= 0 and vf_coef >= 0):
        raise ValueError(f"ppo_loss: cliprange={cliprange}, cliprange_value={cliprange_value}, vf_coef={vf_coef}; "
                         f"expected each >= 0")
    f32 = lambda x: x.astype(jnp.float32)                                         # noqa: E731
    m = f32(mask)
    on = m > 0
    weight_sum = m.sum()
    mean = lambda x: jnp.where(on, f32(x) * m, 0.0).sum() / jnp.maximum(weight_sum, 1e-8)   # noqa: E731
    adv, ret = f32(jax.lax.stop_gradient(advantages)), f32(jax.lax.stop_gradient(returns))
    old_v = f32(jax.lax.stop_gradient(old_values))
    diff = f32(logprobs) - f32(jax.lax.stop_gradient(old_logprobs))
    ratio = jnp.exp(diff)
    pg1, pg2 = -adv * ratio, -adv * jnp.clip(ratio, 1.0 - cliprange, 1.0 + cliprange)
    v = f32(values)
    v_clipped = jnp.clip(v, old_v - cliprange_value, old_v + cliprange_value)
    vf1, vf2 = (v - ret) ** 2, (v_clipped - ret) ** 2
    # Padding is selected out, not multiplied by 0: an overflow there (inf * 0) would be NaN.
    pg_loss = mean(jnp.maximum(pg1, pg2))
    vf_loss = 0.5 * mean(jnp.maximum(vf1, vf2))
    loss = pg_loss + vf_coef * vf_loss
    return loss, {"loss": loss, "loss/policy": pg_loss, "loss/value": vf_loss, "policy/approxkl": 0.5 * mean(diff ** 2),
                  "policy/clipfrac": mean(pg2 > pg1), "val/clipfrac": mean(vf2 > vf1), "val/ratio": mean(ratio),
                  "val/vpred": mean(v), "weight_sum": weight_sum}
