"""Optimizer: AdamW with linear warmup and cosine decay, global-norm clipping, accumulation.

Choices:
- Weight decay applies to matrices only (rank >= 2: projections and embeddings), not to biases
  or norm scales, as in GPT-2/nanoGPT and Llama training recipes.
- The schedule warms up linearly from 0 to ``lr`` over ``warmup_steps`` and decays with a cosine
  to ``min_lr`` at ``decay_steps`` (then stays there): nanoGPT's ``get_lr``.
- Gradient accumulation is done in the train step (a scan over micro-batches), not with
  ``optax.MultiSteps``, so that one call of the step is one optimizer update and the step counter,
  schedule and checkpoints count real updates.
"""

from __future__ import annotations

import dataclasses

import jax
import optax


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

    def __post_init__(self):
        if self.lr <= 0 or self.min_lr < 0 or self.min_lr > self.lr:
            raise ValueError(f"optim: need 0 <= min_lr <= lr and lr > 0, got lr={self.lr}, min_lr={self.min_lr}")
        if self.warmup_steps < 0 or self.decay_steps < 0 or self.grad_accum < 1:
            raise ValueError("optim: warmup_steps/decay_steps must be >= 0 and grad_accum >= 1")


def learning_rate_schedule(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
    decay = cfg.decay_steps or total_steps
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=cfg.lr, warmup_steps=cfg.warmup_steps,
        decay_steps=max(decay, cfg.warmup_steps + 1), end_value=cfg.min_lr)


def _decay_mask(params):
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(cfg: OptimConfig, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    schedule = learning_rate_schedule(cfg, total_steps)
    parts = [optax.clip_by_global_norm(cfg.grad_clip)] if cfg.grad_clip > 0 else []
    parts.append(optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay,
                             mask=_decay_mask))
    return optax.chain(*parts), schedule
