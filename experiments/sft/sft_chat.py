"""Chat SFT on the synthetic post-training mixture: a pretrained base becomes an assistant that keeps
the turn structure, knows its name, works arithmetic step by step, counts letters, compares
decimals, refuses harmful requests and makes small talk.

The base is the quickstart GPT (4 layers x 128 dims, 1.1M parameters, the 2048-id SentencePiece
tokenizer with chat specials) pretrained on the Python docs with a 256-token context:

    lmforge run experiments/quickstart.py model.max_seq_len=256 data.seq_len=256 data.batch_size=8 --workdir runs/base256
    lmforge run experiments/sft/sft_chat.py init_from=runs/base256 --workdir runs/sft_chat
    lmforge chat runs/sft_chat
    # the order of the solution, same budget (two operations, numbers <= 20; then the full-size problems):
    lmforge run experiments/sft/sft_chat.py:small_worked init_from=runs/base256
    lmforge run experiments/sft/sft_chat.py:small_answer_first init_from=runs/base256
    lmforge run experiments/sft/sft_chat.py:worked init_from=runs/base256
    lmforge run experiments/sft/sft_chat.py:answer_first init_from=runs/base256

``init_from`` takes a run, an lmforge model folder or a transformers folder (GPT-2, Llama, Mistral,
Qwen2 / Qwen2.5, Qwen3, Mixtral; its tokenizer and chat template come with it). Your own chat file
instead of the synthetic mixture, computing in bfloat16 on an accelerator:

    lmforge run experiments/sft/sft_chat.py init_from=path/to/Qwen2.5-0.5B-Instruct \
        'data.synthetic=()' 'synthetic_options=()' data.path=my_chats.jsonl model.dtype=bfloat16

DPO (``experiments/align/dpo_hh.py``, ``data.path=`` a preference file) and GRPO
(``experiments/align/grpo_arithmetic.py``) take the same ``init_from`` and ``model.dtype``.

Data: ``lmforge.data.synthetic`` tasks (train and test splits disjoint by construction), refusal
prompts from ../shared/data's HH-RLHF sample; loss on the assistant's turns only, conversations
packed with segment ids. Held-out: the test split of the same mixture, graded greedily.

Measured on the 2-core CPU (shared with other jobs, load average 5-10), jax 0.10.2, 2026-11-30. The
base (the first command: 600 steps, 1.09M parameters, val perplexity 118.4 on the held-out docs)
then 500 steps of SFT (batch 16 x 256, packed: about 37 conversations a step, 2.2 passes over the
8,000), run at the same time as ``sft_lora.py`` (37 min wall each, ~3.5 s/step under that load).
Held-out: 400 conversations of the test split, 200 graded replies (greedy, 160 tokens at most):

    held-out               base    step 250   step 500
    loss (trained tokens)  4.946   0.807      0.609
    identity               0.000   1.000      0.980   (the name "Forge" in the reply; old split: seen questions reworded)
    letter_count           0.000   0.783      0.739
    arithmetic             0.000   0.035      0.059   (#### answer exact)
    decimal_compare        0.000   0.000      0.000
    spelling               0.000   0.000      0.000

The model learns every format (turns end with <|end|>, identity answers, the spelled-out count,
the worked lines and the #### line) within 250 steps, but not the content that needs copying
from the prompt or computing: "Lia starts with 29 beads. Twice as many: 29 * 2 = 22." A model of
this size and budget does not reach the issue's >= 0.5 on the mixture's arithmetic (2-4
operations on numbers up to ~100); spelling fails as BPE hides the letters of a word from a model
this small. ``:small_worked`` reaches it on arithmetic alone with smaller numbers (below).

The identity row was measured when a held-out identity question was a training question with
another greeting or case. Since 2026-12-03 one question of each of the 7 categories is held out
(``lmforge.data.synthetic.held_out_lines``). Side by side on the same base, identity and smalltalk
alone (2,000 conversations, 150 steps, 53 identity replies graded; 37-43 s each, 2026-12-03):

    lmforge run experiments/sft/sft_chat.py:smoke init_from=runs/base256 \
        'data.synthetic=((identity,1.0),(smalltalk,0.5))' steps=150 data.train_size=2000 \
        data.test_size=80 eval_generate=80 eval_max_new_tokens=48

    held-out identity questions      the name in the reply   the category's own answer, exactly
    old split (reworded, seen)       46 of 53                 8 of 53
    new split (never trained on)     48 of 53                 1 of 53

The grader (the name in the reply) is met on new questions as on seen ones. The answer mostly is not
the question's: "Are you a real person?" gets the memory answer ("I'm Forge, and I don't keep memories
between chats"). At this size and budget the model has learnt to say its name, not to tell its
categories' new questions apart. The exact-answer column was counted by hand from
``eval_samples.jsonl``; it is not a metric of the run.

``:small_worked`` vs ``:small_answer_first``: arithmetic alone, two operations, every number and
running total <= 20 (``max_value=20``: 3,169 distinct train problems among the 8,000 conversations,
125 among the 200 held-out ones, none shared), 1,500 steps of batch 16 x 256 from ``runs/base256``,
the same seed and schedule; both at once on the shared 2-core CPU (load 4-6), 55 min wall each,
2026-11-30. 200 held-out problems, greedy, ``####`` answer exact:

                              worked first              answer first
    step                      0 (base)  500   1000  1500    0 (base)  500   1000  1500
    held-out loss             4.604   0.131  0.052  0.028   4.527   0.218  0.095  0.072
    token accuracy            0.224   0.957  0.983  0.991   0.214   0.929  0.968  0.976
    exact match               0.000   0.115  0.235  0.505   0.000   0.115  0.145  0.170

Working first reaches 0.505 (101 of 200) from the base's 0; the answer-first model, trained on the
same problems for the same steps, 0.170. Its replies show why: it commits to a number before it
has computed anything and then often works the problem out correctly below the wrong answer
("#### 1 ... 7 + 13 = 18. 18 - 8 = 11." for 11). The worked model's errors are in single steps
("16 - 6 = 1", "6 + 7 = 11").

``:worked`` vs ``:answer_first`` (arithmetic alone, 8,000 problems, the same seed and budget; both
at once on the shared CPU): 300 steps (stopped by SIGTERM at step 351), then continued from that
checkpoint for 650 steps with a fresh warmup and cosine (``init_from=runs/sft_worked steps=650
eval_every=325``): 1,001 steps in all. 200 held-out problems, greedy:

                              worked first              answer first
    step                      351     676     1001      351     676     1001
    held-out loss             0.682   0.306   0.162     0.690   0.433   0.218
    token accuracy            0.791   0.899   0.943     0.782   0.855   0.927
    exact match (####)        0.040   0.055   0.060     0.050   0.035   0.060

The working-first model fits the held-out solutions better at every step (loss 0.162 vs 0.218),
but on these larger problems neither one computes the answers, so exact match is the same (0.06,
12 of 200): the difference shows once the single steps are within the model's reach (above).
"""

