"""curves.png of a run folder (lmforge.train.curves.plot_curves) and its background plotter."""

import io
import json

from PIL import Image

from lmforge.train import curves as curves_module
from lmforge.train.curves import CurvePlotter, plot_curves


def _write(workdir, rows):
    (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_one_panel_per_logged_metric_and_the_replay_domain_on_the_loss_panel(tmp_path):
    assert plot_curves(tmp_path) is None   # no metrics.jsonl yet
    rows = [{"step": s, "train/loss": 4.0 / s, "train/lr": 1e-3, "perf/tokens_per_s": 1000.0} for s in range(1, 11)]
    rows += [{"step": 10, "eval/loss": 0.5, "eval/replay/loss": 0.7}]
    _write(tmp_path, rows)
    path = plot_curves(tmp_path)
    assert path == tmp_path / "curves.png" and not list(tmp_path.glob(".*tmp*"))
    three = Image.open(path).size
    _write(tmp_path, [{"step": s, "eval/replay/loss": 1.0 / s} for s in range(1, 4)])   # the loss panel alone
    one = Image.open(plot_curves(tmp_path)).size
    assert one[1] == three[1] and abs(three[0] / one[0] - 3) < 0.05, (one, three)


def test_nothing_to_plot_writes_nothing(tmp_path):
    _write(tmp_path, [{"step": 1, "train/grad_norm": 1.0}])
    assert plot_curves(tmp_path) is None and not (tmp_path / "curves.png").exists()


def test_plotter_draws_the_metrics_written_before_each_request_and_close_waits(tmp_path):
    plotter = CurvePlotter(tmp_path)
    plotter.close()                       # no request: nothing drawn, nothing to report
    assert not (tmp_path / "curves.png").exists()
    _write(tmp_path, [{"step": s, "train/loss": 1.0 / s} for s in range(1, 5)])
    plotter.request()
    plotter.close()
    first = (tmp_path / "curves.png").read_bytes()
    _write(tmp_path, [{"step": s, "train/loss": 1.0 / s, "train/lr": 1e-3} for s in range(1, 9)])
    plotter.request()
    plotter.request()                     # during a draw: served by one more draw after it
    plotter.close()
    assert (tmp_path / "curves.png").read_bytes() != first
    assert Image.open(tmp_path / "curves.png").size[0] > Image.open(io.BytesIO(first)).size[0]


def test_a_failed_draw_is_one_warning_line_at_close_not_an_error(tmp_path, monkeypatch, capsys):
    def broken(workdir):
        raise OSError("disk full")
    monkeypatch.setattr(curves_module, "plot_curves", broken)
    plotter = CurvePlotter(tmp_path, enabled=False)
    plotter.request()
    plotter.close()
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"warning: {tmp_path / 'curves.png'} not drawn: OSError: disk full"]
