"""The evaluation tasks of ``lmforge eval`` (``cli/eval_cmd.py``), by name: ``TASKS`` maps a name to a
check, which reads and checks the task's files and arguments without the model (every spec's check runs
before the first task does) and returns the runner's keyword arguments, and a runner, which evaluates
the loaded model on them by calling the library function directly (DESIGN.md: registries only at the
edge). :func:`parse_task` reads ``NAME:KEY=VALUE,...``.
"""

from __future__ import annotations

import dataclasses
import difflib
import pathlib
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, did_you_mean

if TYPE_CHECKING:
    from .eval_cmd import EvalContext

REQUIRED = object()   # a task argument without a default


@dataclasses.dataclass(frozen=True)
class EvalTask:
    name: str
    check: Callable[..., dict]        # check(ctx, **args) -> the runner's keyword arguments, without the model
    runner: Callable[..., dict]       # runner(ctx, **checked) -> {"metrics": {...}, "samples": [...]}
    args: dict[str, Any]              # argument -> default (REQUIRED: must be given); the default's type is the type
    help: str
    least: dict[str, int] = dataclasses.field(default_factory=dict)   # integer argument -> its smallest value



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
    if prefix + suffix > ctx.max_seq_len:   # past it the suffix would be read off a cropped prefix (windowed)
        raise ConfigError(f"memorisation: prefix={prefix} + suffix={suffix} = {prefix + suffix} tokens: expected at "
                          f"most max_seq_len={ctx.max_seq_len} (the context of {ctx.source}), so that every suffix "
                          f"token is predicted from the whole prefix")
    n = min(n, ctx.limit) if ctx.limit else n
    return {"docs": docs, "n": n, "prefix": prefix, "suffix": suffix, "seed": seed}


def run_memorisation(ctx: EvalContext, docs: list, n: int, prefix: int, suffix: int, seed: int) -> dict:
    from lmforge.eval import memorisation   # pylint: disable=import-outside-toplevel

    return memorisation(ctx.sampler, docs, n=n, prefix=prefix, suffix=suffix, seed=seed, batch=ctx.batch,
                        progress=True)


# The synthetic tasks' options a chat task takes as arguments (lmforge.data.synthetic.OPTIONS: those of the
# tasks with answers; tested to match). Listed, not imported: importing lmforge.data.synthetic loads JAX.
SYNTHETIC_OPTIONS = ("min_ops", "max_ops", "max_value", "max_digits", "name", "maker", "system_prob")


def run_synthetic_options(ctx: EvalContext) -> tuple[dict[str, Any], pathlib.Path | None]:
    """The ``synthetic_options`` of the run being evaluated (SFT, GRPO and PPO configs keep them as
    (option, value) pairs) and its ``config.json``; ``({}, None)`` for a model folder or a run without them."""
    from .eval_cmd import is_run_folder   # pylint: disable=import-outside-toplevel
    from .launch import CONFIG_FILE   # pylint: disable=import-outside-toplevel

    if not is_run_folder(ctx.source):
        return {}, None
    from .config_io import load_config   # pylint: disable=import-outside-toplevel

    config_file = ctx.source / CONFIG_FILE
    return dict(getattr(load_config(config_file), "synthetic_options", ())), config_file


def synthetic_options(ctx: EvalContext, names: list[str], given: dict[str, str]) -> dict[str, Any]:
    """The options the synthetic tasks ``names`` are drawn with: the run's ``synthetic_options`` that one of
    them reads (a model trained as "Zed" is asked and graded as Zed, not as the default "Forge"), with the
    ``given`` task arguments over them; a note on stderr names those taken from the run. Raises ConfigError
    for a given option no task drawn reads, or a value ``lmforge.data.synthetic`` refuses."""
    import sys   # pylint: disable=import-outside-toplevel

    from lmforge.data import synthetic   # pylint: disable=import-outside-toplevel

    def read(option: str) -> bool:
        return option in synthetic.OPTIONS and any(t in synthetic.OPTIONS[option][0] for t in names)

    for key, value in given.items():
        if not read(key):
            raise ConfigError(f"chat: {key}={value!r} is an option of {', '.join(synthetic.OPTIONS[key][0])}; no task "
                              f"of tasks={'+'.join(names)} reads it")
    from_run, config_file = run_synthetic_options(ctx)
    taken = {k: v for k, v in from_run.items() if read(k) and k not in given}
    options = {**taken, **given}
    try:
        synthetic.check_options(names, options)
    except ValueError as e:
        raise ConfigError(f"chat: {e}" + (f" (synthetic_options of {config_file})" if taken else "")) from None
    options = {k: synthetic.OPTIONS[k][1](v) for k, v in options.items()}   # checked: "4" -> 4, as drawn
    over = [f"{k}={v!r} given over its {from_run[k]!r}" for k, v in given.items() if k in from_run and read(k)]
    if taken or over:
        print(f"eval: note: chat: synthetic options from {config_file}: "
              + ", ".join([*(f"{k}={v!r}" for k, v in taken.items()), *over]), file=sys.stderr, flush=True)
    return options


