"""lmforge.train — objectives, train state, sharded steps, loop, checkpoints, sampling.

Import the runner and its config from ``lmforge.train.pretrain``; this package root stays light.
"""

from lmforge.train.mesh import DEFAULT_RULES, MeshConfig, make_mesh
from lmforge.train.objectives import causal_lm_loss, token_log_likelihood
from lmforge.train.optim import OptimConfig, learning_rate_schedule, make_optimizer
from lmforge.train.sampling import SamplingConfig, filter_logits, generate, sample_token

__all__ = [
    "DEFAULT_RULES", "MeshConfig", "make_mesh", "causal_lm_loss", "token_log_likelihood", "OptimConfig",
    "learning_rate_schedule", "make_optimizer", "SamplingConfig", "filter_logits", "generate", "sample_token",
]
