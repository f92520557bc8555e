"""DPO on Anthropic's HH-RLHF harmless-base pairs: a chat model learns to prefer the reply that
people judged less harmful, against a frozen copy of itself.

    lmforge run experiments/sft/sft_chat.py init_from=runs/base256 --workdir runs/sft_chat
    lmforge run experiments/align/dpo_hh.py init_from=runs/sft_chat --workdir runs/dpo_hh
    lmforge run experiments/align/dpo_hh.py:lora init_from=runs/sft_chat     # adapters; reference = their base
    lmforge sweep experiments/align/dpo_hh.py init_from=runs/sft_chat "beta=[0.05,0.1,0.5]"

Reads ../shared/data/hh_rlhf_harmless_base_test.jsonl.gz (2,312 pairs; a seeded 10% held out).
Each record holds two whole transcripts; the prompt is their shared turns, the replies the last
assistant turns (``lmforge.data.preference``). Reported at each evaluation over every held-out
pair: the DPO loss (log 2 = 0.693 before the first update) and the implicit reward's accuracy —
how often ``beta * (logp - ref_logp)`` ranks the chosen reply above the rejected one.
"""

import dataclasses
import pathlib

from lmforge.align.dpo import DPOConfig, PreferenceDataConfig
from lmforge.model import LoRAConfig
from lmforge.train.optim import OptimConfig

VARIANTS = ("default", "lora", "smoke")
DATA = pathlib.Path(__file__).resolve().parents[3] / "shared" / "data"


def get_config(variant: str = "default") -> DPOConfig:
    cfg = DPOConfig(
        data=PreferenceDataConfig(path=str(DATA / "hh_rlhf_harmless_base_test.jsonl.gz"), val_fraction=0.1,
                                  test_size=0, seq_len=256, batch_size=16),
        beta=0.1,
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
