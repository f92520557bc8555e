"""RLHF with PPO on Anthropic's HH-RLHF harmless-base prompts: the chat model answers, the reward model
of ``reward_hh.py`` scores each reply, and PPO raises that score with a KL penalty to the starting
model (InstructGPT's recipe, TRL's ``PPOTrainer`` defaults: 4 epochs over each rollout, clip 0.2, value
loss weight 0.1, GAE with gamma 1 and lambda 0.95, k1 KL with coefficient 0.05, temperature 0.7).

    lmforge run experiments/quickstart.py model.max_seq_len=256 data.seq_len=256 data.batch_size=8 --workdir runs/base256
    lmforge run experiments/sft/sft_chat.py init_from=runs/base256 steps=200 --workdir runs/sft_chat
    lmforge run experiments/align/reward_hh.py init_from=runs/sft_chat --workdir runs/reward_hh
    lmforge run experiments/align/ppo_hh.py init_from=runs/sft_chat reward_from=runs/reward_hh --workdir runs/ppo_hh
    lmforge run experiments/align/ppo_hh.py:lora init_from=runs/sft_chat reward_from=runs/reward_hh   # adapters

Prompts: the conversations of ../shared/data/hh_rlhf_harmless_base_test.jsonl.gz up to their last
assistant turn, those of at most 192 tokens through the chat template (a seeded 10% held out, 64 of
them scored greedily at each evaluation). The value model starts as a copy of the reward model.

Measured on the 2-core CPU (jax 0.10.2), 2026-12-01, at commit 803fb9b: the starting models from the
first three commands (200 steps of SFT; the reward model's held-out accuracy 0.606 on 231 pairs).
1,364 training prompts fit 192 tokens (717 longer left out), 64 held-out prompts scored greedily.
200 updates = 25 rollouts of 16, 177 s (about 7 s a rollout and its 8 updates). Two KL
coefficients, one after the other:

    held-out reward-model score (greedy)    step 0    step 80    step 160   step 200
    kl_coef 0.05 (default)                  1.519     2.323      2.492      2.218
    kl_coef 0.2                             1.519     2.029      2.160      1.969

    sampled, per rollout                    score at step 8 -> 160    KL (nats / reply) at 80, 160, 200
    kl_coef 0.05                            1.79 -> 2.21              3.59, 6.11, 5.80
    kl_coef 0.2                             1.79 -> 1.96              1.92, 1.39, 1.53

PPO raises the reward model's score of unseen prompts' replies by 0.5-1.0 (the reward model's
chosen-minus-rejected margin is 0.38) and the KL coefficient trades score for closeness to the SFT
model, as it should. What the policy learns is the reward model's taste: at step 200, 57 of the 64
held-out replies (45 with kl_coef 0.2) contain "I can't help with that", often repeated — a
harmless-only reward model with 61% accuracy rewards refusing everything, the over-optimisation
that the KL penalty only slows (Gao et al. 2022, "Scaling Laws for Reward Model Overoptimization").
"""

import dataclasses
import pathlib

from lmforge.align.grpo import PromptDataConfig
from lmforge.align.ppo import PPOConfig
from lmforge.model import LoRAConfig
from lmforge.train.optim import OptimConfig

VARIANTS = ("default", "lora", "smoke")
DATA = pathlib.Path(__file__).resolve().parents[3] / "shared" / "data"


def get_config(variant: str = "default") -> PPOConfig:
    cfg = PPOConfig(
        data=PromptDataConfig(path=str(DATA / "hh_rlhf_harmless_base_test.jsonl.gz"), format="hh", val_fraction=0.1,
                              test_size=0, batch_size=16, max_prompt_len=192),
        max_new_tokens=64, temperature=0.7, kl_coef=0.05, num_ppo_epochs=4, num_mini_batches=2,
        optim=OptimConfig(lr=1e-5, min_lr=1e-5, warmup_steps=0, weight_decay=0.0),
        steps=200, log_every=8, eval_every=80, checkpoint_every=80, eval_generate=64,
    )
    if variant == "lora":
        cfg = dataclasses.replace(cfg, lora=LoRAConfig(rank=8, alpha=16.0),
                                  optim=dataclasses.replace(cfg.optim, lr=1e-4, min_lr=1e-4))
    elif variant == "smoke":   # synthetic prompts short enough for the tests' 64-token models
        cfg = dataclasses.replace(cfg, data=PromptDataConfig(synthetic=(("letter_count", 1.0),), train_size=32,
                                                             test_size=8, batch_size=8, max_prompt_len=40),
                                  max_new_tokens=16, num_ppo_epochs=1, num_mini_batches=1, steps=2, log_every=1,
                                  eval_every=0, checkpoint_every=0, eval_generate=8)
    elif variant != "default":
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    return cfg
