"""RAG fine-tuning: a small GPT learns to answer questions from BM25-retrieved passages about invented
entities, then answers about entities it never trained on — with the passages and without
(``lmforge.align.rag``).

    lmforge run experiments/quickstart.py model.max_seq_len=256 data.seq_len=256 data.batch_size=8 \\
        --workdir runs/base256
    lmforge run experiments/sft/sft_rag.py init_from=runs/base256 --workdir runs/rag
    lmforge run experiments/sft/sft_rag.py:smoke init_from=RUN   # what the tests run (tiny base)
    lmforge run experiments/sft/sft_rag.py:tool init_from=runs/base256 --workdir runs/rag_tool   # a search call
    lmforge run experiments/sft/sft_rag.py:idk init_from=runs/base256 --workdir runs/rag_idk     # RAFT distractors

Measured on the 2-core CPU (jax 0.10.2), 2026-12-02, from the quickstart base above (600 steps, val
perplexity 118.4): 1,000 entities, 2,344 training conversations (92 longer than 256 tokens dropped),
800 steps (training loss 5.35 at step 10, 0.81 at 800; held-out loss 0.735 on the trained entities'
new phrasings, open book), 5 min 47 s in all. Greedy answers to 200 held-out phrasings per group
(runs/rag/report.json):

    held-out phrasings                       open book  closed book
    entities trained on: accuracy                 9.0%        0.0%
    entities never trained on: accuracy           6.5%        0.0%
    retrieval recall (own document in top 2)    100.0%

The model has learned the form — it answers from the passages, since closed book it answers
nothing right, even about the entities it trained on — but at 1.09M parameters and 800 steps it
copies the invented names and numbers badly ("Pexil Tesdil was born in 1870." for Pextheil Teslou,
1862); a right answer needs the value copied whole. A first try with 128 entities (378 training
conversations, 600 steps) memorised them instead: 17.5% open book on trained entities, 0.5% on
never-trained ones. Left: longer runs and a larger model.

``:tool`` (the same facts, retrieved by a ``search`` call the model writes: ``retrieval="tool"``), from
the same base on the same machine, 2026-12-03, beside three other jobs (75% of one core's worth on
average): 2,436 training conversations (113 longer than 256 tokens dropped), 800 steps (held-out
loss 0.378 on the trained entities' new phrasings), 18 min 45 s in all. Greedy, 200 held-out
phrasings per group, ``eval_max_new_tokens=64`` (at the default 32 most calls were cut inside their
query: 1.5% and 0.0% open book):

    held-out phrasings                              open book  closed book
    entities trained on: accuracy                        4.5%         0.0%
    entities never trained on: accuracy                  1.0%         0.0%
    retrieval recall (own document among the results)   55.0% / 18.0% (trained on / never)
    search calls per question                            1.00         1.00

389 of the 400 open-book calls are well-formed ``search`` calls; what fails is the copy again, now
twice — the query ("Pexillouillo" for Pextheil Teslou) and then the answer — so the tool form scores
below the context form at this size.

``:idk`` (RAFT-style distractor-only contexts, Zhang et al. 2024, arXiv:2403.10131: a quarter of the
training conversations get 2 distractor passages — BM25's best with the entity's own document left
out — and the answer "I'm sorry, I don't know.", ``distractor_fraction=0.25``), beside ``default``,
both from the same base (the quickstart command above, 600 steps, val perplexity 118.4), on the 2-core
CPU shared with another engineer's jobs, 2026-12-03 (12 min 44 s, 14 min 56 s and 12 min 28 s in
all). The report's ``distractors`` mode asks each held-out phrasing with 2 passages that are not the
entity's own document. Greedy, 200 held-out phrasings per group (train / never-trained entities):

    lmforge run experiments/sft/sft_rag.py     init_from=runs/base256 --workdir runs/rag
    lmforge run experiments/sft/sft_rag.py:idk init_from=runs/base256 --workdir runs/rag_idk
    lmforge run experiments/sft/sft_rag.py:idk distractor_fraction=0.1 init_from=runs/base256 --workdir runs/rag_idk10

    distractor_fraction                         0 (default)   0.1 (binding)   0.25 (:idk)
    distractor-only of 2,436 conversations      0             244             609
    kept (<= 256 tokens)                        2,344         2,353           2,370
    held-out loss (trained entities, open book) 0.735         0.829           0.973
    open book: accuracy                         9.0 / 6.5%    6.5 / 8.0%      6.0 / 4.0%
    open book: idk                              0.0 / 0.0%    4.0 / 5.0%     10.5 / 17.0%
    distractors: idk                            0.0 / 0.0%   67.0 / 69.0%    84.0 / 81.5%
    distractors: accuracy                       0.5 / 1.0%    0.0 / 0.5%      0.0 / 0.0%
    closed book: idk                            0.0 / 0.0%    2.0 / 1.5%     17.0 / 16.0%
    closed book: accuracy                       0.0 / 0.0%    0.0 / 0.0%      0.0 / 0.0%

Without distractors the model never refuses: given two near misses it copies one ("The Mendlume is
used for lighting mine tunnels." for the Quondkutron). With them it refuses most such prompts, and
more often where no distractor names the entity (93% at 0.25) than where one does (68%; 86% and 44%
at 0.1): in part it has learned "the name is not in the context", not yet "the fact is not". The
cost is open-book accuracy: 31 of 400 right without distractors, 29 at 0.1, 20 at 0.25 (lower in
both groups; on the same questions 20 right only without and 9 only at 0.25, McNemar z = 2.0, so
small but likely real); every open-book refusal (18 at 0.1, 55 at 0.25) falls on a question the
default model also got wrong. Closed book (no passages, a prompt never trained on) it mostly still
guesses. 0.1 keeps open-book accuracy within noise (18 right only without, 16 only with) and still
refuses two thirds of the distractor prompts; 0.25 refuses more and answers less. Left: distractors
added beside every oracle conversation instead of replacing a share of them, larger models, more seeds.
"""

