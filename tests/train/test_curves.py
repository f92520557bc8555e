"""curves.png of a run folder (lmforge.train.curves.plot_curves)."""

import json

from PIL import Image

from lmforge.train.curves import plot_curves


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
