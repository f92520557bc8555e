"""Direct Preference Optimization (DPO): the config and the runner behind
``lmforge run experiments/align/dpo_*.py``.

A policy starts from a model (``init_from``: a run, a model folder or a transformers folder, usually an
SFT run) and learns from (prompt, chosen, rejected) pairs against a frozen reference, the same model
unless ``reference_from`` names another (Rafailov et al. 2023, "Direct Preference Optimization: Your
Language Model is Secretly a Reward Model"). The loss is ``lmforge.train.objectives.dpo_loss``
(``loss_type``: sigmoid, hinge, ipo or robust, as TRL's ``DPOTrainer``) on the pairs' reply log-probs
summed over reply tokens, on the one trainer.

- Data: a preference file (``data.path``: HH-RLHF or TRL's format, ``lmforge.data.preference``); the
  held-out pairs are ``data.test_path`` or a seeded ``val_fraction`` of it. Each pair is a row of
  shape ``(2, seq_len)`` on a pair axis (chosen, rejected), so the two replies of a pair stay on one
  device and in one micro-batch; ``data.batch_size`` counts pairs. With ``soft_labels`` a pair's
  ``p_chosen`` (TRL's format plus that field, as ``lmforge.align.constitutional.preference_pairs``
  writes AI feedback's confidence) is the sigmoid loss's target instead of 1: conservative DPO per pair.
- The reference is a frozen tree beside the state (``Trainer(frozen={"reference": ...})``), read once
  and never donated. Under LoRA (``lora.rank > 0``) the reference is the policy's own base with its
  adapters set to zero — the base's function exactly, held once. The reference's checkpoint step is
  kept in ``reference.json``, so a resumed run scores against the same weights even if the reference
  run has trained on since.
- Evaluation at ``eval_every`` and at the end: TRL's metrics over every held-out pair once —
  ``eval/loss``, ``eval/rewards/accuracies`` (how often the implicit reward
  ``beta * (logp - ref_logp)`` ranks the chosen reply above the rejected one), ``rewards/margins``,
  ``rewards/chosen``, ``rewards/rejected``, ``logps/chosen``, ``logps/rejected``. Before the first
  update the policy is the reference: loss log 2, margins 0.
- The run folder is a weights source like any other (``model.json``, and ``base.json`` under LoRA):
  ``lmforge chat``, ``lmforge eval`` and a next stage's ``init_from`` read it.
"""

from __future__ import annotations

import dataclasses
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lmforge.align.common import (PolicyAndReference, check_policy_sources, final_metrics, load_recorded, prepare_policy,
                                  report_data, say, split_held_out, start_run, whole)
from lmforge.data.preference import (PREFERENCE_FORMATS, PREFERENCE_OVERFLOW, preference_dataset, preference_eval_batches,
                                     preference_examples, read_preferences)
from lmforge.model import LoRAConfig, ModelRuntime, forward_logprobs
from lmforge.model.logprobs import VOCAB_CHUNK, check_vocab_chunk
from lmforge.model.lora import ADAPTER_PATTERN, adapter_params
from lmforge.model.paths import combine
from lmforge.train import distributed
from lmforge.train.mesh import MeshConfig
from lmforge.train.metrics import lm_flops_per_token, peak_flops_per_device
from lmforge.train.objectives import DPO_LOSS_TYPES, dpo_loss
from lmforge.train.optim import OptimConfig
from lmforge.train.trainer import BatchEvaluator, LoopConfig, Trainer


