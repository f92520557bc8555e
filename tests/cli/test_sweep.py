"""Sweeps: grid, run folders, summary.md/csv/png, failed points recorded, exit status."""

import csv

import pytest
from cli_fake_task import FakeConfig, read_json, write_experiment

from lmforge.cli import ConfigError, run_sweep
from lmforge.cli.main import main
from lmforge.cli.sweep import point_name


def quiet(_line):
    pass


def test_grid_folders_and_summaries(tmp_path):
    points = run_sweep(FakeConfig(), ["optim.lr=[1e-3,3e-4]", "model.num_layers=[2,4]", "steps=3"], tmp_path, log=quiet)
    assert len(points) == 4 and all(p.ok for p in points)
    names = [p.name for p in points]
    assert names[0] == "optim.lr=1e-3,model.num_layers=2"
    for p in points:
        assert read_json(tmp_path / p.name / "config.json")["steps"] == 3
    assert points[3].metrics == {"final/loss": pytest.approx(3e-3), "final/layers": 4.0}
    rows = list(csv.DictReader((tmp_path / "summary.csv").open()))
    assert [r["run"] for r in rows] == names
    assert rows[1]["optim.lr"] == "1e-3" and rows[1]["model.num_layers"] == "4" and rows[1]["status"] == "ok"
    assert float(rows[2]["final/loss"]) == pytest.approx(3e-3)
    md = (tmp_path / "summary.md").read_text().splitlines()
    assert md[0] == "| run | optim.lr | model.num_layers | status | final/layers | final/loss | error |"
    assert len([line for line in md if line.startswith("| optim.lr=")]) == 4
    assert (tmp_path / "summary.png").stat().st_size > 1000


def test_a_metric_without_a_value_shows_as_a_dash(tmp_path):
    """A run too short to time a step has no tokens/s (nan, null in an older final.json, or absent): '-' in the
    progress line and summary.md, an empty cell in summary.csv, never 'nan' or 'None'."""
    finals = iter([{"final/loss": 1.5, "final/tokens_per_s": float("nan")},
                   {"final/loss": 2.0, "final/tokens_per_s": None}, {"final/loss": 2.5}])
    lines = []
    run_sweep(FakeConfig(), ["optim.lr=[1e-3,3e-4,1e-4]"], tmp_path, launch_fn=lambda c, w: next(finals),
              log=lines.append)
    done = [line for line in lines if "final/loss=" in line]
    assert done[0].endswith("final/loss=1.5, final/tokens_per_s=-") and done[1].endswith("final/tokens_per_s=-")
    md = (tmp_path / "summary.md").read_text()
    assert "nan" not in md and "None" not in md
    assert "| optim.lr=1e-3 | 1e-3 | ok | 1.5 | - |  |" in md and "| optim.lr=1e-4 | 1e-4 | ok | 2.5 | - |  |" in md
    rows = list(csv.DictReader((tmp_path / "summary.csv").open()))
    assert [r["final/tokens_per_s"] for r in rows] == ["", "", ""]


def test_failed_point_is_recorded_and_the_sweep_goes_on(tmp_path):
    points = run_sweep(FakeConfig(), ["fail=[false, true]", "model.num_heads=[2, 4]"], tmp_path, log=quiet)
    status = {p.name: (p.ok, p.error) for p in points}
    assert status["fail=false,model.num_heads=2"] == (True, None)
    ok, error = status["fail=true,model.num_heads=2"]
    assert not ok and error == "RuntimeError: the fake run was told to fail"
    assert "RuntimeError" in (tmp_path / "fail=true,model.num_heads=2" / "error.txt").read_text()
    rows = list(csv.DictReader((tmp_path / "summary.csv").open()))
    assert [r["status"] for r in rows] == ["ok", "ok", "failed", "failed"]
    assert "told to fail" in (tmp_path / "summary.md").read_text()
    assert (tmp_path / "summary.png").exists()


