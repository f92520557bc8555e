"""``summary.png`` for a sweep: one panel per numeric final metric.

- If a swept key has numeric values (``optim.lr=[1e-3,3e-4]``), each panel plots the metric
  against that key, one line per combination of the other swept keys; the x axis is logarithmic
  when the values are positive and span a factor of 10 or more (learning rates, batch sizes).
- Otherwise each panel is a bar per run, labelled by its swept values.
Failed runs are left out of the panels (the tables list them) and counted in the title.

``forgetting.png`` beside it when the runs evaluated a replay domain (continued pretraining,
``final/replay_val_perplexity``): both domains' final perplexity against the swept value, and each
domain's evaluation perplexity against the step, one line per run (from its ``metrics.jsonl``).

Drawn on a bare ``matplotlib.figure.Figure`` (Agg canvas): no pyplot, so no global backend
switch and no display needed on a headless machine.
"""

from __future__ import annotations

import math
import pathlib
from collections.abc import Sequence
from typing import Any

FORGETTING_FILE = "forgetting.png"
NEW_DOMAIN, OLD_DOMAIN = "final/val_perplexity", "final/replay_val_perplexity"

def plot_summary(points: Sequence[Any], keys: Sequence[str], metrics: Sequence[str],
                 path: pathlib.Path) -> None:
    """Writes the figure for ``points`` (objects with ``ok``, ``swept``, ``metrics``) to ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ok = [p for p in points if p.ok]
    numeric = [m for m in metrics if any(m in p.metrics for p in ok)
               and all(_is_number(p.metrics[m]) for p in ok if m in p.metrics)]
    title = f"sweep: {len(ok)} of {len(points)} runs ok"
    if not numeric:
        fig = Figure(figsize=(6, 2.5))
        fig.text(0.5, 0.5, f"{title}\nno numeric final metrics to plot", ha="center", va="center")
        FigureCanvasAgg(fig).print_png(str(path))
        return
    x_key = next((k for k in keys if len({p.swept[k] for p in ok}) > 1
                  and all(_as_float(p.swept[k]) is not None for p in ok)), None)
    ncols = min(3, len(numeric))
    nrows = math.ceil(len(numeric) / ncols)
    fig = Figure(figsize=(4.8 * ncols, 3.6 * nrows), layout="constrained")
    axes = list(fig.subplots(nrows, ncols, squeeze=False).flat)
    for ax, metric in zip(axes, numeric):
        have = [p for p in ok if metric in p.metrics]
        if x_key is not None:
            _lines(ax, have, metric, x_key, [k for k in keys if k != x_key])
        else:
            _bars(ax, have, metric, keys)
        ax.set_title(metric, fontsize=10)
        ax.grid(alpha=0.3)
    for ax in axes[len(numeric):]:
        ax.set_visible(False)  # the unused panels of the last row
    fig.suptitle(title, fontsize=11)
    FigureCanvasAgg(fig).print_png(str(path))
    if any(OLD_DOMAIN in p.metrics and NEW_DOMAIN in p.metrics for p in ok):
        plot_forgetting(points, keys, path.parent)


def plot_forgetting(points: Sequence[Any], keys: Sequence[str], sweep_dir: pathlib.Path) -> pathlib.Path:
    """Writes ``sweep_dir/forgetting.png`` for runs that report both domains; returns its path.

    Left: the new domain's (``final/val_perplexity``) and the original domain's
    (``final/replay_val_perplexity``) final perplexity against the first numeric swept key (e.g.
    ``replay_fraction``), on two y axes; runs are ordered by that value (or by name if none is
    numeric). Middle and right: ``eval/perplexity`` and ``eval/replay/perplexity`` against the step,
    one line per run, from ``sweep_dir/<run>/metrics.jsonl`` (runs without the file are left out).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from lmforge.train.metrics import read_metrics

    runs = [p for p in points if p.ok and OLD_DOMAIN in p.metrics and NEW_DOMAIN in p.metrics]
    x_key = next((k for k in keys if all(_as_float(p.swept[k]) is not None for p in runs)), None)
    if x_key is not None:
        runs.sort(key=lambda p: _as_float(p.swept[x_key]))
    xs = [_as_float(p.swept[x_key]) for p in runs] if x_key else list(range(len(runs)))
    labels = [", ".join(f"{k}={p.swept[k]}" for k in keys) for p in runs]
    fig = Figure(figsize=(15, 4), layout="constrained")
    left, middle, right = fig.subplots(1, 3)
    twin = left.twinx()
    for ax, key, color, name in ((left, NEW_DOMAIN, "tab:blue", "new domain (eval/perplexity)"),
                                 (twin, OLD_DOMAIN, "tab:red", "original domain (eval/replay/perplexity)")):
        ax.plot(xs, [float(p.metrics[key]) for p in runs], marker="o", color=color, label=name)
        ax.set_ylabel(f"final {name.split(' (')[0]} perplexity", color=color, fontsize=9)
        ax.tick_params(axis="y", labelcolor=color)
    if x_key is None:
        left.set_xticks(xs, labels, rotation=30, ha="right", fontsize=7)
    left.set_xlabel(x_key or "run", fontsize=9)
    left.set_title("final perplexity", fontsize=10)
    fig.legend(loc="outside lower center", ncols=2, fontsize=8)
    for ax, key, title in ((middle, "eval/perplexity", "new domain"),
                           (right, "eval/replay/perplexity", "original domain (replay)")):
        for p, label in zip(runs, labels):
            metrics_file = sweep_dir / p.name / "metrics.jsonl"
            rows = [r for r in read_metrics(metrics_file) if key in r] if metrics_file.is_file() else []
            if rows:
                ax.plot([r["step"] for r in rows], [r[key] for r in rows], marker="o", label=label)
        ax.set_title(f"{key}: {title}", fontsize=10)
        ax.set_xlabel("step", fontsize=9)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    left.grid(alpha=0.3)
    path = sweep_dir / FORGETTING_FILE
    FigureCanvasAgg(fig).print_png(str(path))
    return path


def _lines(ax, points, metric: str, x_key: str, others: list[str]) -> None:
    groups: dict[tuple[str, ...], list[tuple[float, float]]] = {}
    for p in points:
        groups.setdefault(tuple(p.swept[k] for k in others), []).append(
            (_as_float(p.swept[x_key]), float(p.metrics[metric])))
    for group, xy in groups.items():
        xy.sort()
        label = ", ".join(f"{k}={v}" for k, v in zip(others, group)) or None
        ax.plot([x for x, _ in xy], [y for _, y in xy], marker="o", label=label)
    xs = [_as_float(p.swept[x_key]) for p in points]
    if min(xs) > 0 and max(xs) / min(xs) >= 10:
        ax.set_xscale("log")
    ax.set_xlabel(x_key, fontsize=9)
    if len(groups) > 1:
        ax.legend(fontsize=7)


def _bars(ax, points, metric: str, keys: Sequence[str]) -> None:
    labels = [",".join(p.swept[k] for k in keys) for p in points]
    ax.bar(range(len(points)), [float(p.metrics[metric]) for p in points], color="tab:blue")
    ax.set_xticks(range(len(points)), labels, rotation=30, ha="right", fontsize=7)
    ax.set_xlabel(", ".join(keys), fontsize=9)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _as_float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None
