"""lmforge.train — the generic trainer (state, step factory, loop), objectives, optimizer, mesh,
metrics; the pretraining task.

Import the runner and its config from ``lmforge.train.pretrain``; this package root stays light.
"""

from lmforge.train.mesh import DEFAULT_RULES, MeshConfig, make_mesh
from lmforge.train.objectives import (causal_lm_loss, dpo_loss, gae_advantages, group_advantages, grpo_loss,
                                      kl_penalty, masked_lm_loss, masked_whiten, per_token_kl, ppo_loss, reward_loss)
from lmforge.train.optim import OptimConfig, learning_rate_schedule, make_optimizer
from lmforge.train.step import global_batch, make_eval_step, make_train_step, reduce_metrics
from lmforge.train.trainer import BatchEvaluator, FitResult, LoopConfig, Preempted, Trainer

__all__ = [
    "DEFAULT_RULES", "MeshConfig", "make_mesh", "causal_lm_loss", "dpo_loss", "group_advantages", "grpo_loss", "masked_lm_loss",
    "per_token_kl", "reward_loss", "gae_advantages", "kl_penalty", "masked_whiten", "ppo_loss", "OptimConfig",
    "learning_rate_schedule", "make_optimizer", "global_batch", "make_eval_step", "make_train_step",
    "reduce_metrics", "BatchEvaluator", "FitResult", "LoopConfig", "Preempted", "Trainer",
]
