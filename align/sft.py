"""Supervised fine-tuning (SFT) on conversations: the config and the runner behind
``lmforge run experiments/sft_*.py``.

A pretrained model (``init_from``: an lmforge run, a model folder or a Hugging Face folder, read by
``lmforge.weights.load_params``) learns the turn structure of a chat: each conversation becomes
ids and a loss mask through the chat template (``lmforge.data.chat``: lmforge's role tokens, or an
imported model's Jinja template), conversations are packed with segment ids (no attention across
conversations), and the loss is the pretraining loss (``lmforge.train.pretrain.lm_loss``: the
weighted causal cross-entropy from chunked log-probs) with the mask as weights — TRL's
``SFTTrainer`` with ``assistant_only_loss`` and packing, as one loss on the one trainer.

- Data: a conversations file (``data.path``: OpenAI ``messages``, Alpaca, ShareGPT, HH-RLHF, TRL's
  ``prompt`` / ``completion`` or GSM8K jsonl, read by ``lmforge.data.chat_readers``) and/or a
  mixture of synthetic tasks (``data.synthetic``: ``lmforge.data.synthetic``, train and test splits
  disjoint by construction). A file's held-out part is ``data.test_path`` or a seeded
  ``val_fraction`` of it. A record's ``answer`` column (a string or number) makes it a graded item,
  as in ``lmforge eval RUN chat:path=...``: its ``task`` column names a grader (``gsm8k`` or a
  synthetic task), and without one ``data.match`` grades it (``auto``, the default: numeric for an
  answer that is a number, else exact; ``exact``; ``numeric``: the reply's ``####`` or last
  number; ``regex`` with ``data.pattern``). Errors about a conversation name its ``file:line``.
- LoRA: ``lora.rank > 0`` adds fresh adapters (B = 0, so training starts from the base's function)
  and trains only them (``optim.trainable`` defaults to the adapters); the run checkpoints the
  adapters alone and names its base in ``base.json``, so ``load_params(RUN)`` rebuilds the whole
  model.
- Evaluation at ``eval_every`` and at the end: the exact held-out loss (every held-out
  conversation once, weighted mean over its trained tokens) and, for held-out items with a
  reference answer, the accuracy of greedy replies (``lmforge.eval.chat``), overall and per task
  (``eval/reply/accuracy``, ``eval/reply/accuracy/<task>``; ``eval/token_accuracy`` is the loss's
  next-token accuracy on the trained tokens, TRL's ``mean_token_accuracy``). Replies go to the
  sampler ``eval_batch_size`` prompts a call, counted by a progress bar on process 0: they are most
  of an evaluation's time. A held-out answer no grader knows (a ``task`` column of one's own) is
  left out of the accuracy and counted; a grader that fails most reference replies is warned about.
  The base model is scored the same way before the first step (``base_eval.json``) — the number
  SFT must beat. The final replies go to ``eval_samples.jsonl``. With ``eval_tools`` (names in
  ``lmforge.infer.tools.TOOLS``), replies go through the tool-call loop: a tool-use item (the
  ``calculator`` task) is asked from its user turn and the model's calls are run
  (``eval/reply/tool_calls`` per item, ``eval/reply/tool_errors`` the share that failed).
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import re
from collections.abc import Callable

import jax
import numpy as np

from lmforge.align.common import (final_metrics, full_fine_tune_resumes, prepare_policy, report_data, say,
                                  split_held_out, start_run, whole)
from lmforge.data import synthetic
from lmforge.data.chat import OVERFLOW, TRAIN_ON, sft_dataset, sft_eval_batches, sft_examples
from lmforge.data.chat_readers import FORMATS
from lmforge.infer import Sampler, SamplingConfig
from lmforge.infer.tools import tools_by_name
from lmforge.model import LoRAConfig, ModelRuntime
from lmforge.model.logprobs import VOCAB_CHUNK, check_vocab_chunk
from lmforge.train import distributed
from lmforge.train.mesh import MeshConfig
from lmforge.train.metrics import keep_previous, lm_flops_per_token, peak_flops_per_device
from lmforge.train.optim import OptimConfig
from lmforge.train.pretrain import lm_loss
from lmforge.train.trainer import BatchEvaluator, LoopConfig, Trainer

FILE_FORMATS = ("auto", *FORMATS, "gsm8k")


def check_match(data) -> list[tuple[bool, str]]:
    """``(bad, message)`` for a data config's ``match`` / ``pattern`` (``__post_init__``'s problems)."""
    from lmforge.eval.generation import matcher   # pylint: disable=import-outside-toplevel
    try:
        matcher(data.match, data.pattern or None)
    except ValueError as e:
        return [(True, re.sub(r"(?<![.\w])(match|pattern)(=| is)", r"data.\1\2", str(e)))]   # the keys to bind
    return []


@dataclasses.dataclass(frozen=True)
class ChatDataConfig:
    """Where the conversations come from and how they become batches."""
    path: str = ""                   # a conversations file (.jsonl / .jsonl.gz); "" → synthetic only
    format: str = "auto"             # FILE_FORMATS
    test_path: str = ""              # held-out conversations; "" → a val_fraction of `path`
    val_fraction: float = 0.1
    synthetic: tuple[tuple[str, float], ...] = ()   # (task, weight) pairs of lmforge.data.synthetic tasks
    train_size: int = 2000           # synthetic conversations drawn for training
    test_size: int = 200             # held-out conversations kept (synthetic: drawn from the test split)
    seq_len: int = 256
    batch_size: int = 16             # GLOBAL rows per step
    pack: bool = True                # several conversations per row, segment ids keep them apart
    train_on: str = "assistant"      # TRAIN_ON: the assistant's turns, or "all" tokens
    overflow: str = "truncate"       # OVERFLOW: a conversation longer than seq_len + 1 tokens is cut or dropped
    match: str = "auto"              # how a file's answers without a task column are graded: auto | exact | numeric | regex
    pattern: str = ""                # match=regex: what to extract from a reply (group 1, else the whole match)
    seed: int = 0

    def __post_init__(self):
        unknown = [t for t, _ in self.synthetic if t not in synthetic.TASKS]
        problems = [msg for bad, msg in (
            *check_match(self),
            (not self.path and not self.synthetic, "no data: set data.path (a conversations file) or data.synthetic"),
            (self.format not in FILE_FORMATS, f"data.format={self.format!r}: expected one of {', '.join(FILE_FORMATS)}"),
            (self.train_on not in TRAIN_ON, f"data.train_on={self.train_on!r}: expected one of {', '.join(TRAIN_ON)}"),
            (self.overflow not in OVERFLOW, f"data.overflow={self.overflow!r}: expected one of {', '.join(OVERFLOW)}"),
            (not 0.0 <= self.val_fraction < 1.0, f"data.val_fraction={self.val_fraction}: expected [0, 1)"),
            (self.seq_len < 2 or self.batch_size < 1, f"data.seq_len={self.seq_len}, data.batch_size="
                                                      f"{self.batch_size}: expected seq_len >= 2, batch_size >= 1"),
            (any(w < 0 for _, w in self.synthetic) or (self.synthetic and not sum(w for _, w in self.synthetic) > 0),
             f"data.synthetic={self.synthetic}: expected (task, weight) pairs with weights >= 0 and a positive sum"),
            (unknown, f"data.synthetic: unknown task {', '.join(map(repr, unknown))}; "
                      f"expected one of {', '.join(synthetic.TASKS)}"),
            *((not whole(getattr(self, k)), f"data.{k}={getattr(self, k)!r}: expected a whole number >= 0")
              for k in ("train_size", "test_size")),
        ) if bad]
        if problems:
            raise ValueError("; ".join(problems))


@dataclasses.dataclass(frozen=True)
class SFTConfig(LoopConfig):
    """The loop's fields (steps, seed, log_every, eval_every, checkpoint_every, ...) come from LoopConfig."""
    init_from: str = ""              # the pretrained model: a run folder, a model folder or a transformers folder
    data: ChatDataConfig = ChatDataConfig(synthetic=(("arithmetic", 1.0),))
    optim: OptimConfig = OptimConfig(lr=1e-4, min_lr=1e-5, warmup_steps=20, weight_decay=0.0)
    lora: LoRAConfig = LoRAConfig()  # rank > 0: train low-rank adapters only
    model: ModelRuntime = ModelRuntime()   # how the loaded model computes: attention, remat, dtype ("": the source's)
    mesh: MeshConfig = MeshConfig()
    distributed: distributed.DistributedConfig = distributed.DistributedConfig()
    synthetic_options: tuple[tuple[str, str | int | float], ...] = ()   # (option, value): synthetic.OPTIONS
    eval_batch_size: int = 0         # rows per held-out loss batch, prompts per reply batch; 0 → data.batch_size
    eval_generate: int = 100         # held-out items with answers replied to at each eval; 0 → loss only
    eval_max_new_tokens: int = 128
    eval_tools: tuple[str, ...] = ()  # replies to held-out items go through the tool-call loop with these (infer.tools.TOOLS)
    eval_base: bool = True           # score the starting model before the first step (base_eval.json)
    vocab_chunk: int = VOCAB_CHUNK   # the loss's logits, columns at a time (recomputed backward); 0 → all V at once

    def __post_init__(self):
        super().__post_init__()
        check_vocab_chunk(self.vocab_chunk)
        problems = [msg for bad, msg in (
            (self.eval_on_start and self.eval_base, "eval_on_start=True scores the starting model again: SFT's "
                                                    "eval_base=True already does (base_eval.json); keep one"),
            (not whole(self.eval_generate), f"eval_generate={self.eval_generate!r}: expected a whole number >= 0 "
                                             f"(held-out items replied to; 0 → loss only)"),
            (not whole(self.eval_max_new_tokens) or self.eval_max_new_tokens < 1,
             f"eval_max_new_tokens={self.eval_max_new_tokens!r}: expected a whole number >= 1"),
            (not whole(self.eval_batch_size),
             f"eval_batch_size={self.eval_batch_size!r}: expected a whole number >= 0 (0 → data.batch_size)"),
        ) if bad]
        try:
            tools_by_name(self.eval_tools)
        except ValueError as e:
            problems.append(f"eval_tools: {e}")
        names = [k for k, _ in self.synthetic_options]
        try:
            if len(set(names)) < len(names):
                raise ValueError(f"option {next(k for k in names if names.count(k) > 1)!r} is given twice")
            synthetic.check_options([t for t, _ in self.data.synthetic], dict(self.synthetic_options))
        except ValueError as e:
            problems.append(f"synthetic_options: {e}")
        if problems:
            raise ValueError("; ".join(problems))

    def resumes_alone(self, workdir: pathlib.Path) -> bool:
        """A full fine-tune resuming from its checkpoints in ``workdir``: init_from is not read."""
        return full_fine_tune_resumes(self, workdir)

    def check_runnable(self, workdir: pathlib.Path | None = None) -> None:
        """What the run needs beyond a valid config, checked before anything is written (``lmforge run``,
        every point of ``lmforge sweep``, :func:`run_sft`): ``init_from`` names a weights source whose
        model takes ``data.seq_len`` tokens. A full fine-tune resuming in ``workdir`` needs no init_from
        (``resumes_alone``: its checkpoints hold every weight); its own model is checked instead.
        Raises ValueError."""
        from lmforge.weights import check_init_from, read_model_config, refuse_reward_model, source_model_config

        if workdir is not None and self.resumes_alone(workdir):
            source, model_cfg = workdir, read_model_config(workdir)
        else:
            check_init_from(self.init_from, "SFT starts from a pretrained model")
            refuse_reward_model(self.init_from, "SFT")
            source, model_cfg = f"init_from={self.init_from}", source_model_config(self.init_from)
        if model_cfg.architecture != "decoder":   # next-token loss: a bidirectional encoder would see each target
            raise ValueError(f"{source} is a {model_cfg.family} ({model_cfg.architecture}) model; SFT's next-token "
                             f"loss trains decoder-only models (an encoder attends to the very token it would "
                             f"predict; an encoder-decoder needs input/target pairs, which SFT does not build)")
        longest = model_cfg.max_seq_len
        if self.data.seq_len > longest:
            raise ValueError(f"data.seq_len={self.data.seq_len} exceeds the max_seq_len={longest} of {source}'s model")


