"""The ``lmforge`` command: run, sweep, sample and train tokenizers from the shell.

    lmforge run experiments/pretrain/gpt2_small.py:smoke model.num_layers=4 optim.lr=3e-4
    lmforge sweep experiments/pretrain/gpt2_small.py "optim.lr=[1e-3,3e-4]" "model.num_layers=[2,4]"
    lmforge sample runs/gpt2_small-smoke-20250101-120000 --prompt "Once upon a time"
    lmforge chat runs/sft-20250101-120000 --system "You are a helpful assistant."   # streaming, multi-turn
    lmforge serve runs/sft-20250101-120000 --port 8000   # OpenAI-compatible: /v1/chat/completions, /v1/completions
    lmforge tokenizer train --source-kind text --path corpus.txt --vocab-size 4096 --out tok/
    lmforge tokenizer show chat.jsonl --tokenizer runs/gpt2_small-smoke-20250101-120000   # tokens, ids, loss mask
    lmforge convert hf_gpt2/ gpt2_lmforge/          # transformers folder <-> lmforge (run or model folder)
    lmforge eval runs/gpt2_small-smoke-20250101-120000 perplexity gsm8k --text valid.txt --limit 100
    lmforge plan --preset llama3_70b mesh.fsdp=64 mesh.tensor=8 data.batch_size=512   # memory, FLOPs, step time

A user's mistake (unknown key, wrong type, missing file, a run folder holding another config, bad
data) prints ``lmforge: error: <one line>`` on stderr and exits 2; ``lmforge --traceback ...``
shows the traceback instead. Anything else is a bug and keeps its traceback. A sweep in which
some point failed exits 1 after writing its summary.

Everything heavy (jax, the task packages, matplotlib) is imported by the subcommand that needs it,
so ``lmforge --help`` and argument errors are instant. The commands that compile (run, sweep,
sample, chat, serve, eval) turn on JAX's persistent compilation cache first
(``lmforge.train.compile_cache``: ``~/.cache/lmforge/xla``; ``LMFORGE_COMPILATION_CACHE=off|DIR``).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from collections.abc import Sequence

from .bindings import apply_bindings, axis_bindings, flatten, format_value, non_default, split_binding, split_sweep
from .convert_cmd import add_convert_parser
from .data_cmd import add_data_parser
from .eval_cmd import add_eval_parser
from .plan_cmd import add_plan_parser
from .tokenizer_cmd import add_show_parser
from .errors import ConfigError, one_line
from .experiment import experiment_config, experiment_sweep, load_experiment, split_spec
from .launch import default_workdir, launch, strict_json
from .registry import task_for
from .typecheck import check_flag

USER_ERROR = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    try:
        # Bindings (and eval's tasks) may also come after options (`run EXP.py --workdir D optim.lr=1e-3`,
        # `eval RUN gsm8k --limit 50 refusal`): argparse leaves such late positionals unparsed, so collect them here.
        args, extra = parser.parse_known_args(argv)
        late = [a for a in extra if not a.startswith("-")]
        into = "bindings" if hasattr(args, "bindings") else "tasks" if getattr(args, "command", None) == "eval" else None
        if extra and (len(late) != len(extra) or into is None):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        if late:
            setattr(args, into, list(getattr(args, into)) + late)
    except SystemExit as e:  # argparse has printed usage; hand back its status instead of exiting
        return e.code if isinstance(e.code, int) else USER_ERROR
    try:
        if getattr(args, "compiles", False):   # a command that compiles: JAX's persistent cache first
            from lmforge.train.compile_cache import use_compilation_cache
            use_compilation_cache()
        return args.handler(args)
    except FileNotFoundError as e:
        if args.traceback:
            raise
        what = f"no such file or directory: {e.filename}" if e.filename else one_line(e)
        print(f"lmforge: error: {what}", file=sys.stderr)
        return USER_ERROR
    except (ValueError, FloatingPointError) as e:  # ConfigError, bad input, the non-finite-update policy
        if args.traceback:
            raise
        print(f"lmforge: error: {one_line(e)}", file=sys.stderr)
        return USER_ERROR
    except Exception as e:
        stopped = _stopped(e)
        if stopped is None or args.traceback:
            raise
        return stopped
    except KeyboardInterrupt:
        if args.traceback:
            raise
        print("lmforge: interrupted", file=sys.stderr)
        return 130  # the shell's convention for SIGINT


def _stopped(e: Exception) -> int | None:
    """A run stopped on purpose (SIGTERM / Ctrl-C, after saving) or an unusable checkpoint: one line and
    its exit status; None for anything else (a bug keeps its traceback)."""
    from lmforge.train.trainer import Preempted
    from lmforge.weights import CheckpointError

    if isinstance(e, Preempted):
        print(f"lmforge: {e}", file=sys.stderr)
        return 128 + int(e.signum)
    if isinstance(e, CheckpointError):
        print(f"lmforge: error: {one_line(e)}", file=sys.stderr)
        return USER_ERROR
    return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmforge", description="Train and use language models with lmforge.")
    parser.add_argument("--traceback", action="store_true",
                        help="show the full traceback for user errors too (for debugging)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run one experiment", description=_run_cmd.__doc__)
    run.add_argument("experiment", metavar="EXP.py[:VARIANT]")
    # default=[]: argparse counts a nargs="*" positional without a default as required in its error message
    run.add_argument("bindings", nargs="*", default=[], metavar="KEY=VALUE", help="overrides, e.g. optim.lr=3e-4")
    run.add_argument("--workdir", help="run folder (default: a new folder under runs/); an existing one resumes")
    run.add_argument("--print-config", action="store_true",
                     help="print every key of the resolved config (as KEY=VALUE) and exit without running")
    run.set_defaults(handler=_run_cmd, compiles=True)

    sweep = sub.add_parser("sweep", help="run a grid of bindings", description=_sweep_cmd.__doc__)
    sweep.add_argument("experiment", metavar="EXP.py[:VARIANT]")
    sweep.add_argument("bindings", nargs="*", default=[], metavar="KEY=VALUE",
                       help='fixed bindings and sweep axes, e.g. "optim.lr=[1e-3,3e-4]"')
    sweep.add_argument("--workdir", help="sweep folder (default: a new folder under runs/)")
    sweep.set_defaults(handler=_sweep_cmd, compiles=True)

    sample = sub.add_parser("sample", help="continue prompts with a trained run", description=_sample_cmd.__doc__)
    sample.add_argument("run_dir", metavar="RUN_DIR",
                        help="a run folder, an lmforge model folder or a transformers folder")
    sample.add_argument("--prompt", action="append", required=True, help="a prompt (repeat for several)")
    sample.add_argument("--max-new-tokens", type=int, default=200, help="tokens generated at most (default: 200)")
    sample.add_argument("--temperature", type=float, default=0.8, help="0 → greedy (default: 0.8)")
    sample.add_argument("--top-k", type=int, default=0, help="0 → off (default: 0)")
    sample.add_argument("--top-p", type=float, default=1.0, help="1.0 → off (default: 1.0)")
    sample.add_argument("--seed", type=int, default=0, help="the sampling seed (default: 0)")
    sample.set_defaults(handler=_sample_cmd, compiles=True)

    chat = sub.add_parser("chat", help="talk with a model in the terminal (streaming, multi-turn)",
                          description=_chat_cmd.__doc__)
    chat.add_argument("run_dir", metavar="RUN_DIR", help="a run folder, an lmforge model folder or a transformers folder")
    chat.add_argument("--system", help="the system prompt (change it in the chat with /system TEXT)")
    chat.add_argument("--temperature", type=float, default=0.7, help="0 → greedy")
    chat.add_argument("--top-k", type=int, default=0, help="0 → off")
    chat.add_argument("--top-p", type=float, default=0.95, help="1.0 → off")
    chat.add_argument("--max-new-tokens", type=int, default=256, help="per reply (at most half the model's context)")
    chat.add_argument("--seed", type=int, default=0)
    chat.add_argument("--tools", default="", help="tools the model may call, joined with + (calculator, python): "
                                                  "its calls run and the results go back to it")
    chat.add_argument("--tool-schemas", action=argparse.BooleanOptionalAction, default=None,
                      help="show the tools' schemas in the prompt (default: yes for an imported chat template, as "
                           "instruct models are trained; no for lmforge's format, which sft_tools.py trains without)")
    chat.set_defaults(handler=_chat_cmd, compiles=True)

    serve = sub.add_parser("serve", help="serve a model over OpenAI's HTTP API (chat and text completions, streaming)",
                           description=_serve_cmd.__doc__)
    serve.add_argument("run_dir", metavar="RUN_DIR", help="a run folder, an lmforge model folder or a transformers folder")
    serve.add_argument("--host", default="127.0.0.1", help="the address to listen on (0.0.0.0: every interface)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--served-model-name", help="the name clients pass as `model` (default: the folder's name)")
    serve.add_argument("--max-batch", type=int, default=16,
                       help="rows (prompts x n) one sampler call takes from the queued requests")
    serve.add_argument("--batch-wait-ms", type=float, default=5.0,
                       help="how long a call waits for more requests to join it after the first")
    serve.add_argument("--default-max-tokens", type=int, default=256,
                       help="a chat reply's limit when the request gives no max_tokens (text completions default "
                            "to 16, as OpenAI's); at most the context left")
    serve.add_argument("--dtype", help="cast floating-point parameters, e.g. bfloat16 (default: as stored)")
    serve.set_defaults(handler=_serve_cmd, compiles=True)

    tokenizer = sub.add_parser("tokenizer", help="tokenizer tools")
    tok_sub = tokenizer.add_subparsers(dest="tokenizer_command", required=True, metavar="ACTION")
    train = tok_sub.add_parser("train", help="train a tokenizer on a text source",
                               description=_tokenizer_train_cmd.__doc__)
    train.add_argument("--source-kind", default="text",
                       help="text (each file one document; a .jsonl/.json/.parquet path is refused) | jsonl (one "
                            "document per line, or per item of a .json array) | curated (a `lmforge data curate` "
                            "workdir) | python_docs (default: text)")
    train.add_argument("--path", default="", help="file or glob to read (text/jsonl), or a curation workdir (curated)")
    train.add_argument("--text-field", default="text", help="jsonl: the field holding each document (default: text)")
    train.add_argument("--on-bad-line", default="fail", choices=("fail", "skip"),
                       help="jsonl: a malformed line fails naming file:line, or is skipped and counted")
    train.add_argument("--vocab-size", type=int,
                       help="vocabulary size (sentencepiece; default: the TokenizerConfig default)")
    train.add_argument("--kind", choices=("sentencepiece", "char"), default="sentencepiece")
    train.add_argument("--val-fraction", type=float, default=0.1, help="held out for the compression report")
    train.add_argument("--out", required=True, help="folder to write the tokenizer into")
    train.set_defaults(handler=_tokenizer_train_cmd)
    add_show_parser(tok_sub)

    add_data_parser(sub)
    add_convert_parser(sub)
    add_eval_parser(sub)
    add_plan_parser(sub)
    return parser


def _run_cmd(args: argparse.Namespace) -> int:
    """Run one experiment: load it, apply the bindings, write WORKDIR/config.json, train.

    Prints the keys that differ from the config classes' defaults, the workdir, and at the end the
    final metrics as one JSON line. Re-running into an existing workdir resumes it, but only with
    an identical config, or the same with a larger steps= (which continues it from its latest
    checkpoint); a different one is refused and nothing is touched, unless the folder holds no
    checkpoint yet (a run that failed early): then its config is replaced and
    what the failed attempt left is moved into replaced-<time>/.
    With --print-config, prints every key of the resolved config and exits without running.
    """
    module, variant = load_experiment(args.experiment)
    config = apply_bindings(experiment_config(module, variant), args.bindings)
    if args.print_config:
        flat = flatten(config)
        print(f"# {module.__file__}:{variant}: {type(config).__module__}.{type(config).__qualname__}, "
              f"{len(flat)} keys")
        for key, value in flat.items():
            print(f"{key}={format_value(value, key)}")
        return 0
    task = task_for(config)
    workdir = pathlib.Path(args.workdir) if args.workdir else default_workdir(split_spec(args.experiment)[0], variant)
    print(f"experiment: {module.__file__}:{variant}  (task {task.name})")
    _print_config(config)
    print(f"workdir: {workdir}", flush=True)
    metrics = launch(config, workdir)
    print(strict_json(metrics, sort_keys=True))
    return 0


def _sweep_cmd(args: argparse.Namespace) -> int:
    """Run the grid of list-valued bindings, or the experiment's sweep() if none is given.

    Each point runs in WORKDIR/<swept values> exactly like `lmforge run`; WORKDIR gets
    summary.md, summary.csv and summary.png. Exits 1 if any point failed.
    """
    from .sweep import plan_sweep, run_sweep  # matplotlib comes with it

    module, variant = load_experiment(args.experiment)
    config = experiment_config(module, variant)
    bindings = list(args.bindings)
    fixed, axes = split_sweep(bindings)
    if not axes:
        default = experiment_sweep(module)
        if not default:
            raise ConfigError(f"no sweep axis given (a binding such as 'optim.lr=[1e-3,3e-4]') and "
                              f"{args.experiment} defines no sweep()")
        fixed_keys = {split_binding(b)[0] for b in fixed}
        # A fixed binding on the command line overrides the experiment's axis for that key.
        bindings = [b for b in axis_bindings(default) if split_binding(b)[0] not in fixed_keys] + fixed
    task = task_for(config)
    keys, points = plan_sweep(bindings)
    workdir = (pathlib.Path(args.workdir) if args.workdir
               else default_workdir(split_spec(args.experiment)[0], variant, suffix="sweep"))
    print(f"experiment: {module.__file__}:{variant}  (task {task.name})")
    print(f"sweep: {len(points)} runs over {', '.join(keys)}")
    print(f"workdir: {workdir}", flush=True)
    points = run_sweep(config, bindings, workdir, log=lambda line: print(line, flush=True))
    failed = [p for p in points if not p.ok]
    print(f"summary: {workdir / 'summary.md'} ({len(points) - len(failed)} ok, {len(failed)} failed)")
    return 1 if failed else 0


def _sample_cmd(args: argparse.Namespace) -> int:
    """Continue each --prompt with RUN_DIR: a `lmforge run` workdir (its latest checkpoint, on the
    run's mesh), an lmforge model folder or a transformers folder, as `lmforge eval` reads them."""
    from .eval_cmd import check_source, load_sampler

    check_flag("--max-new-tokens", args.max_new_tokens, low=1)
    check_flag("--temperature", args.temperature, low=0)
    check_flag("--top-k", args.top_k, low=0)
    check_flag("--top-p", args.top_p, low=0, high=1, low_open=True)
    source = pathlib.Path(args.run_dir)
    kind, config = check_source(source, command="sample")
    from lmforge.infer import SamplingConfig
    from lmforge.infer.text import check_generates
    from lmforge.weights import source_model_config

    try:   # before the weights load: a BERT has nothing to continue text with (a reward model is refused as it loads)
        model_cfg = config.model if kind == "run" and config.init_from == "" else source_model_config(str(source))
    except Exception:   # pylint: disable=broad-except  (unreadable here: the loading below says what is wrong)
        model_cfg = None
    if model_cfg is not None and model_cfg.architecture == "encoder":
        try:
            check_generates(model_cfg, f"lmforge sample {source}")
        except ValueError as e:
            raise ConfigError(str(e)) from None

    sampling = SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                              top_p=args.top_p)
    completions = load_sampler(source, kind, config).complete(list(args.prompt), sampling, seed=args.seed)
    for prompt, completion in zip(args.prompt, completions):
        print(f">>> {prompt}")
        print(completion)
        print()
    return 0


