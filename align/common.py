"""What every post-training runner (SFT, DPO, reward model) does the same way before its loss: take the starting
model's tokenizer, check that a batch splits over the mesh, and load the policy — from the starting
model, with fresh LoRA adapters when asked, or from the run's own checkpoints when a full fine-tune
resumes."""

from __future__ import annotations

import dataclasses
import json
import numbers
import pathlib
import sys
import time
from collections.abc import Sequence
from typing import NamedTuple

import jax
import numpy as np

from lmforge.data import load_tokenizer
from lmforge.data.tokenizer import tokenizer_dir
from lmforge.model import LoRAConfig, ModelRuntime
from lmforge.model.lora import ADAPTER_PATTERN
from lmforge.model.paths import compile_patterns, matches
from lmforge.train import distributed
from lmforge.train.mesh import batch_axes_size, make_mesh

SCORE_PATTERN = "score"   # a reward model's score head (DecoderLM.score): always trained, beside LoRA's adapters


def whole(x) -> bool:
    """A whole number >= 0 (not a bool): what a count in a config must be."""
    return isinstance(x, numbers.Integral) and not isinstance(x, bool) and x >= 0


def source_tokenizer(init_from: str, task: str = "SFT"):
    """The tokenizer of the starting model (``lmforge.data.tokenizer.tokenizer_dir``: ``SRC/tokenizer``
    or a transformers folder's own). Raises ValueError if it has none."""
    try:
        return load_tokenizer(tokenizer_dir(init_from))
    except ValueError as e:
        raise ValueError(f"init_from={init_from}: {e}; {task} needs the tokenizer the model was trained with") from None


def run_tokenizer(init_from: str, workdir: pathlib.Path, task: str):
    """The run's tokenizer: copied once from the starting model into ``workdir/tokenizer`` (process 0;
    every process waits for it), then read from there, so a resumed run keeps its own."""
    tok_dir = workdir / "tokenizer"
    if jax.process_index() == 0 and not any(tok_dir.glob("tokenizer.*")):
        source_tokenizer(init_from, task).save(tok_dir)
    distributed.barrier("tokenizer")
    return load_tokenizer(tok_dir)


