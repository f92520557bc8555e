"""SFT on GSM8K (real grade-school math word problems): train on its 7,473 training problems with
their worked solutions (``<<48/2=24>>`` calculator annotations kept, as the dataset writes them),
score greedy answers on the test problems by the final ``#### N`` line (strict exact match).

    lmforge run experiments/sft/sft_gsm8k.py init_from=runs/base256 --workdir runs/sft_gsm8k

Reads ../shared/data/gsm8k_{train,test}.jsonl. A 1M-parameter model pretrained on 1.4 MB of
Python docs has no arithmetic or world knowledge to build on: expect an accuracy near 0 and read
the held-out loss; the number is reported as measured, whatever it is.

Measured on the 2-core CPU (shared with other jobs), 2026-11-30, from runs/base256 (the quickstart
GPT at context 256, 1.09M parameters), 200 steps of batch 16 x 256 in 1,009 s: 3,742 of the 7,473
training conversations are longer than 257 tokens in this 2048-id vocabulary and were cut there
(counted in data_report.json; 25 cut before the answer began were dropped), 98 of the 200 held-out
ones too. On the first 200 test problems:

                          base     step 100   step 200
    held-out loss         5.184    3.027      2.793   (the reference solutions' tokens)
    token accuracy        0.100    0.334      0.373
    exact match (####)    0.000    0.000      0.000

The replies take GSM8K's shape ("Natalia sold ... $<<2*2=4>>") and then repeat digits: exact match
stays 0, as expected for a model this size with no arithmetic in its pretraining.
"""

import dataclasses
import pathlib

from lmforge.align.sft import ChatDataConfig, SFTConfig
from lmforge.train.optim import OptimConfig

VARIANTS = ("default", "smoke")
DATA = pathlib.Path(__file__).resolve().parents[3] / "shared" / "data"


def get_config(variant: str = "default") -> SFTConfig:
    cfg = SFTConfig(
        data=ChatDataConfig(path=str(DATA / "gsm8k_train.jsonl"), test_path=str(DATA / "gsm8k_test.jsonl"),
                            format="gsm8k", test_size=200, seq_len=256, batch_size=16),
        optim=OptimConfig(lr=1e-3, min_lr=1e-4, warmup_steps=50, weight_decay=0.0, b2=0.99),
        steps=200, log_every=25, eval_every=100, checkpoint_every=100,
        eval_generate=200, eval_max_new_tokens=200,
    )
    if variant == "smoke":
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, test_size=8, seq_len=128, batch_size=8),
                                  steps=4, log_every=2, eval_every=0, checkpoint_every=0, eval_generate=4,
                                  eval_max_new_tokens=16)
    elif variant != "default":
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    return cfg