def _chat_cmd(args: argparse.Namespace) -> int:
    """Chat with the model in RUN_DIR (its latest checkpoint), a model folder or a transformers folder.

    Replies stream as they are generated; the conversation is kept across turns (the oldest turns
    are dropped, with a note, when it outgrows the model's context). In the chat: /reset clears the
    conversation, /system TEXT sets the system prompt, /help lists the commands, /quit or Ctrl-D
    leaves, Ctrl-C stops a reply. After each reply a line gives its tokens, the decode rate and the
    prefill time. With --tools, the tool calls a reply makes are run, their results shown and given
    back to the model, which goes on.
    """
    check_flag("--max-new-tokens", args.max_new_tokens, low=1)
    check_flag("--temperature", args.temperature, low=0)
    check_flag("--top-k", args.top_k, low=0)
    check_flag("--top-p", args.top_p, low=0, high=1, low_open=True)
    from lmforge.infer.tools import tools_by_name
    from lmforge.serve import ChatSession, load_chat_model, run_terminal

    try:
        tools = tools_by_name([t for t in args.tools.replace(",", "+").split("+") if t])
    except ValueError as e:
        raise ConfigError(f"--tools {args.tools}: {e}") from None
    model = load_chat_model(args.run_dir)
    session = ChatSession(model, system=args.system, temperature=args.temperature, top_k=args.top_k,
                          top_p=args.top_p, max_new_tokens=args.max_new_tokens, seed=args.seed, tools=tools,
                          tool_schemas=args.tool_schemas)
    return run_terminal(session)