def test_an_invalid_point_anywhere_runs_nothing(tmp_path):
    # Issue 13: the second point's __post_init__ fails (8 % 3); the first must not train before that is said.
    ran = []
    with pytest.raises(ConfigError) as info:
        run_sweep(FakeConfig(), ["model.num_heads=[2, 3]"], tmp_path / "s", log=quiet,
                  launch_fn=lambda config, workdir: ran.append(workdir) or {})
    message = str(info.value)
    assert ran == [] and not (tmp_path / "s").exists()
    assert message.startswith("sweep point 2 of 2 (model.num_heads=3) is invalid: binding model.num_heads makes "
                              "an invalid ModelCfg (model): model.embed_dim=8 is not divisible by model.num_heads=3")
    assert message.endswith("nothing was run — fix or drop those values") and "\n" not in message
    with pytest.raises(ConfigError, match=r"^2 of 3 sweep points are invalid, the first is point 2 \(optim.lr=nan\): "
                                          r"config key 'optim.lr' must be a finite number, got nan"):
        run_sweep(FakeConfig(), ["optim.lr=[1e-3, nan, inf]"], tmp_path / "s", launch_fn=ran.append, log=quiet)
    assert ran == [] and not (tmp_path / "s").exists()


def test_sweep_command_checks_every_point_first(tmp_path, capsys):
    exp = write_experiment(tmp_path)
    assert main(["sweep", str(exp), "model.num_heads=[2,3]", "--workdir", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lmforge: error: sweep point 2 of 2 (model.num_heads=3) is invalid") and err.count("\n") == 1
    assert not (tmp_path / "s" / "model.num_heads=2" / "ran.txt").exists()


def test_malformed_sweep_list_names_the_binding(tmp_path, capsys):
    exp = write_experiment(tmp_path)
    assert main(["sweep", str(exp), "optim.lr=[1e-3,", "--workdir", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "sweep binding 'optim.lr=[1e-3,': malformed list, no closing ']'" in err and "no sweep axis" not in err
    assert err.count("\n") == 1


def test_a_mistake_in_every_point_runs_nothing(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'optim.lr'"):
        run_sweep(FakeConfig(), ["optim.learning_rate=[1, 2]"], tmp_path / "s", log=quiet)
    assert not (tmp_path / "s").exists()
    with pytest.raises(ConfigError, match="needs at least one axis"):
        run_sweep(FakeConfig(), ["optim.lr=1"], tmp_path / "s", log=quiet)


def test_point_names_are_filesystem_safe():
    assert point_name({"mesh.rules": "(('embed', 'fsdp'),)"}) == "mesh.rules=_embed_,_fsdp_,"
    assert point_name({"data.source.path": "a/b c.txt"}) == "data.source.path=a_b_c.txt"
    long = point_name({"name": "x" * 300})
    assert len(long) <= 120 and long != point_name({"name": "x" * 299})


def test_sweep_command_uses_the_experiment_sweep_and_exit_status(tmp_path, capsys):
    exp = write_experiment(tmp_path)
    workdir = tmp_path / "sweep"
    assert main(["sweep", f"{exp}:smoke", "--workdir", str(workdir)]) == 0
    rows = list(csv.DictReader((workdir / "summary.csv").open()))
    assert [r["optim.lr"] for r in rows] == ["0.001", "0.0003"]
    out = capsys.readouterr().out
    assert "sweep: 2 runs over optim.lr" in out and "(2 ok, 0 failed)" in out
    # A fixed binding on the command line replaces the experiment's axis for that key.
    assert main(["sweep", str(exp), "optim.lr=0.5", "fail=[false,true]", "--workdir", str(tmp_path / "s2")]) == 1
    rows = list(csv.DictReader((tmp_path / "s2" / "summary.csv").open()))
    assert [r["status"] for r in rows] == ["ok", "failed"] and float(rows[0]["final/loss"]) == 5.0
    # Re-running resumes each point in its folder (same config, same folder name).
    assert main(["sweep", f"{exp}:smoke", "--workdir", str(workdir)]) == 0


def test_sweep_without_axes_or_sweep_fn(tmp_path, capsys):
    exp = write_experiment(tmp_path, "from cli_fake_task import FakeConfig\nVARIANTS = ('smoke',)\n"
                                     "def get_config(variant='default'):\n    return FakeConfig()\n", name="nosweep.py")
    assert main(["sweep", str(exp), "--workdir", str(tmp_path / "s")]) == 2
    assert "defines no sweep()" in capsys.readouterr().err


def test_plot_with_non_numeric_axis_and_all_failed(tmp_path):
    run_sweep(FakeConfig(), ["model.family=[gpt2, llama]"], tmp_path / "a", log=quiet)
    assert (tmp_path / "a" / "summary.png").stat().st_size > 1000
    run_sweep(FakeConfig(), ["fail=[true]"], tmp_path / "b", log=quiet)
    assert (tmp_path / "b" / "summary.png").exists()


def test_a_missing_init_from_is_refused_before_any_point_runs(tmp_path, capsys):
    """`check_runnable` (an empty or misspelt init_from) is checked with the bindings: one line, nothing
    run, no folder written — a sweep of fine-tunes used to fail every point, one after the other."""
    from lmforge.align.interrogation import InterrogationConfig

    with pytest.raises(ConfigError, match=r"every sweep point is invalid, e\.g\. point 1 \(seed=0\): init_from is "
                                          r"empty: interrogation fine-tunes .*; nothing was run"):
        run_sweep(InterrogationConfig(), ["seed=[0,1]"], tmp_path / "sweep", log=quiet)
    missing = tmp_path / "no_such_run"
    with pytest.raises(ConfigError, match=f"init_from: {missing} is not a folder"):
        run_sweep(InterrogationConfig(), [f"init_from={missing}", "seed=[0,1]"], tmp_path / "sweep", log=quiet)
    assert not (tmp_path / "sweep").exists()


def test_run_refuses_a_misspelt_init_from_before_writing_its_workdir(tmp_path, capsys):
    import pathlib

    sft = pathlib.Path(__file__).resolve().parents[2] / "experiments" / "sft" / "sft_chat.py"
    workdir = tmp_path / "run"
    assert main(["run", f"{sft}:smoke", f"init_from={tmp_path / 'runs/typo'}", "--workdir", str(workdir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"lmforge: error: init_from: {tmp_path / 'runs/typo'} is not a folder (expected a run folder, a "
                   f"transformers folder or an lmforge model folder)"]
    assert not workdir.exists()


def test_another_grid_into_the_same_folder_names_the_points_it_leaves_out(tmp_path):
    lines = []
    run_sweep(FakeConfig(), ["optim.lr=[1e-3,3e-4]", "steps=3"], tmp_path, log=quiet)
    points = run_sweep(FakeConfig(), ["optim.lr=[3e-4,1e-4]", "steps=3"], tmp_path, log=lines.append)
    assert lines[0] == (f"note: {tmp_path} also holds 1 run folder(s) of another sweep (optim.lr=1e-3); they stay, "
                        f"but this sweep's summary lists its own 2 point(s) only")
    assert (tmp_path / "optim.lr=1e-3" / "config.json").is_file() and all(p.ok for p in points)
    assert [r["run"] for r in csv.DictReader((tmp_path / "summary.csv").open())] == ["optim.lr=3e-4", "optim.lr=1e-4"]


def test_fine_tunes_longer_than_the_source_model_are_refused_before_any_point_runs(tmp_path):
    from lmforge.align.sft import SFTConfig
    from lmforge.model import ModelConfig
    from lmforge.weights import write_model_config

    base = tmp_path / "base"
    write_model_config(base, ModelConfig.gpt2_tiny(vocab_size=256, max_seq_len=64))
    (base / "checkpoints").mkdir()
    with pytest.raises(ConfigError, match=r"every sweep point is invalid, e\.g\. point 1 \(data\.seq_len=128\): "
                                          rf"data\.seq_len=128 exceeds the max_seq_len=64 of init_from={base}'s model"):
        run_sweep(SFTConfig(), [f"init_from={base}", "data.seq_len=[128,256]"], tmp_path / "sweep", log=quiet)
    assert not (tmp_path / "sweep").exists()


def test_a_finished_sweep_reruns_without_its_init_from(tmp_path, monkeypatch):
    """Re-running a finished sweep (to rebuild its summary) or a finished run needs no weights: their
    moved init_from is not asked for, as it is for a point that would run."""
    calls = []
    monkeypatch.setattr(FakeConfig, "check_runnable", lambda self, workdir=None: calls.append(workdir) or None,
                        raising=False)
    run_sweep(FakeConfig(), ["optim.lr=[1e-3,3e-4]", "steps=3"], tmp_path, log=quiet)
    # each point: checked up front, and again as it launches, with its own folder (a resume needs no init_from)
    assert calls == [tmp_path / "optim.lr=1e-3", tmp_path / "optim.lr=3e-4"] * 2

    def refuse(self, workdir=None):
        raise ValueError("init_from: /gone is not a folder")
    monkeypatch.setattr(FakeConfig, "check_runnable", refuse)
    points = run_sweep(FakeConfig(), ["optim.lr=[1e-3,3e-4]", "steps=3"], tmp_path, log=quiet)
    assert all(p.ok for p in points)
    with pytest.raises(ConfigError, match="sweep point 3 of 3 .* init_from: /gone is not a folder"):
        run_sweep(FakeConfig(), ["optim.lr=[1e-3,3e-4,1e-4]", "steps=3"], tmp_path, log=quiet)
