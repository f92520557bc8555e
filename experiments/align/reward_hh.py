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

Not yet measured: the numbers of a run on the 2-core CPU go here.
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
        optim=OptimConfig(lr=1e-4, min_lr=1e-5, warmup_steps=10, weight_decay=0.0),
        steps=260, log_every=10, eval_every=65, checkpoint_every=130,
    )
    if variant == "lora":
        cfg = dataclasses.replace(cfg, lora=LoRAConfig(rank=8, alpha=16.0),
                                  optim=dataclasses.replace(cfg.optim, lr=1e-3, min_lr=1e-4))
    elif variant == "smoke":
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, seq_len=64, batch_size=8, train_size=32,
                                                                test_size=16),
                                  steps=3, log_every=1, eval_every=0, checkpoint_every=0)
    elif variant != "default":
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    return cfg