def _serve_cmd(args: argparse.Namespace) -> int:
    """Serve the model in RUN_DIR (its latest checkpoint), a model folder or a transformers folder over
    OpenAI's HTTP API: POST /v1/chat/completions (through the model's chat template) and
    /v1/completions (raw text), GET /v1/models and /health; `"stream": true` answers in server-sent
    events. Any OpenAI client works with base_url http://HOST:PORT/v1. Concurrent requests with the
    same sampling settings share sampler calls (--max-batch rows); a request with a seed runs alone and
    is reproducible. Ctrl-C stops the server.
    """
    check_flag("--port", args.port, low=0, high=65535)
    check_flag("--max-batch", args.max_batch, low=1)
    check_flag("--batch-wait-ms", args.batch_wait_ms, low=0)
    check_flag("--default-max-tokens", args.default_max_tokens, low=1)
    try:
        import fastapi  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
        import uvicorn  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    except ImportError as e:
        raise ConfigError(f"lmforge serve needs FastAPI and uvicorn: pip install 'lmforge[serve]' ({e})") from None
    from lmforge.serve import load_chat_model
    from lmforge.serve.server import run_server

    model = load_chat_model(args.run_dir, dtype=args.dtype)
    print(f"lmforge serve: http://{args.host}:{args.port}/v1, model "
          f"{args.served_model_name or model.source.name!r} ({model.sampler.model_cfg.max_seq_len} tokens of context)",
          file=sys.stderr, flush=True)
    run_server(model, host=args.host, port=args.port, model_name=args.served_model_name, max_batch=args.max_batch,
          batch_wait_ms=args.batch_wait_ms, default_max_tokens=args.default_max_tokens)
    return 0