# ----------------------------------------------------------------------------------------- data


def read_items(cfg) -> tuple[list[dict], list[dict]]:
    """(train, held-out) items ``{"task", "messages", "answer", "where", "columns"}`` from the file
    (:func:`read_file`) and the synthetic mixture (``where`` names a synthetic item by its task)."""
    data = cfg.data
    train, test = [], []
    if data.path:
        items = read_file(data.path, data.format)
        if data.test_path:
            train, test = items, read_file(data.test_path, data.format)
        else:
            train, test = split_held_out(items, data.val_fraction, data.seed)
    if data.synthetic:
        weights = dict(data.synthetic)
        options = dict(cfg.synthetic_options)
        for split, out, n in (("train", train, data.train_size), ("test", test, data.test_size)):
            drawn = synthetic.mixture(weights, n, split=split, seed=data.seed, **options)
            out += [{**it, "where": f"synthetic {it['task']} {split} item {i}", "columns": {}}
                    for i, it in enumerate(drawn)]
    if data.test_size and len(test) > data.test_size:
        test = test[:data.test_size]
    if not train:
        raise ValueError(f"no training conversations in {data.path or 'the synthetic mixture'}")
    return train, test


def read_file(path: str, fmt: str) -> list[dict]:
    """A conversations file as items ``{"task", "messages", "answer", "where", "columns"}``: GSM8K
    lines (question / answer with ``#### n``; ``fmt="gsm8k"``, or ``"auto"`` on a file whose first
    record has exactly ``question`` and ``answer``) keep their answer; a chat record's other keys are
    its ``columns`` (``lmforge.data.chat_readers.read_chat_records``), its ``answer`` (a number made a
    string) and ``task`` (``GENERIC`` when absent) taken from them. ``where`` is ``file:line``."""
    from lmforge.eval.chat import GENERIC   # pylint: disable=import-outside-toplevel

    if fmt == "gsm8k" or (fmt == "auto" and _gsm8k_keys(path)):
        from lmforge.eval.generation import load_gsm8k
        return [{"task": "gsm8k", "answer": it.answer, "where": it.where, "columns": {},
                 "messages": [{"role": "user", "content": it.question},
                              {"role": "assistant", "content": it.solution}]} for it in load_gsm8k(path)]
    from lmforge.data.chat_readers import read_chat_records
    records, stats = read_chat_records(path, format=fmt)
    say(f"read {stats.summary()}")
    items = []
    for r in records:
        answer, task = r.columns.get("answer"), r.columns.get("task", GENERIC)
        if isinstance(answer, (int, float)) and not isinstance(answer, bool):
            answer = str(answer)
        items.append({"task": task, "answer": answer, "where": r.where, "columns": r.columns,
                      "messages": r.messages, "tools": r.tools})
    return items


