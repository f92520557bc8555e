"""Pretraining (next-token prediction, masked LM, span corruption): the config and the runner behind
``lmforge run``, as one loss, one pipeline and one evaluation on the generic trainer.

The runner reads the documents (curating them first if asked; a ``kind="curated"`` source is used as
curated), fingerprints them in ``WORKDIR/data.json`` at the first start and refuses to resume on other
documents (``lmforge.train.documents``), trains (or reuses) the tokenizer in ``WORKDIR/tokenizer``, writes ``WORKDIR/model.json`` (the model with its vocabulary resolved:
what ``lmforge.weights.load_params`` reads), builds the sharded model, and hands
:func:`lm_loss` + the grain pipeline + a whole-split evaluation (loss, perplexity, bits per byte)
to :class:`lmforge.train.trainer.Trainer`, which owns the loop, checkpoints, resume and SIGTERM.
At the end it samples from the model (``lmforge.infer``) and returns the final metrics.

Continued (domain-adaptive) pretraining with replay: ``init_from`` a run on the original domain,
``data`` the new domain, ``replay`` the original domain's source. Every evaluation scores both:
``eval/*`` on the new domain's validation split and ``eval/replay/*`` (loss, perplexity, bits per
byte) on the original domain's held-out split, so forgetting shows on the same curves as learning;
``replay_fraction`` of the training sequences come from the original domain's training split
(``lmforge.data.pipeline.mixed_train_dataset``: grain's deterministic mix of rows, checkpointed with
the run). The held-out split is the one the original run held out: ``split_documents`` is
deterministic given the documents and the validation fraction (the last documents, no shuffle), so
``replay`` and ``replay_val_fraction`` must equal the original run's ``data.source`` and
``data.val_fraction`` -- checked against its config.json when ``init_from`` is a run folder, and the
run's curated documents (``RUN/curated``) are read when it curated. A mismatch is an error, not a
silent evaluation on documents the original run trained on. The three settings are fields of the run
(not of ``DataConfig``) because they describe a second domain beside ``data`` and depend on
``init_from``; ``replay_fraction=0`` keeps the evaluation (the no-replay baseline of a sweep).
(Replay against catastrophic forgetting in continued pretraining: Ibrahim et al. 2024, "Simple and
Scalable Strategies to Continually Pre-train Large Language Models".)

A mixture (``data.mixture``: named ``MixtureSource(name, SourceConfig(...), weight)`` items instead of
``data.source``) trains on every source's training split, the weights being shares of training
sequences (``lmforge.data.pipeline.mixture_train_dataset``), and holds out each source's last
documents (``data.val_fraction`` of each). ``eval/*`` scores the held-out splits together, every
held-out token once (so a larger split counts more, as in one concatenated split), and
``eval/NAME/*`` each source alone: the per-domain curves a mixture's weights are tuned by (Xie et
al. 2023, DoReMi). ``eval_max_batches`` caps each source's evaluation, so a capped ``eval/*`` weighs
the sources by the tokens scored, not by their held-out sizes. The tokenizer trains on all the
training splits. A mixture is not curated by the run (curate each source with ``lmforge data
curate`` and give it as ``SourceConfig(kind="curated")``), and it may be continued with replay
(replay's share comes first; the sources share the rest).
"""

from __future__ import annotations

import dataclasses
import json
import numbers
import os
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lmforge.data import DataConfig, SourceConfig, TokenizerConfig
from lmforge.data import compression_report, eval_batches, load_tokenizer, read_documents, split_documents
from lmforge.data import train_dataset, train_tokenizer
from lmforge.data.curate.config import CurateConfig
from lmforge.data.objectives import Objective, ObjectiveConfig, seq2seq_lengths
from lmforge.data.pipeline import check_splits, mixture_train_dataset
from lmforge.infer import Sampler, SamplingConfig
from lmforge.model import ModelConfig, build_model, create_sharded, forward_logprobs
from lmforge.model.logprobs import VOCAB_CHUNK, check_vocab_chunk
from lmforge.train import distributed
from lmforge.train.lm_eval import eval_line, lm_eval_metrics, with_replay_eval, with_source_evals
from lmforge.train.documents import check_same_data, data_splits
from lmforge.train.mesh import MeshConfig, batch_axes_size, check_devices, make_mesh, mesh_shape, use_host_devices
from lmforge.train.metrics import keep_previous, lm_flops_per_token, peak_flops_per_device
from lmforge.train.objectives import causal_lm_loss
from lmforge.train.optim import OptimConfig
from lmforge.train.trainer import BatchEvaluator, LoopConfig, Trainer


