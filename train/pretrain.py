"""Pretraining (next-token prediction): the config and the runner behind ``lmforge run``.

The runner reads the documents, trains (or reuses) the tokenizer in ``WORKDIR/tokenizer``, builds
the sharded train state, restores the latest checkpoint if the workdir has one (params, optimizer,
step and the grain iterator: a resumed run continues bit for bit), and loops: one jitted step per
batch, metrics to ``metrics.jsonl`` + TensorBoard, periodic evaluation over the validation split
(loss, perplexity, bits per byte), async orbax checkpoints, and a SIGTERM handler that saves
before exiting. At the end it samples from the model and returns the final metrics.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import signal
import sys
import time

import jax
import numpy as np
from tqdm import tqdm

from lmforge.data import DataConfig, SourceConfig, TokenizerConfig
from lmforge.data import compression_report, eval_batches, load_tokenizer, read_documents, split_documents
from lmforge.data import train_dataset, train_tokenizer
from lmforge.data.curate.config import CurateConfig
from lmforge.data.objectives import Objective, ObjectiveConfig, seq2seq_lengths
from lmforge.data.pipeline import check_splits
from lmforge.model import ModelConfig, axis_rules
from lmforge.train import distributed
from lmforge.train.checkpoint import Checkpointer
from lmforge.train.mesh import MeshConfig, batch_axes_size, make_mesh, use_host_devices
from lmforge.train.metrics import MetricsWriter, ProgressBar, Throughput, model_flops_per_token, peak_flops_per_device
from lmforge.train.optim import OptimConfig
from lmforge.train.sampling import SamplingConfig, generate
from lmforge.train.step import TrainSetup, build, global_batch


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    model: ModelConfig = ModelConfig.gpt2_tiny(vocab_size=0)
    tokenizer: TokenizerConfig = TokenizerConfig()
    data: DataConfig = DataConfig()
    optim: OptimConfig = OptimConfig()
    mesh: MeshConfig = MeshConfig()
    distributed: distributed.DistributedConfig = distributed.DistributedConfig()
    curate: CurateConfig | None = None  # curate the documents before the tokenizer (needs the `curate` extra)
    objective: ObjectiveConfig = ObjectiveConfig()   # causal (decoders) | mlm (bert) | span, reverse (enc-dec)
    steps: int = 1000
    seed: int = 0
    z_loss: float = 0.0
    log_every: int = 10
    eval_every: int = 0              # 0 → evaluate only at the end
    eval_max_batches: int = 0        # 0 → the whole validation split
    eval_batch_size: int = 0         # rows per evaluation batch; 0 → data.batch_size
    checkpoint_every: int = 0        # 0 → only at the end (and on SIGTERM)
    keep_checkpoints: int = 3
    sample_prompts: tuple[str, ...] = ("",)
    sample: SamplingConfig = SamplingConfig(max_new_tokens=200, temperature=0.8, top_k=0, top_p=0.95)

    def __post_init__(self):
        if self.steps < 1 or self.log_every < 1:
            raise ValueError(f"steps and log_every must be >= 1, got steps={self.steps}, log_every={self.log_every}")


OBJECTIVES_OF = {"decoder": ("causal",), "encoder": ("mlm",), "encoder_decoder": ("span", "reverse")}


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
    """Trains the tokenizer into WORKDIR/tokenizer once (process 0) and reuses it after."""
    directory = workdir / "tokenizer"
    # Process 0 alone decides and every process waits: a process that looked later would see
    # process 0's files, skip the barrier and deadlock the others (or read a half-written file).
    if jax.process_index() == 0 and not any(directory.glob("tokenizer.*")):
        tok = train_tokenizer(cfg.tokenizer, train_docs, directory, held_out=val_docs)  # char: all the text
        report = compression_report(tok, val_docs)
        (workdir / "tokenizer_report.json").write_text(json.dumps(report, indent=2) + "\n")
        print(f"tokenizer: {tok.vocab_size} ids, {report['chars_per_token']:.2f} chars/token, "
              f"{report['bytes_per_token']:.2f} bytes/token on held-out text", flush=True)
    distributed.barrier("tokenizer")
    return load_tokenizer(directory)


class Evaluator:
    """Loss, perplexity, accuracy and bits per byte over the (whole) validation split."""

    def __init__(self, setup: TrainSetup, batches: list[dict], val_bytes: int, global_batch_size: int,
                 max_batches: int = 0):
        self.setup = setup
        # Bytes per scored token over the whole split, so a capped evaluation still gives bits/byte.
        self.bytes_per_token = val_bytes / max(sum(float(b["weights"].sum()) for b in batches), 1.0)
        batches = batches[:max_batches] if max_batches else batches
        self.batches = [_pad_rows(b, global_batch_size) for b in batches]

    def __call__(self, params) -> dict[str, float]:
        p, n = jax.process_index(), jax.process_count()
        sums = {"nll_sum": 0.0, "weight_sum": 0.0, "correct_sum": 0.0}
        with jax.set_mesh(self.setup.mesh):
            outs = []
            for b in self.batches:
                rows = b["inputs"].shape[0] // n
                local = {k: v[p * rows:(p + 1) * rows] for k, v in b.items()}
                outs.append(self.setup.eval_step(params, global_batch(local, self.setup.batch_sharding)))
            for o in jax.device_get(outs):
                for k in sums:
                    sums[k] += float(o[k])
        loss = sums["nll_sum"] / max(sums["weight_sum"], 1.0)
        return {"eval/loss": loss, "eval/perplexity": math.exp(min(loss, 50.0)),
                "eval/accuracy": sums["correct_sum"] / max(sums["weight_sum"], 1.0),
                "eval/bits_per_byte": loss / math.log(2) / self.bytes_per_token,
                "eval/tokens": sums["weight_sum"]}


def _pad_rows(batch: dict, rows: int) -> dict:
    n = batch["inputs"].shape[0]
    if n == rows:
        return batch
    if n > rows:
        raise ValueError(f"eval batch has {n} rows, more than the global batch {rows}")
    return {k: np.concatenate([v, np.zeros((rows - n, *v.shape[1:]), v.dtype)]) for k, v in batch.items()}


def _say(line: str) -> None:
    """A log line that does not break the progress bar (process 0 only)."""
    if jax.process_index() == 0:
        tqdm.write(line)


class _SigtermFlag:
    """Turns SIGTERM (preemption) into a flag the loop checks between steps."""

    def __init__(self):
        self.raised = False
        self._old = None

    def __enter__(self):
        try:
            self._old = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: no handler, like any library call
            self._old = None
        return self

    def _handle(self, signum, frame):
        self.raised = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)


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
    setup = build(model_cfg, cfg.optim, total_steps=cfg.steps, mesh=mesh, rules=cfg.mesh.rules, seed=cfg.seed,
                  z_loss=cfg.z_loss)
    n_params = sum(x.size for x in jax.tree.leaves(setup.state["params"]))
    print(f"model: {model_cfg.family}, {n_params / 1e6:.2f}M parameters; mesh {dict(mesh.shape)}; "
          f"{jax.device_count()} {jax.devices()[0].platform} devices, {jax.process_count()} process(es)", flush=True)

    dataset = train_dataset(cfg.data, tok, train_docs, process_index=jax.process_index(),
                            process_count=jax.process_count())
    if cfg.objective.kind != "causal":   # masking / corruption drawn per batch, checkpointed with the iterator
        dataset = dataset.random_map(objective, seed=cfg.seed)
    data_iter = iter(dataset)
    ckpt = Checkpointer(workdir / "checkpoints", keep=cfg.keep_checkpoints)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), setup.state)
    restored = ckpt.restore(abstract, data_iter)
    state, start = setup.state, 0
    if restored is not None:
        start, state = restored
        print(f"resumed from step {start} in {ckpt.directory}", flush=True)
    rng = jax.random.key(cfg.seed)

    val_batches, val_bytes = eval_batches(cfg.data, tok, val_docs, batch_size=eval_bs)
    if cfg.objective.kind != "causal":   # a fixed draw per batch: every evaluation scores the same task
        val_batches = [objective(b, np.random.default_rng([cfg.seed, i])) for i, b in enumerate(val_batches)]
    evaluate = Evaluator(setup, val_batches, val_bytes, eval_bs, cfg.eval_max_batches)
    writer = MetricsWriter(workdir, resume_step=start if restored is not None else None)
    throughput = Throughput(
        flops_per_token=model_flops_per_token(
            # the config's count covers decoder-only families; the others count their built tensors
            num_params_non_embedding=(model_cfg.num_params(embeddings=False, active=True)
                                      if model_cfg.architecture == "decoder"
                                      else n_params - model_cfg.vocab_size * model_cfg.embed_dim),
            num_layers=model_cfg.num_layers,
            seq_len=cfg.data.seq_len, embed_dim=model_cfg.embed_dim, vocab_size=model_cfg.vocab_size),
        peak_flops=peak_flops_per_device(jax.devices()[0], model_cfg.dtype), num_devices=jax.device_count())
    bar = ProgressBar(total=cfg.steps, initial=start, desc="train")
    tokens_per_step = global_bs * cfg.data.seq_len
    last: dict[str, float] = {}
    perf: dict[str, float] = {}
    eval_metrics: dict[str, float] = {}

    with jax.set_mesh(mesh), axis_rules(cfg.mesh.rules), _SigtermFlag() as sigterm:
        step = logged_step = start
        while step < cfg.steps:
            batch = global_batch(next(data_iter), setup.batch_sharding)
            state, metrics = setup.train_step(state, batch, rng)
            step += 1
            if step % cfg.log_every == 0 or step == cfg.steps:
                last = {k: float(v) for k, v in jax.device_get(metrics).items()}
                # Timed here, after device_get has waited for the step: dispatch is asynchronous,
                # so the time between dispatches says nothing about the device.
                perf = throughput.update(step, tokens_per_step * (step - logged_step)) or perf
                logged_step = step
                if last["train/nonfinite"]:
                    ckpt.wait()
                    raise FloatingPointError(
                        f"train/loss or grad norm is not finite at step {step} (loss={last['train/loss']}, "
                        f"grad_norm={last['train/grad_norm']}); the update was skipped and checkpoints up to "
                        f"step {ckpt.latest_step()} are intact: lower optim.lr or raise optim.warmup_steps")
                writer.write(step, {**last, **perf})
                bar.update(step, {"loss": last["train/loss"], **perf})
            else:
                bar.update(step, perf)
            if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.steps:
                eval_metrics = evaluate(state["params"])
                writer.write(step, eval_metrics)
                _say(f"step {step}: val loss {eval_metrics['eval/loss']:.4f}, "
                     f"ppl {eval_metrics['eval/perplexity']:.2f}, bpb {eval_metrics['eval/bits_per_byte']:.4f}")
                throughput.restart()
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                ckpt.save(step, state, data_iter)
                throughput.restart()
            if sigterm.raised:
                _say(f"SIGTERM: saving a checkpoint at step {step} before exiting")
                ckpt.save(step, state, data_iter, force=True)
                ckpt.wait()
                bar.close()
                writer.close()
                sys.exit(128 + signal.SIGTERM)
        bar.close()
        ckpt.save(step, state, data_iter, force=True)
        if restored is None or start < cfg.steps or not eval_metrics:
            eval_metrics = evaluate(state["params"])
            writer.write(step, eval_metrics)
        ckpt.wait()

    print(f"step {step}: val loss {eval_metrics['eval/loss']:.4f}, perplexity {eval_metrics['eval/perplexity']:.2f}, "
          f"bits/byte {eval_metrics['eval/bits_per_byte']:.4f}", flush=True)
    prompts = [] if model_cfg.architecture == "encoder" else list(cfg.sample_prompts)   # MLM does not generate
    samples = Sampler(setup.graphdef, state["params"], tok, model_cfg, mesh, cfg.mesh.rules,
                      encoder_eos=cfg.objective.kind == "span").complete(prompts, cfg.sample, seed=cfg.seed)
    if jax.process_index() == 0 and samples:
        text = "".join(f"--- sample {i} (prompt {p!r}) ---\n{p}{s}\n" for i, (p, s) in
                       enumerate(zip(cfg.sample_prompts, samples)))
        (workdir / "samples.txt").write_text(text)
        print(text, flush=True)
    writer.close()
    ckpt.close()
    final = {"final/step": float(step), "final/train_loss": last.get("train/loss", float("nan")),
             "final/val_loss": eval_metrics["eval/loss"], "final/val_perplexity": eval_metrics["eval/perplexity"],
             "final/val_bits_per_byte": eval_metrics["eval/bits_per_byte"],
             "final/tokens_per_s": perf.get("perf/tokens_per_s", float("nan")),
             "final/wall_s": time.time() - t_start}
    return final


class Sampler:
    """Text in, text out, over the shared KV-cache sampler."""

    def __init__(self, graphdef, params, tok, model_cfg: ModelConfig, mesh, rules, *, encoder_eos: bool = False):
        self.graphdef, self.params, self.tok, self.model_cfg = graphdef, params, tok, model_cfg
        self.mesh, self.rules = mesh, rules
        self.encoder_eos = encoder_eos   # end encoder inputs with EOS, as the objective trained them (span)

    def complete(self, prompts: list[str], cfg: SamplingConfig, *, seed: int = 0) -> list[str]:
        if not prompts:
            return []
        bos = [self.tok.bos_id] if self.tok.bos_id >= 0 else []
        ids = [bos + self.tok.encode(p) for p in prompts]
        encoder = None
        if self.model_cfg.architecture == "encoder_decoder":   # the prompt is the encoder's input
            encoder = [self.tok.encode(p) + ([self.tok.eos_id] if self.encoder_eos else []) for p in prompts]
            ids = [bos] * len(prompts)
        if any(not x for x in ids):   # a char tokenizer has no BOS: start an empty prompt with a newline
            ids = [x or self.tok.encode("\n") for x in ids]
        stops = [self.tok.eos_id] if self.tok.eos_id >= 0 else []
        with jax.set_mesh(self.mesh), axis_rules(self.rules):
            out = generate(self.graphdef, self.params, ids, cfg, rng=jax.random.key(seed), stop_tokens=stops,
                           vocab_limit=self.tok.vocab_size, max_seq_len=self.model_cfg.max_seq_len,
                           pad_id=max(self.tok.pad_id, 0), encoder_inputs=encoder)
        return [self.tok.decode([t for t in o if t not in stops]) for o in out]


def load_for_sampling(run_dir, cfg: PretrainConfig) -> Sampler:
    """The tokenizer and the latest checkpoint's parameters of a pretraining run folder."""
    run_dir = pathlib.Path(run_dir)
    tok = load_tokenizer(run_dir / "tokenizer")
    model_cfg, graphdef, params, mesh = restore_params(run_dir, cfg, tok.vocab_size)
    return Sampler(graphdef, params, tok, model_cfg, mesh, cfg.mesh.rules, encoder_eos=cfg.objective.kind == "span")


def restore_params(run_dir, cfg: PretrainConfig, vocab_size: int | None = None):
    """The latest checkpoint's parameters of a run folder: (model config, graphdef, params, mesh)."""
    run_dir = pathlib.Path(run_dir)
    if vocab_size is None:
        vocab_size = load_tokenizer(run_dir / "tokenizer").vocab_size
    model_cfg = resolve_model(cfg.model, vocab_size)
    mesh = make_mesh(dataclasses.replace(cfg.mesh, data=-1, fsdp=1, tensor=1))
    setup = build(model_cfg, cfg.optim, total_steps=cfg.steps, mesh=mesh, rules=cfg.mesh.rules, seed=cfg.seed)
    ckpt = Checkpointer(run_dir / "checkpoints")
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), setup.state)
    restored = ckpt.restore(abstract)
    if restored is None:
        raise FileNotFoundError(f"{run_dir / 'checkpoints'} holds no checkpoint to sample from")
    step, state = restored
    print(f"using step {step} of {run_dir}", file=sys.stderr)
    return model_cfg, setup.graphdef, state["params"], mesh


__all__ = ["PretrainConfig", "run_pretrain", "load_for_sampling", "restore_params", "Sampler", "resolve_model", "SourceConfig"]