def _gsm8k_keys(path: str) -> bool:
    """Whether the first record of a JSON-lines file is a GSM8K one (keys ``question`` and ``answer``)."""
    import json   # pylint: disable=import-outside-toplevel

    from lmforge.data.sources import open_bytes   # pylint: disable=import-outside-toplevel
    try:
        with open_bytes(pathlib.Path(path)) as f:
            first = next((line for line in f if line.strip()), b"")
        record = json.loads(first)
    except Exception:   # pylint: disable=broad-except  (unreadable, corrupt: the reader says what is wrong)
        return False
    return isinstance(record, dict) and set(record) == {"question", "answer"}


def grade(task: str, reply: str, answer: str) -> bool:
    """The grader of held-out replies: GSM8K by its ``#### n`` line, synthetic tasks by their own."""
    if task == "gsm8k":
        from lmforge.eval.extract import numeric_match
        return numeric_match(reply, answer, strict=True)
    from lmforge.data.grading import check_answer
    return check_answer(task, reply, answer)


def graded_tasks() -> tuple[str, ...]:
    """The tasks :func:`grader` knows: ``GENERIC`` (graded by ``match``), ``gsm8k`` and the synthetic ones."""
    from lmforge.eval.chat import GENERIC   # pylint: disable=import-outside-toplevel
    return (GENERIC, "gsm8k", *synthetic.VERIFIABLE)