def check_tools(items: list[dict], tools: list[str], drawn: bool) -> None:
    """Refuses items answered through a tool that ``tools`` lacks (a tool-use conversation, as the synthetic
    ``calculator`` task writes it: graded without the tool-call loop, the reply is the call itself, never
    the answer), naming the task (``drawn``: synthetic items) or the file line."""
    from lmforge.eval.chat import reference_tools   # pylint: disable=import-outside-toplevel
    from lmforge.infer.tools import TOOLS   # pylint: disable=import-outside-toplevel

    for it in items:
        needed = reference_tools(it["messages"])
        missing = [t for t in needed if t not in tools]
        if not missing:
            continue
        what = f"chat: task {it['task']}" if drawn else it["where"]
        if any(t not in TOOLS for t in missing):
            unknown = next(t for t in missing if t not in TOOLS)
            raise ConfigError(f"{what} is answered through the {unknown} tool, which lmforge eval does not have "
                              f"(its tools: {', '.join(TOOLS)})")
        raise ConfigError(f"{what} is answered through the {' and '.join(missing)} tool; add "
                          f"tools={'+'.join(dict.fromkeys([*tools, *needed]))}")


def check_chat(ctx: EvalContext, tasks: str, path: str, n: int, seed: int, max_new_tokens: int, match: str,
               pattern: str, tools: str, **options: str) -> dict:
    """The items of a chat task: the test split of synthetic tasks, or the first ``n`` records of a chat
    file (path; any format ``lmforge.align.sft.read_file`` reads: OpenAI ``messages``, TRL ``prompt`` /
    ``completion``, ShareGPT, Alpaca, GSM8K, ...) with an ``answer`` column and an optional ``task``
    one, so the file SFT, GRPO or PPO trains on evaluates too. A file's conversation either ends with a
    reference assistant turn, which the model does not see, or is asked as it is; an item's task names
    its grader (``align.sft.grade``), and items without one are graded by ``match``
    (``eval.chat.GENERIC``). Every item is checked (file:line).

    Synthetic tasks are drawn with the run's ``synthetic_options`` and the ``options`` given
    (:func:`synthetic_options`). ``tools`` (names of ``lmforge.infer.tools.TOOLS`` joined with +) sends
    each reply through the tool-call loop, as SFT's ``eval_tools`` does; an item answered through a tool
    not given is refused (:func:`check_tools`)."""
    from lmforge.align.sft import check_graded, grade, read_file   # pylint: disable=import-outside-toplevel
    from lmforge.data import synthetic   # pylint: disable=import-outside-toplevel
    from lmforge.eval.chat import with_generic   # pylint: disable=import-outside-toplevel
    from lmforge.eval.generation import matcher   # pylint: disable=import-outside-toplevel
    from lmforge.infer.tools import tools_by_name   # pylint: disable=import-outside-toplevel

    try:
        grade = with_generic(grade, matcher(match, pattern or None))   # argument mistakes before the model loads
    except ValueError as e:
        raise ConfigError(f"chat: {e}") from None
    tool_names = [t for t in tools.split("+") if t]
    try:
        tools_by_name(tool_names)
    except ValueError as e:
        raise ConfigError(f"chat: tools={tools!r}: {e} (joined with +)") from None
    given = {k: v for k, v in options.items() if v != ""}
    if path and tasks:
        raise ConfigError(f"chat: tasks={tasks} and path= are both given; a file's items name their own task "
                          f"(drop tasks=)")
    if path and given:
        raise ConfigError(f"chat: {', '.join(f'{k}={v!r}' for k, v in given.items())} set synthetic tasks' options, "
                          f"but path= items are read, not drawn (drop them)")
    n = min(n, ctx.limit) if ctx.limit else n
    drawn = {}
    if path:
        items = []
        try:
            records = read_file(str(_path(path, "chat")), "auto")   # any chat format, GSM8K too, with its columns
        except ValueError as e:
            raise ConfigError(str(e)) from None
        for it in records[:n]:
            where, messages, answer = it["where"], it["messages"], it["answer"]
            if answer is None:
                raise ConfigError(f"{where}: no 'answer'; expected each item to carry the answer a reply must give")
            if (why := check_graded(it, match, "match")) is not None:
                raise ConfigError(why)
            if messages[-1]["role"] == "assistant":   # the reference turn, which the prompt leaves out
                if len(messages) == 1:
                    raise ConfigError(f"{where}: the conversation is only an assistant turn; expected the messages "
                                      f"the model is asked (a user turn) before the reference assistant turn")
            else:   # asked as it is: the answer stands in for the reference turn eval.chat.prompt_messages drops
                messages = [*messages, {"role": "assistant", "content": answer}]
            items.append({**it, "messages": messages})
        if not items:
            raise ConfigError(f"{path}: holds no items")
    else:
        names = [t for t in (tasks or "arithmetic").split("+") if t]
        unknown = [t for t in names if t not in synthetic.VERIFIABLE]
        if unknown or not names:
            raise ConfigError(f"chat: tasks={tasks!r}; expected synthetic tasks with answers joined with + "
                              f"({', '.join(synthetic.VERIFIABLE)})")
        drawn = {"synthetic_options": synthetic_options(ctx, names, given)}
        items = synthetic.mixture({t: 1.0 for t in names}, n, split="test", seed=seed, **drawn["synthetic_options"])
    check_tools(items, tool_names, drawn=not path)
    return {"items": items, "grade": grade, "seed": seed, "max_new_tokens": max_new_tokens, "tools": tool_names,
            **drawn}


