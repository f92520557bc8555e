"""Optimizer: AdamW with linear warmup and cosine decay, global-norm clipping, parameter groups.

Which parameters train, which decay and which get another learning rate are regular expressions
over parameter paths (``lmforge.model.paths``: ``blocks.0.attn.q.kernel``, or ``blocks.attn.q.kernel``
with stacked layers), as big_vision's ``config.schedule`` and MaxText's trainable-parameter masks do.

Choices:
- ``trainable`` (empty: every parameter) picks the leaves the optimizer sees; the others are
  frozen: they get no optimizer state at all (not a zero update on a full-size Adam state).
- Weight decay applies to every trainable parameter except those matching ``no_decay`` — by
  default biases and norm scales (``bias``, ``scale``), as in GPT-2/nanoGPT and Llama recipes.
  Deciding by path, not by rank, keeps the rule right when layers are stacked (``scan_layers``
  makes a norm scale 2-D: (L, D)).
- ``lr_multipliers``: (pattern, factor) pairs; a matching leaf's learning rate (and with it its
  decoupled weight decay, as PyTorch's parameter groups) is ``factor`` times the schedule
  (``optax.multi_transform`` over one AdamW per group). First match wins.
- The schedule warms up linearly to ``lr`` over ``warmup_steps`` and decays with a cosine to
  ``min_lr`` at ``decay_steps`` (then stays there): nanoGPT's ``get_lr``, including its fix for the
  first update: the warmup rate of update ``s`` is ``lr * (s + 1) / (warmup_steps + 1)``, never 0
  (a rate of 0 at step 0 made the first update a no-op that still counted as a step).
- Gradient accumulation is done in the train step (a scan over micro-batches), not with
  ``optax.MultiSteps``, so that one call of the step is one optimizer update and the step counter,
  schedule and checkpoints count real updates.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import optax

from lmforge.model.paths import compile_patterns, label

NO_DECAY = (r"(.*\.)?bias", r"(.*\.)?scale")   # biases and norm scales


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    lr: float = 3e-4
    min_lr: float = 3e-5
    warmup_steps: int = 100
    decay_steps: int = 0        # 0 → the run's train steps
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1
    grad_clip: float = 1.0      # 0 → no clipping
    grad_accum: int = 1         # micro-batches per optimizer step
    trainable: tuple[str, ...] = ()           # regexes over parameter paths; () → every parameter
    no_decay: tuple[str, ...] = NO_DECAY      # trainable parameters without weight decay
    lr_multipliers: tuple[tuple[str, float], ...] = ()   # (regex, factor): per-group learning rates

    def __post_init__(self):
        # Written as `not (valid)` so that NaN fails each check too.
        if not (self.lr > 0 and 0 <= self.min_lr <= self.lr):
            raise ValueError(f"optim: need 0 <= min_lr <= lr and lr > 0, got lr={self.lr}, min_lr={self.min_lr}")
        if self.warmup_steps < 0 or self.decay_steps < 0 or self.grad_accum < 1:
            raise ValueError("optim: warmup_steps/decay_steps must be >= 0 and grad_accum >= 1")
        for name in ("b1", "b2"):   # Adam's moment decays: 1 would never forget, > 1 diverges
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"optim.{name}={getattr(self, name)}: expected a number in [0, 1)")
        if not self.eps > 0:
            raise ValueError(f"optim.eps={self.eps}: expected a number > 0 (Adam's denominator guard)")
        if not self.weight_decay >= 0:
            raise ValueError(f"optim.weight_decay={self.weight_decay}: expected a number >= 0 (0: no weight decay)")
        if not self.grad_clip >= 0:
            raise ValueError(f"optim.grad_clip={self.grad_clip}: expected a number >= 0 (0: no clipping)")
        compile_patterns(self.trainable, "optim.trainable")
        compile_patterns(self.no_decay, "optim.no_decay")
        compile_patterns([p for p, _ in self.lr_multipliers], "optim.lr_multipliers")
        for pattern, factor in self.lr_multipliers:
            if not factor > 0:
                raise ValueError(f"optim.lr_multipliers: factor {factor} for {pattern!r} must be > 0")


def learning_rate_schedule(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
    """The learning rate of update ``step`` (0-based): linear warmup that starts above 0, then cosine
    decay from ``lr`` at ``warmup_steps`` to ``min_lr`` at ``decay_steps`` (default ``total_steps``)."""
    warmup = cfg.warmup_steps
    decay = max(cfg.decay_steps or total_steps, warmup + 1)

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        warm = cfg.lr * (step + 1.0) / (warmup + 1.0)
        progress = jnp.clip((step - warmup) / (decay - warmup), 0.0, 1.0)
        cosine = cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + jnp.cos(jnp.pi * progress))
        return jnp.where(step < warmup, warm, cosine)
    return schedule


def decay_mask(cfg: OptimConfig, params) -> dict:
    """A tree of bools like ``params``: True where weight decay applies (not ``cfg.no_decay``)."""
    return label(params, [(p, False) for p in cfg.no_decay], True)


def make_optimizer(cfg: OptimConfig, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """(the optimizer over the trainable tree, the base learning-rate schedule)."""
    schedule = learning_rate_schedule(cfg, total_steps)
    mask = lambda params: decay_mask(cfg, params)

    def adamw(factor: float):
        lr = schedule if factor == 1.0 else (lambda step: factor * schedule(step))
        return optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay, mask=mask)

    parts = [optax.clip_by_global_norm(cfg.grad_clip)] if cfg.grad_clip > 0 else []
    if cfg.lr_multipliers:
        groups = {f"group{i}": adamw(f) for i, (_, f) in enumerate(cfg.lr_multipliers)} | {"base": adamw(1.0)}
        rules = [(p, f"group{i}") for i, (p, _) in enumerate(cfg.lr_multipliers)]
        parts.append(optax.multi_transform(groups, lambda params: label(params, rules, "base")))
    else:
        parts.append(adamw(1.0))
    return optax.chain(*parts), schedule