@dataclasses.dataclass(frozen=True)
class PretrainConfig(LoopConfig):
    """The loop's fields (steps, seed, log_every, eval_every, checkpoint_every, keep_checkpoints,
    max_nonfinite) come from :class:`LoopConfig`."""
    model: ModelConfig = ModelConfig.gpt2_tiny(vocab_size=0)
    tokenizer: TokenizerConfig = TokenizerConfig()
    data: DataConfig = DataConfig()
    optim: OptimConfig = OptimConfig()
    mesh: MeshConfig = MeshConfig()
    distributed: distributed.DistributedConfig = distributed.DistributedConfig()
    curate: CurateConfig | None = None  # curate the documents before the tokenizer (needs the `curate` extra)
    objective: ObjectiveConfig = ObjectiveConfig()   # causal (decoders) | mlm (bert) | span, reverse (enc-dec)
    z_loss: float = 0.0
    vocab_chunk: int = VOCAB_CHUNK   # the loss's logits, columns at a time (recomputed backward); 0 → all V at once
    init_from: str = ""              # a run, model or transformers folder to start from (continued pretraining)
    # Replay (module docstring): the original domain of an init_from run, evaluated as eval/replay/*.
    replay: SourceConfig | None = None
    replay_val_fraction: float = 0.1     # the original run's data.val_fraction: the same held-out documents
    replay_fraction: float = 0.0         # share of training sequences from `replay`'s train split; 0 → eval only
    eval_max_batches: int = 0        # 0 → the whole validation split
    eval_batch_size: int = 0         # rows per evaluation batch; 0 → data.batch_size
    sample_prompts: tuple[str, ...] = ("",)
    sample: SamplingConfig = SamplingConfig(max_new_tokens=200, temperature=0.8, top_k=0, top_p=0.95)

    def __post_init__(self):
        super().__post_init__()
        check_vocab_chunk(self.vocab_chunk)
        if not self.z_loss >= 0:   # NaN fails too
            raise ValueError(f"z_loss={self.z_loss}: expected a number >= 0 (the weight of the z-loss; 0: none)")
        for name, zero in (("eval_max_batches", "the whole validation split"), ("eval_batch_size", "data.batch_size")):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                raise ValueError(f"{name}={value!r}: expected a whole number >= 0 (0 → {zero})")
        if not 0.0 <= self.replay_fraction < 1.0:   # NaN fails too
            raise ValueError(f"replay_fraction={self.replay_fraction}: expected a number in [0, 1) (the share of "
                             f"training sequences from the replay source)")
        if not 0.0 < self.replay_val_fraction < 1.0:
            raise ValueError(f"replay_val_fraction={self.replay_val_fraction}: expected a number in (0, 1) (the "
                             f"original run's data.val_fraction; replay evaluation needs a held-out split)")
        if self.replay is not None and self.data.val_fraction == 0:
            raise ValueError("replay is set with data.val_fraction=0; expected a held-out split of the new domain "
                             "(data.val_fraction > 0): every evaluation scores both domains")
        if self.curate is not None and self.data.mixture:
            raise ValueError("curate is set with data.mixture; expected curate=None: curate each source with "
                             "`lmforge data curate` and give its workdir as SourceConfig(kind='curated', path=...)")

    def resumes_alone(self, workdir: pathlib.Path) -> bool:
        """A continued run that trains every weight (no ``optim.trainable``) without replay, whose
        ``workdir`` holds its checkpoints (:func:`lmforge.weights.load.resumes_alone`): it resumes from
        them without reading init_from (replay reads the original run's split from it)."""
        from lmforge.weights.load import resumes_alone

        return bool(self.init_from) and self.replay is None and not self.optim.trainable and resumes_alone(workdir)

    def check_runnable(self, workdir: pathlib.Path | None = None) -> None:
        """What the run needs beyond a valid config, checked before anything is written (``lmforge run``,
        every point of ``lmforge sweep``, :func:`run_pretrain`): replay has what it needs
        (:func:`check_replay`), a non-empty ``init_from`` names a weights source, and the objective and
        lengths fit the model that trains (:func:`check_objective`): ``model``, or the one ``init_from``
        records (read without its weights). A continued run resuming in ``workdir`` without replay
        needs no init_from (:func:`resumes_alone`); replay reads the original run's data split from it.
        A sentencepiece tokenizer this run will train has room for its fixed pieces (:func:`check_tokenizer_size`).
        The batches split over the mesh's devices (:func:`check_batch_rows`; one process). The data
        sources' files exist (``lmforge.data.sources.check_source``). Raises ValueError
        (FileNotFoundError for a missing file)."""
        from lmforge.data.sources import check_source

        if not self.distributed.enabled:   # a multi-process run's devices are known once it starts
            check_devices(self.mesh)
            data, fsdp, expert, _ = mesh_shape(self.mesh, jax.device_count())
            check_batch_rows(self, data * fsdp * expert, 1)
        for key, source in ([(f"data.mixture.{m.name}.source", m.source) for m in self.data.mixture]
                            or [("data.source", self.data.source)]):
            check_source(source, key)
        check_replay(self)
        if not self.init_from:
            check_tokenizer_size(self.tokenizer, workdir)
            check_objective(self, self.model)
            return
        from lmforge.weights import check_init_from, read_model_config, source_model_config

        if workdir is not None and self.resumes_alone(workdir):
            try:
                check_objective(self, read_model_config(workdir))
            except ValueError as e:
                raise ValueError(f"{workdir} (the model is the run's, model.json): {e}") from None
            return
        check_init_from(self.init_from, "continued pretraining starts from a pretrained model")
        try:
            check_objective(self, source_model_config(self.init_from))
        except ValueError as e:
            raise ValueError(f"init_from={self.init_from} (the model is its, not this config's model.*): {e}") from None


