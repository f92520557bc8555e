"""RL with verifiable rewards: GRPO on small arithmetic word problems, from a model SFT taught the
worked format. Each step samples 8 completions of each of 8 problems at temperature 1, rewards a
completion 1 when its ``#### n`` line is the right number, and reinforces the completions that beat
their group's mean (DeepSeekMath's GRPO, TRL's defaults: one update per rollout, the dapo loss, no
KL term).

    lmforge run experiments/quickstart.py model.max_seq_len=256 data.seq_len=256 data.batch_size=8 --workdir runs/base256
    lmforge run experiments/sft/sft_chat.py:small_worked init_from=runs/base256 steps=600 --workdir runs/sft_small
    lmforge run experiments/align/grpo_arithmetic.py init_from=runs/sft_small --workdir runs/grpo_arithmetic
    lmforge run experiments/align/grpo_arithmetic.py:kl init_from=runs/sft_small     # beta=0.04 to the SFT model

The problems are ``sft_chat.py:small_worked``'s (two operations, every number and running total
<= 20; its train split for the rollouts, 200 of its test split held out and graded greedily).

Measured on the 2-core CPU (jax 0.10.2), 2026-12-01, at commit a7f3924 (rollout seeds have changed
since: the same runs now draw other samples). The starting model: the second command's (600 steps of
SFT, 1.09M parameters, greedy accuracy 0.180 on the 200 held-out problems). Two learning rates at
once (constant after 5 warmup steps), 100 steps of 8 x 8 completions, 4.4-5.6 s per rollout and
about as much per update with both runs sharing the CPU:

    held-out accuracy (greedy)      step 0    step 50   step 100
    lr 3e-5 (default)               0.180     0.195     0.200
    lr 1e-5                         0.180     0.175     0.155
    lr 1e-4 (stopped at step 50)    0.180     0.075

The sampled reward (temperature 1) stays near 0.10 in every run (0.05-0.15 per 5-step mean), with
35-80% of the groups all wrong, so they carry no signal; completions keep their length (73-76
tokens). At 1e-4 the policy degrades (0.075). At 3e-5 the gain is within the noise of 200 problems
(one standard error is 0.028): 100 steps of 64 rollouts do not yet improve this 1M-parameter model.
What would be tried next, at more CPU time: more prompts per step (fewer all-wrong groups), more
steps, starting from the 1,500-step SFT model (0.505 greedy, ``sft_chat.py``), where most groups
hold both right and wrong answers.

``:shaped`` adds a step reward to fill the all-wrong groups: ``reward_funcs`` = the outcome
(``lmforge.align.rewards:accuracy``, weight 1) + the share of the reply's equations that are right
(``equation_accuracy``, weight 0.5). Measured 2026-12-03 on the 2-core CPU against the default, side
by side from the same 600-step SFT model (greedy 0.180 again; 17% of its equations right), 200 steps
each (100, then resumed to 200; 11-20 s a step with both runs and other jobs sharing the CPU):

    held-out (200 problems, greedy)     step 0    50      100     150     200
    default: accuracy                   0.180     0.170   0.175   0.170   0.160
    shaped:  accuracy                   0.180     0.185   0.180   0.175   0.055
    shaped:  equations right            0.17      0.19    0.21    0.36    0.86
    sampled groups all alike            default 0.55-0.62 of them, shaped 0.02-0.12

The step reward does what it was for (almost every group carries a signal) and then gets hacked: by
step 200 the replies are full of true equations that are not the problem's ("Liam starts with 2
apples. 2 groups of 2: 2 * 2 = 4. Taking them: 2 * 2 = 4."), 86% of equations right and the
accuracy down to 0.055. ``equation_accuracy`` checks arithmetic, not that an equation uses the
problem's numbers: reward hacking, a proxy reward optimised past the goal (Gao et al. 2023 measure
it for learned reward models), at the smallest scale. Some of the default run's replies hold runs of
digits by step 200 too (accuracy 0.160, within one standard error of its start).

    lmforge run experiments/align/grpo_arithmetic.py:shaped init_from=runs/sft_small --workdir runs/grpo_shaped
"""

import dataclasses

from lmforge.align.grpo import GRPOConfig, PromptDataConfig
from lmforge.train.optim import OptimConfig

VARIANTS = ("default", "kl", "shaped", "smoke")
SMALL = (("min_ops", 2), ("max_ops", 2), ("max_value", 20))
SHAPED = (("lmforge.align.rewards:accuracy", 1.0), ("lmforge.align.rewards:equation_accuracy", 0.5))


def get_config(variant: str = "default") -> GRPOConfig:
    cfg = GRPOConfig(
        data=PromptDataConfig(synthetic=(("arithmetic", 1.0),), train_size=8000, test_size=200, batch_size=8,
                              max_prompt_len=128),
        synthetic_options=SMALL,
        num_generations=8, max_new_tokens=96, temperature=1.0,
        optim=OptimConfig(lr=3e-5, min_lr=3e-5, warmup_steps=5, weight_decay=0.0, b2=0.99),
        steps=100, log_every=5, eval_every=50, checkpoint_every=50, eval_generate=200,
    )
    if variant == "kl":
        cfg = dataclasses.replace(cfg, beta=0.04)
    elif variant == "shaped":   # the outcome reward plus a step reward: right equations count in all-wrong groups
        cfg = dataclasses.replace(cfg, reward_funcs=SHAPED)
    elif variant == "smoke":   # letter counting: prompts short enough for the tests' 64-token model
        cfg = dataclasses.replace(cfg, data=PromptDataConfig(synthetic=(("letter_count", 1.0),), train_size=32,
                                                             test_size=8, batch_size=4, max_prompt_len=40),
                                  synthetic_options=(), num_generations=4, max_new_tokens=16, steps=3, log_every=1,
                                  eval_every=0, checkpoint_every=0, eval_generate=8)
    elif variant != "default":
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    return cfg
