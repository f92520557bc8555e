"""Reward modelling: the config and the runner behind ``lmforge run experiments/align/reward_*.py``.

A reward model is a decoder whose unembedding is replaced by a score head ``(D, 1)``
(``ModelConfig.num_labels = 1``; transformers' ``*ForSequenceClassification``) read at the last token
of a conversation (``DecoderLM.scores``). It starts from a language model (``init_from``: usually an
SFT run) with a fresh head, and learns from (prompt, chosen, rejected) pairs to score the chosen
conversation above the rejected one: the Bradley-Terry loss of InstructGPT (Ouyang et al. 2022,
"Training language models to follow instructions with human feedback", sec. 3.5), as TRL's
``RewardTrainer`` computes it (``lmforge.train.objectives.reward_loss``, with its
``center_rewards_coefficient``), on the one trainer.

- Data: a preference file (``data.path``: HH-RLHF or TRL's format, ``lmforge.data.preference``), the
  held-out pairs ``data.test_path`` or a seeded ``val_fraction`` of it. Each side is its whole rendered
  conversation, at most ``data.seq_len`` tokens (``reward_examples``); a pair is a row ``(2, seq_len)``
  on a pair axis, so its two sides stay on one device and in one micro-batch. A longer side is cut
  at its start (``data.overflow=truncate_start``, the default) or the pair dropped (``drop``, as TRL
  does); cutting the end (``truncate``) is refused: the reward is read at the last token.
- Dropout is the starting model's (``model.dropout`` as it was trained); TRL's trainer turns it off.
- LoRA (``lora.rank > 0``) trains the adapters and the score head (PEFT's ``modules_to_save``).
- Evaluation at ``eval_every`` and at the end over every held-out pair once: ``eval/loss``,
  ``eval/accuracy`` (how often the chosen conversation scores higher), ``eval/margin``,
  ``eval/rewards/chosen``, ``eval/rewards/rejected``, ``eval/mean_reward``.
- The run folder is a weights source (``model.json`` records ``num_labels``): ``load_params`` gives the
  reward model back for scoring, and ``lmforge convert RUN DST`` writes a transformers
  ``*ForSequenceClassification`` folder.
"""

from __future__ import annotations

import dataclasses
import pathlib

import jax
import numpy as np
from flax import nnx

from lmforge.align.common import (final_metrics, full_fine_tune_resumes, prepare_policy, report_data, say,
                                  start_run, whole)
from lmforge.align.dpo import PreferenceDataConfig, read_pairs
from lmforge.data.preference import preference_dataset, preference_eval_batches, reward_examples
from lmforge.model import LoRAConfig, ModelRuntime
from lmforge.train import distributed
from lmforge.train.mesh import MeshConfig
from lmforge.train.metrics import lm_flops_per_token, peak_flops_per_device
from lmforge.train.objectives import reward_loss
from lmforge.train.optim import OptimConfig
from lmforge.train.trainer import BatchEvaluator, LoopConfig, Trainer