def grader(data) -> Callable[[str, str, str], bool]:
    """``grade(task, reply, answer) -> bool`` of a data config: :func:`grade` for a named task, and
    ``data.match`` (``lmforge.eval.generation.matcher``) for a file's items that name none; an answer
    given as a number (a file's ``answer`` column as stored) is compared as its text."""
    from lmforge.eval.chat import with_generic   # pylint: disable=import-outside-toplevel
    from lmforge.eval.generation import matcher   # pylint: disable=import-outside-toplevel
    graded = with_generic(grade, matcher(data.match, data.pattern or None))

    def grade_answer(task: str, reply: str, answer) -> bool:   # a file's answer column may hold a number
        return graded(task, reply, str(answer) if isinstance(answer, (int, float)) else answer)
    return grade_answer


def check_graded(item: dict, match: str, match_key: str = "data.match") -> str | None:
    """Why ``item``'s reference answer could never be graded (``None`` when it can): a task without a
    grader, an answer that is not a string, a numeric task's answer (or ``match=numeric``'s) that
    holds no number. The reason starts with the item's ``where`` and names ``match`` as ``match_key``."""
    from lmforge.eval.chat import GENERIC   # pylint: disable=import-outside-toplevel
    from lmforge.eval.extract import extract_number   # pylint: disable=import-outside-toplevel

    task, answer, where = item.get("task"), item.get("answer"), item.get("where", "an item")
    if task not in graded_tasks():
        return (f"{where}: task {task!r} has no grader; expected one of {', '.join(graded_tasks()[1:])}, or no "
                f"'task' (graded by {match_key}={match})")
    if not isinstance(answer, str):
        return f"{where}: answer {answer!r:.60}; expected a string or a number"
    try:
        grade(task, "", answer) if task != GENERIC else None   # a numeric task's answer must be a number
    except ValueError as e:
        return f"{where}: {e}"
    if (task == "gsm8k" or (task == GENERIC and match == "numeric")) and extract_number(answer) is None:
        return (f"{where}: answer {answer!r} holds no number; a {task} item is graded by the reply's number, so "
                f"it could never be correct")
    return None


