"""``lmforge eval SOURCE TASK [TASK ...]``: the evaluation tasks of ``lmforge.eval``, by name.

    lmforge eval runs/shakespeare/ perplexity --text ../shared/data/tinyshakespeare.txt
    lmforge eval runs/quickstart/ gsm8k --limit 50 multiple_choice:path=mc.jsonl refusal
    lmforge eval runs/quickstart/ "generation:path=qa.jsonl,match=regex,pattern=answer: (\\w+)"
    lmforge eval model_folder/ memorisation:path=corpus.txt,n=200 --out scores.json

SOURCE is a run folder (``lmforge run``'s workdir: its latest checkpoint, tokenizer and mesh; a
fine-tuning run's through its ``model.json``) or a model folder / Hugging Face folder with a tokenizer
lmforge reads (``tokenizer/`` or a SentencePiece ``tokenizer.model``), placed on a data-parallel mesh
over every device. A task is ``NAME`` or ``NAME:KEY=VALUE,KEY=VALUE`` (its keys listed below in
``--help``, integers with their smallest value); ``--limit N`` keeps the first N items of every task
(for perplexity: N windows). ``--text FILE`` is perplexity's text: when no perplexity task reads it
(none given, or each with its own path) a note on stderr says so. The scores are printed as a table
and written as strict JSON (no NaN) with every item's output and the checkpoint step of a run folder
(null for a model folder), to ``SOURCE/eval/NAME.json`` per task, or all in one ``--out FILE``
(rewritten after each task, so a task that fails keeps the finished ones). Every task's files and
arguments are checked before the model loads (a missing file, an unknown synthetic task, a stride
past the model's context), and so is where the results go: a ``SOURCE/eval`` that cannot be
written (a read-only model store) is refused, suggesting ``--out``. Tasks may also come after
options (``perplexity --limit 2 mc:path=mc.jsonl``). Nothing is overwritten: an earlier
``NAME.json`` is renamed ``NAME.<its mtime>.json`` (said on stderr), and an existing ``--out``
file is refused before anything loads.

This is the registry of evaluation tasks (DESIGN.md: registries only at the edge): ``TASKS`` maps a
name to a runner that reads its arguments and calls the library function directly.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
import json
import math
import pathlib
import re
import sys
import time
from collections.abc import Callable
from typing import Any

from .errors import ConfigError, did_you_mean
from .launch import CONFIG_FILE, checkpoint_steps

REQUIRED = object()   # a task argument without a default


@dataclasses.dataclass(frozen=True)
class EvalTask:
    name: str
    check: Callable[..., dict]        # check(ctx, **args) -> the runner's keyword arguments, without the model
    runner: Callable[..., dict]       # runner(ctx, **checked) -> {"metrics": {...}, "samples": [...]}
    args: dict[str, Any]              # argument -> default (REQUIRED: must be given); the default's type is the type
    help: str
    least: dict[str, int] = dataclasses.field(default_factory=dict)   # integer argument -> its smallest value


# ------------------------------------------------------------------------------------------ loading
class EvalContext:
    """The model to evaluate, loaded once on first use, and the command's options."""

    def __init__(self, source: pathlib.Path, *, limit: int | None, batch: int, text: str | None):
        self.source, self.limit, self.batch, self.text = source, limit, batch, text
        self.kind, self.config = check_source(source)

    @functools.cached_property
    def sampler(self):
        return load_sampler(self.source, self.kind, self.config)

    @property
    def step(self) -> int | None:
        """The checkpoint step the parameters came from (a run folder's newest readable one; None for a
        model or transformers folder): what the loader used, not the newest step folder on disk."""
        return self.sampler.step

    @functools.cached_property
    def max_seq_len(self) -> int:
        """The model's context, from its ``model.json`` / ``config.json`` (no weights are read)."""
        if self.kind == "run" and not (self.source / "model.json").is_file():   # a run from before model.json
            return self.config.model.max_seq_len
        from lmforge.weights import source_model_config   # pylint: disable=import-outside-toplevel

        return source_model_config(self.source).max_seq_len

    @functools.cached_property
    def scorer(self):
        from lmforge.eval import Scorer   # pylint: disable=import-outside-toplevel

        return Scorer.from_sampler(self.sampler, rows=self.batch)

    def training_documents(self) -> list[str]:
        """The run's training split, read as the run read it (``data.source``, its curated shards in
        ``RUN/curated`` when the run curated, or each source of ``data.mixture``; then
        ``data.val_fraction``)."""
        if self.kind != "run":
            give = "give memorisation:path=FILE (a .txt, or a .jsonl with a 'text' field)"
            if is_run_folder(self.source):   # a fine-tuning run: check_source gives ("model", None)
                from .config_io import load_config   # pylint: disable=import-outside-toplevel

                what = type(load_config(self.source / CONFIG_FILE)).__qualname__
                raise ConfigError(f"{self.source} is a fine-tuning run ({what}): it trained on conversations, not "
                                  f"on documents of a pretraining corpus, so it names none to probe; {give}")
            raise ConfigError(f"{self.source} is a model folder: it names no training data; {give}")
        if self.config.curate is not None and not (self.source / "curated" / "funnel.json").is_file():
            raise ConfigError(f"{self.source} curated its data but {self.source / 'curated'} holds no finished "
                              f"curation (funnel.json); give memorisation:path=FILE")
        from lmforge.train.pretrain import data_splits   # pylint: disable=import-outside-toplevel

        # A finished curation is only read; a mixture's training splits are taken in its order.
        return [d for train, _ in data_splits(self.config, self.source).values() for d in train]


