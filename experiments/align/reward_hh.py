"""A reward model on Anthropic's HH-RLHF harmless-base pairs: a chat model with a score head in place
of its unembedding learns to score the reply people judged less harmful above the other one.

    lmforge run experiments/sft/sft_chat.py init_from=runs/base256 --workdir runs/sft_chat
    lmforge run experiments/align/reward_hh.py init_from=runs/sft_chat --workdir runs/reward_hh
    lmforge run experiments/align/reward_hh.py:lora init_from=runs/sft_chat     # adapters + the score head
    lmforge convert runs/reward_hh hf_reward/     # a transformers GPT2ForSequenceClassification folder

Reads ../shared/data/hh_rlhf_harmless_base_test.jsonl.gz (2,312 pairs; a seeded 10% held out), as
``dpo_hh.py`` does. Each side is its whole conversation, at most 256 tokens, long prompts cut at
their start (``data.overflow=truncate_start``; TRL's ``RewardTrainer`` drops what does not fit:
``data.overflow=drop``). The reward is read at the conversation's last token (eos). Reported at each
evaluation over every held-out pair: the Bradley-Terry loss (log 2 = 0.693 for a model that cannot
tell the sides apart) and the accuracy, how often the chosen conversation scores higher.

Measured on the 2-core CPU (jax 0.10.2), 2026-12-01, at commit cbcb67f (the training is the same at
4ffb30e). The starting model: the 200-step ``sft_chat.py`` model of ``dpo_hh.py`` (the quickstart GPT
at context 256, 1.09M parameters). 2,081 training pairs (886 cut at their start), 231 held out; 260
steps of 16 pairs (2 passes), 204-410 s each:

    step                              65      130     195     260
    full, lr 1e-3 (default)  loss   0.678   0.661   0.663   0.669   (train loss 0.58 at the end)
                             acc.   0.589   0.563   0.589   0.584
    full, lr 1e-4            loss   0.688   0.681   0.695   0.684
                             acc.   0.532   0.524   0.528   0.541
    full, lr 3e-5            acc.   0.550   0.528   0.515   0.537
    LoRA r8 + head, lr 1e-3  loss   0.685   0.679   0.685   0.672   (74k of 1.16M trainable)
                             acc.   0.519   0.550   0.554   0.563

The reward model ranks 54-59% of unseen pairs as people did (0.5 is chance). The same model's DPO
implicit reward reaches 0.675 on the same pairs (``dpo_hh.py``): it reads every reply token's
log-probability, this one a single hidden state at the last token, and 1.09M parameters make a weak
classifier. Without ``center_rewards_coefficient`` the rewards drift (mean -0.95 at lr 1e-3): only
their differences are trained.
"""

import dataclasses
import pathlib

from lmforge.align.dpo import PreferenceDataConfig
from lmforge.align.reward import RewardConfig
from lmforge.model import LoRAConfig
from lmforge.train.optim import OptimConfig

VARIANTS = ("default", "lora", "smoke")
DATA = pathlib.Path(__file__).resolve().parents[3] / "shared" / "data"


def get_config(variant: str = "default") -> RewardConfig:
    cfg = RewardConfig(
        data=PreferenceDataConfig(path=str(DATA / "hh_rlhf_harmless_base_test.jsonl.gz"), val_fraction=0.1,
                                  test_size=0, seq_len=256, batch_size=16, overflow="truncate_start"),
        optim=OptimConfig(lr=1e-3, min_lr=1e-4, warmup_steps=10, weight_decay=0.0),
        steps=260, log_every=10, eval_every=65, checkpoint_every=130,
    )
    if variant == "lora":
        cfg = dataclasses.replace(cfg, lora=LoRAConfig(rank=8, alpha=16.0))
    elif variant == "smoke":
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, seq_len=64, batch_size=8, train_size=32,
                                                                test_size=16),
                                  steps=3, log_every=1, eval_every=0, checkpoint_every=0)
    elif variant != "default":
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    return cfg
