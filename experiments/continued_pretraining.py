"""Continued (domain-adaptive) pretraining with replay: a GPT pretrained on Python's documentation,
continued on Tiny Shakespeare, with a share of the training sequences replayed from the docs.

The base model (variant ``base``) is the quickstart's data and recipe, smaller: the documentation
that ships with Python (pydoc topics + stdlib docstrings), curated as the quickstart does, a
1024-id BPE tokenizer, a 2-layer GPT. The continued runs (``default``) start from it
(``init_from``, its tokenizer copied), train on ../shared/data/tinyshakespeare.txt (first 90% of
the characters; the last 10% validate) and replay ``replay_fraction`` of their sequences from the
docs' training split. Every evaluation scores both domains over their whole held-out splits:
``eval/perplexity`` on Shakespeare, ``eval/replay/perplexity`` on the docs documents the base run
held out (the same documents: the replay source and val fraction are checked against the base
run's config.json, and its curated shards are read).

    lmforge run experiments/continued_pretraining.py:base --workdir runs/cpt-base
    lmforge sweep experiments/continued_pretraining.py "replay_fraction=[0,0.1,0.25,0.5]" \\
        init_from=runs/cpt-base --workdir runs/cpt-sweep
    # -> runs/cpt-sweep/forgetting.png (both domains' perplexity against replay_fraction and step),
    #    summary.md / summary.csv / summary.png
    lmforge run experiments/continued_pretraining.py:smoke_base --workdir runs/cpt-smoke-base   # what the
    lmforge run experiments/continued_pretraining.py:smoke init_from=runs/cpt-smoke-base        # tests run

Measured on the 2-core CPU (shared with other engineers' runs and tests), jax 0.10.2, 2026-11-30,
the two commands above with the workdirs under /tmp. The base run (300 steps of batch 16 x 128
tokens, 0.54M parameters, BPE 1024 ids at 2.34 bytes/token on the held-out docs; curation keeps 340
of 581 documents) took 10:02 wall in a busy hour (1.3 s/step); its validation perplexity on the
held-out docs went 122.7 -> 77.7 -> 68.77 at steps 100/200/300. The sweep (four continued runs of
150 steps, each evaluating both domains' whole held-out splits at steps 50/100/150) took 6:20 wall,
62-141 s a run as the load fell. Final perplexities at step 150:

    replay_fraction   Shakespeare (eval/perplexity)   Python docs (eval/replay/perplexity)
    (base, step 0)        --                                68.77
    0                     38.57                            192.2
    0.1                   39.67                            99.96
    0.25                  41.38                            83.40
    0.5                   45.59                            72.00

Without replay the docs' perplexity nearly triples in 150 steps (68.8 -> 192.2) and keeps rising
(164.3, 189.2, 192.2 at steps 50/100/150); a tenth of replayed sequences holds it near 100 at a
cost of 1.1 in Shakespeare perplexity (+2.9%), and half of them keep it within 5% of the base's
(72.0) for +7.0 (+18%) on the new domain, which then also learns more slowly (54.0 vs 45.3 at step
50). The new domain's perplexity rises and the original's falls monotonically with the fraction.
The sweep's forgetting.png from that run is docs/continued_pretraining_forgetting.png.
Since 2026-12-01 the continued runs also evaluate both domains at step 0 (``eval_on_start``), so each
run's curves start from the base's own perplexities; the figures above were measured before that.
"""

import dataclasses
import pathlib

from lmforge.data import DataConfig, SourceConfig, TokenizerConfig
from lmforge.data.curate import C4Config, CurateConfig, GopherQualityConfig, OutputConfig
from lmforge.infer import SamplingConfig
from lmforge.model import ModelConfig
from lmforge.train.optim import OptimConfig
from lmforge.train.pretrain import PretrainConfig

VARIANTS = ("default", "base", "smoke_base", "smoke")

# Absent: the run stops before any work with "<path>: no such file (source.path=...)"; bind
# data.source.path=FILE to read it from elsewhere.
SHAKESPEARE = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"
DOCS = SourceConfig(kind="python_docs")
# The quickstart's curation: the docs mix prose with grammar rules and code, so C4's line rules are
# off and Gopher's word minimum is lowered; language id, repetition, safety, PII and dedup run.
CURATE = CurateConfig(c4=C4Config(enabled=False), gopher_quality=GopherQualityConfig(min_words=20),
                      output=OutputConfig(num_shards=2))


def get_config(variant: str = "default") -> PretrainConfig:
    """``base``/``smoke_base``: pretraining on the docs; ``default``/``smoke``: continued on Shakespeare
    with replay (bind ``init_from=`` the base run folder)."""
    base = PretrainConfig(
        model=ModelConfig.gpt2(num_layers=2, num_heads=4, embed_dim=128, mlp_dim=512, max_seq_len=128,
                               vocab_size=0, vocab_multiple=64),
        tokenizer=TokenizerConfig(vocab_size=1024),
        data=DataConfig(source=DOCS, val_fraction=0.1, seq_len=128, batch_size=16, packing="pack"),
        curate=CURATE,
        optim=OptimConfig(lr=2e-3, min_lr=2e-4, warmup_steps=50, b2=0.99, weight_decay=0.1),
        steps=300, log_every=10, eval_every=100, checkpoint_every=150, eval_batch_size=32,
        sample_prompts=("The with statement",),
        sample=SamplingConfig(max_new_tokens=60, temperature=0.7, top_k=40, top_p=0.95),
    )
    if variant == "smoke_base":
        return _smoke(base)
    if variant == "base":
        return base
    continued = dataclasses.replace(
        base,
        data=dataclasses.replace(base.data, source=SourceConfig(kind="text", path=str(SHAKESPEARE))),
        curate=None,                                    # the new domain is read as it is
        replay=DOCS, replay_val_fraction=base.data.val_fraction, replay_fraction=0.25,
        optim=OptimConfig(lr=1e-3, min_lr=1e-4, warmup_steps=20, b2=0.99, weight_decay=0.1),
        steps=150, eval_every=50, checkpoint_every=0, eval_on_start=True,   # both domains before training: the baseline
        sample_prompts=("ROMEO:",),
    )
    if variant == "smoke":
        return _smoke(continued)
    return continued


def _smoke(cfg: PretrainConfig) -> PretrainConfig:
    """A tiny model, a few steps and no curation (the tests run smoke_base, then smoke from it)."""
    return dataclasses.replace(
        cfg,
        model=dataclasses.replace(cfg.model, num_heads=2, embed_dim=32, mlp_dim=64, max_seq_len=32),
        tokenizer=dataclasses.replace(cfg.tokenizer, vocab_size=512),
        curate=None,   # ~10 s of curation alone on an idle 2-core CPU; the replay reads the base's documents either way
        data=dataclasses.replace(cfg.data, seq_len=32, batch_size=8),
        optim=dataclasses.replace(cfg.optim, warmup_steps=2),
        steps=12, log_every=4, eval_every=6, checkpoint_every=6, eval_batch_size=8, eval_max_batches=4,
        sample=SamplingConfig(max_new_tokens=8, temperature=0.7, top_k=20),
    )
