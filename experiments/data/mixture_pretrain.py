"""Pretraining on a mixture of two domains, with each domain's held-out loss: Python's documentation
(prose) and lmforge's own source code (code), by ``data.mixture`` (no download: both are on disk).

``docs`` is the documentation that ships with CPython (pydoc topics + stdlib docstrings, 581
documents, ~2.1 MB); ``code`` is the ``.py`` files in this repository's folders (210 files, ~2 MB,
sorted by path, so the held-out 10% are the last paths: ``train/`` and ``weights/`` modules). It is
the working tree as it is: an edit changes the corpus, so figures name their commit and a clean
tree. Each source holds out its last 10% of documents; every
evaluation scores both held-out splits together (``eval/*``) and each alone (``eval/docs/*``,
``eval/code/*``). A weight is a share of training sequences: ``code`` at 1 beside ``docs`` at 3
makes a quarter of every batch code. Sweep the code share to see the trade the weights make:

    lmforge run experiments/data/mixture_pretrain.py --workdir runs/mixture
    lmforge sweep experiments/data/mixture_pretrain.py "data.mixture.code.weight=[0.33,1,3]" \\
        --workdir runs/mixture-sweep     # summary.png: final/docs_val_loss, final/code_val_loss, ...
    lmforge run experiments/data/mixture_pretrain.py:smoke   # what the tests run

Measured on the 2-core CPU, jax 0.10.2, 2026-12-01, at commit 61fa10c with a clean tree: the sweep
above took 2:47 wall (each run ~55 s: 400 steps of batch 16 x 128 tokens, 0.54M parameters, BPE 1024
ids trained on both training splits, the same for every run). Held-out perplexity at step 400
(step 0: docs 1033.9, code 1053.1, for every run):

    code weight (share)   docs (eval/docs/perplexity)   code (eval/code/perplexity)   both (eval/perplexity)
    0.33 (9.9%)                 53.7                          80.2                         68.0
    1    (25%)                  56.6                          59.9                         58.5
    3    (50%)                  61.3                          46.7                         52.2

A domain's perplexity falls as its share rises, and the trade is lopsided at this budget: going from
10% to 25% code costs the docs 2.9 (+5%) and gains code 20.3 (-25%). ``eval/perplexity`` scores every
held-out token once, and the code split holds more tokens, so it favours more code; choose weights by
the per-source curves (``curves.png`` draws ``eval/NAME/loss``), not by it alone.
"""

import dataclasses
import pathlib

from lmforge.data import DataConfig, MixtureSource, SourceConfig, TokenizerConfig
from lmforge.infer import SamplingConfig
from lmforge.model import ModelConfig
from lmforge.train.optim import OptimConfig
from lmforge.train.pretrain import PretrainConfig

VARIANTS = ("default", "smoke")

REPO = pathlib.Path(__file__).resolve().parents[2]
DOCS = SourceConfig(kind="python_docs")
CODE = SourceConfig(kind="text", path=str(REPO / "*" / "**" / "*.py"))   # sorted, one file a document


def get_config(variant: str = "default") -> PretrainConfig:
    """``default``: 400 steps of a 2-layer GPT on docs 3 : code 1; ``smoke``: a few steps of a tiny one."""
    cfg = PretrainConfig(
        model=ModelConfig.gpt2(num_layers=2, num_heads=4, embed_dim=128, mlp_dim=512, max_seq_len=128,
                               vocab_size=0, vocab_multiple=64),
        tokenizer=TokenizerConfig(vocab_size=1024),
        data=DataConfig(mixture=(MixtureSource("docs", DOCS, 3.0), MixtureSource("code", CODE, 1.0)),
                        val_fraction=0.1, seq_len=128, batch_size=16, packing="pack"),
        optim=OptimConfig(lr=2e-3, min_lr=2e-4, warmup_steps=30, b2=0.99, weight_decay=0.1),
        steps=400, log_every=20, eval_every=100, checkpoint_every=0, eval_batch_size=32, eval_on_start=True,
        sample_prompts=("def ", "The with statement"),
        sample=SamplingConfig(max_new_tokens=60, temperature=0.7, top_k=40, top_p=0.95),
    )
    if variant == "smoke":
        return dataclasses.replace(
            cfg, model=dataclasses.replace(cfg.model, num_heads=2, embed_dim=32, mlp_dim=64, max_seq_len=32),
            tokenizer=dataclasses.replace(cfg.tokenizer, vocab_size=512),
            data=dataclasses.replace(cfg.data, seq_len=32, batch_size=8),
            optim=dataclasses.replace(cfg.optim, warmup_steps=2), eval_on_start=False,
            steps=6, log_every=2, eval_every=3, eval_batch_size=8, eval_max_batches=4,
            sample=SamplingConfig(max_new_tokens=8, temperature=0.7, top_k=20))
    return cfg
