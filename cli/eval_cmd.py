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

This is the registry of evaluation tasks (DESIGN.md: registries only at the edge): ``TASKS``
(``cli/eval_tasks.py``) maps a name to a check of its arguments and a runner that calls the library
function directly.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import pathlib
import sys
import time
from typing import Any

from .errors import ConfigError
from .eval_tasks import REQUIRED, TASKS, EvalTask, parse_task, stop_strings  # noqa: F401 (re-exported)
from .launch import CONFIG_FILE, checkpoint_steps

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
        from lmforge.train.documents import data_splits   # pylint: disable=import-outside-toplevel

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
    """A model folder or transformers folder on a data-parallel mesh over every device. A T5's encoder
    inputs end with EOS: T5 was pretrained and fine-tuned so (transformers' T5 tokenizer appends ``</s>``;
    lmforge's span corruption ends its inputs so too), and without it a transformers T5 generates
    something else. (The original Transformer's ``reverse`` objective ends none.)"""
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
    return Sampler(loaded.graphdef, loaded.params, tok, loaded.cfg, mesh, mesh_cfg.rules, step=loaded.step,
                   encoder_eos=loaded.cfg.family == "t5" and tok.eos_id >= 0)


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


def check_out(path: pathlib.Path) -> None:
    """Refuses, in one line naming ``--out``, a results file whose folder cannot be made or written: a
    trial file beside it (what :func:`write_json` writes first) is created and removed before any work."""
    trial = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        trial.write_text("")
        trial.unlink()
    except OSError as e:
        raise ConfigError(f"--out {path} cannot be written ({e.strerror or e})") from None


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
        check_out(pathlib.Path(args.out))
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
    results, saved = [], 0
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
                try:
                    write_json(pathlib.Path(args.out),
                               {"source": str(ctx.source), "step": ctx.step, "results": results})
                except OSError as e:
                    raise ConfigError(f"--out {args.out} cannot be written ({e.strerror or e})") from None
                saved = len(results)
    except BaseException:
        if args.out is not None and saved:
            print(f"eval: the {saved} finished task(s) are in {args.out}", file=sys.stderr, flush=True)
        raise
    if args.out is not None:
        print(f"eval: -> {args.out}", file=sys.stderr, flush=True)
    print(table(results))
    return 0