def check_batch_rows(cfg: PretrainConfig, batch_ways: int, process_count: int) -> None:
    """``data.batch_size`` and ``eval_batch_size`` (0: data.batch_size) split over the ``batch_ways``
    of the batch mesh axes (data x fsdp x expert) and the processes, ``data.batch_size`` also over
    ``optim.grad_accum`` micro-batches a process. Raises ValueError naming the first that does not."""
    global_bs = cfg.data.batch_size
    for name, rows, per_process, what in (
            ("data.batch_size", global_bs, cfg.optim.grad_accum, ", the process count and optim.grad_accum"),
            ("eval_batch_size", cfg.eval_batch_size or global_bs, 1, " and the process count")):
        if rows % batch_ways or rows % (process_count * per_process):
            raise ValueError(f"{name}={rows} must be divisible by the batch mesh axes ({batch_ways}){what}"
                             + (f" (={per_process})" if per_process > 1 else ""))


def check_tokenizer_size(tok: TokenizerConfig, workdir: pathlib.Path | None = None) -> None:
    """``tokenizer.vocab_size`` leaves room beyond the pieces every sentencepiece vocabulary holds, checked
    before curation and tokenizer training (``lmforge.data.tokenizer.check_vocab_size``, which training
    runs too); a run whose ``workdir`` already holds its tokenizer reuses it and trains none. Raises ValueError."""
    from lmforge.data.tokenizer import check_vocab_size

    if tok.kind != "sentencepiece" or (workdir is not None and any((workdir / "tokenizer").glob("tokenizer.*"))):
        return
    check_vocab_size(tok)


OBJECTIVES_OF = {"decoder": ("causal",), "encoder": ("mlm",), "encoder_decoder": ("span", "reverse")}
PARTIAL_OBJECTIVES = ("mlm", "span")   # score a share of the text's tokens: no bits per byte


def lm_loss(graphdef, model_cfg: ModelConfig, *, z_loss: float = 0.0, vocab_chunk: int = VOCAB_CHUNK,
            document_mask: bool = True):
    """The pretraining loss of every family: the weighted cross-entropy of ``batch["targets"]``.

    The next token for decoders, the masked tokens for BERT, the decoder targets of T5 / the
    original Transformer: the objective lives in the batch (``lmforge.data.objectives``), and an
    encoder-decoder batch adds ``encoder_inputs`` / ``encoder_segment_ids`` / ``encoder_positions``.
    Log-probs come from the final hidden states in vocabulary chunks of ``vocab_chunk`` columns
    (``token_logprobs``; each chunk's logits are recomputed in the backward pass; 0, or a chunk as
    large as the vocabulary, computes the whole (B, T, V) logits once, trading memory for that
    matmul; a run's ``vocab_chunk`` key). A mixture-of-experts model adds its weighted router losses
    (``moe_aux_loss`` × load balancing + ``moe_z_loss`` × z-loss, averaged over layers); the ``loss``
    metric stays the cross-entropy.
    ``document_mask=False`` (decoders only): each row is one document -- nanoGPT's windows
    (``data.packing="windows"``), trailing padding at most -- so attention needs no document mask
    (``hidden_states(one_segment=True)``: cuDNN's causal mask alone; the segment ids still keep
    padding out of an MoE router); the loss is the same.

    Raises:
      ValueError: ``document_mask=False`` for a model that is not decoder-only (its attention is
        bidirectional somewhere, where padding must be masked).
    """
    if not document_mask and model_cfg.architecture != "decoder":
        raise ValueError(f"lm_loss: document_mask=False needs a decoder-only model, not {model_cfg.family!r} "
                         f"({model_cfg.architecture}): bidirectional attention must mask its padding")
    def loss_fn(params, frozen, batch, rng):
        kw = {}
        if "encoder_inputs" in batch:
            kw = dict(encoder_tokens=batch["encoder_inputs"], encoder_positions=batch["encoder_positions"],
                      encoder_segment_ids=batch["encoder_segment_ids"])
        if not document_mask:   # the segment ids still mark padding (the MoE router skips it)
            kw["one_segment"] = True
        lp, aux = forward_logprobs(nnx.merge(graphdef, params), batch["inputs"], batch["targets"],
                                   positions=batch["positions"], segment_ids=batch["segment_ids"], dropout_rng=rng,
                                   vocab_chunk=vocab_chunk, **kw)
        loss, metrics = causal_lm_loss(lp.logprobs, batch["weights"], correct=lp.correct,
                                       log_z=lp.log_z if z_loss else None, z_loss=z_loss)
        if "content_weights" in batch:   # span corruption: the dropped text apart (lm_eval_metrics divides them)
            cw, denom = batch["content_weights"].astype(jnp.float32), jnp.maximum(metrics["weight_sum"], 1e-8)
            metrics = {**metrics, "content_share": cw.sum() / denom,
                       "content_correct": (lp.correct.astype(jnp.float32) * cw).sum() / denom,
                       "content_nll": -(lp.logprobs.astype(jnp.float32) * cw).sum() / denom}
        if aux:
            loss = loss + model_cfg.moe_aux_loss * aux["moe_aux_loss"] + model_cfg.moe_z_loss * aux["moe_z_loss"]
            metrics = {**metrics, **aux}
        return loss, metrics
    return loss_fn