def is_run_folder(source: pathlib.Path) -> bool:
    """Whether SOURCE is a ``lmforge run`` workdir: a run's resolved ``config.json``, not a transformers one."""
    from lmforge.weights import is_transformers_config   # pylint: disable=import-outside-toplevel

    config_file = source / CONFIG_FILE
    return config_file.is_file() and not is_transformers_config(config_file)


def check_source(source: pathlib.Path, command: str = "eval", *, tokenizer: bool = True) -> tuple[str, Any]:
    """("run", its config) or ("model", None) for ``lmforge COMMAND SOURCE``; a one-line ConfigError
    names what the folder is and what it lacks (nothing is loaded: the checks are cheap). ``tokenizer``:
    whether SOURCE needs one (``lmforge convert`` exports the weights alone)."""
    if not source.is_dir():
        what = "does not exist" if not source.exists() else "is not a folder"
        raise ConfigError(f"{source} {what} (expected a run folder, a model folder or a transformers folder)")
    config_file = source / CONFIG_FILE
    if is_run_folder(source):   # a `lmforge run` workdir
        from .config_io import load_config   # pylint: disable=import-outside-toplevel
        from .registry import task_for   # pylint: disable=import-outside-toplevel
        from lmforge.train.pretrain import PretrainConfig   # pylint: disable=import-outside-toplevel

        config = load_config(config_file)
        needs = f"`lmforge {command}` needs a run that trains a model, with a checkpoint"
        if not any(f.name == "model" for f in dataclasses.fields(config)):   # curation: no model
            try:
                task = task_for(config).name
            except ConfigError:   # a config no registered task runs
                task = "no registered task"
            from lmforge.weights.load import inner_runs   # pylint: disable=import-outside-toplevel

            stages = inner_runs(source)
            raise ConfigError(f"{source} is a {type(config).__qualname__} run ({_TASK_WORDS.get(task, task)}); {needs}"
                              + (f"; its stages are such runs: give {source / stages[-1]}" if stages else ""))
        if not checkpoint_steps(source):
            raise ConfigError(f"{source} has no checkpoint yet (no finished step folder in {source / 'checkpoints'}: "
                              f"the run saves one at checkpoint_every, at its end and on SIGTERM); {needs}")
        if isinstance(config, PretrainConfig):
            return "run", config
        if (source / "model.json").is_file():
            if tokenizer:   # a fine-tuning run (SFT, ...): its model.json, checkpoint and tokenizer
                _folder_tokenizer_path(source)
            return "model", None
        raise ConfigError(f"{source} is a {type(config).__qualname__} run without a model.json; {needs}")
    from lmforge.weights import WeightsError, source_kind   # pylint: disable=import-outside-toplevel

    try:
        source_kind(source)
    except WeightsError as e:
        raise ConfigError(str(e)) from None
    if tokenizer:
        _folder_tokenizer_path(source)
    return "model", None


_TASK_WORDS = {"curate": "curation", "pretrain": "pretraining"}


