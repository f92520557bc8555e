"""What a new user hits (issue 13): each mistake a one-line error that says what was expected.

Run folders that failed early, sampling a folder that cannot be sampled, seeing the resolved config,
nanoGPT's names, non-finite numbers and out-of-range flags, data too small, the char vocabulary.
"""

import json
import pathlib
import textwrap

import pytest
from cli_fake_task import FakeConfig, read_json, write_experiment

from lmforge.cli import apply_bindings, flatten, to_json
from lmforge.cli.main import main

PRETRAIN_EXP = textwrap.dedent('''
    from lmforge.data import DataConfig, SourceConfig, TokenizerConfig
    from lmforge.model import ModelConfig
    from lmforge.train.pretrain import PretrainConfig

    VARIANTS = ("smoke",)

    def get_config(variant="default"):
        return PretrainConfig(
            model=ModelConfig.gpt2(num_layers=1, num_heads=2, embed_dim=32, mlp_dim=64, max_seq_len=32,
                                   vocab_size=0),
            tokenizer=TokenizerConfig(kind="char"),
            data=DataConfig(source=SourceConfig(kind="text", path="text.txt"), seq_len=32, batch_size=8,
                            packing="windows"),
            steps=2, sample_prompts=())
''')


@pytest.fixture
def exp(tmp_path):
    return write_experiment(tmp_path)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("lmforge: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


# ------------------------------------------------------------ a run that failed early locks nothing


def test_a_folder_without_checkpoint_takes_the_corrected_config(exp, tmp_path, capsys):
    workdir = tmp_path / "w"
    with pytest.raises(RuntimeError, match="told to fail"):
        main(["run", str(exp), "fail=true", "--workdir", str(workdir)])
    assert read_json(workdir / "config.json")["fail"] is True
    capsys.readouterr()
    assert main(["run", str(exp), "optim.lr=0.5", "--workdir", str(workdir)]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{workdir / 'config.json'} held a different config (optim.lr, fail) " \
                                   f"but no checkpoint; rewriting it for this run" in err
    config = read_json(workdir / "config.json")
    assert config["fail"] is False and config["optim"]["lr"] == 0.5
    (aside,) = workdir.glob("replaced-*")       # the failed attempt's files, kept but out of the way
    assert (aside / "ran.txt").read_text() == "0.001\n" and (workdir / "ran.txt").read_text() == "0.5\n"
    # An unfinished save is no checkpoint; a finalized step folder is, and locks the folder.
    (workdir / "checkpoints" / "7.orbax-checkpoint-tmp-123").mkdir(parents=True)
    assert main(["run", str(exp), "optim.lr=0.25", "--workdir", str(workdir)]) == 0
    (workdir / "checkpoints" / "7").mkdir(parents=True)
    capsys.readouterr()
    assert main(["run", str(exp), "optim.lr=0.5", "--workdir", str(workdir)]) == 2
    err = one_error_line(capsys)
    assert "holds a different config (optim.lr: 0.25 → 0.5) and checkpoints (steps 7); refusing to resume" in err
    assert read_json(workdir / "config.json")["optim"]["lr"] == 0.25


def test_a_pretraining_run_with_a_wrong_data_path_is_retried_in_its_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exp = write_experiment(tmp_path, PRETRAIN_EXP, name="pre.py")
    workdir = tmp_path / "w"
    assert main(["run", str(exp), "data.source.path=/nope.txt", "--workdir", str(workdir)]) == 2
    assert "data.source: " in (err := one_error_line(capsys)) and "nope.txt: no such file" in err
    assert not workdir.exists()                    # the source is checked before anything is written
    (tmp_path / "ten.txt").write_text("hello wor\n")
    # The corrected command reaches the data, which is too small; a third try may use the folder it left.
    assert main(["run", str(exp), "data.source.path=ten.txt", "--workdir", str(workdir)]) == 2
    err = one_error_line(capsys)
    assert "lmforge: error: data too small: the train split has 9 characters (of 10 in all, data.val_fraction=0.1), " \
           "fewer than one sequence of data.seq_len + 1 = 33 tokens" in err
    assert "not in the vocabulary" not in err and "different config" not in err
    assert read_json(workdir / "config.json")["data"]["source"]["path"] == "ten.txt"
    assert not (workdir / "tokenizer").exists()    # refused before a tokenizer was trained


def test_a_failed_continuation_leaves_the_finished_run_as_it_was(tmp_path, capsys, monkeypatch):
    """Continuing a finished run whose only checkpoint is unreadable fails, and the folder is left byte for
    byte as it was (final.json used to be deleted and config.json rewritten first, so the run's own command
    was then refused). Reading the folder (sample) says which steps could not be read, with no resume advice."""
    monkeypatch.chdir(tmp_path)
    exp = write_experiment(tmp_path, PRETRAIN_EXP, name="pre.py")
    (tmp_path / "text.txt").write_text("To be, or not to be, that is the question.\n" * 20)
    workdir = tmp_path / "w"
    assert main(["run", str(exp), "--workdir", str(workdir)]) == 0
    final = read_json(workdir / "final.json")
    assert final["final/step"] == 2.0 and "final/tokens_per_s" not in final   # too short to time: left out
    (step,) = (workdir / "checkpoints").iterdir()
    (step / "state" / "_METADATA").write_text("{not json")
    files = {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["run", str(exp), "steps=4", "--workdir", str(workdir)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-2] == f"lmforge: {workdir} is left as it was (config.json and final.json put back): the run " \
                      f"stopped before saving a checkpoint"
    assert err[-1].startswith(f"lmforge: error: no readable checkpoint in {workdir / 'checkpoints'}: step(s) 2 (")
    assert err[-1].endswith("could not be read (they are left as they are); move them aside to start this run "
                            "from scratch")
    assert {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()} == files
    assert main(["run", str(exp), "--workdir", str(workdir)]) == 0       # still the finished run
    assert "is a finished run" in capsys.readouterr().err
    assert main(["sample", str(workdir), "--prompt", "To"]) == 2          # a reader: nothing to start over
    err = one_error_line(capsys)
    assert f"no readable checkpoint in {workdir / 'checkpoints'}: step(s) 2 (" in err and "scratch" not in err


def test_a_mesh_or_vocabulary_that_cannot_work_is_refused_before_anything_is_written(tmp_path, capsys, monkeypatch):
    """Checked up front with data.seq_len and init_from: not after curation and tokenizer training."""
    monkeypatch.chdir(tmp_path)
    exp = write_experiment(tmp_path, PRETRAIN_EXP, name="pre.py")
    (tmp_path / "text.txt").write_text("To be, or not to be, that is the question.\n" * 20)
    workdir = tmp_path / "w"
    assert main(["run", str(exp), "mesh.fsdp=3", "--workdir", str(workdir)]) == 2     # the tests have 8 devices
    assert one_error_line(capsys) == ("lmforge: error: mesh.fsdp=3: the fixed mesh axes need a multiple of 3 devices; "
                                      "there are 8 (mesh.data=-1 takes the rest)")
    assert main(["run", str(exp), "mesh.data=2", "mesh.tensor=2", "--workdir", str(workdir)]) == 2
    assert one_error_line(capsys) == ("lmforge: error: mesh.data=2, mesh.tensor=2: the mesh needs 4 devices (no axis "
                                      "is -1); there are 8")
    assert main(["run", str(exp), "tokenizer.kind=sentencepiece", "tokenizer.vocab_size=10", "--workdir",
                 str(workdir)]) == 2
    assert one_error_line(capsys).startswith("lmforge: error: tokenizer.vocab_size=10: expected more than 300 ")
    assert not workdir.exists()


def test_a_validation_split_shorter_than_a_sequence_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exp = write_experiment(tmp_path, PRETRAIN_EXP, name="pre.py")
    (tmp_path / "text.txt").write_text("To be, or not to be: that is the qu.\n")   # 37 characters: val gets 4
    assert main(["run", str(exp), "--workdir", str(tmp_path / "w")]) == 2
    err = one_error_line(capsys)
    assert "data too small: the validation split has 4 characters (of 37 in all, data.val_fraction=0.1)" in err
    assert err.endswith("expected more text in data.source, a smaller data.seq_len or a larger data.val_fraction")


# ------------------------------------------------------------ sampling a folder that is not a trained run


def test_sample_says_what_the_folder_is(exp, tmp_path, capsys):
    from lmforge.data.curate import CurateConfig

    curation = tmp_path / "curated"
    curation.mkdir()
    (curation / "config.json").write_text(to_json(CurateConfig()))
    assert main(["sample", str(curation), "--prompt", "x"]) == 2
    assert one_error_line(capsys) == (f"lmforge: error: {curation} is a CurateConfig run (curation); "
                                      f"`lmforge sample` needs a run that trains a model, with a checkpoint")
    from lmforge.align.interrogation import InterrogationConfig
    from lmforge.model import ModelConfig
    from lmforge.weights import write_model_config

    stages = tmp_path / "interrogation"          # its stages are the runs that hold models
    for stage in ("stage1", "stage2"):
        write_model_config(stages / stage, ModelConfig.gpt2_tiny(vocab_size=64))
    (stages / "config.json").write_text(to_json(InterrogationConfig()))
    assert main(["sample", str(stages), "--prompt", "x"]) == 2
    assert one_error_line(capsys).endswith(f"(interrogation); `lmforge sample` needs a run that trains a model, with a "
                                           f"checkpoint; its stages are such runs: give {stages / 'stage2'}")
    run = tmp_path / "run"
    assert main(["run", str(exp), "--workdir", str(run)]) == 0
    capsys.readouterr()
    assert main(["sample", str(run), "--prompt", "x"]) == 2
    err = one_error_line(capsys)
    assert f"{run} has no checkpoint yet (no finished step folder in {run / 'checkpoints'}:" in err
    assert "no tokenizer" not in err


# ------------------------------------------------------------ seeing the config, nanoGPT's names


def test_print_config_prints_every_key_and_runs_nothing(exp, tmp_path, capsys):
    workdir = tmp_path / "w"
    assert main(["run", f"{exp}:big", "optim.lr=0.5", "--print-config", "--workdir", str(workdir)]) == 0
    assert not workdir.exists()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"# {exp}:big: cli_fake_task.FakeConfig, ")
    config = apply_bindings(FakeConfig(), ["steps=5", "model.num_layers=8", "optim.lr=0.5"])
    assert [line.split("=", 1)[0] for line in lines[1:]] == list(flatten(config))
    assert "optim.lr=0.5" in lines and "data.source.path=data.txt" in lines and "name=None" in lines
    assert apply_bindings(FakeConfig(), lines[1:]) == config     # each line is a binding that reads back


def test_nanogpt_names_in_the_unknown_key_error(exp, capsys):
    assert main(["run", str(exp), "learning_rate=1e-3"]) == 2
    assert one_error_line(capsys) == ("lmforge: error: unknown config key 'learning_rate' — "
                                      "nanoGPT's learning_rate is 'optim.lr' here")


# ------------------------------------------------------------ numbers: finite, in range, the flag named


@pytest.mark.parametrize("argv, message", [
    (["sample", "{tmp}", "--prompt", "x", "--temperature", "nan"], "--temperature=nan: expected a finite number >= 0"),
    (["sample", "{tmp}", "--prompt", "x", "--temperature", "-1"], "--temperature=-1.0: expected a finite number >= 0"),
    (["sample", "{tmp}", "--prompt", "x", "--top-p", "0"], "--top-p=0.0: expected a number in (0, 1]"),
    (["sample", "{tmp}", "--prompt", "x", "--top-p", "inf"], "--top-p=inf: expected a number in (0, 1]"),
    (["sample", "{tmp}", "--prompt", "x", "--top-k", "-1"], "--top-k=-1: expected an integer >= 0"),
    (["sample", "{tmp}", "--prompt", "x", "--max-new-tokens", "0"], "--max-new-tokens=0: expected an integer >= 1"),
    (["tokenizer", "train", "--path", "x", "--out", "{tmp}", "--val-fraction", "nan"],
     "--val-fraction=nan: expected a number in (0, 1)"),
    (["run", "{exp}", "optim.lr=nan"], "config key 'optim.lr' must be a finite number, got nan"),
    (["run", "{exp}", "model.dropout=inf"], "config key 'model.dropout' must be a finite number, got inf"),
])
def test_numbers_are_checked_when_parsed(exp, tmp_path, capsys, argv, message):
    assert main([a.format(exp=exp, tmp=tmp_path) for a in argv]) == 2
    assert one_error_line(capsys) == f"lmforge: error: {message}"


def test_a_nan_written_in_the_experiment_file_is_refused_before_the_run(tmp_path, capsys):
    exp = write_experiment(tmp_path, "import dataclasses\nfrom cli_fake_task import FakeConfig, OptimCfg\n"
                                     "VARIANTS = ()\ndef get_config(variant='default'):\n"
                                     "    return FakeConfig(optim=OptimCfg(lr=float('nan')))\n", name="nan_exp.py")
    assert main(["run", str(exp), "--workdir", str(tmp_path / "w")]) == 2
    assert one_error_line(capsys) == "lmforge: error: config key 'optim.lr' is nan; expected a finite number"
    assert not (tmp_path / "w").exists()


# ------------------------------------------------------------ the char vocabulary covers the validation split


def test_char_tokenizer_covers_characters_only_in_the_validation_split(tmp_path, capsys):
    text = tmp_path / "small.txt"
    text.write_text("the cat sat on the mat\n" * 9 + "wow!\n")   # '!' and 'w' occur only in the last 10%
    out = tmp_path / "tok"
    assert main(["tokenizer", "train", "--kind", "char", "--path", str(text), "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert report["chars_per_token"] == 1.0 and report["held_out_documents"] == 1
    assert "!" in json.loads((out / "tokenizer.json").read_text())["chars"]


def test_a_finished_run_is_not_run_again_and_continues_when_asked_for_more_steps(tmp_path, capsys):
    """A finished run says so and changes nothing; steps=N larger continues from its checkpoint with
    the decay pinned to the old steps; every JSON line is strict."""
    import json
    exp = pathlib.Path(__file__).resolve().parents[2] / "experiments" / "shakespeare_char.py"
    if not pathlib.Path(__file__).resolve().parents[2].parent.joinpath("shared", "data").is_dir():
        pytest.skip("needs ../shared/data/tinyshakespeare.txt")
    workdir = tmp_path / "run"
    args = ["run", f"{exp}:smoke", "steps=10", "optim.decay_steps=0", "eval_every=0", "sample_prompts=()",
            "--workdir", str(workdir)]
    assert main(args) == 0
    first = capsys.readouterr()
    final = json.loads((workdir / "final.json").read_text())
    assert json.loads(first.out.strip().splitlines()[-1]) == final and final["final/step"] == 10.0
    rows = (workdir / "metrics.jsonl").read_text()
    assert main(args) == 0
    again = capsys.readouterr()
    assert "is a finished run" in again.err and (workdir / "metrics.jsonl").read_text() == rows
    assert json.loads(again.out.strip().splitlines()[-1]) == final
    assert main([a if a != "steps=10" else "steps=14" for a in args]) == 0
    more = capsys.readouterr()
    assert "continuing" in more.err and "pinned to 10" in more.err and "resumed from step 10" in more.out
    assert json.loads((workdir / "final.json").read_text())["final/step"] == 14.0
    steps = [json.loads(line)["step"] for line in (workdir / "metrics.jsonl").read_text().splitlines()
             if "train/loss" in json.loads(line)]
    assert steps == sorted(set(steps)) and steps[-1] == 14
    # The continued run's own command again (its decay_steps=0 was pinned to 10): the finished run,
    # not a refusal over a key the user never changed; and it continues once more when asked.
    continued = [a if a != "steps=10" else "steps=14" for a in args]
    assert main(continued) == 0
    assert "is a finished run" in capsys.readouterr().err
    assert main([a if a != "steps=10" else "steps=16" for a in args]) == 0
    assert "continuing" in capsys.readouterr().err
    assert json.loads((workdir / "config.json").read_text())["optim"]["decay_steps"] == 10


def test_a_resume_may_change_how_the_model_computes_but_not_what_it_is(tmp_path, capsys):
    """model.attention / model.remat change the kernels and what the backward pass recomputes, not the
    function: a run may resume with them changed (config.json rewritten, said on stderr)."""
    import dataclasses

    from lmforge.cli.errors import ConfigError
    from lmforge.cli.launch import write_config
    from lmforge.train.pretrain import PretrainConfig

    base = PretrainConfig()
    workdir = tmp_path / "w"
    assert write_config(base, workdir) is False
    (workdir / "checkpoints" / "7").mkdir(parents=True)
    faster = dataclasses.replace(base, model=dataclasses.replace(base.model, attention="flash", remat="minimal"))
    assert write_config(faster, workdir) is True
    err = capsys.readouterr().err
    assert "resuming" in err and "model.attention: 'xla' → 'flash'" in err and "model.remat: 'none' → 'minimal'" in err
    assert read_json(workdir / "config.json")["model"]["attention"] == "flash"
    other = dataclasses.replace(faster, model=dataclasses.replace(faster.model, attention="xla", num_layers=3))
    with pytest.raises(ConfigError, match=r"model.num_layers: .* refusing to resume"):
        write_config(other, workdir)
    assert read_json(workdir / "config.json")["model"]["attention"] == "flash"


def test_checkpoints_of_a_runs_stages_lock_its_folder(exp, tmp_path, capsys):
    """A task that runs stages in subfolders (interrogation: stage1/, stage2/) holds no checkpoint at its
    top; a different config used to replace the whole finished run. Its stages' checkpoints lock it."""
    workdir = tmp_path / "w"
    assert main(["run", str(exp), "--workdir", str(workdir)]) == 0
    (workdir / "stage1" / "checkpoints" / "4").mkdir(parents=True)
    capsys.readouterr()
    assert main(["run", str(exp), "optim.lr=0.5", "--workdir", str(workdir)]) == 2
    assert "holds a different config (optim.lr: 0.001 → 0.5) and stages with checkpoints (stage1); refusing" in (
        one_error_line(capsys))
    assert not list(workdir.glob("replaced-*"))


def test_a_mistake_in_an_experiment_file_is_one_line_at_its_line(tmp_path, capsys):
    """A misspelt keyword in get_config, or a syntax error, names the experiment's file and line in one
    line (it was a Python traceback); --traceback still shows the whole traceback."""
    exp = tmp_path / "exp.py"
    exp.write_text("from lmforge.train.pretrain import PretrainConfig\nVARIANTS = ('default',)\n"
                   "def get_config(variant='default'):\n    return PretrainConfig(step=3)\n")
    assert main(["run", str(exp), "--workdir", str(tmp_path / "w")]) == 2
    assert one_error_line(capsys) == (f"lmforge: error: {exp}:4: get_config('default') failed: TypeError: "
                                      f"PretrainConfig.__init__() got an unexpected keyword argument 'step' "
                                      f"(--traceback shows the whole traceback)")
    # Any exception in get_config, a config's own check included: one line naming the file and the variant.
    exp.write_text("from lmforge.train.pretrain import PretrainConfig\nVARIANTS = ('smoke',)\n"
                   "def get_config(variant='default'):\n    return PretrainConfig(steps=-1)\n")
    assert main(["run", f"{exp}:smoke", "--workdir", str(tmp_path / "w")]) == 2
    assert one_error_line(capsys).startswith(f"lmforge: error: {exp}:4: get_config('smoke') failed: ValueError: steps ")
    exp.write_text("VARIANTS = ('default',)\ndef get_config(variant='default'):\n    return 1 / 0\n")
    assert main(["run", str(exp), "--workdir", str(tmp_path / "w")]) == 2
    assert one_error_line(capsys) == (f"lmforge: error: {exp}:3: get_config('default') failed: ZeroDivisionError: "
                                      f"division by zero (--traceback shows the whole traceback)")
    exp.write_text("VARIANTS = ('default',\n")
    assert main(["run", str(exp)]) == 2
    assert one_error_line(capsys).startswith(f"lmforge: error: {exp}:1: loading the experiment failed: SyntaxError: ")
    with pytest.raises(Exception, match="loading the experiment failed"):
        main(["--traceback", "run", str(exp)])
    assert not (tmp_path / "w").exists()
