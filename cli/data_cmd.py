"""``lmforge data curate EXP.py[:VARIANT] [KEY=VALUE ...] [--workdir DIR]``: run a curation config.

The experiment's ``get_config()`` returns a ``CurateConfig``; bindings such as
``near_dedup.threshold=0.7 runner=beam`` apply to it as in ``lmforge run``. WORKDIR gets
``config.json``, the shards under ``data/`` and ``report.md`` (funnel plot, top drop reasons,
examples of dropped documents). Bad input (a missing file, a malformed line under
``on_bad_record='fail'``, an unreadable archive) is a one-line ``lmforge: error: ...``.
"""

from __future__ import annotations

import argparse
import json
import pathlib

from .bindings import apply_bindings
from .errors import ConfigError
from .experiment import experiment_config, load_experiment, split_spec
from .launch import default_workdir, launch


def add_data_parser(sub) -> None:
    """Adds ``data`` (with its ``curate`` action) to the top-level subparsers ``sub``."""
    data = sub.add_parser("data", help="data tools (curation)")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    curate = data_sub.add_parser("curate", help="curate documents: filters, dedup, PII, decontamination",
                                 description=_curate_cmd.__doc__)
    curate.add_argument("experiment", metavar="CONFIG.py[:VARIANT]")
    curate.add_argument("bindings", nargs="*", metavar="KEY=VALUE", help="overrides, e.g. near_dedup.threshold=0.7")
    curate.add_argument("--workdir", help="output folder (default: a new folder under runs/)")
    curate.set_defaults(handler=_curate_cmd)


def _curate_cmd(args: argparse.Namespace) -> int:
    """Curate the inputs of a CurateConfig experiment into WORKDIR/data and write WORKDIR/report.md."""
    from lmforge.data.curate import CurateConfig  # pylint: disable=import-outside-toplevel

    module, variant = load_experiment(args.experiment)
    config = apply_bindings(experiment_config(module, variant), args.bindings)
    if not isinstance(config, CurateConfig):
        raise ConfigError(f"{args.experiment}: get_config() returned a {type(config).__qualname__}; "
                          f"`lmforge data curate` needs a lmforge.data.curate.CurateConfig")
    workdir = (pathlib.Path(args.workdir) if args.workdir
               else default_workdir(split_spec(args.experiment)[0], variant, suffix="curate"))
    print(f"experiment: {module.__file__}:{variant}  (curation, runner {config.runner})")
    print(f"workdir: {workdir}", flush=True)
    metrics = launch(config, workdir)
    print(f"report: {workdir / 'report.md'}")
    print(json.dumps(metrics, sort_keys=True))
    return 0