def _folder_tokenizer_path(source: pathlib.Path) -> pathlib.Path:
    """``lmforge.data.tokenizer.tokenizer_dir``: ``SOURCE/tokenizer/`` (lmforge's, as a run or ``lmforge
    convert`` writes it), else SOURCE itself (a transformers folder's ``tokenizer.json`` / ``tokenizer.model``)."""
    from lmforge.data.tokenizer import tokenizer_dir   # pylint: disable=import-outside-toplevel

    try:
        return tokenizer_dir(source)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def load_sampler(source: pathlib.Path, kind: str, config: Any = None, *, generates: bool = True):
    """The Sampler of a source that :func:`check_source` accepted (``lmforge eval`` and ``lmforge sample``;
    ``generates=False``: a reward model is accepted too, for ``lmforge convert``, which reads its weights).

    A pretraining run ("run", its config): its latest checkpoint on the run's own mesh
    (``lmforge.train.pretrain.load_for_sampling``). Anything else ("model": an lmforge model folder, a
    transformers folder, a fine-tuning run with its ``model.json``): ``lmforge.weights.load_params``
    on a data-parallel mesh over every device.
    """
    if generates:
        from lmforge.weights import WeightsError, refuse_reward_model   # pylint: disable=import-outside-toplevel
        try:
            refuse_reward_model(source, "sampling (lmforge eval, lmforge sample)")
        except WeightsError as e:
            raise ConfigError(str(e)) from None
    if kind == "run":
        from lmforge.train.pretrain import load_for_sampling   # pylint: disable=import-outside-toplevel

        return load_for_sampling(source, config)
    return _folder_sampler(source)


def _folder_sampler(source: pathlib.Path):
    """A model folder or transformers folder on a data-parallel mesh over every device."""
    from lmforge.data import load_tokenizer   # pylint: disable=import-outside-toplevel
    from lmforge.infer import Sampler   # pylint: disable=import-outside-toplevel
    from lmforge.train.mesh import MeshConfig, make_mesh   # pylint: disable=import-outside-toplevel
    from lmforge.weights import load_params   # pylint: disable=import-outside-toplevel

    tok = load_tokenizer(_folder_tokenizer_path(source))
    mesh_cfg = MeshConfig()
    mesh = make_mesh(mesh_cfg)
    loaded = load_params(source, mesh, rules=mesh_cfg.rules)
    if loaded.cfg.vocab_size < tok.vocab_size:
        raise ConfigError(f"{source}: the tokenizer has {tok.vocab_size} ids but the model only {loaded.cfg.vocab_size}")
    return Sampler(loaded.graphdef, loaded.params, tok, loaded.cfg, mesh, mesh_cfg.rules, step=loaded.step)


# ------------------------------------------------------------------------------------------ tasks
# Each task is a check and a runner. check(ctx, **args) reads and checks the task's files and arguments
# without the model (every spec's check runs before the first task does) and returns the runner's keyword
# arguments; runner(ctx, **those) evaluates the model on them.
def _path(value: str, what: str) -> pathlib.Path:
    path = pathlib.Path(value).expanduser()
    if path.is_dir():
        raise ConfigError(f"{what}: {path} is a folder; expected a file")
    if not path.is_file():
        raise ConfigError(f"{what}: no such file {path}")
    return path


def check_perplexity(ctx: EvalContext, path: str, stride: int) -> dict:
    from lmforge.eval.jsonl import read_text   # pylint: disable=import-outside-toplevel

    given = path or ctx.text
    if not given:
        raise ConfigError("perplexity needs a text file: --text FILE or perplexity:path=FILE")
    text = read_text(_path(given, "perplexity"))
    if not text:
        raise ConfigError(f"perplexity: {given} is empty; expected the text to score")
    if stride > ctx.max_seq_len:
        raise ConfigError(f"perplexity: stride={stride}: expected 1 <= stride <= max_seq_len={ctx.max_seq_len} "
                          f"(the context of {ctx.source}; 0: max_seq_len)")
    return {"given": given, "text": text, "stride": stride}


def run_perplexity(ctx: EvalContext, given: str, text: str, stride: int) -> dict:
    from lmforge.eval import perplexity   # pylint: disable=import-outside-toplevel

    scorer = ctx.scorer
    try:
        metrics = perplexity(scorer, text, stride=stride or None, max_windows=ctx.limit, progress=True)
    except ValueError as e:
        raise ConfigError(f"perplexity on {given}: {e}") from None
    return {"metrics": {**metrics, "path": str(given)}, "samples": []}


def check_gsm8k(ctx: EvalContext, path: str, fewshot: int, train: str, max_new_tokens: int) -> dict:
    from lmforge.eval import load_gsm8k   # pylint: disable=import-outside-toplevel
    from lmforge.eval.jsonl import SHARED_DATA   # pylint: disable=import-outside-toplevel

    path = path or str(SHARED_DATA / "gsm8k_test.jsonl")
    items = load_gsm8k(_path(path, "gsm8k (give gsm8k:path=FILE)"), limit=ctx.limit)
    shots = []
    if fewshot:
        train = train or str(pathlib.Path(path).with_name("gsm8k_train.jsonl"))
        shots = load_gsm8k(_path(train, "gsm8k few-shot examples (give gsm8k:train=FILE)"), limit=fewshot)
    return {"items": items, "shots": shots, "max_new_tokens": max_new_tokens}