def check_objective(cfg: PretrainConfig, model_cfg: ModelConfig) -> None:
    """The objective fits the model family and the sequence lengths fit the model."""
    if model_cfg.num_labels:
        raise ValueError(f"model.num_labels={model_cfg.num_labels} makes a reward model (a score head, no language-model "
                         f"head), which pretraining cannot train; reward models train with the reward task "
                         f"(lmforge.align.reward)")
    allowed = OBJECTIVES_OF[model_cfg.architecture]
    if cfg.objective.kind not in allowed:
        raise ValueError(f"objective.kind={cfg.objective.kind!r} does not train model.family={model_cfg.family!r} "
                         f"({model_cfg.architecture.replace('_', '-')}); expected one of {allowed}")
    longest = max(seq2seq_lengths(cfg.objective, cfg.data.seq_len)) if cfg.objective.seq2seq else cfg.data.seq_len
    if longest > model_cfg.max_seq_len:
        made = f" (it makes {cfg.objective.kind} sequences of {longest} tokens)" if longest != cfg.data.seq_len else ""
        raise ValueError(f"data.seq_len={cfg.data.seq_len} exceeds model.max_seq_len={model_cfg.max_seq_len}{made}")


def check_replay(cfg: PretrainConfig) -> None:
    """Replay settings that cannot work, as one-line ValueErrors, before any data is read."""
    if cfg.replay_fraction > 0 and cfg.replay is None:
        raise ValueError(f"replay_fraction={cfg.replay_fraction} but replay is None; expected replay=SourceConfig(...) "
                         f"naming the original domain (the init_from run's data.source)")
    if cfg.replay is not None and not cfg.init_from:
        raise ValueError("replay is set but init_from is empty; expected init_from=RUN_OR_MODEL_FOLDER, the model "
                         "trained on the replay domain (replay continues a pretrained run)")
    config_file = pathlib.Path(cfg.init_from) / "config.json"
    if cfg.replay is not None and config_file.is_file():
        try:
            ran = json.loads(config_file.read_text())
        except ValueError:
            return   # replay_documents names the file
        if isinstance(ran, dict) and isinstance(ran.get("data"), dict):
            _check_replay_base(cfg, ran)


def _check_replay_base(cfg: PretrainConfig, ran: dict) -> None:
    """Refuses replay over a run that trained on a mixture (``ran``: its config.json)."""
    if ran["data"].get("mixture"):
        names = ", ".join(str(s.get("name")) for s in ran["data"]["mixture"])
        raise ValueError(f"init_from={cfg.init_from} trained on a mixture ({names}), and replay reads one source; "
                         f"expected replay=None, with the original sources among this run's data.mixture (their "
                         f"weights are the replay share; eval/NAME/* scores each)")


