"""Curate Anthropic's hh-rlhf red-team dialogues (harmless-base test, the "chosen" side):
normalization, English only, Gopher/C4-style quality, toxicity, GSM8K decontamination, PII, dedup.

    lmforge data curate experiments/data/curate_dialogues.py            # all 2,312 dialogues
    lmforge data curate experiments/data/curate_dialogues.py:smoke      # one process, one shard (the tests)
    lmforge data curate experiments/data/curate_dialogues.py runner=beam near_dedup.threshold=0.7

Reads ../shared/data (beside the checkout, found from this file). Dialogue turns are
lines without terminal punctuation, so C4's line rules are off and Gopher's word minimum is
lowered; the red-team prompts make the safety stage the biggest filter. WORKDIR/report.md has the
funnel.

Measured (the 2-core AMD EPYC machine, 2026-12-01, `lmforge data curate
experiments/data/curate_dialogues.py`, local runner, 2 workers): 5.5 s wall, 4.0 s of it curating;
2,312 dialogues (1.53 MB) -> 1,761 (1.24 MB). Drops by stage: safety/toxic 237, gopher_quality 203
(few_words 108, few_stop_words 92, 3 more), gopher_repetition 85 (its 9 n-gram and paragraph rules),
near duplicates 17, language 9; decontamination against GSM8K test dropped none.
"""

import dataclasses
import pathlib

from lmforge.data.curate import (
    C4Config,
    CurateConfig,
    DecontamConfig,
    GopherQualityConfig,
    InputConfig,
    OutputConfig,
)

VARIANTS = ("default", "smoke")
SHARED = str(pathlib.Path(__file__).resolve().parents[3] / "shared" / "data")   # beside the checkout


def get_config(variant: str = "default") -> CurateConfig:
    cfg = CurateConfig(
        inputs=(InputConfig(paths=(f"{SHARED}/hh_rlhf_harmless_base_test.jsonl.gz",), text_field="chosen",
                            source="hh_rlhf"),),
        gopher_quality=GopherQualityConfig(min_words=20),
        c4=C4Config(enabled=False),
        decontaminate=DecontamConfig(eval_paths=(f"{SHARED}/gsm8k_test.jsonl",), fields=("question", "answer")),
        output=OutputConfig(num_shards=4),
    )
    if variant == "smoke":
        cfg = dataclasses.replace(cfg, workers=1, output=OutputConfig(num_shards=1))
    return cfg