@dataclasses.dataclass(frozen=True)
class PreferenceDataConfig:
    """Where the preference pairs come from and how they become batches."""
    path: str = ""                   # a preference file (.jsonl / .jsonl.gz / .json): HH-RLHF or TRL's format
    format: str = "auto"             # auto or PREFERENCE_FORMATS
    test_path: str = ""              # held-out pairs; "" → a val_fraction of `path`
    val_fraction: float = 0.1
    train_size: int = 0              # training pairs kept (the first, in file order); 0 → all
    test_size: int = 200             # held-out pairs kept; 0 → all
    seq_len: int = 256               # tokens per side (prompt + reply), longer pairs cut or dropped
    batch_size: int = 16             # GLOBAL pairs per step
    overflow: str = "truncate"       # PREFERENCE_OVERFLOW: a side over seq_len + 1 tokens cut at the end or start, or dropped
    seed: int = 0

    def __post_init__(self):
        problems = [msg for bad, msg in (
            (self.format != "auto" and self.format not in PREFERENCE_FORMATS,
             f"data.format={self.format!r}: expected auto or one of {', '.join(PREFERENCE_FORMATS)}"),
            (self.overflow not in PREFERENCE_OVERFLOW,
             f"data.overflow={self.overflow!r}: expected one of {', '.join(PREFERENCE_OVERFLOW)}"),
            (not 0.0 <= self.val_fraction < 1.0, f"data.val_fraction={self.val_fraction}: expected [0, 1)"),
            (self.seq_len < 2 or self.batch_size < 1, f"data.seq_len={self.seq_len}, data.batch_size="
                                                      f"{self.batch_size}: expected seq_len >= 2, batch_size >= 1"),
            *((not whole(getattr(self, k)), f"data.{k}={getattr(self, k)!r}: expected a whole number >= 0")
              for k in ("train_size", "test_size")),
        ) if bad]
        if problems:
            raise ValueError("; ".join(problems))

    def check_files(self) -> None:
        """``path`` (and ``test_path``) name existing files. Raises ValueError for an empty ``path``,
        FileNotFoundError for a missing file."""
        if not self.path:
            raise ValueError("data.path is empty; expected a preference file (HH-RLHF's chosen/rejected transcripts "
                             "or TRL's prompt/chosen/rejected)")
        for key in ("path", "test_path"):
            path = getattr(self, key)
            if path and not pathlib.Path(path).is_file():
                raise FileNotFoundError(f"data.{key}={path}: no such file; expected a preference file")


@dataclasses.dataclass(frozen=True)
class DPOConfig(PolicyAndReference, LoopConfig):
    """The loop's fields (steps, seed, log_every, eval_every, checkpoint_every, ...) come from LoopConfig."""
    init_from: str = ""              # the starting policy: a run folder, a model folder or a transformers folder
    reference_from: str = ""         # the frozen reference; "" → the starting policy (under LoRA: its base)
    beta: float = 0.1                # the KL coefficient: rewards are beta * (logp - ref_logp)
    loss_type: str = "sigmoid"       # DPO_LOSS_TYPES
    label_smoothing: float = 0.0     # robust DPO's flip rate eps, in [0, 0.5)
    soft_labels: bool = False        # sigmoid against each pair's p_chosen (conservative DPO per pair; 1 when absent)
    data: PreferenceDataConfig = PreferenceDataConfig()
    optim: OptimConfig = OptimConfig(lr=1e-5, min_lr=1e-6, warmup_steps=10, weight_decay=0.0)
    lora: LoRAConfig = LoRAConfig()  # rank > 0: train low-rank adapters only; the reference is their base
    model: ModelRuntime = ModelRuntime()   # how the loaded model computes ("": the source's)
    mesh: MeshConfig = MeshConfig()
    distributed: distributed.DistributedConfig = distributed.DistributedConfig()
    eval_batch_size: int = 0         # pairs per held-out batch; 0 → data.batch_size
    vocab_chunk: int = VOCAB_CHUNK   # the loss's logits, columns at a time (recomputed backward); 0 → all V at once

    def __post_init__(self):
        super().__post_init__()
        check_vocab_chunk(self.vocab_chunk)
        problems = [msg for bad, msg in (
            (self.loss_type not in DPO_LOSS_TYPES,
             f"loss_type={self.loss_type!r}: expected one of {', '.join(DPO_LOSS_TYPES)}"),
            (not self.beta > 0, f"beta={self.beta}: expected > 0"),
            (not 0.0 <= self.label_smoothing < 0.5, f"label_smoothing={self.label_smoothing}: expected [0, 0.5)"),
            (self.label_smoothing and self.loss_type != "robust",
             f"label_smoothing={self.label_smoothing} is read by loss_type='robust' only, not {self.loss_type!r}"),
            (self.soft_labels and self.loss_type != "sigmoid",
             f"soft_labels=True is read by loss_type='sigmoid' only, not {self.loss_type!r}"),
            (self.reference_is_base() and self.optim.trainable not in ((), (ADAPTER_PATTERN,)),
             f"optim.trainable={self.optim.trainable} trains more than the LoRA adapters, but the reference is the "
             f"adapters' base (it would move with them); set reference_from to load a frozen reference"),
            (not whole(self.eval_batch_size),
             f"eval_batch_size={self.eval_batch_size!r}: expected a whole number >= 0 (0 → data.batch_size)"),
        ) if bad]
        if problems:
            raise ValueError("; ".join(problems))

    def check_runnable(self, workdir: pathlib.Path | None = None) -> None:
        """What the run needs beyond a valid config, checked before anything is written: ``init_from``
        (and ``reference_from``) name weights sources of decoder-only models that take ``data.seq_len``
        tokens, a reference reads the policy's tokens (the same tokenizer files), and the data file
        exists. Raises ValueError (FileNotFoundError for the file)."""
        check_policy_sources(self, "DPO", "DPO starts from a model (usually an SFT run)",
                             ("data.seq_len", self.data.seq_len))
        self.data.check_files()


