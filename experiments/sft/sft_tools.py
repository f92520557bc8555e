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
    # the same held-out problems replied to without tools (the calls are not run):
    lmforge run experiments/sft/sft_tools.py init_from=runs/base256 eval_tools=() --workdir runs/sft_tools_no_loop

A base of this size does not multiply four-digit numbers (``sft_chat.py``: 0.06 on two-digit word
problems); what it has to learn here is to copy the expression into the call and the result into
the answer, the copying ``sft_chat.py`` found hardest at this scale.
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
        steps=600, log_every=25, eval_every=200, checkpoint_every=200,
        eval_generate=200, eval_max_new_tokens=64, eval_tools=("calculator",),
    )
    if variant == "smoke":
        cfg = dataclasses.replace(cfg, data=ChatDataConfig(synthetic=(("calculator", 1.0),), train_size=64,
                                                           test_size=8, seq_len=128, batch_size=8),
                                  steps=4, log_every=2, eval_every=0, checkpoint_every=0, eval_generate=4,
                                  eval_max_new_tokens=16)
    elif variant != "default":
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    return cfg