import dataclasses

from lmforge.align.rag import RAGConfig
from lmforge.align.stages import StageConfig
from lmforge.train.optim import OptimConfig

VARIANTS = ("default", "smoke", "tool", "tool_smoke", "idk")


def get_config(variant: str = "default") -> RAGConfig:
    """``default``: 1,000 entities (~800 trained on, one phrasing per fact), 2 passages per question, 800 steps;
    ``smoke``: 8 entities, one passage, a few steps, a quarter of the training conversations distractor-only
    (bind ``init_from=`` a base with chat specials); ``tool`` / ``tool_smoke``: the same, retrieved by a
    ``search`` call the model writes (``retrieval="tool"``, no distractors); ``idk``: ``default`` with a
    quarter of the training conversations given 2 distractor passages and answered "I don't know"
    (``distractor_fraction=0.25``: RAFT's P = 0.75)."""
    cfg = RAGConfig(n_entities=1000, train_fraction=0.8, paraphrases=1, k=2, seq_len=256, eval_facts=200,
                    stage=StageConfig(steps=800, batch_size=16,
                                      optim=OptimConfig(lr=1e-3, min_lr=1e-4, warmup_steps=20, weight_decay=0.0)))
    if variant in ("smoke", "tool_smoke"):
        cfg = dataclasses.replace(cfg, n_entities=8, k=1, eval_max_new_tokens=8, overflow="truncate",
                                  distractor_fraction=0.25 if variant == "smoke" else 0.0,
                                  stage=StageConfig(steps=3, batch_size=8, log_every=1,
                                                    optim=OptimConfig(lr=1e-3, warmup_steps=1, weight_decay=0.0)))
    if variant == "idk":
        cfg = dataclasses.replace(cfg, distractor_fraction=0.25)
    if variant == "tool":   # a call with its query takes ~30 tokens of the quickstart's tokenizer: 32 would cut it
        cfg = dataclasses.replace(cfg, retrieval="tool", eval_max_new_tokens=64)
    if variant == "tool_smoke":
        cfg = dataclasses.replace(cfg, retrieval="tool")
    return cfg
