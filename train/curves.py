"""``curves.png`` of a run folder: training and evaluation loss, learning rate and throughput
against the step, drawn from ``metrics.jsonl``.

The trainer redraws it after each evaluation and at the end of the run, so a glance at the run
folder shows how training went (people would rather look than read). Panels: loss (train, and
eval as points; with continued pretraining's replay, the original domain's eval loss too),
learning rate, tokens/s; a panel whose metric was never logged is left out.
Drawn on a bare ``matplotlib.figure.Figure`` (Agg canvas): no pyplot, no display needed.
"""

from __future__ import annotations

import math
import os
import pathlib

from lmforge.train.metrics import METRICS_FILE, read_metrics

CURVES_FILE = "curves.png"
PANELS = (("loss", ("train/loss", "eval/loss", "eval/replay/loss")), ("learning rate", ("train/lr",)),
          ("tokens/s", ("perf/tokens_per_s",)))


def plot_curves(workdir: str | os.PathLike) -> pathlib.Path | None:
    """Writes ``workdir/curves.png`` from ``workdir/metrics.jsonl``; returns its path (None when
    there is nothing to plot yet). The file is replaced atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    workdir = pathlib.Path(workdir)
    if not (workdir / METRICS_FILE).is_file():
        return None
    rows = read_metrics(workdir / METRICS_FILE)
    series = {key: [(r["step"], r[key]) for r in rows if key in r and math.isfinite(r[key])]
              for _, keys in PANELS for key in keys}
    panels = [(title, keys) for title, keys in PANELS if any(series[k] for k in keys)]
    if not panels:
        return None
    fig = Figure(figsize=(4.4 * len(panels), 3.4), layout="constrained")
    for i, (title, keys) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for key in keys:
            if series[key]:
                steps, values = zip(*series[key])
                style = dict(marker="o", linestyle="--") if key.startswith("eval/") else {}
                ax.plot(steps, values, label=key, **style)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if title == "loss":
            ax.legend()
    fig.suptitle(workdir.name)
    path = workdir / CURVES_FILE
    tmp = path.with_name(f".{CURVES_FILE}.tmp.png")
    FigureCanvasAgg(fig).print_png(str(tmp))
    tmp.replace(path)
    return path
