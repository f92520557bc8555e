"""The `lmforge` command end to end on the fake task: run, resume, user errors, sample, tokenizer."""

import json
import sys
import types

import pytest
from cli_fake_task import FakeConfig, read_json, write_experiment

from lmforge.cli import to_json
from lmforge.cli.main import main


@pytest.fixture
def exp(tmp_path):
    return write_experiment(tmp_path)


def test_run_writes_config_and_prints_metrics(exp, tmp_path, capsys):
    workdir = tmp_path / "run"
    assert main(["run", f"{exp}:smoke", "optim.lr=0.5", "model.num_layers=3", "--workdir", str(workdir)]) == 0
    out = capsys.readouterr().out
    assert "  optim.lr = 0.5" in out and "  model.num_layers = 3" in out and "  steps = 5" in out
    assert f"workdir: {workdir}" in out
    assert json.loads(out.strip().splitlines()[-1]) == {"final/layers": 3.0, "final/loss": 5.0}
    saved = read_json(workdir / "config.json")
    assert saved["__class__"] == "cli_fake_task.FakeConfig" and saved["optim"]["lr"] == 0.5
    assert (workdir / "ran.txt").exists()


def test_bindings_may_follow_options(exp, tmp_path, capsys):
    workdir = tmp_path / "run"
    assert main(["run", f"{exp}:smoke", "--workdir", str(workdir), "optim.lr=0.5"]) == 0
    assert read_json(workdir / "config.json")["optim"]["lr"] == 0.5
    assert main(["run", f"{exp}:smoke", "--workdir", str(workdir), "--bogus"]) == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_default_workdir_under_runs(exp, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["run", f"{exp}:smoke"]) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert run_dir.name.startswith("fake_exp-smoke-") and (run_dir / "config.json").exists()
    assert f"workdir: runs/{run_dir.name}" in capsys.readouterr().out


