"""Tool use by SFT: a pretrained base learns to answer arithmetic on numbers of up to four digits by
calling a calculator (``lmforge.data.synthetic``'s ``calculator`` task: the user's question, the
call ``<|tool_call|>{"name": "calculator", "arguments": {"expression": "4821 * 377"}}``, the tool's
result, the answer ``#### 1817517``). Loss on the assistant turns: the calls and the answers, never
the results. Held-out problems (no expression shared with training) are replied to through the
tool-call loop (``eval_tools=("calculator",)``: ``lmforge.infer.tools.run_tools``), so the model
must write the call itself; ``eval/reply/tool_calls`` counts its calls per problem and
``eval/reply/tool_errors`` the share that did not run.

    lmforge run experiments/quickstart.py model.max_seq_len=256 data.seq_len=256 data.batch_size=8 --workdir runs/base256
    lmforge run experiments/sft/sft_tools.py init_from=runs/base256 --workdir runs/sft_tools
    lmforge chat runs/sft_tools --tools calculator --temperature 0   # its calls run, results shown

A base of this size does not compute such numbers (``sft_chat.py``: 0.06 exact on word problems
with numbers up to ~100); what it has to learn here is to copy the expression into the call and
the result into the answer, the copying ``sft_chat.py`` found hardest at this scale.

Measured on the 2-core CPU (AMD EPYC), jax 0.10.2, 2026-12-02: the base as above (600 steps, 172 s,
val perplexity 118.3), then this file's default (1,200 steps of batch 16 x 256, packed: ~41
conversations of 88 tokens a step, 6 passes over the 8,000; 468 s). 100 held-out problems, greedy, through
the tool loop:

    step                    0 (base)   400     800     1200
    held-out loss           4.810      0.274   0.0074  0.0008
    calls per problem       0          1.00    1.00    1.00
    calls that failed       -          0.01    0       0
    exact (#### answer)     0.00       0.01    0.94    1.00

The format comes first: by step 300 of a shorter run every reply was a well-formed call, but with
the digits garbled ("9999 + 9909" for 9950 + 9342) and the result misread. Copying the expression
and the result is learnt between steps 400 and 800; at 1,200 all 100 are exact ("9950 + 9342 =
19292.", the call's result copied), on operands the model could not add or multiply itself.
"""

import dataclasses

from lmforge.align.sft import ChatDataConfig, SFTConfig
from lmforge.train.optim import OptimConfig

VARIANTS = ("default", "smoke")


def get_config(variant: str = "default") -> SFTConfig:
    cfg = SFTConfig(
        data=ChatDataConfig(synthetic=(("calculator", 1.0),), train_size=8000, test_size=200, seq_len=256,
                            batch_size=16),
        optim=OptimConfig(lr=1e-3, min_lr=1e-4, warmup_steps=50, weight_decay=0.0, b2=0.99),
        steps=1200, log_every=25, eval_every=400, checkpoint_every=400,
        eval_generate=100, eval_max_new_tokens=64, eval_tools=("calculator",),
    )
    if variant == "smoke":
        cfg = dataclasses.replace(cfg, data=ChatDataConfig(synthetic=(("calculator", 1.0),), train_size=64,
                                                           test_size=8, seq_len=128, batch_size=8),
                                  steps=4, log_every=2, eval_every=0, checkpoint_every=0, eval_generate=4,
                                  eval_max_new_tokens=16)
    elif variant != "default":
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    return cfg
