"""RL with verifiable rewards: GRPO on small arithmetic word problems, from a model SFT taught the
worked format. Each step samples 8 completions of each of 8 problems at temperature 1, rewards a
completion 1 when its ``#### n`` line is the right number, and reinforces the completions that beat
their group's mean (DeepSeekMath's GRPO, TRL's defaults: one update per rollout, the dapo loss, no
KL term).

    lmforge run experiments/quickstart.py model.max_seq_len=256 data.seq_len=256 data.batch_size=8 --workdir runs/base256
    lmforge run experiments/sft/sft_chat.py:small_worked init_from=runs/base256 steps=600 --workdir runs/sft_small
    lmforge run experiments/align/grpo_arithmetic.py init_from=runs/sft_small --workdir runs/grpo_arithmetic
    lmforge run experiments/align/grpo_arithmetic.py:kl init_from=runs/sft_small     # beta=0.04 to the SFT model

The problems are ``sft_chat.py:small_worked``'s (two operations, every number and running total
<= 20; its train split for the rollouts, 200 of its test split held out and graded greedily).

RESULTS
"""

import dataclasses

from lmforge.align.grpo import GRPOConfig, PromptDataConfig
from lmforge.train.optim import OptimConfig

VARIANTS = ("default", "kl", "smoke")
SMALL = (("min_ops", 2), ("max_ops", 2), ("max_value", 20))


def get_config(variant: str = "default") -> GRPOConfig:
    cfg = GRPOConfig(
        data=PromptDataConfig(synthetic=(("arithmetic", 1.0),), train_size=8000, test_size=200, batch_size=8,
                              max_prompt_len=128),
        synthetic_options=SMALL,
        num_generations=8, max_new_tokens=96, temperature=1.0,
        optim=OptimConfig(lr=1e-4, min_lr=1e-5, warmup_steps=5, weight_decay=0.0, b2=0.99),
        steps=150, log_every=5, eval_every=50, checkpoint_every=50, eval_generate=200,
    )
    if variant == "kl":
        cfg = dataclasses.replace(cfg, beta=0.04)
    elif variant == "smoke":   # letter counting: prompts short enough for the tests' 64-token model
        cfg = dataclasses.replace(cfg, data=PromptDataConfig(synthetic=(("letter_count", 1.0),), train_size=32,
                                                             test_size=8, batch_size=4, max_prompt_len=40),
                                  synthetic_options=(), num_generations=4, max_new_tokens=16, steps=3, log_every=1,
                                  eval_every=0, checkpoint_every=0, eval_generate=8)
    elif variant != "default":
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    return cfg
