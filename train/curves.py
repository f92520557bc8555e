"""``curves.png`` of a run folder: training and evaluation loss, learning rate and throughput
against the step, drawn from ``metrics.jsonl``.

The trainer redraws it after each evaluation and at the end of the run, so a glance at the run
folder shows how training went (people would rather look than read). Panels: loss (train, and
eval as points; with continued pretraining's replay, the original domain's eval loss too, and a
mixture's per-source eval losses ``eval/NAME/loss``),
learning rate, tokens/s; a panel whose metric was never logged is left out.
Drawn on a bare ``matplotlib.figure.Figure`` (Agg canvas): no pyplot, no display needed.
"""

from __future__ import annotations

import math
import os
import pathlib
import sys
import threading

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
    # A mixture's sources (eval/NAME/loss: data.mixture) join the loss panel after eval/loss.
    sources = sorted({k for r in rows for k in r if k.count("/") == 2 and k.startswith("eval/")
                      and k.endswith("/loss") and k != "eval/replay/loss"})
    all_panels = [(title, (*keys, *sources) if title == "loss" else keys) for title, keys in PANELS]
    series = {key: [(r["step"], r[key]) for r in rows if key in r and math.isfinite(r[key])]
              for _, keys in all_panels for key in keys}
    panels = [(title, keys) for title, keys in all_panels if any(series[k] for k in keys)]
    if not panels:
        return None
    # Fixed margins: matplotlib's constrained layout took 2/3 of a 0.43-0.60 s draw (2-core CPU);
    # without it a draw takes 0.19-0.31 s.
    width = 4.4 * len(panels)
    fig = Figure(figsize=(width, 3.4))
    fig.subplots_adjust(left=0.75 / width, right=1 - 0.15 / width, bottom=0.15, top=0.84, wspace=0.3)
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


class CurvePlotter:
    """Redraws ``curves.png`` on a background thread, so the loop does not wait for matplotlib
    (its import ~0.6 s and a draw 0.2-0.3 s on the 2-core CPU: benchmarks/README.md, fixed cost).

    ``request()`` asks for a redraw from the metrics written so far; a request made while a draw
    runs is served by one more draw after it. matplotlib is imported on the thread as soon as the
    plotter starts. ``close()`` waits for the last draw; a draw that failed is reported there in
    one line on stderr (a finished run is not failed by its plot).
    """

    def __init__(self, workdir: str | os.PathLike, *, enabled: bool = True):
        self.workdir = pathlib.Path(workdir)
        self.error: Exception | None = None
        self._lock = threading.Lock()
        self._pending = False
        self._thread: threading.Thread | None = None
        if enabled:
            self._start(self._import_matplotlib)

    def request(self) -> None:
        with self._lock:
            self._pending = True
            if self._thread is None:
                self._start_locked(None)

    def close(self) -> None:
        while True:
            with self._lock:
                thread = self._thread
            if thread is None:
                break
            thread.join()
        if self.error is not None:
            print(f"warning: {self.workdir / CURVES_FILE} not drawn: {type(self.error).__name__}: {self.error}",
                  file=sys.stderr, flush=True)
            self.error = None

    @staticmethod
    def _import_matplotlib() -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
        from matplotlib.figure import Figure  # noqa: F401

    def _start(self, first) -> None:
        with self._lock:
            self._start_locked(first)

    def _start_locked(self, first) -> None:
        self._thread = threading.Thread(target=self._work, args=(first,), name="lmforge-curves", daemon=False)
        self._thread.start()

    def _work(self, first) -> None:
        try:
            if first is not None:
                first()
        except Exception as e:  # noqa: BLE001 - reported by close()
            self.error = e
        while True:
            with self._lock:
                if not self._pending:
                    self._thread = None
                    return
                self._pending = False
            try:
                plot_curves(self.workdir)
            except Exception as e:  # noqa: BLE001 - reported by close()
                self.error = e