def replay_documents(cfg: PretrainConfig) -> tuple[list[str], list[str]]:
    """(train, held-out) documents of the original domain ``cfg.replay``, split as the original run split them.

    When ``cfg.init_from`` is a run folder (its ``config.json``), ``replay`` must be its ``data.source``
    and ``replay_val_fraction`` its ``data.val_fraction``; a run that curated is read from its curated
    shards (``RUN/curated/data``), the documents it split. A model folder or a transformers folder
    names no data: the settings are taken as given.

    Raises:
      ValueError: the settings differ from the original run's, or its curation is missing.
    """
    from lmforge.weights import is_transformers_config

    base = pathlib.Path(cfg.init_from)
    config_file = base / "config.json"
    if not config_file.is_file() or is_transformers_config(config_file):   # a model / transformers folder
        return split_documents(read_documents(cfg.replay), cfg.replay_val_fraction)
    try:
        ran = json.loads(config_file.read_text())
        ran_source, ran_fraction = ran["data"]["source"], ran["data"]["val_fraction"]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{config_file}: expected a pretraining run's config with data.source and "
                         f"data.val_fraction ({type(e).__name__}: {e})") from None
    _check_replay_base(cfg, ran)
    asked = dataclasses.asdict(cfg.replay)
    for key in ("path",):   # a relative and an absolute path to one file are the same source
        asked[key] = _same_path(asked[key])
        ran_source = {**ran_source, key: _same_path(ran_source.get(key, ""))}
    # A field missing from an older config.json was at its default, as it is in a SourceConfig.
    defaults = dataclasses.asdict(SourceConfig())
    differ = [f"{k}: {ran_source.get(k, defaults[k])!r} there, {v!r} here" for k, v in asked.items()
              if ran_source.get(k, defaults[k]) != v]
    if ran_fraction != cfg.replay_val_fraction:
        differ.append(f"val_fraction: {ran_fraction} there, replay_val_fraction={cfg.replay_val_fraction} here")
    if differ:
        raise ValueError(f"replay does not match the data of init_from={cfg.init_from} ({'; '.join(differ)}); "
                         f"expected its data.source and data.val_fraction, so the replay evaluation holds out "
                         f"the documents that run held out")
    if ran.get("curate") is None:
        docs = read_documents(cfg.replay)
    else:
        from lmforge.data.curate import DATA_DIR
        from lmforge.data.curate.writers import read_shards

        if not (base / "curated" / "funnel.json").is_file():
            raise ValueError(f"init_from={cfg.init_from} curated its data but {base / 'curated'} holds no finished "
                             f"curation (funnel.json); expected the original run's curated documents for replay")
        docs = [doc.text for doc in read_shards(base / "curated" / DATA_DIR)]
    return split_documents(docs, cfg.replay_val_fraction)


def _same_path(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path)) if path else ""