# ----------------------------------------------------------------------------------------- loss


def reply_logprobs(graphdef, params: dict, batch: dict, *, rng=None, vocab_chunk: int = VOCAB_CHUNK
                   ) -> tuple[jax.Array, dict]:
    """Each side's reply log-prob: ``batch`` arrays ``(B, 2, T)`` → ``(B, 2)`` sums of
    ``weights * log p(targets | inputs)`` (nats), and the model's aux losses (MoE). The two sides run as
    ``2B`` rows, a pair's rows next to each other (so on one device); padding (segment 0) stays out of
    an MoE router."""
    b, two, t = batch["inputs"].shape
    rows = lambda x: x.reshape(b * two, t)                                       # noqa: E731
    positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b * two, t))
    lp, aux = forward_logprobs(nnx.merge(graphdef, params), rows(batch["inputs"]), rows(batch["targets"]),
                               positions=positions, segment_ids=rows(batch["segment_ids"]), dropout_rng=rng,
                               vocab_chunk=vocab_chunk, one_segment=True)
    sums = (lp.logprobs.astype(jnp.float32) * rows(batch["weights"]).astype(jnp.float32)).sum(-1)
    return sums.reshape(b, two), aux


def without_adapters(params: dict) -> dict:
    """The tree with every LoRA factor set to zero: the base model's function exactly, through the
    same graph."""
    adapters, base = adapter_params(params)
    return combine(base, jax.tree.map(jnp.zeros_like, adapters))