def run_gsm8k(ctx: EvalContext, items: list, shots: list, max_new_tokens: int) -> dict:
    from lmforge.eval import gsm8k   # pylint: disable=import-outside-toplevel

    return gsm8k(ctx.sampler, items, shots=shots, max_new_tokens=max_new_tokens, batch=ctx.batch, progress=True)


def stop_strings(stop: str) -> tuple[str, ...]:
    """``generation:stop=``'s value -> its stop strings: split at ``|`` after Python's backslash escapes
    (``\\n``, ``\\t``, ``\\\\``, ``\\u2192``) are decoded; every other character is kept as it is
    (``unicode_escape`` alone would read a non-ASCII character's UTF-8 bytes as Latin-1)."""
    try:
        decoded = stop.encode("latin-1", "backslashreplace").decode("unicode_escape")
    except UnicodeDecodeError as e:
        raise ConfigError(f"generation: stop={stop!r}: {e.reason} at character {e.start}; expected strings "
                          f"separated by | with backslash escapes such as \\n") from None
    return tuple(s for s in decoded.split("|") if s)


def check_generation(ctx: EvalContext, path: str, match: str, pattern: str, max_new_tokens: int, stop: str) -> dict:
    from lmforge.eval import load_generation   # pylint: disable=import-outside-toplevel
    from lmforge.eval.generation import matcher   # pylint: disable=import-outside-toplevel

    try:
        matcher(match, pattern or None)
    except ValueError as e:
        raise ConfigError(f"generation: {e}") from None
    stops = stop_strings(stop)
    items = load_generation(_path(path, "generation"), limit=ctx.limit)
    return {"items": items, "match": match, "pattern": pattern, "max_new_tokens": max_new_tokens, "stops": stops}


def run_generation(ctx: EvalContext, items: list, match: str, pattern: str, max_new_tokens: int,
                   stops: tuple[str, ...]) -> dict:
    from lmforge.eval import generation   # pylint: disable=import-outside-toplevel

    return generation(ctx.sampler, items, match=match, pattern=pattern or None, max_new_tokens=max_new_tokens,
                      stop=stops, batch=ctx.batch, progress=True)


def check_multiple_choice(ctx: EvalContext, path: str) -> dict:
    from lmforge.eval import load_multiple_choice   # pylint: disable=import-outside-toplevel

    return {"items": load_multiple_choice(_path(path, "multiple_choice"), limit=ctx.limit)}


def run_multiple_choice(ctx: EvalContext, items: list) -> dict:
    from lmforge.eval import multiple_choice   # pylint: disable=import-outside-toplevel

    return multiple_choice(ctx.scorer, items, progress=True)


def check_refusal(ctx: EvalContext, path: str, max_new_tokens: int) -> dict:
    from lmforge.eval import load_hh_prompts   # pylint: disable=import-outside-toplevel
    from lmforge.eval.jsonl import SHARED_DATA   # pylint: disable=import-outside-toplevel

    path = path or str(SHARED_DATA / "hh_rlhf_harmless_base_test.jsonl.gz")
    prompts = load_hh_prompts(_path(path, "refusal (give refusal:path=FILE)"), limit=ctx.limit)
    return {"prompts": prompts, "max_new_tokens": max_new_tokens}


def run_refusal(ctx: EvalContext, prompts: list, max_new_tokens: int) -> dict:
    from lmforge.eval import refusal   # pylint: disable=import-outside-toplevel

    return refusal(ctx.sampler, prompts, max_new_tokens=max_new_tokens, batch=ctx.batch, progress=True)


def check_memorisation(ctx: EvalContext, path: str, n: int, prefix: int, suffix: int, seed: int) -> dict:
    if path:
        from lmforge.data import SourceConfig, read_documents   # pylint: disable=import-outside-toplevel

        file = _path(path, "memorisation")
        kind = "jsonl" if ".jsonl" in file.suffixes else "text"
        docs = read_documents(SourceConfig(kind=kind, path=str(file)))
    else:
        docs = ctx.training_documents()
    n = min(n, ctx.limit) if ctx.limit else n
    return {"docs": docs, "n": n, "prefix": prefix, "suffix": suffix, "seed": seed}


def run_memorisation(ctx: EvalContext, docs: list, n: int, prefix: int, suffix: int, seed: int) -> dict:
    from lmforge.eval import memorisation   # pylint: disable=import-outside-toplevel

    return memorisation(ctx.sampler, docs, n=n, prefix=prefix, suffix=suffix, seed=seed, batch=ctx.batch,
                        progress=True)