def start_run(cfg, workdir: pathlib.Path, task: str):
    """What every post-training run does first: the config's checks before anything is written
    (``cfg.check_runnable``), the workdir, the host devices, the processes (``cfg.distributed``), and the
    run's tokenizer (:func:`run_tokenizer`) with its chat template. Returns ``(workdir, tokenizer,
    template, start time)``."""
    from lmforge.data.chat import chat_template_for
    from lmforge.train.mesh import use_host_devices

    workdir = pathlib.Path(workdir)
    cfg.check_runnable(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    use_host_devices(cfg.mesh)
    distributed.initialize(cfg.distributed)
    t_start = time.time()
    tok = run_tokenizer(cfg.init_from, workdir, task)
    return workdir, tok, chat_template_for(tok), t_start


def final_metrics(result, trainer, t_start: float, evals: dict | None = None) -> dict[str, float]:
    """A run's ``final/...`` metrics: its step, last training loss, wall time, trainable parameters,
    and its last evaluation (``evals``, default ``result.eval``) renamed from ``eval/...``."""
    out = {"final/step": float(result.step), "final/train_loss": result.train.get("train/loss", float("nan")),
           "final/wall_s": time.time() - t_start, "final/trainable_params": float(trainer.num_trainable())}
    evals = result.eval if evals is None else evals
    out.update({k.replace("eval/", "final/"): v for k, v in evals.items() if k.startswith("eval/")})
    return out


def split_held_out(items: list, fraction: float, seed: int | Sequence[int], *, at_least_one: bool = False
                   ) -> tuple[list, list]:
    """(train, held-out): a seeded ``round(fraction * n)`` of the ``n`` ``items`` held out, both kept in
    file order. ``at_least_one``: one when that rounds to 0 with ``fraction`` > 0 and ``n`` > 1. ``seed``:
    an int or a sequence of ints (numpy's ``SeedSequence``: ``(seed, k)`` gives a file ``k`` a split of
    its own)."""
    order = np.random.default_rng(seed).permutation(len(items))
    n_test = int(round(len(items) * fraction))
    if at_least_one and fraction > 0 and len(items) > 1:
        n_test = max(n_test, 1)
    return [items[i] for i in sorted(order[n_test:])], [items[i] for i in sorted(order[:n_test])]


def check_rows(mesh, checks) -> None:
    """Each ``(name, rows, grad_accum)`` of ``checks`` splits over the batch mesh axes, the processes
    and its micro-batches. Raises ValueError naming the first that does not."""
    for name, rows, per in checks:
        if rows % batch_axes_size(mesh) or rows % (jax.process_count() * per):
            raise ValueError(f"{name}={rows} must be divisible by the batch mesh axes ({batch_axes_size(mesh)}), the "
                             f"process count" + (" and optim.grad_accum" if per > 1 else ""))


def full_fine_tune_resumes(cfg, workdir: pathlib.Path) -> bool:
    """A full fine-tune (no LoRA, no ``optim.trainable``) whose ``workdir`` holds its checkpoints
    (:func:`lmforge.weights.load.resumes_alone`): it resumes from them without reading init_from."""
    from lmforge.weights.load import resumes_alone

    return not cfg.lora.rank and not cfg.optim.trainable and resumes_alone(workdir)


def same_tokenizer(a: str, b: str) -> bool:
    """Whether two weights sources keep byte-identical tokenizer files (``tokenizer*`` in their
    ``lmforge.data.tokenizer.tokenizer_dir``). Raises ValueError for a source without a tokenizer."""
    def files(source):
        folder = tokenizer_dir(source)
        return {p.name: p.read_bytes() for p in sorted(folder.glob("tokenizer*")) if p.is_file()}
    return files(a) == files(b)


class PolicyAndReference:
    """What the configs of a policy trained against a frozen reference (DPO, GRPO) answer alike; they
    have ``init_from``, ``reference_from``, ``lora`` and ``optim``."""

    def resumes_alone(self, workdir: pathlib.Path) -> bool:
        """A full fine-tune resuming from its checkpoints in ``workdir``: the policy is read from there,
        not from init_from (which still gives the reference)."""
        return full_fine_tune_resumes(self, workdir)

    def reference_is_base(self) -> bool:
        """Under LoRA with no other reference named, the reference is the adapters' base itself."""
        return bool(self.lora.rank) and self.reference_from in ("", self.init_from)


def raise_problems(problems: list[str], cfg) -> None:
    """The end of a sampling trainer's config check (GRPO, PPO): adds what is wrong with
    ``cfg.synthetic_options`` for the tasks of ``cfg.data.synthetic`` to ``problems``, then raises them
    all as one ValueError (joined by "; ") if there are any."""
    from lmforge.data import synthetic

    try:
        synthetic.check_options([t for t, _ in cfg.data.synthetic], dict(cfg.synthetic_options))
    except ValueError as e:
        problems.append(f"synthetic_options: {e}")
    if problems:
        raise ValueError("; ".join(problems))


def check_policy_sources(cfg, task: str, start: str, length: tuple[str, int]) -> None:
    """The checks a policy-and-reference trainer (DPO, GRPO) makes before anything is written: ``cfg.init_from``
    (and ``cfg.reference_from``) name weights sources (``start`` says what init_from should be) of
    decoder-only language models whose context holds ``length`` (its name, its tokens), and a reference
    has the policy's tokenizer files. Raises ValueError naming the source and what was expected."""
    from lmforge.weights import check_init_from, refuse_reward_model, source_model_config

    check_init_from(cfg.init_from, start)
    sources = [("init_from", cfg.init_from)]
    if cfg.reference_from:
        check_init_from(cfg.reference_from, "the reference", "reference_from")
        sources.append(("reference_from", cfg.reference_from))
    name, tokens = length
    for key, source in sources:
        refuse_reward_model(source, f"{task}'s {'policy' if key == 'init_from' else 'reference'}")
        model_cfg = source_model_config(source)
        if model_cfg.architecture != "decoder":
            raise ValueError(f"{key}={source} is a {model_cfg.family} ({model_cfg.architecture}) model; {task} "
                             f"trains decoder-only models")
        if tokens > model_cfg.max_seq_len:
            raise ValueError(f"{name}={tokens} exceeds the max_seq_len={model_cfg.max_seq_len} of {key}={source}'s "
                             f"model")
    if cfg.reference_from and not same_tokenizer(cfg.init_from, cfg.reference_from):
        raise ValueError(f"reference_from={cfg.reference_from} has another tokenizer than init_from={cfg.init_from}; "
                         f"expected one tokenizer for both (log-probs of the same token ids)")


def load_policy(init_from: str, workdir: pathlib.Path, mesh, rules, *, lora: LoRAConfig, runtime: ModelRuntime,
                seed: int, alone: bool, num_labels: int = 0):
    """The model that trains: with ``alone`` (a full fine-tune resuming: its checkpoints hold every
    weight) the run's own, ``init_from`` not read; else ``init_from`` (with fresh adapters for
    ``lora.rank > 0``, and a fresh score head of ``num_labels`` outputs for a reward model), at the
    base step a resumed LoRA run was trained over (``lmforge.weights.load.resume_base_step``).
    Returns ``lmforge.weights.LoadedModel``."""
    from lmforge.weights import load_params
    from lmforge.weights.load import has_checkpoint, resume_base_step

    if alone:
        if jax.process_index() == 0:
            print(f"lmforge: resuming: the model that trains is this run's ({workdir / 'model.json'}); init_from="
                  f"{init_from} is not read for it", file=sys.stderr, flush=True)
        return load_params(workdir, mesh, rules=rules, runtime=runtime)
    base_step = resume_base_step(workdir, mesh, rules) if has_checkpoint(workdir) else None
    return load_params(init_from, mesh, rules=rules, lora=lora if lora.rank else None, seed=seed, runtime=runtime,
                       step=base_step, num_labels=num_labels)


def load_recorded(source: str, record: pathlib.Path, mesh, rules, runtime: ModelRuntime, *, what: str,
                  reuse=None, num_labels: int = 0):
    """A frozen model (a reference policy, a reward model) from ``source``, at the step written in
    ``record`` (``{"source", "step"}``, JSON) at the run's first start, so that a resumed run reads the
    same weights even if a source run has trained on since; that step is pinned in the source run
    (``lmforge.weights.pins.pin_step``), so continuing the source run does not prune it. ``reuse``: a
    ``LoadedModel`` just loaded from the same source, returned as is when its step is the recorded
    one. Raises ValueError when the record names another source, or its step is gone from the source
    (pruned before the pin existed, or deleted)."""
    from lmforge.weights import load_params
    from lmforge.weights.checkpoint import CheckpointError
    from lmforge.weights.pins import pin_step

    recorded = json.loads(record.read_text()) if record.is_file() else {}
    if recorded and pathlib.Path(recorded["source"]).resolve() != pathlib.Path(source).resolve():
        raise ValueError(f"{record.parent} was trained against the {what} {recorded['source']} ({record}); expected the "
                         f"same {what}, not {source}")
    step = recorded.get("step")
    if reuse is not None and pathlib.Path(str(reuse.source)).resolve() == pathlib.Path(source).resolve() \
            and step in (None, reuse.step):
        loaded = reuse
    else:
        try:
            loaded = load_params(source, mesh, rules=rules, runtime=runtime, step=step, num_labels=num_labels)
        except CheckpointError as e:
            if step is None:
                raise
            raise ValueError(f"the {what} {source} at step {step}, recorded in {record} at this run's first start, is "
                             f"gone ({e}); restore that step, or start a new run") from None
    if jax.process_index() == 0:
        if not recorded:
            record.write_text(json.dumps({"source": str(source), "step": loaded.step}, indent=2) + "\n")
        if loaded.step is not None and (pathlib.Path(source) / "checkpoints").is_dir():
            pin_step(source, loaded.step, by=record.parent, record=record.name)
    distributed.barrier(record.stem)
    return loaded


def report_data(workdir: pathlib.Path, stats, test_stats, unit: str) -> None:
    """Says and writes (``data_report.json``) what the encoding kept of the train and held-out data;
    raises ValueError when no training ``unit`` (conversation, pair) is left."""
    say(f"data: train {stats.summary()}; held-out {test_stats.summary()}")
    if jax.process_index() == 0:
        (workdir / "data_report.json").write_text(json.dumps(
            {"train": dataclasses.asdict(stats), "held_out": dataclasses.asdict(test_stats)}, indent=2) + "\n")
    if not stats.kept:
        raise ValueError(f"no training {unit} is left to learn from ({stats.summary()})")


class Policy(NamedTuple):
    """What :func:`prepare_policy` sets up: the mesh, the held-out batch size, whether the policy is the
    run's own (a full fine-tune resuming), the loaded model and the optimizer (LoRA: adapters only
    unless ``optim.trainable`` says)."""
    mesh: object
    eval_batch_size: int
    alone: bool
    loaded: object
    optim: object


def prepare_policy(cfg, workdir: pathlib.Path, tok, *, num_labels: int = 0) -> Policy:
    """The mesh and the policy of a post-training config (``mesh``, ``data.batch_size``,
    ``eval_batch_size`` if it has one, ``optim``, ``lora``, ``model``, ``seed``, ``init_from``); ``num_labels > 0``
    loads it as a reward model (a fresh score head, trained whatever ``optim.trainable`` names: beside
    LoRA's adapters, or added to the patterns). Raises ValueError for a batch that does not split over
    the mesh or a tokenizer with more ids than the model."""
    mesh = make_mesh(cfg.mesh)
    eval_bs = getattr(cfg, "eval_batch_size", 0) or cfg.data.batch_size   # PPO has none: it evaluates in its rollouts' shape
    check_rows(mesh, (("data.batch_size", cfg.data.batch_size, cfg.optim.grad_accum), ("eval_batch_size", eval_bs, 1)))
    alone = cfg.resumes_alone(workdir)
    loaded = load_policy(cfg.init_from, workdir, mesh, cfg.mesh.rules, lora=cfg.lora, runtime=cfg.model,
                         seed=cfg.seed, alone=alone, num_labels=num_labels)
    if tok.vocab_size > loaded.cfg.vocab_size:
        raise ValueError(f"the tokenizer has {tok.vocab_size} ids, more than the model's {loaded.cfg.vocab_size}")
    optim = cfg.optim
    if cfg.lora.rank and not optim.trainable:
        optim = dataclasses.replace(optim, trainable=(ADAPTER_PATTERN,))
    if num_labels and optim.trainable and not matches(SCORE_PATTERN, compile_patterns(optim.trainable, "optim.trainable")):
        optim = dataclasses.replace(optim, trainable=(*optim.trainable, SCORE_PATTERN))   # a fresh head always trains
    return Policy(mesh, eval_bs, alone, loaded, optim)


def write_eval_samples(workdir: pathlib.Path, step: int, samples: list[dict]) -> None:
    """The last evaluation's replies as ``eval_samples.jsonl`` (one JSON object per reply, with ``step``),
    on process 0; an earlier file is kept beside it (``lmforge.train.metrics.keep_previous``) and said."""
    from lmforge.train.metrics import keep_previous

    if jax.process_index() != 0 or not samples:
        return
    kept = keep_previous(workdir / "eval_samples.jsonl")
    with open(workdir / "eval_samples.jsonl", "w") as f:
        for s in samples:
            f.write(json.dumps({"step": step, **s}) + "\n")
    if kept:
        say(f"the earlier eval_samples.jsonl is kept as {kept.name}")


def say(line: str) -> None:
    """A line on process 0, printed above any progress bar."""
    if jax.process_index() == 0:
        from tqdm import tqdm
        tqdm.write(line)