def dpo_loss_fn(graphdef, reference_graphdef, model_cfg, *, beta: float, loss_type: str = "sigmoid",
                label_smoothing: float = 0.0, vocab_chunk: int = VOCAB_CHUNK, reference_is_base: bool = False):
    """``loss_fn(params, frozen, batch, rng)`` for the Trainer: :func:`dpo_loss` of the policy's reply
    log-probs against the reference's (``frozen["reference"]`` through ``reference_graphdef``, or with
    ``reference_is_base`` the policy's own tree with its adapters zeroed), no gradient through the
    reference. A pair weighs 1 when both sides have reply tokens (padding pairs weigh 0). A batch with
    ``labels`` (B, 2) (``preference_examples(soft_labels=True)``) is scored against ``labels[:, 0]``. An
    MoE policy adds its router losses, as pretraining does."""
    def loss_fn(params, frozen, batch, rng):
        policy, aux = reply_logprobs(graphdef, params, batch, rng=rng, vocab_chunk=vocab_chunk)
        if reference_is_base:
            reference, _ = reply_logprobs(graphdef, without_adapters(params), batch, vocab_chunk=vocab_chunk)
        else:
            reference, _ = reply_logprobs(reference_graphdef, frozen["reference"], batch, vocab_chunk=vocab_chunk)
        lengths = batch["weights"].astype(jnp.float32).sum(-1)                                  # (B, 2)
        loss, metrics = dpo_loss(policy, jax.lax.stop_gradient(reference), (lengths > 0).all(-1), beta=beta,
                                 loss_type=loss_type, label_smoothing=label_smoothing, lengths=lengths,
                                 labels=batch["labels"][:, 0] if "labels" in batch else None)
        if aux:
            loss = loss + model_cfg.moe_aux_loss * aux["moe_aux_loss"] + model_cfg.moe_z_loss * aux["moe_z_loss"]
            metrics = {**metrics, **aux}
        return loss, metrics
    return loss_fn


# ----------------------------------------------------------------------------------------- data


def read_pairs(data: PreferenceDataConfig) -> tuple[list[dict], list[dict]]:
    """(train, held-out) pairs from ``data.path`` (and ``data.test_path``), with the read summary said."""
    pairs, stats = read_preferences(data.path, data.format)
    say(f"read {stats.summary()}")
    if data.test_path:
        train = pairs
        test, test_stats = read_preferences(data.test_path, data.format)
        say(f"read {test_stats.summary()}")
    else:
        train, test = split_held_out(pairs, data.val_fraction, data.seed)
    if data.train_size:
        train = train[:data.train_size]
    if data.test_size:
        test = test[:data.test_size]
    if not train:
        raise ValueError(f"data.path={data.path}: no training pair")
    return train, test


# --------------------------------------------------------------------------------------- runner