def check_chat(ctx: EvalContext, tasks: str, path: str, n: int, seed: int, max_new_tokens: int, match: str,
               pattern: str) -> dict:
    """The items of a chat task: the test split of synthetic tasks, or a jsonl of ``{"messages", "answer",
    "task"?}`` items (path). A file's conversation either ends with a reference assistant turn, which the
    model does not see, or is asked as it is; an item's task names its grader (``align.sft.grade``), and
    items without one are graded by ``match`` (``eval.chat.GENERIC``). Every item is checked (file:line)."""
    from lmforge.align.sft import grade   # pylint: disable=import-outside-toplevel
    from lmforge.data import synthetic   # pylint: disable=import-outside-toplevel
    from lmforge.data.chat import check_messages   # pylint: disable=import-outside-toplevel
    from lmforge.eval.chat import GENERIC, with_generic   # pylint: disable=import-outside-toplevel
    from lmforge.eval.extract import extract_number   # pylint: disable=import-outside-toplevel
    from lmforge.eval.generation import matcher   # pylint: disable=import-outside-toplevel
    from lmforge.eval.jsonl import field, read_jsonl   # pylint: disable=import-outside-toplevel

    try:
        grade = with_generic(grade, matcher(match, pattern or None))   # argument mistakes before the model loads
    except ValueError as e:
        raise ConfigError(f"chat: {e}") from None
    if path and tasks:
        raise ConfigError(f"chat: tasks={tasks} and path= are both given; a file's items name their own task "
                          f"(drop tasks=)")
    n = min(n, ctx.limit) if ctx.limit else n
    if path:
        graded = (GENERIC, "gsm8k", *synthetic.VERIFIABLE)
        items = []
        for number, obj in read_jsonl(_path(path, "chat")):
            if len(items) >= n:
                break
            where = f"{path}:{number}"
            messages = check_messages(field(obj, "messages", list, where), where=where)
            answer = str(field(obj, "answer", (str, int, float), where))
            task = field(obj, "task", str, where) if "task" in obj else GENERIC
            if task not in graded:
                raise ConfigError(f"{where}: task {task!r} has no grader; expected one of {', '.join(graded[1:])}, "
                                  f"or no 'task' (graded by match={match})")
            try:
                grade(task, "", answer)   # a numeric task's answer must be a number
            except ValueError as e:
                raise ConfigError(f"{where}: {e}") from None
            if (task == "gsm8k" or (task == GENERIC and match == "numeric")) and extract_number(answer) is None:
                raise ConfigError(f"{where}: answer {answer!r} holds no number; a {task} item is graded by the "
                                  f"reply's number, so it could never be correct")
            if messages[-1]["role"] == "assistant":   # the reference turn, which the prompt leaves out
                if len(messages) == 1:
                    raise ConfigError(f"{where}: the conversation is only an assistant turn; expected the messages "
                                      f"the model is asked (a user turn) before the reference assistant turn")
            else:   # asked as it is: the answer stands in for the reference turn eval.chat.prompt_messages drops
                messages = [*messages, {"role": "assistant", "content": answer}]
            items.append({"messages": messages, "answer": answer, "task": task})
        if not items:
            raise ConfigError(f"{path}: holds no items")
    else:
        names = [t for t in (tasks or "arithmetic").split("+") if t]
        unknown = [t for t in names if t not in synthetic.VERIFIABLE]
        if unknown or not names:
            raise ConfigError(f"chat: tasks={tasks!r}; expected synthetic tasks with answers joined with + "
                              f"({', '.join(synthetic.VERIFIABLE)})")
        items = synthetic.mixture({t: 1.0 for t in names}, n, split="test", seed=seed)
    return {"items": items, "grade": grade, "seed": seed, "max_new_tokens": max_new_tokens}


def run_chat(ctx: EvalContext, items: list, grade: Callable, seed: int, max_new_tokens: int) -> dict:
    """Greedy replies through the model's chat template, graded (:func:`check_chat`)."""
    from lmforge.data import chat_template_for   # pylint: disable=import-outside-toplevel
    from lmforge.eval.chat import chat_accuracy   # pylint: disable=import-outside-toplevel
    from lmforge.infer import SamplingConfig   # pylint: disable=import-outside-toplevel

    sampler = ctx.sampler
    return chat_accuracy(sampler, chat_template_for(sampler.tok), items, grade,
                         sampling=SamplingConfig(max_new_tokens=max_new_tokens, temperature=0.0), seed=seed,
                         batch=ctx.batch, progress=True)


