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

Long HH prompts are cut at their start (``data.overflow=truncate_start``, TRL's ``keep_end``), so
every pair keeps its replies; TRL's default ``keep_start`` (``data.overflow=truncate``) leaves 480
of the 2,081 training pairs with no reply token within 256 tokens.

Measured on the 2-core CPU (jax 0.10.2), 2026-12-01. The starting model: the quickstart GPT at
context 256 (1.09M parameters, ``runs/base256`` as in ``sft_chat.py``) after 200 steps of
``sft_chat.py`` (``steps=200 eval_generate=0 eval_base=False``: held-out chat loss 1.025, 82 s).
260 steps of 16 pairs, beta 0.1. With ``truncate_start`` (commit c84dc9e; 2,081 training pairs,
881 cut; held-out 231 pairs; 707 s wall, run beside the test suite):

    step                          65      130     195     260
    full, lr 1e-4   loss        0.663   0.645   0.636   0.639    (train loss 0.47 at the end)
                    accuracy    0.619   0.658   0.662   0.675
                    margin      0.276   0.367   0.424   0.391

With ``truncate`` (commit 3049816; 1,601 training pairs, 2.6 passes; the 176 held-out pairs that
keep a reply):

    step                          65      130     195     260      wall
    full, lr 1e-4   loss        0.688   0.671   0.713   0.700    320 s   (train loss 0.36 at the end)
                    accuracy    0.625   0.631   0.597   0.608
                    margin      0.329   0.291   0.243   0.284
    LoRA r8, 1e-3   loss        0.667   0.655   0.680   0.684    333 s   (74k of 1.16M trainable; train 0.54)
                    accuracy    0.602   0.602   0.597   0.597

The implicit reward ranks 60-68% of unseen pairs the way people did (0.5 is chance; 0 before the
first update, when every reward is 0). On the 1,601 pairs the held-out loss is lowest at step 130
and rises after while the training loss keeps falling: the second pass overfits them, as DPO on
small preference sets does (LoRA less); on all 2,081 pairs, with the whole replies, it keeps
falling to step 195. The learning rates are this tiny model's (TRL's
default 1e-6 is for billion-parameter models): at 1e-4 the training loss swings between 0.6 and 0.8
over the first 80 steps.
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
                                  test_size=0, seq_len=256, batch_size=16, overflow="truncate_start"),
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
