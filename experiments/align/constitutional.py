"""Constitutional AI (Bai et al. 2022): a helpful-only model critiques and revises its own answers by
written principles (SL-CAI), then labels pairs of answers as its own preference data (RL-CAI, DPO),
and stops giving out invented people's phone numbers and addresses (``lmforge.align.cai_privacy``).

    lmforge run experiments/quickstart.py model.max_seq_len=256 data.seq_len=256 data.batch_size=8 \\
        --workdir runs/base256
    lmforge run experiments/align/constitutional.py init_from=runs/base256 --workdir runs/cai
    lmforge chat runs/cai/sl          # "What is <a person>'s phone number?" — see runs/cai/report.json
    lmforge run experiments/align/constitutional.py:smoke init_from=RUN   # what the tests run (tiny base)

Measured on the 2-core CPU (jax 0.10.2), 2026-12-02, from the quickstart base above (600 steps, val
perplexity 118.4). 128 entities: 32 people (8 demo, 16 red-team, 8 unseen), 1,122 stage-1
conversations; the whole run 6.5 min with 40 DPO steps (8.7 min with 12 on a slower machine of the
same kind). Greedy replies to the held-out phrasing of every question (64 private, 384 public;
runs/cai/report.json; the table the run prints also splits the disclosures by group), rl with
soft labels (the default):

    held-out phrasings                 helpful        sl        rl
    private: disclosed (any value)       39.1%      0.0%      0.0%
    private: true detail leaked          25.0%      0.0%      0.0%
    private: refused                      0.0%     51.6%     62.5%
      demo people: refused                0.0%     50.0%     62.5%
      red-team people: refused            0.0%     65.6%     81.2%
      unseen people: refused              0.0%     25.0%     25.0%
    public facts: accuracy               81.2%     83.3%     78.1%
    public facts: refused                 0.0%      0.3%      0.5%

The data the model made for itself: all 64 of its first answers to the red-team prompts disclosed;
95.3% of its critiques called the detail private, none of its revisions disclosed and 84.4% were
refusals (the rest garbled). SL-CAI on those revisions (plus its own public answers) stops every
disclosure — on people it never critiqued too — and keeps public accuracy. The AI feedback labelled
83.6% of the 55 pairs where exactly one answer disclosed the right way; 24 pairs were further than
the 0.1 margin from a tie. DPO on them (RL-CAI) adds refusals. With hard labels (every pair's
chosen answer certain) it costs public accuracy — the paper's harmlessness-helpfulness tension at
its smallest. With soft labels (``feedback.soft_labels``, the default here: each pair's target is
the feedback's own confidence ``p_chosen``, 0.60-0.99, median 0.82) it adds as many refusals or more
and keeps far more of it. Measured 2026-12-02 on the same 2-core CPU, one seed, the same helpful and
SL-CAI stages and the same 24 pairs; the rl column of held-out phrasings:

    RL-CAI (DPO, beta 0.1)        private: refused   public: accuracy   public: refused
    none (sl)                          51.6%              83.3%              0.3%
    12 steps, hard labels              62.5%              68.5%              2.9%
    12 steps, soft labels              62.5%              78.1%              0.5%
    40 steps, hard labels              54.7%              60.2%              4.4%
    40 steps, soft labels              65.6%              78.1%              1.3%

(An earlier run, hard labels: 40 steps at beta 0.5 gave 74.2% public accuracy, refusals 45.3%.) What
the model says instead of a detail, when it does not refuse, is mostly a public fact of the person
("Koutra Gougulnom was born in Stelsundbury."): to the held-out phrasing "What is the phone number
of E?" the helpful model itself gives a number only 39% of the time (the true one 25%).
"""

import dataclasses

from lmforge.align.cai_privacy import CAIConfig, CritiqueConfig, FeedbackConfig, WorldConfig
from lmforge.align.stages import StageConfig
from lmforge.train.optim import OptimConfig

VARIANTS = ("default", "smoke")


def get_config(variant: str = "default") -> CAIConfig:
    """``default``: 128 entities (32 people), the helpful model 600 steps, SL-CAI 150, RL-CAI 12 steps of DPO
    on soft labels;
    ``smoke``: 8 entities, a few steps (bind ``init_from=`` a base with chat specials)."""
    cfg = CAIConfig(
        world=WorldConfig(n_entities=128, paraphrases=2, demo_fraction=0.25, unseen_fraction=0.33),
        critique=CritiqueConfig(revisions=1, temperature=0.0, max_new_tokens=40),
        feedback=FeedbackConfig(temperature=1.0, margin=0.1, beta=0.1, soft_labels=True),
        helpful=StageConfig(steps=600, batch_size=16,
                            optim=OptimConfig(lr=1e-3, min_lr=1e-4, warmup_steps=20, weight_decay=0.0)),
        sl=StageConfig(steps=150, batch_size=16,
                       optim=OptimConfig(lr=5e-4, min_lr=5e-5, warmup_steps=10, weight_decay=0.0)),
        rl=StageConfig(steps=12, batch_size=8,
                       optim=OptimConfig(lr=5e-5, min_lr=5e-6, warmup_steps=5, weight_decay=0.0)),
        seq_len=256,
    )
    if variant == "smoke":
        tiny = StageConfig(steps=3, batch_size=8, log_every=1, optim=OptimConfig(lr=1e-3, warmup_steps=1,
                                                                                  weight_decay=0.0))
        cfg = dataclasses.replace(cfg, world=dataclasses.replace(cfg.world, n_entities=8, demo_fraction=0.5),
                                  critique=dataclasses.replace(cfg.critique, max_new_tokens=8),
                                  feedback=dataclasses.replace(cfg.feedback, margin=0.0),
                                  helpful=tiny, sl=tiny, rl=dataclasses.replace(tiny, steps=2),
                                  seq_len=256, eval_max_new_tokens=8)
    return cfg
