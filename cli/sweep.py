"""Run a grid of bindings, one run folder per point, and summarise the final metrics.

``run_sweep(config, ["optim.lr=[1e-3,3e-4]", "model.num_layers=[2,4]"], workdir)`` runs four points
through :func:`lmforge.cli.launch.launch` (the same path as ``lmforge run``), each in
``workdir/<swept values>`` (e.g. ``optim.lr=1e-3,model.num_layers=2``), and writes
``summary.md``, ``summary.csv`` and ``summary.png`` in ``workdir``.

Notable choices:
- Every point's config is built and checked (bindings, types, finiteness, ``__post_init__``)
  before any run starts, by :func:`check_points`. If any point is invalid (an unknown key, a
  wrong type, a combination its ``__post_init__`` rejects, an ``init_from`` its ``check_runnable``
  refuses), the sweep stops with one line naming the point and its error, and runs nothing: a
  grid whose fourth point cannot run should not cost the first three runs' time before saying so.
- A failing run does not stop the sweep: its row says ``failed`` with a one-line error, and the
  full traceback goes to ``<run folder>/error.txt``. The caller exits non-zero if any point failed.
- The tables are rewritten after every point, so a long sweep can be watched and a crashed one
  still leaves its partial results.
- Re-running a sweep into the same workdir resumes each point (same config ⇒ same folder name).
  Another grid into the same workdir leaves the earlier points' folders, says so on one line, and
  rewrites the summaries for its own points.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import math
import pathlib
import re
import traceback
from collections.abc import Callable, Iterable
from typing import Any

from .bindings import apply_bindings, parse_sweep, split_binding, split_sweep
from .errors import ConfigError, one_line
from .launch import check_runnable, finished_run, launch
from .sweep_plot import plot_summary
from .typecheck import nonfinite_keys

_UNSAFE = re.compile(r"[^A-Za-z0-9._,=+-]+")
_MAX_NAME = 120


@dataclasses.dataclass
class SweepPoint:
    """One point of the grid and, once run, its outcome."""

    name: str                       # run folder name under the sweep workdir
    swept: dict[str, str]           # axis key → value text, e.g. {"optim.lr": "1e-3"}
    bindings: list[str]             # every binding applied for this point (fixed ones too)
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    error: str | None = None        # one line; None when the run succeeded (or has not run)

    @property
    def ok(self) -> bool:
        return self.error is None


def point_name(swept: dict[str, str]) -> str:
    """A run folder name from the swept values: ``optim.lr=1e-3,model.num_layers=2``, filesystem-safe.

    Characters other than letters, digits and ``._,=+-`` become ``_``; a name longer than 120
    characters is cut and given a hash of the full name, so distinct points stay distinct.
    """
    full = ",".join(f"{k}={v}" for k, v in swept.items())
    name = _UNSAFE.sub("_", full).strip("._") or "point"
    if len(name) > _MAX_NAME:
        name = f"{name[:_MAX_NAME - 9]}-{hashlib.sha1(full.encode()).hexdigest()[:8]}"
    return name


def plan_sweep(bindings: Iterable[str]) -> tuple[list[str], list[SweepPoint]]:
    """``(axis keys, points)`` for the bindings; folder names made unique if sanitising collides."""
    bindings = list(bindings)
    fixed, axes = split_sweep(bindings)
    if not axes:
        raise ConfigError("a sweep needs at least one axis: a binding whose value is a list, "
                          "e.g. 'optim.lr=[1e-3,3e-4]'")
    points, used = [], set()
    for point in parse_sweep(bindings):
        swept = dict(split_binding(b) for b in point[len(fixed):])
        name = point_name(swept)
        base, n = name, 2
        while name in used:
            name, n = f"{base}-{n}", n + 1
        used.add(name)
        points.append(SweepPoint(name=name, swept=swept, bindings=point))
    return [k for k, _ in axes], points


def run_sweep(config: Any, bindings: Iterable[str], workdir: str | pathlib.Path, *,
              launch_fn: Callable[[Any, pathlib.Path], dict] = launch,
              log: Callable[[str], None] = print) -> list[SweepPoint]:
    """Runs every point of the grid under ``workdir``; returns the points with metrics or errors."""
    workdir = pathlib.Path(workdir)
    keys, points = plan_sweep(bindings)
    configs = check_points(config, points, workdir)
    others = other_points(workdir, points)
    if others:
        log(f"note: {workdir} also holds {len(others)} run folder(s) of another sweep ({', '.join(others[:3])}"
            f"{' ...' if len(others) > 3 else ''}); they stay, but this sweep's summary lists its own "
            f"{len(points)} point(s) only")
    workdir.mkdir(parents=True, exist_ok=True)
    for i, (point, point_config) in enumerate(zip(points, configs), start=1):
        log(f"[{i}/{len(points)}] {point.name}: running")
        _run_point(point, point_config, workdir / point.name, launch_fn)
        log(f"[{i}/{len(points)}] {point.name}: " + (f"failed: {point.error}" if point.error else
                                                       ", ".join(f"{k}={_fmt(v)}" for k, v in point.metrics.items())))
        write_tables(points[:i], keys, workdir)
    write_tables(points, keys, workdir)
    plot_summary(points, keys, metric_keys(points), workdir / "summary.png")
    return points


def other_points(workdir: pathlib.Path, points: list[SweepPoint]) -> list[str]:
    """Run folders (with a config.json) in ``workdir`` that are none of ``points``: an earlier sweep's."""
    if not workdir.is_dir():
        return []
    names = {p.name for p in points}
    return sorted(d.name for d in workdir.iterdir() if d.is_dir() and d.name not in names
                  and (d / "config.json").is_file())