@dataclasses.dataclass(frozen=True)
class RewardConfig(LoopConfig):
    """The loop's fields (steps, seed, log_every, eval_every, checkpoint_every, ...) come from LoopConfig."""
    init_from: str = ""              # the starting model: a run, model or transformers folder (an LM or a reward model)
    center_rewards_coefficient: float = 0.0   # weight of (r_chosen + r_rejected)^2, TRL's; 0 → off
    # seq_len: tokens per whole side (prompt + reply + end); overflow: truncate_start or drop (the end is read)
    data: PreferenceDataConfig = PreferenceDataConfig(overflow="truncate_start")
    optim: OptimConfig = OptimConfig(lr=1e-5, min_lr=1e-6, warmup_steps=10, weight_decay=0.0)
    lora: LoRAConfig = LoRAConfig()  # rank > 0: train low-rank adapters and the score head only
    model: ModelRuntime = ModelRuntime()   # how the loaded model computes ("": the source's)
    mesh: MeshConfig = MeshConfig()
    distributed: distributed.DistributedConfig = distributed.DistributedConfig()
    eval_batch_size: int = 0         # pairs per held-out batch; 0 → data.batch_size

    def __post_init__(self):
        super().__post_init__()
        problems = [msg for bad, msg in (
            (not self.center_rewards_coefficient >= 0,
             f"center_rewards_coefficient={self.center_rewards_coefficient}: expected >= 0"),
            (self.data.overflow == "truncate",
             "data.overflow='truncate' cuts a long side's end, where the reward is read; expected truncate_start "
             "(cut the prompt's start) or drop (as TRL's RewardTrainer)"),
            (not whole(self.eval_batch_size),
             f"eval_batch_size={self.eval_batch_size!r}: expected a whole number >= 0 (0 → data.batch_size)"),
        ) if bad]
        if problems:
            raise ValueError("; ".join(problems))

    def resumes_alone(self, workdir: pathlib.Path) -> bool:
        """A full fine-tune resuming from its checkpoints in ``workdir``: the model is read from there."""
        return full_fine_tune_resumes(self, workdir)

    def check_runnable(self, workdir: pathlib.Path | None = None) -> None:
        """What the run needs beyond a valid config, checked before anything is written: ``init_from``
        names a weights source of a decoder-only model (a language model, or a reward model of one
        score) that takes ``data.seq_len`` tokens (a full fine-tune resuming in ``workdir`` needs no
        init_from: its own model is checked), and the data file exists. Raises ValueError
        (FileNotFoundError for the file)."""
        from lmforge.weights import check_init_from, read_model_config, source_model_config

        if workdir is not None and self.resumes_alone(workdir):   # its checkpoints hold every weight
            model_cfg, source = read_model_config(workdir), workdir
        else:
            check_init_from(self.init_from, "a reward model starts from a model (usually an SFT run)")
            model_cfg, source = source_model_config(self.init_from), f"init_from={self.init_from}"
        if model_cfg.architecture != "decoder":
            raise ValueError(f"{source} is a {model_cfg.family} ({model_cfg.architecture}) model; reward models "
                             f"here are decoder-only")
        if model_cfg.num_labels not in (0, 1):
            raise ValueError(f"{source} has a score head of {model_cfg.num_labels} outputs; expected a language "
                             f"model or a reward model of one score")
        if self.data.seq_len > model_cfg.max_seq_len:
            raise ValueError(f"data.seq_len={self.data.seq_len} exceeds the max_seq_len={model_cfg.max_seq_len} of "
                             f"{source}'s model")
        self.data.check_files()


def sequence_rewards(graphdef, params: dict, tokens: jax.Array, segment_ids: jax.Array, *, rng=None
                     ) -> tuple[jax.Array, dict]:
    """A reward model's score of each row: ``tokens``, ``segment_ids`` ``(B, T)``, right-padded (padding:
    segment 0; ``lmforge.data.preference.conversation_rows`` renders them) → ``(B,)`` float32 rewards,
    and the model's aux losses (MoE). Raises ValueError for a model without a score head."""
    scores, aux = nnx.merge(graphdef, params).scores(tokens, segment_ids=segment_ids, dropout_rng=rng,
                                                     one_segment=True)
    return scores[:, 0], aux


def pair_rewards(graphdef, params: dict, batch: dict, *, rng=None) -> tuple[jax.Array, dict]:
    """Each side's reward: ``batch`` ``{"tokens", "segment_ids"}`` ``(B, 2, T)``, right-padded → ``(B, 2)``
    float32 scores, and the model's aux losses (MoE). The two sides run as ``2B`` rows, a pair's rows
    next to each other."""
    b, two, t = batch["tokens"].shape
    rows = lambda x: x.reshape(b * two, t)                                       # noqa: E731
    rewards, aux = sequence_rewards(graphdef, params, rows(batch["tokens"]), rows(batch["segment_ids"]), rng=rng)
    return rewards.reshape(b, two), aux