def _tokenizer_train_cmd(args: argparse.Namespace) -> int:
    """Train a tokenizer on a source and print its compression on a held-out split as JSON."""
    from lmforge.data.sources import SourceConfig, read_documents, split_documents
    from lmforge.data.tokenizer import CHAR_FILE, SP_FILE, TokenizerConfig, compression_report, train_tokenizer

    check_flag("--val-fraction", args.val_fraction, low=0, high=1, low_open=True, high_open=True)
    if args.vocab_size is not None:
        check_flag("--vocab-size", args.vocab_size, low=1)
    out = pathlib.Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; expected a folder for the tokenizer")
    held = [name for name in (SP_FILE, CHAR_FILE) if (out / name).exists()]
    if held:
        raise ConfigError(f"--out {out} already holds a tokenizer ({', '.join(held)}); choose a new folder "
                          f"(a run's model was trained with it: nothing is overwritten)")
    if args.kind == "char" and args.vocab_size is not None:
        raise ConfigError(f"--vocab-size {args.vocab_size} is for --kind sentencepiece; a char vocabulary is the "
                          f"characters of the text")
    if args.source_kind == "python_docs" and args.path:
        raise ConfigError(f"--path {args.path} is not read by --source-kind python_docs (the documentation that ships "
                          f"with Python); give --source-kind text, jsonl or curated to read it")
    if args.source_kind != "jsonl" and (args.text_field != "text" or args.on_bad_line != "fail"):
        raise ConfigError(f"--text-field / --on-bad-line are for --source-kind jsonl, not {args.source_kind}")
    try:
        source = SourceConfig(kind=args.source_kind, path=args.path, text_field=args.text_field,
                              on_bad_line=args.on_bad_line)
    except ValueError as e:
        raise ConfigError(f"--source-kind: {e}") from None
    docs = read_documents(source)
    if not docs:
        raise ConfigError(f"source {args.source_kind} {args.path!r} holds no documents")
    train_docs, val_docs = split_documents(docs, args.val_fraction)
    if not train_docs or not val_docs:
        raise ConfigError(f"source {args.path!r} is too small to hold out {args.val_fraction:.0%} for the report")
    overrides = {"kind": args.kind}
    if args.vocab_size is not None:
        overrides["vocab_size"] = args.vocab_size
    # held_out: a char vocabulary covers the held-out characters too (nanoGPT's, from the whole text)
    tok = train_tokenizer(TokenizerConfig(**overrides), train_docs, out, held_out=val_docs)
    report = compression_report(tok, val_docs)
    print(json.dumps({"held_out_documents": len(val_docs), **report}, indent=2, sort_keys=True))
    return 0


def _print_config(config) -> None:
    changed = non_default(config)
    print(f"config: {type(config).__qualname__}" + (", non-default keys:" if changed else " (all defaults)"))
    for key, value in changed.items():
        print(f"  {key} = {value!r}")


def console_main(argv: Sequence[str] | None = None) -> int:
    """The ``lmforge`` console script: :func:`main`, then ``gc.freeze()`` so the interpreter's exit
    does not walk every object of jax, flax and orbax once more looking for garbage cycles (a process
    that only imported flax.nnx: exit 1.56 → 0.22 s on the 2-core CPU; a whole run's exit: 0.2 s in
    ``benchmarks/fixed_cost.py``). Only for a process that ends here: a program calling :func:`main`
    repeatedly keeps its garbage collector."""
    import gc

    status = main(argv)
    gc.freeze()
    return status


if __name__ == "__main__":
    sys.exit(console_main())