def check_references(items: list[dict], grade, match: str) -> str | None:
    """A warning when the grader fails most of the reference replies it can check: each graded item whose
    conversation ends in an assistant turn (the reference reply) should pass its own grader, and when
    fewer than half do, a model that learns the references perfectly would still score low (a grader
    or ``data.match`` that does not fit the data). None when the references mostly pass or there are
    none to check."""
    refs = [(it, it["messages"][-1]["content"]) for it in items
            if it.get("answer") is not None and it["messages"][-1]["role"] == "assistant"]
    if not refs:
        return None
    failed = [(it, ref) for it, ref in refs if not grade(it["task"], ref, it["answer"])]
    if 2 * len(failed) <= len(refs):
        return None
    it, ref = failed[0]
    return (f"warning: the grader fails {len(failed)} of {len(refs)} reference replies (e.g. {it['where']}: "
            f"{ref[:60]!r} against answer {it['answer']!r}, task {it['task']!r}, data.match={match}), so a model that "
            f"learns them would score low too; is data.match right for these answers?")


def held_out_graded(items: list[dict], match: str, limit: int | None = None, *, strict: bool = True) -> list[dict]:
    """The held-out items with a reference answer the grader can check (:func:`check_graded`), at most
    ``limit``. ``strict``: raises ValueError naming the first item whose answer could never be graded
    (rewards and accuracy come from the grader); else such items are left out of the accuracy and
    counted (a reward function of one's own may read tasks no grader knows)."""
    out, left_out = [], []
    for it in items:
        if it.get("answer") is None:
            continue
        if (why := check_graded(it, match)) is None:
            out.append(it)
        elif strict:
            raise ValueError(why)
        else:
            left_out.append(why)
    if left_out:
        say(f"held-out accuracy: {len(left_out)} items the grader cannot check left out (the first: {left_out[0]})")
    return out[:limit]