import dataclasses
import pathlib

from lmforge.align.sft import ChatDataConfig, SFTConfig
from lmforge.train.optim import OptimConfig

VARIANTS = ("default", "worked", "answer_first", "small_worked", "small_answer_first", "smoke")
HH = pathlib.Path(__file__).resolve().parents[3] / "shared" / "data" / "hh_rlhf_harmless_base_test.jsonl.gz"
MIXTURE = (("arithmetic", 4.0), ("letter_count", 1.0), ("spelling", 1.0), ("decimal_compare", 1.0),
           ("identity", 2.0), ("refusal", 1.0), ("smalltalk", 1.0))


def get_config(variant: str = "default") -> SFTConfig:
    cfg = SFTConfig(
        data=ChatDataConfig(synthetic=MIXTURE, train_size=8000, test_size=400, seq_len=256, batch_size=16),
        synthetic_options=(("hh_path", str(HH)),),
        optim=OptimConfig(lr=1e-3, min_lr=1e-4, warmup_steps=50, weight_decay=0.0, b2=0.99),
        steps=500, log_every=25, eval_every=250, checkpoint_every=250,
        eval_generate=200, eval_max_new_tokens=160,
    )
    if variant in ("worked", "answer_first"):
        task = "arithmetic" if variant == "worked" else "arithmetic_answer_first"
        cfg = dataclasses.replace(cfg, data=ChatDataConfig(synthetic=((task, 1.0),), train_size=8000, test_size=200,
                                                           seq_len=256, batch_size=16),
                                  synthetic_options=(), steps=300)
    elif variant in ("small_worked", "small_answer_first"):
        # two operations, every number and running total <= 20: problems the 4 x 128 base can learn
        task = "arithmetic" if variant == "small_worked" else "arithmetic_answer_first"
        cfg = dataclasses.replace(cfg, data=ChatDataConfig(synthetic=((task, 1.0),), train_size=8000, test_size=200,
                                                           seq_len=256, batch_size=16),
                                  synthetic_options=(("min_ops", 2), ("max_ops", 2), ("max_value", 20)),
                                  steps=1500, eval_every=500, checkpoint_every=500)
    elif variant == "smoke":
        cfg = dataclasses.replace(cfg, data=ChatDataConfig(synthetic=(("arithmetic", 1.0), ("identity", 1.0)),
                                                           train_size=64, test_size=16, seq_len=128, batch_size=8),
                                  synthetic_options=(), steps=6, log_every=2, eval_every=0, checkpoint_every=0,
                                  eval_generate=8, eval_max_new_tokens=16)
    elif variant != "default":
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    return cfg