def check_lm_eval(_: EvalContext, tasks: str, include: str, fewshot: int) -> dict:
    """The package and the include folder; the task names are looked up when the task runs (indexing the
    built-in tasks takes ~25 s)."""
    import importlib.util   # pylint: disable=import-outside-toplevel

    if importlib.util.find_spec("lm_eval") is None:
        raise ConfigError("lm_eval needs the lm-eval package: pip install -e '.[eval]'")
    if include and not pathlib.Path(include).expanduser().is_dir():
        raise ConfigError(f"lm_eval: include={include}: no such folder (expected a folder of task YAML files)")
    return {"names": [t for t in tasks.split("+") if t],
            "include": str(pathlib.Path(include).expanduser()) if include else "", "fewshot": fewshot}


def run_lm_eval(ctx: EvalContext, names: list[str], include: str, fewshot: int) -> dict:
    """lm-evaluation-harness's own tasks through ``lmforge.eval.lm_eval_adapter``."""
    import lm_eval   # pylint: disable=import-outside-toplevel
    from lm_eval.tasks import TaskManager   # pylint: disable=import-outside-toplevel

    from lmforge.eval.lm_eval_adapter import LmforgeLM   # pylint: disable=import-outside-toplevel

    # Indexing the ~15,000 built-in task configs takes ~25 s: with local tasks, try them alone first.
    manager = TaskManager(include_path=include, include_defaults=False) if include else None
    if manager is None or any(t not in manager.all_tasks for t in names):
        manager = TaskManager(include_path=include or None)
    unknown = [t for t in names if t not in manager.all_tasks]
    if unknown:
        near = difflib.get_close_matches(unknown[0], manager.all_tasks, n=1)
        raise ConfigError(f"lm_eval: unknown task {unknown[0]!r}" + (f" — did you mean {near[0]!r}?" if near else "")
                          + (" (give include=DIR for local task YAML files)" if not include else ""))
    model = LmforgeLM(ctx.sampler, rows=ctx.batch, batch=ctx.batch)
    try:
        out = lm_eval.simple_evaluate(model=model, tasks=names, task_manager=manager, limit=ctx.limit,
                                      log_samples=False, num_fewshot=fewshot if fewshot >= 0 else None,
                                      bootstrap_iters=0)
    except ConnectionError as e:   # `datasets` fetching a built-in task's data from the Hub, offline
        raise ConfigError(f"lm_eval: the data of {'+'.join(names)} is not available here ({e}); offline, give "
                          f"include=DIR with a local task (a YAML whose dataset is a local file)") from None
    metrics = {f"{task}/{key.split(',')[0]}": value for task, scores in out["results"].items()
               for key, value in scores.items() if isinstance(value, (int, float)) and "_stderr" not in key}
    return {"metrics": metrics, "samples": []}


TASKS: dict[str, EvalTask] = {t.name: t for t in (
    EvalTask("perplexity", check_perplexity, run_perplexity, {"path": "", "stride": 0},
             "perplexity and bits per byte of a text file (path, or --text); stride: tokens per window after "
             "the first (0: max_seq_len, disjoint windows)", {"stride": 0}),
    EvalTask("gsm8k", check_gsm8k, run_gsm8k, {"path": "", "fewshot": 0, "train": "", "max_new_tokens": 256},
             "GSM8K greedy, exact match of the #### / last number (path default ../shared/data/gsm8k_test.jsonl; "
             "fewshot examples from train, default gsm8k_train.jsonl beside it)", {"fewshot": 0, "max_new_tokens": 1}),
    EvalTask("generation", check_generation, run_generation, {"path": REQUIRED, "match": "exact", "pattern": "", "max_new_tokens": 64,
                                            "stop": "\\n"},
             "a local {prompt, answer} jsonl, greedy; match exact | numeric | regex (with pattern); stop strings "
             "separated by |", {"max_new_tokens": 1}),
    EvalTask("multiple_choice", check_multiple_choice, run_multiple_choice, {"path": REQUIRED},
             "a local {context, choices, answer} jsonl by log-likelihood: acc (sum), acc_norm (per character), "
             "acc_per_token"),
    EvalTask("refusal", check_refusal, run_refusal, {"path": "", "max_new_tokens": 64},
             "refusal rate on HH-RLHF harmless-base first human turns (path default "
             "../shared/data/hh_rlhf_harmless_base_test.jsonl.gz)", {"max_new_tokens": 1}),
    EvalTask("memorisation", check_memorisation, run_memorisation, {"path": "", "n": 100, "prefix": 32, "suffix": 50, "seed": 0},
             "greedy reproduction of suffix tokens after prefix tokens of n training documents (a pretraining "
             "run's training split, or path: a .txt, or a .jsonl with a 'text' field)",
             {"n": 1, "prefix": 1, "suffix": 1, "seed": 0}),
    EvalTask("chat", check_chat, run_chat, {"tasks": "", "path": "", "n": 200, "seed": 0, "max_new_tokens": 160,
                                "match": "exact", "pattern": ""},
             "greedy chat replies graded against answers: n items of the test split of synthetic tasks (joined "
             "with +; default arithmetic), or the first n of a jsonl (path) of {messages, answer, task}: messages the conversation "
             "(role system, user, assistant or tool) ending with the reference assistant turn, which the model "
             "does not see (without one the model answers the whole conversation); answer what a reply must give; task "
             "optional: gsm8k or a synthetic task grades by its own rule, no task by match (exact: the reply "
             "equals the answer, whitespace collapsed; numeric: the reply's #### or last number; regex: what "
             "pattern extracts equals it)", {"n": 1, "seed": 0, "max_new_tokens": 1}),
    EvalTask("lm_eval", check_lm_eval, run_lm_eval, {"tasks": REQUIRED, "include": "", "fewshot": -1},
             "lm-evaluation-harness tasks (joined with +) through the adapter; include: a folder of task YAML files "
             "(a built-in task downloads its data from the Hugging Face Hub; offline, use a local task); fewshot -1: "
             "each task's own", {"fewshot": -1}),
)}
ALIASES = {"bits_per_byte": "perplexity", "bpb": "perplexity", "ppl": "perplexity", "mc": "multiple_choice",
           "memorization": "memorisation", "lm-eval": "lm_eval", "lm_eval_harness": "lm_eval"}