def reward_loss_fn(graphdef, model_cfg, *, center_rewards_coefficient: float = 0.0):
    """``loss_fn(params, frozen, batch, rng)`` for the Trainer: :func:`reward_loss` of the pairs' rewards.
    A pair weighs 1 when both sides hold tokens (padding pairs weigh 0). An MoE model adds its router
    losses, as pretraining does."""
    def loss_fn(params, frozen, batch, rng):
        rewards, aux = pair_rewards(graphdef, params, batch, rng=rng)
        weights = (batch["segment_ids"] > 0).any(-1).all(-1)                              # (B,)
        loss, metrics = reward_loss(rewards, weights, center_rewards_coefficient=center_rewards_coefficient)
        if aux:
            loss = loss + model_cfg.moe_aux_loss * aux["moe_aux_loss"] + model_cfg.moe_z_loss * aux["moe_z_loss"]
            metrics = {**metrics, **aux}
        return loss, metrics
    return loss_fn


def run_reward(cfg: RewardConfig, workdir: pathlib.Path) -> dict[str, float]:
    """Trains a reward model from ``cfg.init_from`` on preference pairs; returns the final metrics
    (``final/...``).

    Raises ValueError for an ``init_from`` that is no weights source or not a decoder, a ``data.seq_len``
    beyond the model's context, a malformed preference file (naming ``file:line``), no pair left, or a
    batch that does not split over the mesh.
    """
    workdir, tok, template, t_start = start_run(cfg, workdir, "a reward model")

    data = cfg.data
    train_pairs, test_pairs = read_pairs(data)
    train_ex, stats = reward_examples(train_pairs, template, data.seq_len, overflow=data.overflow, where="train pair")
    test_ex, test_stats = reward_examples(test_pairs, template, data.seq_len, overflow=data.overflow,
                                          where="held-out pair")
    report_data(workdir, stats, test_stats, "pair")
    mesh, eval_bs, alone, model, optim = prepare_policy(cfg, workdir, tok, num_labels=1)
    model_cfg = model.cfg
    loss_fn = reward_loss_fn(model.graphdef, model_cfg, center_rewards_coefficient=cfg.center_rewards_coefficient)
    trainer = Trainer(loss_fn, params=model.params, param_shardings=model.shardings, optim=optim, loop=cfg, mesh=mesh,
                      rules=cfg.mesh.rules, model_cfg=model_cfg, base=cfg.init_from,
                      base_step=None if alone else model.step, per_device=cfg.mesh.per_device_step)
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(model.params))
    say(f"model: {model_cfg.family} reward model from {workdir if alone else cfg.init_from}, {n_params / 1e6:.2f}M "
        f"parameters, {trainer.num_trainable() / 1e6:.3f}M trainable"
        + (f" (LoRA rank {cfg.lora.rank} and the score head)" if cfg.lora.rank else "") + f"; mesh {dict(mesh.shape)}")

    evaluate = BatchEvaluator(preference_eval_batches(test_ex, eval_bs), rows=eval_bs) if test_ex else None
    batches = trainer.batches(preference_dataset(train_ex, data.batch_size, seed=data.seed,
                                                 process_index=jax.process_index(),
                                                 process_count=jax.process_count()))
    try:
        result = trainer.fit(batches, workdir, evaluate=evaluate, tokens_per_step=data.batch_size * 2 * data.seq_len,
                             flops_per_token=lm_flops_per_token(model_cfg, data.seq_len),
                             peak_flops=peak_flops_per_device(jax.devices()[0], model_cfg.dtype),
                             on_eval=lambda step, m: say(f"step {step}: " + describe(m)))
    finally:
        batches.close()
    return final_metrics(result, trainer, t_start)


def describe(m: dict) -> str:
    """``held-out reward loss 0.6214, accuracy 0.655, margin 0.213 (chosen 0.050, rejected -0.163) over 176
    pairs``. A tie counts as not accurate, as in TRL."""
    if "eval/loss" not in m:
        return "no held-out pairs"
    return (f"held-out reward loss {m['eval/loss']:.4f}, accuracy {m['eval/accuracy']:.3f}, margin "
            f"{m['eval/margin']:.3f} (chosen {m['eval/rewards/chosen']:.3f}, rejected {m['eval/rewards/rejected']:.3f})"
            f" over {int(m.get('eval/weight_sum', 0))} pairs")


__all__ = ["RewardConfig", "pair_rewards", "reward_loss_fn", "run_reward", "sequence_rewards"]