def resolve_model(cfg: ModelConfig, vocab_size: int) -> ModelConfig:
    """``vocab_size=0`` → the tokenizer's, rounded up to ``vocab_multiple``; else it must fit the tokenizer."""
    if cfg.vocab_size == 0:
        m = max(cfg.vocab_multiple, 1)
        return dataclasses.replace(cfg, vocab_size=-(-vocab_size // m) * m)
    if cfg.vocab_size < vocab_size:
        raise ValueError(f"model.vocab_size={cfg.vocab_size} is smaller than the tokenizer's {vocab_size} ids; "
                         f"set model.vocab_size=0 to follow the tokenizer")
    return cfg


def prepare_tokenizer(cfg: PretrainConfig, workdir: pathlib.Path, train_docs, val_docs):
    """Trains the tokenizer into WORKDIR/tokenizer once (process 0) and reuses it after; a run that
    starts from weights (``init_from``) copies their tokenizer instead: the ids must keep their meaning."""
    directory = workdir / "tokenizer"
    # Process 0 alone decides and every process waits: a process that looked later would see
    # process 0's files, skip the barrier and deadlock the others (or read a half-written file).
    if jax.process_index() == 0 and cfg.init_from and not any(directory.glob("tokenizer.*")):
        source = pathlib.Path(cfg.init_from) / "tokenizer"
        if not any(source.glob("tokenizer.*")) and any(source.parent.glob("tokenizer.*")):
            source = source.parent   # a transformers folder: tokenizer.json (+ tokenizer_config.json) beside the weights
        if not any(source.glob("tokenizer.*")):
            raise ValueError(f"init_from={cfg.init_from}: no tokenizer in {source} or {source.parent}; expected a run "
                             f"or model folder's tokenizer/, or a transformers folder's tokenizer.json")
        load_tokenizer(source).save(directory)   # a transformers tokenizer: its files, chat template included
        print(f"tokenizer: {source}'s, copied to {directory}", flush=True)
    if jax.process_index() == 0 and not any(directory.glob("tokenizer.*")):
        tok = train_tokenizer(cfg.tokenizer, train_docs, directory, held_out=val_docs)  # char: all the text
        report = compression_report(tok, val_docs)
        (workdir / "tokenizer_report.json").write_text(json.dumps(report, indent=2) + "\n")
        print(f"tokenizer: {tok.vocab_size} ids, {report['chars_per_token']:.2f} chars/token, "
              f"{report['bytes_per_token']:.2f} bytes/token on held-out text", flush=True)
    distributed.barrier("tokenizer")
    return load_tokenizer(directory)


RUNTIME_FIELDS = ("dtype", "attention", "remat", "dropout")   # how a model computes, not what it is


def with_runtime(source: ModelConfig, cfg_model: ModelConfig) -> ModelConfig:
    """``source`` (init_from's model) computed as ``cfg_model`` says: its ``RUNTIME_FIELDS``."""
    return dataclasses.replace(source, **{f: getattr(cfg_model, f) for f in RUNTIME_FIELDS})


def start_from(cfg: PretrainConfig, mesh, vocab_size: int, workdir: pathlib.Path | None = None):
    """The parameters of ``cfg.init_from`` (``lmforge.weights.load_params``, born sharded): the model
    is the source's, with this run's runtime settings (``RUNTIME_FIELDS`` of ``cfg.model``); the other
    ``model.*`` fields that differ from it are named on stderr as not applied. A run resuming in
    ``workdir`` that needs nothing of init_from (:meth:`PretrainConfig.resumes_alone`) starts from its
    own checkpoint instead, and init_from is not read (it may have moved); one that trained part of
    a base run resumes over the base step it was trained over (``resume_base_step``).
    Returns (model config, graphdef, params, shardings, the step of a run-folder source or None).

    Raises ValueError: the source's vocabulary is smaller than the tokenizer's, or the objective or
    ``data.seq_len`` does not fit the source's model (``check_objective``)."""
    from lmforge.model import ModelRuntime, abstract_sharded
    from lmforge.weights import load_params
    from lmforge.weights.load import resume_base_step

    alone = workdir is not None and cfg.resumes_alone(workdir)
    source = workdir if alone else f"init_from={cfg.init_from}"
    if alone:
        print(f"lmforge: resuming: the model is this run's ({workdir / 'model.json'}); init_from={cfg.init_from} "
              f"is not read", file=sys.stderr, flush=True)
    # Resuming a run that trained part of a base run that has trained on since: the base step it was trained over.
    base_step = resume_base_step(workdir, mesh, cfg.mesh.rules) if workdir is not None and not alone else None
    loaded = load_params(workdir if alone else cfg.init_from, mesh, rules=cfg.mesh.rules, step=base_step,
                         runtime=ModelRuntime(attention=cfg.model.attention, remat=cfg.model.remat))
    if loaded.cfg.vocab_size < vocab_size:
        raise ValueError(f"{source}: its model has {loaded.cfg.vocab_size} ids, fewer than the "
                         f"tokenizer's {vocab_size}")
    model_cfg = with_runtime(loaded.cfg, cfg.model)
    ignored = [f.name for f in dataclasses.fields(ModelConfig) if f.name not in (*RUNTIME_FIELDS, "vocab_size")
               and getattr(cfg.model, f.name) != getattr(model_cfg, f.name)]
    if ignored:
        print(f"lmforge: the model is {'the run' if alone else 'init_from'}'s; this config's "
              f"model.{', model.'.join(ignored[:6])}"
              + (f" and {len(ignored) - 6} more" if len(ignored) > 6 else "") + " differ from it and do not apply "
              "(config.json keeps them as given; the run's model.json holds the model that trains)",
              file=sys.stderr, flush=True)
    try:   # the objective and lengths against the model that trains, not the config's model.*
        check_objective(cfg, model_cfg)
    except ValueError as e:
        raise ValueError(f"{source} (the model is its, not this config's model.*): {e}") from None
    graphdef, _, _ = abstract_sharded(lambda: build_model(model_cfg, rngs=nnx.Rngs(0)), mesh, cfg.mesh.rules)
    if not alone:
        print(f"init_from: {loaded.kind} {cfg.init_from}" + (f" step {loaded.step}" if loaded.step is not None else "")
              + f" ({model_cfg.family}, {model_cfg.num_layers} layers, {model_cfg.embed_dim} dim)", flush=True)
    return model_cfg, graphdef, loaded.params, loaded.shardings, None if alone else loaded.step


def run_pretrain(cfg: PretrainConfig, workdir: pathlib.Path) -> dict[str, float]:
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    cfg.check_runnable(workdir)       # config-only: before any data is read or tokenizer trained
    use_host_devices(cfg.mesh)        # both before JAX starts
    distributed.initialize(cfg.distributed)
    t_start = time.time()

    splits = data_splits(cfg, workdir)
    for name, (train_split, val_split) in splits.items():   # before a tokenizer is trained on too little
        check_splits(cfg.data, cfg.tokenizer.kind, train_split, val_split,
                     source_key=f"data.mixture.{name}.source" if cfg.data.mixture else "data.source")
    train_docs = [d for train_split, _ in splits.values() for d in train_split]
    val_docs = [d for _, val_split in splits.values() for d in val_split]
    replay_train, replay_val = replay_documents(cfg) if cfg.replay is not None else ([], [])
    if cfg.replay is not None:
        try:
            check_splits(dataclasses.replace(cfg.data, val_fraction=cfg.replay_val_fraction), cfg.tokenizer.kind,
                         replay_train, replay_val)
        except ValueError as e:
            raise ValueError(f"replay: {e}") from None
    check_same_data(workdir, {**splits, **({"replay": (replay_train, replay_val)} if cfg.replay is not None else {})})
    tok = prepare_tokenizer(cfg, workdir, train_docs, val_docs)
    model_cfg = resolve_model(cfg.model, tok.vocab_size)
    objective = Objective(cfg.objective, tok, cfg.data.seq_len)

    mesh = make_mesh(cfg.mesh)
    global_bs = cfg.data.batch_size
    eval_bs = cfg.eval_batch_size or global_bs
    check_batch_rows(cfg, batch_axes_size(mesh), jax.process_count())
    rules = cfg.mesh.rules
    base_step = None
    if cfg.init_from:
        model_cfg, graphdef, params, shardings, base_step = start_from(cfg, mesh, tok.vocab_size, workdir)
    else:
        graphdef, params, shardings = create_sharded(lambda: build_model(model_cfg, rngs=nnx.Rngs(cfg.seed)), mesh,
                                                     rules)
    # nanoGPT's windows hold no document boundaries: attention needs no document mask
    document_mask = cfg.data.packing == "pack" or model_cfg.architecture != "decoder"
    trainer = Trainer(lm_loss(graphdef, model_cfg, z_loss=cfg.z_loss, vocab_chunk=cfg.vocab_chunk,
                              document_mask=document_mask), params=params,
                      param_shardings=shardings,
                      optim=cfg.optim, loop=cfg, mesh=mesh, rules=rules, model_cfg=model_cfg,
                      base=cfg.init_from or None, base_step=base_step, per_device=cfg.mesh.per_device_step)
    n_params = sum(x.size for x in jax.tree.leaves(params))
    print(f"model: {model_cfg.family}, {n_params / 1e6:.2f}M parameters; mesh {dict(mesh.shape)}; "
          f"{jax.device_count()} {jax.devices()[0].platform} devices, {jax.process_count()} process(es)", flush=True)

    weights = {s.name: s.weight for s in cfg.data.mixture} or {"data": 1.0}
    parts = [(name, train_split, weights[name] / sum(weights.values()) * (1.0 - cfg.replay_fraction))
             for name, (train_split, _) in splits.items()]
    if cfg.replay_fraction:   # replay's share first; the sources share the rest by their weights
        parts.append(("replay", replay_train, cfg.replay_fraction))
    if cfg.data.mixture and jax.process_index() == 0:
        print("data: a mixture, by share of training sequences: " + "; ".join(
            f"{name} {share:.1%} ({len(docs):,} training documents, {sum(map(len, docs)) / 1e6:.2f}M characters"
            + (f"; {len(splits[name][1]):,} held out)" if name in splits else ")")
            for name, docs, share in parts), flush=True)
    if len(parts) > 1:
        dataset = mixture_train_dataset(cfg.data, tok, parts, process_index=jax.process_index(),
                                        process_count=jax.process_count())
    else:
        dataset = train_dataset(cfg.data, tok, train_docs, process_index=jax.process_index(),
                                process_count=jax.process_count())
    if cfg.objective.kind != "causal":   # masking / corruption drawn per batch, checkpointed with the iterator
        dataset = dataset.random_map(objective, seed=cfg.seed)
    def evaluator(docs: list[str], seed: int) -> tuple[BatchEvaluator, float]:
        val_batches, val_bytes = eval_batches(cfg.data, tok, docs, batch_size=eval_bs)
        if cfg.objective.kind != "causal":   # a fixed draw per batch: every evaluation scores the same task
            val_batches = [objective(b, np.random.default_rng([seed, i])) for i, b in enumerate(val_batches)]
        # Bytes per scored token over the whole split, so a capped evaluation still gives bits/byte; none for
        # objectives that score a share of the tokens (mlm's masked 15%, span's sentinels and spans): their
        # loss in bits over all the text's bytes would read as an impossible compression.
        bytes_per_token = (val_bytes / max(sum(float(b["weights"].sum()) for b in val_batches), 1.0)
                           if cfg.objective.kind not in PARTIAL_OBJECTIVES else None)
        if cfg.eval_max_batches:
            val_batches = val_batches[:cfg.eval_max_batches]
        return BatchEvaluator(val_batches, rows=eval_bs, derive=lm_eval_metrics(bytes_per_token)), bytes_per_token

    if not val_docs:   # data.val_fraction=0: every document trains, nothing is evaluated
        evaluate = None
        _say("evaluation: none (data.val_fraction=0 holds out no documents)")
    elif cfg.data.mixture:
        evaluate = with_source_evals({name: evaluator(val_split, cfg.seed + i)
                                      for i, (name, (_, val_split)) in enumerate(splits.items()) if val_split})
    else:
        evaluate = evaluator(val_docs, cfg.seed)[0]
    if cfg.replay is not None:
        evaluate = with_replay_eval(evaluate, evaluator(replay_val, cfg.seed + 1)[0])
    flops = lm_flops_per_token(model_cfg, cfg.data.seq_len, n_params)

    def say_eval(step, m):
        _say(eval_line(step, m))

    batches = trainer.batches(dataset)
    try:
        result = trainer.fit(batches, workdir, evaluate=evaluate, tokens_per_step=global_bs * cfg.data.seq_len,
                             flops_per_token=flops, peak_flops=peak_flops_per_device(jax.devices()[0], model_cfg.dtype),
                             on_eval=say_eval)
    finally:
        batches.close()
    ev = result.eval   # its line was said by say_eval: the trainer's last evaluation goes through on_eval
    prompts = [] if model_cfg.architecture == "encoder" else list(cfg.sample_prompts)   # MLM does not generate
    samples = Sampler(graphdef, trainer.params, tok, model_cfg, mesh, rules,
                      encoder_eos=cfg.objective.kind == "span").complete(prompts, cfg.sample, seed=cfg.seed)
    if jax.process_index() == 0 and samples:
        n = cfg.sample.n
        text = "".join(f"--- sample {i} (prompt {cfg.sample_prompts[i // n]!r}) ---\n{cfg.sample_prompts[i // n]}{s}\n"
                       for i, s in enumerate(samples))
        kept = keep_previous(workdir / "samples.txt")   # a run continued for more steps: the earlier samples stay
        (workdir / "samples.txt").write_text(text)
        if kept:
            print(f"lmforge: the earlier samples.txt is kept as {kept.name}", file=sys.stderr, flush=True)
        print(text, flush=True)
    return {"final/step": float(result.step), "final/train_loss": result.train.get("train/loss", float("nan")),
            **({"final/val_loss": ev["eval/loss"], "final/val_perplexity": ev["eval/perplexity"],
                **({"final/val_bits_per_byte": ev["eval/bits_per_byte"]} if "eval/bits_per_byte" in ev else {})}
               if ev else {}),
            **({f"final/replay_val_{k}": ev[f"eval/replay/{k}"] for k in ("loss", "perplexity", "bits_per_byte")
                if f"eval/replay/{k}" in ev} if cfg.replay is not None else {}),
            **{f"final/{s.name}_val_{k}": ev[f"eval/{s.name}/{k}"] for s in cfg.data.mixture
               for k in ("loss", "perplexity", "bits_per_byte") if f"eval/{s.name}/{k}" in ev},
            # Timed over logged steps after the first (compile): a run too short for that has no rate.
            **({"final/tokens_per_s": result.perf["perf/tokens_per_s"]} if "perf/tokens_per_s" in result.perf else {}),
            "final/wall_s": time.time() - t_start}


def _say(line: str) -> None:
    """A log line that does not break the progress bar (process 0 only)."""
    if jax.process_index() == 0:
        from tqdm import tqdm
        tqdm.write(line)


def load_for_sampling(run_dir, cfg: PretrainConfig, mesh=None, *, step: int | None = None) -> Sampler:
    """A pretraining run folder's tokenizer and checkpoint parameters (``lmforge.weights.load_params``,
    parameters only, placed on the run's own mesh — FSDP runs sample with FSDP) as a text Sampler.

    Raises ValueError when the tokenizer has more ids than the model (not the one it was trained with)."""
    from lmforge.weights import load_params

    run_dir = pathlib.Path(run_dir)
    tok = load_tokenizer(run_dir / "tokenizer")
    mesh = make_mesh(cfg.mesh) if mesh is None else mesh
    fallback = None if (run_dir / "model.json").is_file() else resolve_model(cfg.model, tok.vocab_size)
    loaded = load_params(run_dir, mesh, rules=cfg.mesh.rules, step=step, model_cfg=fallback)
    if tok.vocab_size > loaded.cfg.vocab_size:   # a tokenizer replaced after the run: ids the model lacks
        raise ValueError(f"{run_dir / 'tokenizer'} has {tok.vocab_size} ids but the run's model only "
                         f"{loaded.cfg.vocab_size}: it is not the tokenizer the model was trained with")
    return Sampler(loaded.graphdef, loaded.params, tok, loaded.cfg, mesh, cfg.mesh.rules,
                   encoder_eos=cfg.objective.kind == "span", step=loaded.step)


__all__ = ["PretrainConfig", "run_pretrain", "lm_loss", "load_for_sampling", "resolve_model", "SourceConfig",
           "replay_documents", "with_replay_eval"]