def parse_task(spec: str) -> tuple[EvalTask, dict[str, Any]]:
    """``"NAME:K=V,K=V"`` -> (task, arguments with defaults filled and types converted)."""
    name, _, rest = spec.partition(":")
    name = name.strip()
    task = TASKS.get(ALIASES.get(name, name))
    if task is None:
        near = difflib.get_close_matches(name, list(TASKS) + list(ALIASES), n=1, cutoff=0.5)
        hint = f" — did you mean {ALIASES.get(near[0], near[0])!r}?" if near else ""
        raise ConfigError(f"unknown eval task {name!r}{hint} (known: {', '.join(TASKS)})")
    given: dict[str, str] = {}
    for part in re.split(r",(?=\s*\w+=)", rest) if rest.strip() else []:
        key, eq, value = part.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ConfigError(f"eval task {spec!r}: expected NAME:KEY=VALUE[,KEY=VALUE], got {part!r}")
        if key not in task.args:
            near = did_you_mean(key, task.args)
            raise ConfigError(f"eval task {task.name}: unknown argument {key!r}"
                              + (f" — did you mean {near!r}?" if near else "") + f" (known: {', '.join(task.args)})")
        given[key] = value
    args = {}
    for key, default in task.args.items():
        if key not in given:
            if default is REQUIRED:
                raise ConfigError(f"eval task {task.name} needs {key}=... (e.g. {task.name}:{key}=FILE)")
            args[key] = default
            continue
        value = given[key]
        if isinstance(default, int) and not isinstance(default, bool):
            try:
                args[key] = int(value)
            except ValueError:
                raise ConfigError(f"eval task {task.name}: {key}={value!r} is not an integer") from None
            if key in task.least and args[key] < task.least[key]:
                raise ConfigError(f"eval task {task.name}: {key}={args[key]}: expected >= {task.least[key]}")
        else:
            args[key] = value
    return task, args