def check_points(config: Any, points: list[SweepPoint], workdir: pathlib.Path | None = None) -> list[Any]:
    """Every point's config, built and checked before anything runs; one ConfigError names the
    first invalid point (and how many are), its bindings and what is wrong with them. A point
    already finished in ``workdir`` is not asked for what running needs (``check_runnable``)."""
    configs, bad = [], []
    for i, point in enumerate(points, start=1):
        try:
            point_config = apply_bindings(config, point.bindings)
            nonfinite = nonfinite_keys(point_config)
            if nonfinite:
                raise ConfigError(f"config key {nonfinite[0]!r} is not a finite number")
            if workdir is None or not finished_run(point_config, workdir / point.name):
                check_runnable(point_config, None if workdir is None else workdir / point.name)
            configs.append(point_config)
        except ValueError as e:   # ConfigError, or what check_runnable refuses
            bad.append((i, point, one_line(e)))
    if bad:
        i, point, error = bad[0]
        swept = ", ".join(f"{k}={v}" for k, v in point.swept.items())
        if len(bad) == len(points) and len(points) > 1:
            which = f"every sweep point is invalid, e.g. point 1 ({swept})"
        elif len(bad) > 1:
            which = f"{len(bad)} of {len(points)} sweep points are invalid, the first is point {i} ({swept})"
        else:
            which = f"sweep point {i} of {len(points)} ({swept}) is invalid"
        raise ConfigError(f"{which}: {error}; nothing was run — fix or drop those values")
    return configs


def metric_keys(points: Iterable[SweepPoint]) -> list[str]:
    """Every final metric name any point reported, sorted."""
    return sorted({k for p in points for k in p.metrics})


def write_tables(points: list[SweepPoint], keys: list[str], workdir: pathlib.Path) -> None:
    """``summary.md`` and ``summary.csv``: one row per point, swept keys then status then metrics."""
    metrics = metric_keys(points)
    header = ["run", *keys, "status", *metrics, "error"]
    rows = [[p.name, *(p.swept.get(k, "") for k in keys), "ok" if p.ok else "failed",
             *(p.metrics.get(m) for m in metrics), p.error or ""] for p in points]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([[_csv_cell(v) for v in row] for row in rows])   # no value: an empty cell
    (workdir / "summary.csv").write_text(buf.getvalue())
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in rows]
    failed = sum(not p.ok for p in points)
    lines += ["", f"{len(points) - failed} ok, {failed} failed."]
    (workdir / "summary.md").write_text("\n".join(lines) + "\n")


def _run_point(point: SweepPoint, config: Any, run_dir: pathlib.Path,
               launch_fn: Callable[[Any, pathlib.Path], dict]) -> None:
    try:
        point.metrics = dict(launch_fn(config, run_dir))
    except ConfigError as e:  # e.g. the folder holds a different config: the message says it all
        point.error = one_line(e)
    except Exception as e:  # a crashed run: keep the sweep going, keep the traceback for later
        point.error = f"{type(e).__name__}: {one_line(e)}"
        if (run_dir / "config.json").exists():  # the run started: its folder is ours to write in
            (run_dir / "error.txt").write_text("".join(traceback.format_exception(e)))


def _missing(value: Any) -> bool:
    """No value to show: a metric a point did not report, null in its final.json, or NaN/inf."""
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def _fmt(value: Any) -> str:
    if _missing(value):
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _csv_cell(value: Any) -> Any:
    return "" if _missing(value) else value


def _md_cell(value: Any) -> str:
    return _fmt(value).replace("|", "\\|").replace("\n", " ")
