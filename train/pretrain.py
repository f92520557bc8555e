"""Pretraining (next-token prediction, masked LM, span corruption): the config and the runner behind
``lmforge run``, as one loss, one pipeline and one evaluation on the generic trainer.

The runner reads the documents (curating them first if asked), trains (or reuses) the tokenizer
in ``WORKDIR/tokenizer``, writes ``WORKDIR/model.json`` (the model with its vocabulary resolved:
what ``lmforge.weights.load_params`` reads), builds the sharded model, and hands
:func:`lm_loss` + the grain pipeline + a whole-split evaluation (loss, perplexity, bits per byte)
to :class:`lmforge.train.trainer.Trainer`, which owns the loop, checkpoints, resume and SIGTERM.
At the end it samples from the model (``lmforge.infer``) and returns the final metrics.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import time

import jax
import numpy as np
from flax import nnx

from lmforge.data import DataConfig, SourceConfig, TokenizerConfig
from lmforge.data import compression_report, eval_batches, load_tokenizer, read_documents, split_documents
from lmforge.data import train_dataset, train_tokenizer
from lmforge.data.curate.config import CurateConfig
from lmforge.data.objectives import Objective, ObjectiveConfig, seq2seq_lengths
from lmforge.data.pipeline import check_splits
from lmforge.infer import Sampler, SamplingConfig
from lmforge.model import ModelConfig, build_model, create_sharded, forward_logprobs
from lmforge.train import distributed
from lmforge.train.mesh import MeshConfig, batch_axes_size, make_mesh, use_host_devices
from lmforge.train.metrics import lm_flops_per_token, peak_flops_per_device
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
    init_from: str = ""              # a run folder or model folder to start from (continued pretraining)
    eval_max_batches: int = 0        # 0 → the whole validation split
    eval_batch_size: int = 0         # rows per evaluation batch; 0 → data.batch_size
    sample_prompts: tuple[str, ...] = ("",)
    sample: SamplingConfig = SamplingConfig(max_new_tokens=200, temperature=0.8, top_k=0, top_p=0.95)


OBJECTIVES_OF = {"decoder": ("causal",), "encoder": ("mlm",), "encoder_decoder": ("span", "reverse")}


def lm_loss(graphdef, model_cfg: ModelConfig, *, z_loss: float = 0.0):
    """The pretraining loss of every family: the weighted cross-entropy of ``batch["targets"]``.

    The next token for decoders, the masked tokens for BERT, the decoder targets of T5 / the
    original Transformer: the objective lives in the batch (``lmforge.data.objectives``), and an
    encoder-decoder batch adds ``encoder_inputs`` / ``encoder_segment_ids`` / ``encoder_positions``.
    Log-probs come from the final hidden states in vocabulary chunks (``token_logprobs``). A
    mixture-of-experts model adds its weighted router losses (``moe_aux_loss`` × load balancing +
    ``moe_z_loss`` × z-loss, averaged over layers); the ``loss`` metric stays the cross-entropy.
    """
    def loss_fn(params, frozen, batch, rng):
        kw = {}
        if "encoder_inputs" in batch:
            kw = dict(encoder_tokens=batch["encoder_inputs"], encoder_positions=batch["encoder_positions"],
                      encoder_segment_ids=batch["encoder_segment_ids"])
        lp, aux = forward_logprobs(nnx.merge(graphdef, params), batch["inputs"], batch["targets"],
                                   positions=batch["positions"], segment_ids=batch["segment_ids"], dropout_rng=rng,
                                   **kw)
        loss, metrics = causal_lm_loss(lp.logprobs, batch["weights"], correct=lp.correct,
                                       log_z=lp.log_z if z_loss else None, z_loss=z_loss)
        if aux:
            loss = loss + model_cfg.moe_aux_loss * aux["moe_aux_loss"] + model_cfg.moe_z_loss * aux["moe_z_loss"]
            metrics = {**metrics, **aux}
        return loss, metrics
    return loss_fn


def check_objective(cfg: PretrainConfig, model_cfg: ModelConfig) -> None:
    """The objective fits the model family and the sequence lengths fit the model."""
    allowed = OBJECTIVES_OF[model_cfg.architecture]
    if cfg.objective.kind not in allowed:
        raise ValueError(f"objective.kind={cfg.objective.kind!r} does not train model.family={model_cfg.family!r} "
                         f"({model_cfg.architecture.replace('_', '-')}); expected one of {allowed}")
    longest = max(seq2seq_lengths(cfg.objective, cfg.data.seq_len)) if cfg.objective.seq2seq else cfg.data.seq_len
    if longest > model_cfg.max_seq_len:
        made = f" (it makes {cfg.objective.kind} sequences of {longest} tokens)" if longest != cfg.data.seq_len else ""
        raise ValueError(f"data.seq_len={cfg.data.seq_len} exceeds model.max_seq_len={model_cfg.max_seq_len}{made}")


def resolve_model(cfg: ModelConfig, vocab_size: int) -> ModelConfig:
    """``vocab_size=0`` → the tokenizer's, rounded up to ``vocab_multiple``; else it must fit the tokenizer."""
    if cfg.vocab_size == 0:
        m = max(cfg.vocab_multiple, 1)
        return dataclasses.replace(cfg, vocab_size=-(-vocab_size // m) * m)
    if cfg.vocab_size < vocab_size:
        raise ValueError(f"model.vocab_size={cfg.vocab_size} is smaller than the tokenizer's {vocab_size} ids; "
                         f"set model.vocab_size=0 to follow the tokenizer")
    return cfg


def curate_documents(curate_cfg: CurateConfig, docs: list[str], directory: pathlib.Path) -> list[str]:
    """The curation stage (process 0 curates once into WORKDIR/curated; every process reads the shards)."""
    from lmforge.data.curate import curate_texts

    if jax.process_index() == 0:
        kept = curate_texts(curate_cfg, docs, directory)
    distributed.barrier("curate")
    if jax.process_index() != 0:
        kept = curate_texts(curate_cfg, docs, directory)   # finished by process 0: only reads
    if not kept:
        raise ValueError(f"curation kept none of the {len(docs)} documents; see {directory / 'report.md'} and relax "
                         f"its thresholds")
    return kept


def prepare_tokenizer(cfg: PretrainConfig, workdir: pathlib.Path, train_docs, val_docs):
    """Trains the tokenizer into WORKDIR/tokenizer once (process 0) and reuses it after; a run that
    starts from weights (``init_from``) copies their tokenizer instead: the ids must keep their meaning."""
    directory = workdir / "tokenizer"
    # Process 0 alone decides and every process waits: a process that looked later would see
    # process 0's files, skip the barrier and deadlock the others (or read a half-written file).
    if jax.process_index() == 0 and cfg.init_from and not any(directory.glob("tokenizer.*")):
        source = pathlib.Path(cfg.init_from) / "tokenizer"
        if not any(source.glob("tokenizer.*")):
            raise ValueError(f"init_from={cfg.init_from}: no tokenizer in {source}; lmforge continues a run or a "
                             f"model folder with its own tokenizer (a transformers folder's tokenizer is not read yet)")
        load_tokenizer(source).save(directory)
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


def start_from(cfg: PretrainConfig, mesh, vocab_size: int):
    """The parameters of ``cfg.init_from`` (``lmforge.weights.load_params``, born sharded): the model
    is the source's, with this run's runtime settings (``RUNTIME_FIELDS`` of ``cfg.model``).
    Returns (model config, graphdef, params, shardings)."""
    from lmforge.model import abstract_sharded
    from lmforge.weights import load_params

    loaded = load_params(cfg.init_from, mesh, rules=cfg.mesh.rules)
    if loaded.kind == "hf":
        raise ValueError(f"init_from={cfg.init_from} is a transformers folder; its tokenizer is not read yet, so a "
                         f"run cannot start from it (convert it and its tokenizer to a model folder first)")
    if loaded.cfg.vocab_size < vocab_size:
        raise ValueError(f"init_from={cfg.init_from}: its model has {loaded.cfg.vocab_size} ids, fewer than the "
                         f"tokenizer's {vocab_size}")
    model_cfg = dataclasses.replace(loaded.cfg, **{f: getattr(cfg.model, f) for f in RUNTIME_FIELDS})
    graphdef, _, _ = abstract_sharded(lambda: build_model(model_cfg, rngs=nnx.Rngs(0)), mesh, cfg.mesh.rules)
    print(f"init_from: {loaded.kind} {cfg.init_from}" + (f" step {loaded.step}" if loaded.step is not None else "")
          + f" ({model_cfg.family}, {model_cfg.num_layers} layers, {model_cfg.embed_dim} dim)", flush=True)
    return model_cfg, graphdef, loaded.params, loaded.shardings


def lm_eval_metrics(bytes_per_token: float):
    """Perplexity and bits per byte from the evaluation's mean loss (nats per token)."""
    def derive(m: dict[str, float]) -> dict[str, float]:
        return {"perplexity": math.exp(min(m["loss"], 50.0)),
                "bits_per_byte": m["loss"] / math.log(2) / bytes_per_token, "tokens": m["weight_sum"]}
    return derive


def run_pretrain(cfg: PretrainConfig, workdir: pathlib.Path) -> dict[str, float]:
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    check_objective(cfg, cfg.model)   # config-only: before any data is read or tokenizer trained
    use_host_devices(cfg.mesh)        # both before JAX starts
    distributed.initialize(cfg.distributed)
    t_start = time.time()

    docs = read_documents(cfg.data.source)
    if cfg.curate is not None:
        docs = curate_documents(cfg.curate, docs, workdir / "curated")
    train_docs, val_docs = split_documents(docs, cfg.data.val_fraction)
    check_splits(cfg.data, cfg.tokenizer.kind, train_docs, val_docs)   # before a tokenizer is trained on too little
    tok = prepare_tokenizer(cfg, workdir, train_docs, val_docs)
    model_cfg = resolve_model(cfg.model, tok.vocab_size)
    objective = Objective(cfg.objective, tok, cfg.data.seq_len)

    mesh = make_mesh(cfg.mesh)
    global_bs = cfg.data.batch_size
    eval_bs = cfg.eval_batch_size or global_bs
    for name, rows, per_process, what in (
            ("data.batch_size", global_bs, cfg.optim.grad_accum, ", the process count and optim.grad_accum"),
            ("eval_batch_size", eval_bs, 1, " and the process count")):
        if rows % batch_axes_size(mesh) or rows % (jax.process_count() * per_process):
            raise ValueError(f"{name}={rows} must be divisible by the batch mesh axes "
                             f"({batch_axes_size(mesh)}){what}")
    rules = cfg.mesh.rules
    if cfg.init_from:
        model_cfg, graphdef, params, shardings = start_from(cfg, mesh, tok.vocab_size)
    else:
        graphdef, params, shardings = create_sharded(lambda: build_model(model_cfg, rngs=nnx.Rngs(cfg.seed)), mesh,
                                                     rules)
    trainer = Trainer(lm_loss(graphdef, model_cfg, z_loss=cfg.z_loss), params=params, param_shardings=shardings,
                      optim=cfg.optim, loop=cfg, mesh=mesh, rules=rules, model_cfg=model_cfg,
                      base=cfg.init_from or None)
    n_params = sum(x.size for x in jax.tree.leaves(params))
    print(f"model: {model_cfg.family}, {n_params / 1e6:.2f}M parameters; mesh {dict(mesh.shape)}; "
          f"{jax.device_count()} {jax.devices()[0].platform} devices, {jax.process_count()} process(es)", flush=True)

    dataset = train_dataset(cfg.data, tok, train_docs, process_index=jax.process_index(),
                            process_count=jax.process_count())
    if cfg.objective.kind != "causal":   # masking / corruption drawn per batch, checkpointed with the iterator
        dataset = dataset.random_map(objective, seed=cfg.seed)
    val_batches, val_bytes = eval_batches(cfg.data, tok, val_docs, batch_size=eval_bs)
    if cfg.objective.kind != "causal":   # a fixed draw per batch: every evaluation scores the same task
        val_batches = [objective(b, np.random.default_rng([cfg.seed, i])) for i, b in enumerate(val_batches)]
    # Bytes per scored token over the whole split, so a capped evaluation still gives bits/byte.
    bytes_per_token = val_bytes / max(sum(float(b["weights"].sum()) for b in val_batches), 1.0)
    if cfg.eval_max_batches:
        val_batches = val_batches[:cfg.eval_max_batches]
    evaluate = BatchEvaluator(val_batches, rows=eval_bs, derive=lm_eval_metrics(bytes_per_token))
    flops = lm_flops_per_token(model_cfg, cfg.data.seq_len, n_params)

    def say_eval(step, m):
        _say(f"step {step}: val loss {m['eval/loss']:.4f}, ppl {m['eval/perplexity']:.2f}, "
             f"bpb {m['eval/bits_per_byte']:.4f}")

    result = trainer.fit(iter(dataset), workdir, evaluate=evaluate, tokens_per_step=global_bs * cfg.data.seq_len,
                         flops_per_token=flops, peak_flops=peak_flops_per_device(jax.devices()[0], model_cfg.dtype),
                         on_eval=say_eval)
    ev = result.eval
    print(f"step {result.step}: val loss {ev['eval/loss']:.4f}, perplexity {ev['eval/perplexity']:.2f}, "
          f"bits/byte {ev['eval/bits_per_byte']:.4f}", flush=True)
    prompts = [] if model_cfg.architecture == "encoder" else list(cfg.sample_prompts)   # MLM does not generate
    samples = Sampler(graphdef, trainer.params, tok, model_cfg, mesh, rules,
                      encoder_eos=cfg.objective.kind == "span").complete(prompts, cfg.sample, seed=cfg.seed)
    if jax.process_index() == 0 and samples:
        n = cfg.sample.n
        text = "".join(f"--- sample {i} (prompt {cfg.sample_prompts[i // n]!r}) ---\n{cfg.sample_prompts[i // n]}{s}\n"
                       for i, s in enumerate(samples))
        (workdir / "samples.txt").write_text(text)
        print(text, flush=True)
    return {"final/step": float(result.step), "final/train_loss": result.train.get("train/loss", float("nan")),
            "final/val_loss": ev["eval/loss"], "final/val_perplexity": ev["eval/perplexity"],
            "final/val_bits_per_byte": ev["eval/bits_per_byte"],
            "final/tokens_per_s": result.perf.get("perf/tokens_per_s", float("nan")),
            "final/wall_s": time.time() - t_start}


def _say(line: str) -> None:
    """A log line that does not break the progress bar (process 0 only)."""
    if jax.process_index() == 0:
        from tqdm import tqdm
        tqdm.write(line)


def load_for_sampling(run_dir, cfg: PretrainConfig, mesh=None, *, step: int | None = None) -> Sampler:
    """A pretraining run folder's tokenizer and checkpoint parameters (``lmforge.weights.load_params``,
    parameters only, placed on the run's own mesh — FSDP runs sample with FSDP) as a text Sampler."""
    from lmforge.weights import load_params

    run_dir = pathlib.Path(run_dir)
    tok = load_tokenizer(run_dir / "tokenizer")
    mesh = make_mesh(cfg.mesh) if mesh is None else mesh
    fallback = None if (run_dir / "model.json").is_file() else resolve_model(cfg.model, tok.vocab_size)
    loaded = load_params(run_dir, mesh, rules=cfg.mesh.rules, step=step, model_cfg=fallback)
    return Sampler(loaded.graphdef, loaded.params, tok, loaded.cfg, mesh, cfg.mesh.rules,
                   encoder_eos=cfg.objective.kind == "span", step=loaded.step)


def sample_run(run_dir, config, prompts: list[str], sampling: SamplingConfig, *, seed: int = 0) -> list[str]:
    """``lmforge sample``: continues ``prompts`` with a run folder's latest checkpoint.

    Raises ValueError when the run is not a pretraining run (it holds no model to sample).
    """
    if not isinstance(config, PretrainConfig):
        raise ValueError(f"{run_dir} is a {type(config).__name__} run; `lmforge sample` needs a run that trains a "
                         f"model (a PretrainConfig run)")
    return load_for_sampling(run_dir, config).complete(prompts, sampling, seed=seed)


__all__ = ["PretrainConfig", "sample_run", "run_pretrain", "lm_loss", "load_for_sampling", "resolve_model", "SourceConfig"]