def run_dpo(cfg: DPOConfig, workdir: pathlib.Path) -> dict[str, float]:
    """Trains ``cfg.init_from`` on preference pairs by DPO; returns the final metrics (``final/...``).

    Raises ValueError for an ``init_from`` / ``reference_from`` that is no weights source or not a
    decoder, a ``data.seq_len`` beyond the model's context, a malformed preference file (naming
    ``file:line``), no pair left, or a batch that does not split over the mesh.
    """
    workdir, tok, template, t_start = start_run(cfg, workdir, "DPO")
    from lmforge.weights import load_params

    data = cfg.data
    train_pairs, test_pairs = read_pairs(data)
    train_ex, stats = preference_examples(train_pairs, template, data.seq_len, overflow=data.overflow,
                                          where="train pair", soft_labels=cfg.soft_labels)
    test_ex, test_stats = preference_examples(test_pairs, template, data.seq_len, overflow=data.overflow,
                                              where="held-out pair", soft_labels=cfg.soft_labels)
    if cfg.soft_labels:
        soft = [p["p_chosen"] for p in train_pairs if "p_chosen" in p]
        say(f"soft labels: {len(soft)} of {len(train_pairs)} training pairs have p_chosen"
            + (f" (mean {np.mean(soft):.3f})" if soft else "") + "; the others count as 1")
    report_data(workdir, stats, test_stats, "pair")
    mesh, eval_bs, alone, policy, optim = prepare_policy(cfg, workdir, tok)
    rules, model_cfg = cfg.mesh.rules, policy.cfg

    frozen, frozen_sh, reference = {}, {}, None
    if not cfg.reference_is_base():
        reference = _load_reference(cfg, workdir, mesh, rules, policy if not alone else None, load_params)
        frozen, frozen_sh = {"reference": reference.params}, {"reference": reference.shardings}
        if reference.cfg.vocab_size != model_cfg.vocab_size:
            raise ValueError(f"reference_from={cfg.reference_from}: its output layer has {reference.cfg.vocab_size} "
                             f"ids, the policy's {model_cfg.vocab_size}; expected the same vocabulary")
    loss_fn = dpo_loss_fn(policy.graphdef, reference.graphdef if reference else None, model_cfg, beta=cfg.beta,
                          loss_type=cfg.loss_type, label_smoothing=cfg.label_smoothing, vocab_chunk=cfg.vocab_chunk,
                          reference_is_base=cfg.reference_is_base())
    trainer = Trainer(loss_fn, params=policy.params, param_shardings=policy.shardings, optim=optim, loop=cfg,
                      mesh=mesh, rules=rules, frozen=frozen, frozen_shardings=frozen_sh, model_cfg=model_cfg,
                      base=cfg.init_from, base_step=None if alone else policy.step, per_device=cfg.mesh.per_device_step)
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(policy.params))
    ref_name = "its own base (adapters off)" if cfg.reference_is_base() else (cfg.reference_from or cfg.init_from)
    say(f"model: {model_cfg.family} from {workdir if alone else cfg.init_from}, {n_params / 1e6:.2f}M parameters, "
        f"{trainer.num_trainable() / 1e6:.3f}M trainable" + (f" (LoRA rank {cfg.lora.rank})" if cfg.lora.rank else "")
        + f"; reference {ref_name}; beta {cfg.beta}, {cfg.loss_type} loss; mesh {dict(mesh.shape)}")

    evaluate = BatchEvaluator(preference_eval_batches(test_ex, eval_bs), rows=eval_bs) if test_ex else None
    batches = trainer.batches(preference_dataset(train_ex, data.batch_size, seed=data.seed,
                                                 process_index=jax.process_index(),
                                                 process_count=jax.process_count()))
    try:
        # The policy's forward and backward (6N per token) and the reference's forward (2N): 4/3 of training's.
        result = trainer.fit(batches, workdir, evaluate=evaluate, tokens_per_step=data.batch_size * 2 * data.seq_len,
                             flops_per_token=lm_flops_per_token(model_cfg, data.seq_len, n_params) * 4 / 3,
                             peak_flops=peak_flops_per_device(jax.devices()[0], model_cfg.dtype),
                             on_eval=lambda step, m: say(f"step {step}: " + describe(m)))
    finally:
        batches.close()
    return final_metrics(result, trainer, t_start)


def _load_reference(cfg: DPOConfig, workdir: pathlib.Path, mesh, rules, policy, load_params):
    """The frozen reference, at the step recorded in ``reference.json`` when resuming (written at the
    first start: :func:`lmforge.align.common.load_recorded`). A policy just loaded from the same source
    serves as the reference too: the Trainer copies the leaves it trains, so the reference stays as loaded."""
    del load_params
    return load_recorded(cfg.reference_from or cfg.init_from, workdir / "reference.json", mesh, rules, cfg.model,
                         what="reference", reuse=policy)


def describe(m: dict) -> str:
    """``held-out DPO loss 0.6214, reward accuracy 0.655, margin 0.213 (chosen -0.050, rejected -0.263) over 176
    pairs``. A tie (both rewards 0, as before the first update) counts as not accurate, as in TRL."""
    if "eval/loss" not in m:
        return "no held-out pairs"
    return (f"held-out DPO loss {m['eval/loss']:.4f}, reward accuracy {m['eval/rewards/accuracies']:.3f}, margin "
            f"{m['eval/rewards/margins']:.3f} (chosen {m['eval/rewards/chosen']:.3f}, rejected "
            f"{m['eval/rewards/rejected']:.3f}) over {int(m.get('eval/weight_sum', 0))} pairs")


__all__ = ["DPOConfig", "PreferenceDataConfig", "dpo_loss_fn", "read_pairs", "reply_logprobs", "run_dpo",
           "without_adapters"]