# ------------------------------------------------------------------------------------------ output
def strict(value: Any) -> Any:
    """JSON-ready with NaN / inf as null (strict JSON), tuples as lists, numpy scalars as numbers."""
    if isinstance(value, dict):
        return {str(k): strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v) for v in value]
    if hasattr(value, "item") and callable(value.item):   # numpy scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: pathlib.Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(strict(obj), indent=1, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def table(results: list[dict]) -> str:
    rows = [(r["task"], key, value) for r in results
            for key, value in [*r["metrics"].items(), ("seconds", r["seconds"])]
            if isinstance(value, (int, float)) and not isinstance(value, bool)]
    w1, w2 = max([4] + [len(a) for a, _, _ in rows]), max([6] + [len(b) for _, b, _ in rows])
    lines = [f"{'task':<{w1}}  {'metric':<{w2}}  value", f"{'-' * w1}  {'-' * w2}  -----"]
    for task, key, value in rows:
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        lines.append(f"{task:<{w1}}  {key:<{w2}}  {shown}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ command
def add_eval_parser(sub) -> None:
    keys = "\n".join(f"  {t.name}: {', '.join(_show(t, k) for k in t.args)}\n      {t.help}" for t in TASKS.values())
    ev = sub.add_parser("eval", help="evaluate a run or model folder on named tasks",
                        description=f"{__doc__.split(chr(10) + 'This is the registry')[0]}\ntasks and their arguments:\n{keys}",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    ev.add_argument("source", metavar="SOURCE", help="a run folder, a model folder or a transformers folder")
    ev.add_argument("tasks", nargs="+", metavar="TASK", help="NAME or NAME:KEY=VALUE,...")
    ev.add_argument("--limit", type=int, help="the first N items of each task (perplexity: N windows)")
    ev.add_argument("--out", help="write every task's result into this one JSON file (a new file: an existing "
                                  "one is refused)")
    ev.add_argument("--text", help="the text file of perplexity (same as perplexity:path=FILE; a perplexity task's "
                                   "own path wins)")
    ev.add_argument("--batch-size", type=int, default=16,
                    help="rows per log-likelihood batch and prompts per generation call (default 16)")
    ev.set_defaults(handler=eval_cmd, compiles=True)


def _show(task: EvalTask, key: str) -> str:
    value = task.args[key]
    shown = f"{key}={'REQUIRED' if value is REQUIRED else repr(value)}"
    return f"{shown} (>= {task.least[key]})" if key in task.least else shown


def check_writable(folder: pathlib.Path) -> None:
    """Refuses, in one line suggesting ``--out``, a results folder (``SOURCE/eval``) that is a file or cannot
    be created or written (a read-only model store, a shared cache): said before the model loads, not
    after every task ran. A folder made only to try it is removed again."""
    import tempfile   # pylint: disable=import-outside-toplevel

    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder} is a file, not a folder for the results; give --out FILE")
    made = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise ConfigError(f"{folder} cannot be written ({e.strerror or e}); give --out FILE") from None
    finally:
        if made and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def eval_cmd(args: argparse.Namespace) -> int:
    """Runs each task on SOURCE; prints a table and writes JSON (module docstring)."""
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {args.limit}")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    tasks = [(spec, *parse_task(spec)) for spec in args.tasks]   # every spec checked before anything loads
    names = [t.name for _, t, _ in tasks]
    if args.out is None and len(set(names)) < len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise ConfigError(f"task {twice!r} is given twice: its results would share {twice}.json; use --out FILE")
    if args.out is not None and pathlib.Path(args.out).exists():
        raise ConfigError(f"--out {args.out} exists; choose a new file (nothing is overwritten)")
    if args.out is not None:   # where the file will go must be a folder (or become one): said before any work
        blocking = next((d for d in pathlib.Path(args.out).absolute().parents if d.exists()), None)
        if blocking is not None and not blocking.is_dir():
            raise ConfigError(f"--out {args.out}: {blocking} is a file, not a folder")
    if args.text is not None:   # an option no task reads is said, not silently dropped
        readers = [a for _, t, a in tasks if t.name == "perplexity"]
        if not readers:
            print(f"eval: note: --text {args.text} is not read: only perplexity reads it, and no perplexity task is "
                  f"given", file=sys.stderr, flush=True)
        elif all(a["path"] for a in readers):
            print(f"eval: note: --text {args.text} is not read: perplexity:path={readers[0]['path']} is given and "
                  f"wins", file=sys.stderr, flush=True)
    ctx = EvalContext(pathlib.Path(args.source), limit=args.limit, batch=args.batch_size, text=args.text)
    if args.out is None:
        check_writable(ctx.source / "eval")
    checked = [task.check(ctx, **task_args) for _, task, task_args in tasks]   # every task's inputs, before any runs
    results = []
    try:
        for (spec, task, task_args), inputs in zip(tasks, checked):
            print(f"eval: {spec}", file=sys.stderr, flush=True)
            start = time.perf_counter()
            out = task.runner(ctx, **inputs)
            result = {"task": task.name, "spec": spec, "args": task_args, "source": str(ctx.source), "step": ctx.step,
                      "limit": args.limit, "seconds": round(time.perf_counter() - start, 3), **out}
            results.append(result)
            if args.out is None:
                from lmforge.train.metrics import keep_previous   # pylint: disable=import-outside-toplevel

                path = ctx.source / "eval" / f"{task.name}.json"
                kept = keep_previous(path)
                write_json(path, result)
                print(f"eval: {task.name} -> {path}" + (f" (the previous one kept as {kept.name})" if kept else ""),
                      file=sys.stderr, flush=True)
            else:   # rewritten (atomically) after each task: a later task's failure keeps the finished ones
                write_json(pathlib.Path(args.out), {"source": str(ctx.source), "step": ctx.step, "results": results})
    except BaseException:
        if args.out is not None and results:
            print(f"eval: the {len(results)} finished task(s) are in {args.out}", file=sys.stderr, flush=True)
        raise
    if args.out is not None:
        print(f"eval: -> {args.out}", file=sys.stderr, flush=True)
    print(table(results))
    return 0
