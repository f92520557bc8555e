"""``lmforge data curate EXP.py[:VARIANT] [KEY=VALUE ...] [--input FILE ...] [--workdir DIR]``.

The experiment's ``get_config()`` returns a ``CurateConfig``; bindings such as
``near_dedup.threshold=0.7 runner=beam`` apply to it as in ``lmforge run``. ``--input a.jsonl
b.parquet`` curates those files (or globs) instead of the experiment's inputs: one input per
argument, its format from the suffix, its source name the file's stem (its path from the inputs'
common folder when two files share a stem: ``2023/data``, ``2024/data``), the other input
settings those of the experiment's first input. For every input: ``--text-field body`` names the
field holding each document in jsonl / JSON / parquet, ``--on-bad-record fail`` stops at the first
malformed record (``skip``, the default, counts it), ``--max-doc-bytes N`` drops and counts longer
documents. ``output.format=jsonl`` writes plain JSON lines to read with ``head``. WORKDIR gets
``config.json``, the shards under ``data/`` and ``report.md`` (funnel plot, top drop reasons,
examples of dropped documents). Bad input (a missing file, an input with no records, a malformed
line under ``--on-bad-record fail``, an unreadable archive) is a one-line ``lmforge: error: ...``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib

from .bindings import apply_bindings, split_binding
from .errors import ConfigError
from .experiment import experiment_config, load_experiment, split_spec
from .launch import default_workdir, launch, strict_json
from .typecheck import check_flag


def add_data_parser(sub) -> None:
    """Adds ``data`` (with its ``curate`` action) to the top-level subparsers ``sub``."""
    data = sub.add_parser("data", help="data tools (curation)")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    curate = data_sub.add_parser("curate", help="curate documents: filters, dedup, PII, decontamination",
                                 description=_curate_cmd.__doc__)
    curate.add_argument("experiment", metavar="CONFIG.py[:VARIANT]")
    curate.add_argument("bindings", nargs="*", default=[], metavar="KEY=VALUE",
                        help="overrides, e.g. near_dedup.threshold=0.7; output.format=jsonl writes plain JSON lines")
    curate.add_argument("--input", nargs="+", action="extend", metavar="FILE",
                        help="files or globs to curate instead of the experiment's inputs (.jsonl[.gz|.zst], "
                             ".json (an array, or JSON lines), .parquet, .txt/.md)")
    curate.add_argument("--text-field", metavar="FIELD",
                        help="the jsonl field / parquet column holding each document, for every input "
                             "(default: the experiment's)")
    curate.add_argument("--on-bad-record", choices=("skip", "fail"),
                        help="a malformed record in any input: skip (count it in the report) or fail "
                             "(stop, naming FILE:LINE) (default: the experiment's)")
    curate.add_argument("--max-doc-bytes", type=int, metavar="N",
                        help="drop (and count) documents longer than N UTF-8 bytes, in every input "
                             "(default: the experiment's)")
    curate.add_argument("--workdir", help="output folder (default: a new folder under runs/)")
    curate.set_defaults(handler=_curate_cmd)


def _curate_cmd(args: argparse.Namespace) -> int:
    """Curate the inputs of a CurateConfig experiment into WORKDIR/data and write WORKDIR/report.md."""
    from lmforge.data.curate import CurateConfig  # pylint: disable=import-outside-toplevel

    module, variant = load_experiment(args.experiment)
    # `--input a.jsonl b.jsonl near_dedup.threshold=0.7`: argparse gives --input the binding too
    late = [a for a in args.input or () if _is_binding(a) and not pathlib.Path(a).exists()]
    args.input = [a for a in args.input or () if a not in late]
    config = apply_bindings(experiment_config(module, variant), [*args.bindings, *late])
    if not isinstance(config, CurateConfig):
        raise ConfigError(f"{args.experiment}: get_config() returned a {type(config).__qualname__}; "
                          f"`lmforge data curate` needs a lmforge.data.curate.CurateConfig")
    if args.input:
        config = dataclasses.replace(config, inputs=command_line_inputs(config.inputs, args.input))
    every_input = {}   # flags that set one field of every input
    if args.text_field is not None:
        if not args.text_field.strip():
            raise ConfigError("--text-field is empty; expected the name of the field holding each document")
        every_input["text_field"] = args.text_field
    if args.on_bad_record is not None:
        every_input["on_bad_record"] = args.on_bad_record
    if args.max_doc_bytes is not None:
        every_input["max_doc_bytes"] = check_flag("--max-doc-bytes", args.max_doc_bytes, low=1)
    if every_input:
        config = dataclasses.replace(config, inputs=tuple(dataclasses.replace(i, **every_input)
                                                          for i in config.inputs))
    workdir = (pathlib.Path(args.workdir) if args.workdir
               else default_workdir(split_spec(args.experiment)[0], variant, suffix="curate"))
    print(f"experiment: {module.__file__}:{variant}  (curation, runner {config.runner})")
    print(f"workdir: {workdir}", flush=True)
    metrics = launch(config, workdir)
    print(f"report: {workdir / 'report.md'}")
    print(strict_json(metrics, sort_keys=True))
    return 0


def command_line_inputs(inputs: tuple, paths: list[str]) -> tuple:
    """One ``InputConfig`` per ``--input`` path: format by suffix, source named by the file's name
    (``document.file_names``: its stem, unique in the run), the other settings those of the
    experiment's first input (or the defaults)."""
    from lmforge.data.curate import InputConfig  # pylint: disable=import-outside-toplevel

    template = inputs[0] if inputs else InputConfig()
    return tuple(dataclasses.replace(template, paths=(p,), format="auto", source="") for p in paths)


def _is_binding(text: str) -> bool:
    try:
        split_binding(text)
    except ConfigError:
        return False
    return True