# --------------------------------------------------------------------------------------- runner


def run_sft(cfg: SFTConfig, workdir: pathlib.Path) -> dict[str, float]:
    """Fine-tunes ``cfg.init_from`` on conversations; returns the final metrics (``final/...``).

    Raises ValueError for an ``init_from`` that is empty or no weights source, data that does not
    fit (see ``ChatDataConfig``), a ``data.seq_len`` beyond the model's context, or a batch that
    does not split over the mesh.
    """
    workdir, tok, template, t_start = start_run(cfg, workdir, "SFT")
    from lmforge.weights.load import has_checkpoint


    train_items, test_items = read_items(cfg)
    data = cfg.data
    train_ex, stats = sft_examples([it["messages"] for it in train_items], template, data.seq_len,
                                   train_on=data.train_on, overflow=data.overflow,
                                   names=[it["where"] for it in train_items],
                                   tools=[it.get("tools") for it in train_items])
    test_ex, test_stats = sft_examples([it["messages"] for it in test_items], template, data.seq_len,
                                       train_on=data.train_on, overflow=data.overflow,
                                       names=[it["where"] for it in test_items],
                                       tools=[it.get("tools") for it in test_items])
    report_data(workdir, stats, test_stats, "conversation")
    mesh, eval_bs, alone, loaded, optim = prepare_policy(cfg, workdir, tok)
    rules, model_cfg = cfg.mesh.rules, loaded.cfg
    trainer = Trainer(lm_loss(loaded.graphdef, model_cfg, vocab_chunk=cfg.vocab_chunk), params=loaded.params,
                      param_shardings=loaded.shardings,
                      optim=optim, loop=cfg, mesh=mesh, rules=rules, model_cfg=model_cfg, base=cfg.init_from,
                      base_step=None if alone else loaded.step,
                      per_device=cfg.mesh.per_device_step)
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(loaded.params))
    say(f"model: {model_cfg.family} from {workdir if alone else cfg.init_from}, {n_params / 1e6:.2f}M parameters, "
         f"{trainer.num_trainable() / 1e6:.3f}M trainable" + (f" (LoRA rank {cfg.lora.rank})" if cfg.lora.rank else "")
         + f"; mesh {dict(mesh.shape)}")

    # Replies are graded where the grader can check them; other answers (a task column of one's own) are counted.
    graded, grade = held_out_graded(test_items, data.match, cfg.eval_generate, strict=False), grader(data)
    if (warning := check_references(graded, grade, data.match)) is not None:
        say(warning)
    losses = BatchEvaluator(sft_eval_batches(test_ex, data.seq_len, eval_bs), rows=eval_bs,
                            derive=lambda m: {"perplexity": math.exp(min(m["loss"], 50.0))}) if test_ex else None
    sampling = SamplingConfig(max_new_tokens=cfg.eval_max_new_tokens, temperature=0.0)
    tools = tools_by_name(cfg.eval_tools)
    last_samples: list[dict] = []

    def evaluate(tr: Trainer) -> dict[str, float]:
        from lmforge.eval.chat import chat_accuracy
        m = losses(tr) if losses is not None else {}
        if graded:
            sampler = Sampler(loaded.graphdef, tr.params, tok, model_cfg, mesh, rules)
            res = chat_accuracy(sampler, template, graded, grade, sampling=sampling, seed=cfg.seed, batch=eval_bs,
                                progress=jax.process_index() == 0, tools=tools)
            m.update({f"eval/reply/{k}": float(v) for k, v in res["metrics"].items()})
            last_samples[:] = res["samples"]
        return m

    base_file = workdir / "base_eval.json"
    base = json.loads(base_file.read_text()) if base_file.is_file() else None
    if base is None and cfg.eval_base and (losses is not None or graded) and not has_checkpoint(workdir):
        base = evaluate(trainer)
        if jax.process_index() == 0:
            base_file.write_text(json.dumps(base, indent=2) + "\n")
        say("base model: " + _describe(base))

    batches = trainer.batches(sft_dataset(train_ex, data.seq_len, data.batch_size, pack=data.pack, seed=data.seed,
                                          process_index=jax.process_index(), process_count=jax.process_count()))
    try:
        result = trainer.fit(batches, workdir, evaluate=evaluate if (losses is not None or graded) else None,
                             tokens_per_step=data.batch_size * data.seq_len,
                             flops_per_token=lm_flops_per_token(model_cfg, data.seq_len, n_params),
                             peak_flops=peak_flops_per_device(jax.devices()[0], model_cfg.dtype),
                             on_eval=lambda step, m: say(f"step {step}: " + _describe(m)))
    finally:
        batches.close()
    ev = result.eval   # its line was said by on_eval: the trainer's last evaluation goes through it
    if jax.process_index() == 0 and last_samples:
        kept = keep_previous(workdir / "eval_samples.jsonl")   # a run continued for more steps: the earlier ones stay
        with open(workdir / "eval_samples.jsonl", "w") as f:
            for s in last_samples:
                f.write(json.dumps({"step": result.step, **s}) + "\n")
        if kept:
            say(f"the earlier eval_samples.jsonl is kept as {kept.name}")
    out = final_metrics(result, trainer, t_start, ev)
    if base:
        out.update({k.replace("eval/", "base/"): v for k, v in base.items() if k.startswith("eval/")})
    return out


def _describe(m: dict) -> str:
    """``held-out loss 1.2345, token accuracy 0.712; replies correct 0.640 of 200 (arithmetic 0.5, ...)``.
    ``eval/token_accuracy`` is the loss's next-token accuracy, ``eval/reply/accuracy`` the graded replies'."""
    parts = []
    if "eval/loss" in m:
        parts.append(f"held-out loss {m['eval/loss']:.4f}")
    if "eval/token_accuracy" in m:
        parts.append(f"token accuracy {m['eval/token_accuracy']:.3f}")
    line = ", ".join(parts) or "no held-out data"
    if "eval/reply/accuracy" in m:
        tasks = [f"{k[len('eval/reply/accuracy/'):]} {v:.3f}" for k, v in m.items()
                 if k.startswith("eval/reply/accuracy/")]
        line += (f"; replies correct {m['eval/reply/accuracy']:.3f} of {int(m.get('eval/reply/n', 0))}"
                 + (f" ({', '.join(tasks)})" if tasks else ""))
    return line


__all__ = ["ChatDataConfig", "SFTConfig", "check_graded", "check_references", "grade", "graded_tasks", "grader",
           "held_out_graded", "read_file", "read_items", "run_sft"]