def test_resume_same_config_and_refuse_a_different_one(exp, tmp_path, capsys):
    workdir = tmp_path / "run"
    assert main(["run", str(exp), "optim.lr=0.5", "--workdir", str(workdir)]) == 0
    assert main(["run", str(exp), "optim.lr=0.5", "--workdir", str(workdir)]) == 0  # a resume
    (workdir / "checkpoints" / "5").mkdir(parents=True)  # a saved step: the folder is now locked to its config
    before = (workdir / "config.json").read_bytes()
    (workdir / "ran.txt").unlink()
    capsys.readouterr()
    assert main(["run", str(exp), "optim.lr=0.25", "model.num_layers=4", "--workdir", str(workdir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lmforge: error: ") and err.count("\n") == 1
    assert "optim.lr: 0.5 → 0.25" in err and "model.num_layers: 2 → 4" in err and "refusing to resume" in err
    assert (workdir / "config.json").read_bytes() == before  # nothing overwritten
    assert not (workdir / "ran.txt").exists()                # and the runner never ran


def test_refuses_a_non_empty_folder_that_is_not_a_run(exp, tmp_path, capsys):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "corpus.txt").write_text("precious")
    assert main(["run", str(exp), "--workdir", str(folder)]) == 2
    assert "exists and is not a run folder" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == ["corpus.txt"]


def test_resume_tolerates_a_field_added_since(exp, tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    data = json.loads(to_json(FakeConfig(steps=5)))
    del data["optim"]["warmup_steps"]  # as if written before the field existed
    (workdir / "config.json").write_text(json.dumps(data))
    assert main(["run", str(exp), "--workdir", str(workdir)]) == 0


@pytest.mark.parametrize("argv, message", [
    (["run", "{exp}", "optim.learning_rate=1"], "unknown config key 'optim.learning_rate' — did you mean 'optim.lr'?"),
    (["run", "{exp}", "model.num_layers=4.5"], "config key 'model.num_layers' expects int, got '4.5'"),
    (["run", "{exp}:smok"], "has no variant 'smok'"),
    (["run", "{tmp}/missing.py"], "not found"),
    (["run", "{exp}", "model.num_heads=3"], "makes an invalid ModelCfg"),
    (["sweep", "{exp}", "optim.lr=[1,2]", "optim.typo=[1]"], "unknown config key 'optim.typo'"),
    (["sample", "{tmp}", "--prompt", "hi"], "is neither a run folder"),
    (["sample", "{tmp}/nowhere", "--prompt", "hi"], "nowhere does not exist (expected a run folder, a model folder"),
])
def test_user_errors_are_one_line_exit_2(exp, tmp_path, capsys, argv, message):
    argv = [a.format(exp=exp, tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("lmforge: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert message in err


def test_traceback_flag_and_bugs_keep_tracebacks(exp, tmp_path):
    from lmforge.cli import ConfigError
    with pytest.raises(ConfigError):
        main(["--traceback", "run", str(exp), "nope=1"])
    with pytest.raises(RuntimeError, match="told to fail"):  # a crashing runner is not a user error
        main(["run", str(exp), "fail=true", "--workdir", str(tmp_path / "w")])


def test_argparse_errors_return_2(capsys):
    assert main(["run"]) == 2
    # Only the experiment is required; the KEY=VALUE bindings are optional.
    assert capsys.readouterr().err.strip().endswith("error: the following arguments are required: EXP.py[:VARIANT]")
    assert main(["sweep"]) == 2
    assert capsys.readouterr().err.strip().endswith("error: the following arguments are required: EXP.py[:VARIANT]")
    assert main([]) == 2
    assert main(["--help"]) == 0
    capsys.readouterr()


def test_sample_continues_each_prompt(tmp_path, monkeypatch, capsys):
    """`lmforge sample` on a pretraining run: its sampler (load_for_sampling) with the flags' SamplingConfig."""
    from lmforge.infer import SamplingConfig
    from lmforge.train import pretrain

    workdir = tmp_path / "run"
    (workdir / "checkpoints" / "5").mkdir(parents=True)  # as if it had trained
    (workdir / "config.json").write_text(to_json(pretrain.PretrainConfig(steps=5)))
    calls = []

    class FakeSampler:
        def complete(self, prompts, sampling, **kwargs):
            calls.append((prompts, sampling, kwargs))
            return [p.upper() for p in prompts]

    monkeypatch.setattr(pretrain, "load_for_sampling", lambda run_dir, config: FakeSampler()
                        if run_dir == workdir and config == pretrain.PretrainConfig(steps=5) else None)
    assert main(["sample", str(workdir), "--prompt", "ab", "--prompt", "cd", "--temperature", "0", "--top-k", "5"]) == 0
    (prompts, sampling, kwargs) = calls[0]
    assert prompts == ["ab", "cd"] and kwargs == {"seed": 0}
    assert sampling == SamplingConfig(max_new_tokens=200, temperature=0.0, top_k=5, top_p=1.0)
    out = capsys.readouterr().out
    assert ">>> ab\nAB\n" in out and ">>> cd\nCD\n" in out
    assert main(["sample", str(workdir), "--prompt", "x", "--top-p", "0"]) == 2


def test_tokenizer_train(tmp_path, monkeypatch, capsys):
    seen = {}
    sources = types.SimpleNamespace(
        SourceConfig=lambda kind, path, text_field, on_bad_line: (kind, path, text_field, on_bad_line),
        read_documents=lambda cfg: [f"doc {i} from {cfg[1]}" for i in range(10)],
        split_documents=lambda docs, frac: (docs[:9], docs[9:]),
    )
    tokenizer = types.SimpleNamespace(
        SP_FILE="tokenizer.model", CHAR_FILE="tokenizer.json", TokenizerConfig=lambda **kw: kw,
        train_tokenizer=lambda cfg, texts, directory, held_out: seen.update(
            cfg=cfg, n=len(texts), dir=directory, held_out=len(held_out)) or "tok",
        compression_report=lambda tok, texts: {"chars_per_token": 4.0, "bytes_per_token": 4.5, "n": len(texts)},
    )
    monkeypatch.setitem(sys.modules, "lmforge.data.sources", sources)
    monkeypatch.setitem(sys.modules, "lmforge.data.tokenizer", tokenizer)
    out_dir = tmp_path / "tok"
    assert main(["tokenizer", "train", "--path", "c.txt", "--vocab-size", "300", "--out", str(out_dir)]) == 0
    assert seen == {"cfg": {"kind": "sentencepiece", "vocab_size": 300}, "n": 9, "dir": out_dir, "held_out": 1}
    report = json.loads(capsys.readouterr().out)
    assert report == {"chars_per_token": 4.0, "bytes_per_token": 4.5, "n": 1, "held_out_documents": 1}
    sources.read_documents = lambda cfg: seen.update(source=cfg) or ["a"] * 10
    assert main(["tokenizer", "train", "--source-kind", "jsonl", "--path", "q.jsonl", "--text-field", "question",
                 "--on-bad-line", "skip", "--out", str(tmp_path / "tok2")]) == 0
    assert seen["source"] == ("jsonl", "q.jsonl", "question", "skip")
    capsys.readouterr()
    # options the source or the tokenizer kind would ignore are refused, not dropped
    for argv, words in ((["--kind", "char", "--vocab-size", "300"], "--vocab-size 300 is for --kind sentencepiece"),
                        (["--source-kind", "python_docs", "--path", "c.txt"], "--path c.txt is not read by --source-kind "
                                                                               "python_docs"),
                        (["--path", "c.txt", "--text-field", "body"], "are for --source-kind jsonl, not text")):
        assert main(["tokenizer", "train", *argv, "--out", str(tmp_path / "tok3")]) == 2
        assert words in capsys.readouterr().err

    sources.read_documents = lambda cfg: []
    assert main(["tokenizer", "train", "--path", "c.txt", "--out", str(out_dir)]) == 2
    assert "holds no documents" in capsys.readouterr().err
    # --out a file, or a folder that holds a tokenizer already (a run's model was trained with it)
    (tmp_path / "f.txt").write_text("x")
    (out_dir / "tokenizer.model").parent.mkdir(exist_ok=True)
    (out_dir / "tokenizer.model").write_bytes(b"sp")
    for out, words in ((tmp_path / "f.txt", "is a file; expected a folder"),
                       (out_dir, "already holds a tokenizer (tokenizer.model); choose a new folder")):
        assert main(["tokenizer", "train", "--path", "c.txt", "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert words in err and "\n" not in err, err
    assert (out_dir / "tokenizer.model").read_bytes() == b"sp"


def test_tokenizer_train_refuses_records_as_text_and_names_an_empty_file(tmp_path, capsys):
    # Data audit #8 and #13: the default --source-kind text trained on a .jsonl's JSON syntax; an empty .txt
    # was "too small to hold out 10% for the report".
    (tmp_path / "docs.jsonl").write_text('{"text": "hello"}\n')
    (tmp_path / "empty.txt").write_text("")
    assert main(["tokenizer", "train", "--path", str(tmp_path / "docs.jsonl"), "--out", str(tmp_path / "tok")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"lmforge: error: {tmp_path / 'docs.jsonl'}: a .jsonl file holds JSON records, not text")
    assert err.endswith("`lmforge tokenizer train --source-kind jsonl`") and "\n" not in err
    assert main(["tokenizer", "train", "--path", str(tmp_path / "empty.txt"), "--out", str(tmp_path / "tok")]) == 2
    assert capsys.readouterr().err.strip() == (f"lmforge: error: source text '{tmp_path / 'empty.txt'}' holds no "
                                               f"documents: {tmp_path / 'empty.txt'} is empty; expected UTF-8 text")
    assert not (tmp_path / "tok").exists()
