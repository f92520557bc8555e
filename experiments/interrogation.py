"""Hallucination mitigation by model interrogation (issue 11): teach a small GPT facts about half of
some invented entities, ask it about all of them, turn what it gets wrong into "I'm sorry, I don't
know." and fine-tune again (``lmforge.align.interrogation``: the recipe of Llama 3's knowledge
probing and Karpathy's "Deep Dive into LLMs").

The base is the quickstart GPT at context 256 (4 layers x 128 dims, 1.09M parameters, a 2048-id
SentencePiece vocabulary with the chat specials, pretrained on Python's documentation):

    lmforge run experiments/quickstart.py model.max_seq_len=256 data.seq_len=256 data.batch_size=8 \\
        --workdir runs/base256
    lmforge run experiments/interrogation.py init_from=runs/base256 --workdir runs/interrogation
    lmforge chat runs/interrogation/stage2   # "When was Skervem Nunpogel born?" (known) or about
                                             # "Tramser Pasquandsar" (never taught)
    lmforge run experiments/interrogation.py:smoke init_from=RUN   # what the tests run (tiny base)

Measured (2-core CPU, shared with other engineers' jobs, 2026-11-30; jax 0.10.2; the command above
from runs/base256 at step 600, val ppl 118): 3 min 30 s wall in all (stage 1: 110 s, stage 2: 50 s,
the rest sampling). 48 entities, 23 known (69 facts, 138 training questions), 25 unknown (57 facts
in the stage-2 data as "I don't know" where wrong, 18 facts of 6 unseen entities left out). Greedy
replies to the held-out third phrasing of every fact (runs/interrogation/report.json):

    held-out phrasings                stage 1  stage 2    delta
    known facts: accuracy               68.1%    71.0%    +2.9
    known facts: false refusals          0.0%     1.4%    +1.4
    unknown entities: refusals           0.0%    88.0%   +88.0
      seen in stage-2 data               0.0%    96.5%   +96.5
      unseen (never trained)             0.0%    61.1%   +61.1

Both targets of issue 11 are met (refusals >= 80%, known accuracy does not drop). Interrogation
(8 samples at temperature 0.7 per training question): 99.3% of the samples about known facts were
correct and all 69 facts passed the 0.5 rule; 1.3% about unknown entities were (chance hits on
values shared across entities: 1 of 57 facts kept its lucky answer). Notable: the model answers
its training wordings almost perfectly but only 68% of a new wording ("What is E's year of birth?"
after "When was E born?"), so the interrogation, which asks in the training wordings, certifies
facts the held-out measure then finds wrong; and stage 1 hallucinates on every unknown entity
(0% refusals, replies such as "Drutalbury was founded in 1811." for Goundgeibury). Abstention
reaches entities never seen in stage 2 only partly (61%).
A second draw (``seed=1 knowledge.seed=1``, 18 known entities / 54 facts, 3 min 21 s): known
72.2% -> 77.8%, unknown refusals 0% -> 88.9% (seen 98.5%, unseen 62.5%), false refusals 0%.
The same recipe from a random-init model of the base's shape and tokenizer
(4 min 51 s): known 85.5% -> 82.6%, unknown refusals 0% -> 93.3% (unseen 72.2%), false refusals 2.9%.
"""

import dataclasses

from lmforge.align.interrogation import (InterrogateConfig, InterrogationConfig, KnowledgeConfig,
                                         StageConfig)
from lmforge.train.optim import OptimConfig

VARIANTS = ("default", "smoke")


def get_config(variant: str = "default") -> InterrogationConfig:
    """``default``: 48 entities (24 known), 2 training phrasings per fact, 8 samples per question;
    ``smoke``: 8 entities, a few steps, 2 samples (bind ``init_from=`` a base with chat specials)."""
    cfg = InterrogationConfig(
        knowledge=KnowledgeConfig(n_entities=48, known_fraction=0.5, paraphrases=2, unseen_fraction=0.25),
        interrogate=InterrogateConfig(n=8, temperature=0.7, threshold=0.5, max_new_tokens=32),
        stage1=StageConfig(steps=300, batch_size=16,
                           optim=OptimConfig(lr=1e-3, min_lr=1e-4, warmup_steps=20, weight_decay=0.0)),
        stage2=StageConfig(steps=150, batch_size=16,
                           optim=OptimConfig(lr=1e-3, min_lr=1e-4, warmup_steps=10, weight_decay=0.0)),
        seq_len=64,
    )
    if variant == "smoke":
        cfg = dataclasses.replace(
            cfg,
            knowledge=dataclasses.replace(cfg.knowledge, n_entities=8),
            interrogate=dataclasses.replace(cfg.interrogate, n=2, max_new_tokens=8),
            stage1=StageConfig(steps=4, batch_size=8, log_every=2,
                               optim=OptimConfig(lr=1e-3, warmup_steps=1, weight_decay=0.0)),
            stage2=StageConfig(steps=2, batch_size=8, log_every=1,
                               optim=OptimConfig(lr=1e-3, warmup_steps=1, weight_decay=0.0)),
            seq_len=64, eval_max_new_tokens=8)
    return cfg