def run_chat(ctx: EvalContext, items: list, grade: Callable, seed: int, max_new_tokens: int, tools: list[str],
             synthetic_options: dict | None = None) -> dict:
    """Greedy replies through the model's chat template, graded (:func:`check_chat`); with ``tools``, each
    through the tool-call loop (``lmforge.eval.chat.chat_accuracy``, the code SFT's ``eval_tools`` runs),
    the metrics adding ``tool_calls`` and ``tool_errors``. The options synthetic items were drawn with are
    kept in the result (``synthetic_options``)."""
    from lmforge.data import chat_template_for   # pylint: disable=import-outside-toplevel
    from lmforge.eval.chat import chat_accuracy   # pylint: disable=import-outside-toplevel
    from lmforge.infer import SamplingConfig   # pylint: disable=import-outside-toplevel
    from lmforge.infer.tools import tools_by_name   # pylint: disable=import-outside-toplevel

    sampler = ctx.sampler
    out = chat_accuracy(sampler, chat_template_for(sampler.tok), items, grade,
                        sampling=SamplingConfig(max_new_tokens=max_new_tokens, temperature=0.0), seed=seed,
                        batch=ctx.batch, progress=True, tools=tools_by_name(tools))
    return out if synthetic_options is None else {**out, "synthetic_options": synthetic_options}


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
                                            "match": "auto", "pattern": "", "tools": "",
                                            **{k: "" for k in SYNTHETIC_OPTIONS}},
             "greedy chat replies graded against answers: n items of the test split of synthetic tasks (joined "
             "with +; default arithmetic), or the first n records of a chat file (path: OpenAI messages, TRL prompt/"
             "completion, ShareGPT, Alpaca or GSM8K, as SFT / GRPO / PPO read it) with an answer column and an "
             "optional task column: the conversation ends with the reference assistant turn, which the model "
             "does not see (without one the model answers the whole conversation); answer what a reply must give; task "
             "optional: gsm8k or a synthetic task grades by its own rule, no task by match (auto: numeric for an "
             "answer that is a number, else exact; exact: the reply equals the answer, whitespace collapsed; "
             "numeric: the reply's #### or last number; regex: what pattern extracts equals it); tools: tools "
             "joined with + (calculator, python) each reply goes through, as SFT's eval_tools, adding tool_calls "
             "and tool_errors (needed by items answered through a tool: tasks=calculator needs tools=calculator); "
             "min_ops, max_ops, max_value (arithmetic), max_digits (calculator), name, maker, system_prob "
             "(identity): the synthetic tasks' options, '' → the run's synthetic_options "
             "(a note names them), else the task's default", {"n": 1, "seed": 0, "max_new_tokens": 1}),
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
        raise ConfigError(f"unknown eval task {name!r}{hint} (known: {', '.join(TASKS)}; also "
                          f"{', '.join(f'{a} = {t}' for a, t in ALIASES.items())})")
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
        if key in given:
            raise ConfigError(f"eval task {task.name}: {key} is given twice ({key}={given[key]!r}, {key}={value!r}); "
                              f"expected it once")
        given[key] = value
    args = {}
    for key, default in task.args.items():
        if key not in given:
            if default is REQUIRED:
                example = "hellaswag+arc_easy" if task.name == "lm_eval" and key == "tasks" else "FILE"
                raise ConfigError(f"eval task {task.name} needs {key}=... (e.g. {task.name}:{key}={example})")
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
