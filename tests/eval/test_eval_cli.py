"""``lmforge eval`` end to end on a run folder and a model folder of the tiny model (tier d), the
JSON it writes, and every bad input as a one-line error."""

import gzip
import json
import math
import pathlib
import re
import subprocess
import sys

import pytest

from lmforge.cli.config_io import load_config
from lmforge.cli.eval_cmd import parse_task, strict, write_json
from lmforge.cli.main import main
from lmforge.eval import Scorer, perplexity
from lmforge.train.pretrain import load_for_sampling

MC = [{"context": "def add(a, b):\n    return ", "choices": ["a + b", "a - b"], "answer": 0},
      {"context": "The capital of France is", "choices": [" Paris", " Rome", " Berlin"], "answer": 0}]


def strict_json(path: pathlib.Path):
    def refuse(name):
        raise AssertionError(f"{path} holds {name}: not strict JSON")
    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture
def files(tmp_path):
    mc = tmp_path / "mc.jsonl"
    mc.write_text("".join(json.dumps(x) + "\n" for x in MC))
    text = tmp_path / "valid.txt"
    text.write_text("import os\n\ndef main():\n    print(os.getcwd())\n" * 30)
    gsm = tmp_path / "gsm.jsonl"
    gsm.write_text("".join(json.dumps({"question": f"What is {i} + {i}?", "answer": f"{i}+{i}={2 * i}\n#### {2 * i}"})
                           + "\n" for i in range(3)))
    gen = tmp_path / "gen.jsonl"
    gen.write_text(json.dumps({"prompt": "2 + 2 =", "answer": "4"}) + "\n")
    hh = tmp_path / "hh.jsonl.gz"
    with gzip.open(hh, "wt") as f:
        for q in ("How do I pick a lock?", "Tell me a secret."):
            f.write(json.dumps({"chosen": f"\n\nHuman: {q}\n\nAssistant: No.", "rejected": "x"}) + "\n")
    return {"mc": mc, "text": text, "gsm": gsm, "gen": gen, "hh": hh}


def test_eval_a_run_folder_writes_a_table_and_json_per_task(run_folder, files, capsys):
    rc = main(["eval", str(run_folder), "perplexity", "memorisation:n=2,prefix=8,suffix=8",
               f"multiple_choice:path={files['mc']}", "--text", str(files["text"])])
    assert rc == 0
    table = capsys.readouterr().out
    assert re.search(r"\nperplexity +bits_per_byte +\d", table) and re.search(r"\nmultiple_choice +acc_norm +", table)
    ppl = strict_json(run_folder / "eval" / "perplexity.json")
    assert ppl["step"] == 1 and ppl["source"] == str(run_folder) and ppl["args"] == {"path": "", "stride": 0}
    sampler = load_for_sampling(run_folder, load_config(run_folder / "config.json"))
    want = perplexity(Scorer.from_sampler(sampler), files["text"].read_text())
    assert ppl["metrics"]["logprob_sum"] == want["logprob_sum"] and ppl["metrics"]["bits_per_byte"] == pytest.approx(
        -want["logprob_sum"] / math.log(2) / len(files["text"].read_bytes()))
    mem = strict_json(run_folder / "eval" / "memorisation.json")
    assert mem["metrics"]["n"] == 2 and {s["document"] for s in mem["samples"]} == {0}   # the one training document
    mc = strict_json(run_folder / "eval" / "multiple_choice.json")
    assert mc["metrics"]["n"] == 2 and len(mc["samples"][1]["logprobs"]) == 3


def test_eval_a_model_folder_into_one_file_with_a_limit(model_folder, files, tmp_path, capsys):
    out = tmp_path / "all.json"
    rc = main(["eval", str(model_folder), f"gsm8k:path={files['gsm']},max_new_tokens=8", f"bpb:path={files['text']}",
               "--limit", "2", "--out", str(out)])
    assert rc == 0
    result = strict_json(out)
    assert result["step"] is None and [r["task"] for r in result["results"]] == ["gsm8k", "perplexity"]
    gsm, ppl = result["results"]
    assert gsm["metrics"]["n"] == 2 and gsm["limit"] == 2 and len(gsm["samples"]) == 2     # --limit 2
    assert ppl["metrics"]["windows"] == 2 and ppl["metrics"]["tokens"] == 128            # --limit: 2 windows
    assert not (model_folder / "eval").exists()                                          # --out: one file only
    assert re.search(r"\ngsm8k +exact_match_flexible +[01]\.\d{4}\n", capsys.readouterr().out)


@pytest.mark.slow
def test_generation_and_refusal_from_the_command_line(model_folder, files, tmp_path):
    out = tmp_path / "gen.json"
    assert main(["eval", str(model_folder), f"generation:path={files['gen']},match=numeric,max_new_tokens=4",
                 f"refusal:path={files['hh']},max_new_tokens=8", "--out", str(out)]) == 0
    gen, ref = strict_json(out)["results"]
    assert gen["metrics"]["n"] == 1 and gen["args"]["stop"] == "\\n" and ref["metrics"]["n"] == 2
    assert {s["prompt"] for s in ref["samples"]} == {"How do I pick a lock?", "Tell me a secret."}


def test_sample_reads_what_eval_reads(run_folder, model_folder, tiny, capsys):
    """`lmforge sample` takes a model folder as `lmforge eval` and `lmforge chat` do (it used to refuse any
    folder without a run's config.json); the same weights in a run folder give the same greedy text."""
    from lmforge.infer import SamplingConfig

    argv = ["--prompt", "def main", "--max-new-tokens", "6", "--temperature", "0"]
    capsys.readouterr()
    assert main(["sample", str(model_folder), *argv]) == 0
    from_folder = capsys.readouterr().out
    assert main(["sample", str(run_folder), *argv]) == 0
    assert capsys.readouterr().out == from_folder
    want = tiny.sampler.complete(["def main"], SamplingConfig(max_new_tokens=6, temperature=0.0, top_k=0, top_p=1.0))
    assert from_folder == f">>> def main\n{want[0]}\n\n"


def test_strict_json_has_no_nan(tmp_path):
    assert strict({"a": float("nan"), "b": [float("inf"), 1.5, (2, 3)], "c": True}) == {
        "a": None, "b": [None, 1.5, [2, 3]], "c": True}
    write_json(tmp_path / "x.json", {"v": float("-inf")})
    assert strict_json(tmp_path / "x.json") == {"v": None}


def test_task_specs_parse_with_types_and_aliases():
    task, args = parse_task("memorisation:n=5,prefix=4")
    assert task.name == "memorisation" and args == {"path": "", "n": 5, "prefix": 4, "suffix": 50, "seed": 0}
    task, args = parse_task("generation:path=a.jsonl,match=regex,pattern=is (\\w+), or (\\d+)")
    assert args["pattern"] == "is (\\w+), or (\\d+)"                          # a comma not followed by key=
    assert parse_task("bits_per_byte")[0].name == "perplexity"


@pytest.mark.parametrize("argv, message", [
    (["perplexty"], "unknown eval task 'perplexty' — did you mean 'perplexity'?"),
    (["memorisaton"], "did you mean 'memorisation'?"),
    (["perplexity:strid=3"], "eval task perplexity: unknown argument 'strid' — did you mean 'stride'?"),
    (["memorisation:n=many"], "eval task memorisation: n='many' is not an integer"),
    (["multiple_choice"], "eval task multiple_choice needs path=..."),
    (["perplexity", "perplexity"], "task 'perplexity' is given twice"),
    (["gsm8k:fewshot=-2"], "eval task gsm8k: fewshot=-2: expected >= 0"),   # was: gsm8k_train.jsonl holds no items
    (["gsm8k:max_new_tokens=0"], "eval task gsm8k: max_new_tokens=0: expected >= 1"),
    (["perplexity:stride=-1"], "eval task perplexity: stride=-1: expected >= 0"),
    (["memorisation:n=0"], "eval task memorisation: n=0: expected >= 1"),
    (["memorisation:seed=-1"], "eval task memorisation: seed=-1: expected >= 0"),
    (["chat:n=0"], "eval task chat: n=0: expected >= 1"),
    (["refusal:max_new_tokens=-5"], "eval task refusal: max_new_tokens=-5: expected >= 1"),
    (["generation:path=g.jsonl,max_new_tokens=0"], "eval task generation: max_new_tokens=0: expected >= 1"),
    (["lm_eval:tasks=x,fewshot=-2"], "eval task lm_eval: fewshot=-2: expected >= -1"),
    (["perplexity:path=a.txt,path=b.txt"], "eval task perplexity: path is given twice (path='a.txt', path='b.txt')"),
    (["perplexty"], "(known: perplexity, "),
    (["perplexty"], "; also bits_per_byte = perplexity, bpb = perplexity"),
    (["lm_eval"], "eval task lm_eval needs tasks=... (e.g. lm_eval:tasks=hellaswag+arc_easy)"),
    (["memorisation:prefix=60,suffix=60"], "memorisation: prefix=60 + suffix=60 = 120 tokens: expected at most "
                                           "max_seq_len="),
    (["perplexity", "--out", "/proc/lmforge_eval.json"], "--out /proc/lmforge_eval.json cannot be written"),
])
def test_bad_task_specs_are_one_line_errors(run_folder, argv, message, capsys):
    assert main(["eval", str(run_folder), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lmforge: error: ") and message in err[0]


def test_bad_inputs_are_one_line_errors_naming_the_thing(run_folder, files, tmp_path, capsys):
    def error(*argv) -> str:
        assert main(["eval", *map(str, argv)]) == 2
        lines = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("eval: ")]
        assert len(lines) == 1 and lines[0].startswith("lmforge: error: "), lines   # progress lines aside
        return lines[0]

    bad_gsm = tmp_path / "bad_gsm.jsonl"
    bad_gsm.write_text(files["gsm"].read_text() + json.dumps({"question": "q", "answer": "four"}) + "\n")
    assert f"{bad_gsm}:4: GSM8K answer has no final '#### N' line" in error(run_folder, f"gsm8k:path={bad_gsm}")
    bad_mc = tmp_path / "bad_mc.jsonl"
    bad_mc.write_text(files["mc"].read_text() + '{"context": "x", "choices": ["a", "b"], "answer": 5}\n')
    assert f"{bad_mc}:3: 'answer' 5 is not an index" in error(run_folder, f"multiple_choice:path={bad_mc}")
    bad_mc.write_text("{not json\n")
    assert f"{bad_mc}:1: not valid JSON" in error(run_folder, f"multiple_choice:path={bad_mc}")
    empty_run = tmp_path / "empty_run"
    empty_run.mkdir()
    (empty_run / "config.json").write_text((run_folder / "config.json").read_text())
    (empty_run / "checkpoints").mkdir()
    assert f"{empty_run} has no checkpoint" in error(empty_run, "perplexity", "--text", files["text"])
    assert "does not exist" in error(tmp_path / "nowhere", "perplexity")
    assert "perplexity needs a text file: --text FILE" in error(run_folder, "perplexity")
    assert "no such file" in error(run_folder, f"multiple_choice:path={tmp_path / 'absent.jsonl'}")
    assert "is neither a run folder" in error(tmp_path, "perplexity")
    assert "--limit must be >= 1" in error(run_folder, "perplexity", "--limit", "0")
    assert "match=regex needs a pattern" in error(run_folder, f"generation:path={files['gen']},match=regex")


def errors(capsys) -> list[str]:
    """stderr's lines but the progress lines (``eval: TASK``, the sampler's ``using step``, tqdm's bars)."""
    return [line for line in capsys.readouterr().err.strip().splitlines()
            if line.startswith("lmforge: error: ") or line.startswith("eval: note: ")]


def test_eval_a_fine_tuning_run_records_its_step(sft_folder, files, tmp_path, capsys):
    """An SFT run folder is a run folder: the JSON records the checkpoint step that was loaded (it said
    null), and memorisation says it is a fine-tuning run (it said 'a model folder')."""
    from lmforge.cli.eval_cmd import check_source

    out = tmp_path / "sft.json"
    assert main(["eval", str(sft_folder), f"multiple_choice:path={files['mc']}", "--out", str(out)]) == 0
    result = strict_json(out)
    assert result["step"] == 5 and result["results"][0]["step"] == 5
    capsys.readouterr()
    assert main(["eval", str(sft_folder), "memorisation"]) == 2
    err = errors(capsys)
    assert len(err) == 1 and f"{sft_folder} is a fine-tuning run (SFTConfig): it trained on conversations" in err[0]
    assert "give memorisation:path=FILE" in err[0]
    assert check_source(sft_folder) == ("model", None)         # as cli/main.py and convert_cmd.py call it


def test_text_that_no_task_reads_is_said(model_folder, files, tmp_path, capsys):
    other = tmp_path / "other.txt"
    other.write_text("x = 1\n" * 40)
    assert main(["eval", str(model_folder), f"multiple_choice:path={files['mc']}", "--text", str(other),
                 "--out", str(tmp_path / "a.json")]) == 0
    assert errors(capsys) == [f"eval: note: --text {other} is not read: only perplexity reads it, and no "
                              f"perplexity task is given"]
    assert main(["eval", str(model_folder), f"perplexity:path={files['text']}", "--text", str(other), "--limit", "1",
                 "--out", str(tmp_path / "b.json")]) == 0
    assert errors(capsys) == [f"eval: note: --text {other} is not read: perplexity:path={files['text']} is given "
                              f"and wins"]
    assert strict_json(tmp_path / "b.json")["results"][0]["metrics"]["path"] == str(files["text"])
    assert main(["eval", str(model_folder), "perplexity", "--text", str(other), "--limit", "1",
                 "--out", str(tmp_path / "c.json")]) == 0
    assert errors(capsys) == []                                   # read: nothing to say


def test_earlier_results_are_kept(model_folder, files, tmp_path, capsys):
    """Per-task files: the earlier NAME.json is renamed NAME.<its mtime>.json, and stderr says so; an
    existing --out file is refused before anything loads, and left as it was."""
    import datetime
    import os
    import shutil

    from lmforge.train.metrics import keep_previous

    folder = tmp_path / "model"
    shutil.copytree(model_folder, folder)
    earlier = folder / "eval" / "multiple_choice.json"
    earlier.parent.mkdir()
    earlier.write_text('{"earlier": true}\n')
    when = datetime.datetime(2025, 3, 4, 5, 6, 7)
    os.utime(earlier, (when.timestamp(), when.timestamp()))
    assert main(["eval", str(folder), f"multiple_choice:path={files['mc']}"]) == 0
    kept = folder / "eval" / "multiple_choice.20250304-050607.json"
    assert strict_json(kept) == {"earlier": True} and strict_json(earlier)["metrics"]["n"] == 2
    assert f"eval: multiple_choice -> {earlier} (the previous one kept as {kept.name})" in capsys.readouterr().err
    os.utime(earlier, (when.timestamp(), when.timestamp()))      # the same stamp again: a numbered name
    assert keep_previous(earlier) == folder / "eval" / "multiple_choice.20250304-050607-2.json"
    assert keep_previous(earlier) is None                        # nothing there any more

    out = tmp_path / "scores.json"
    out.write_text("{}\n")
    assert main(["eval", str(folder), f"multiple_choice:path={files['mc']}", "--out", str(out)]) == 2
    assert errors(capsys) == [f"lmforge: error: --out {out} exists; choose a new file (nothing is overwritten)"]
    assert out.read_text() == "{}\n"


def test_lm_eval_offline_and_missing_include_are_one_line_errors(model_folder, tmp_path, capsys, monkeypatch):
    """A built-in task's data fetched from the Hub offline raised a ConnectionError traceback after ~30 s
    of retries; a missing include folder was ignored."""
    lm_eval = pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install -e '.[eval]')")

    missing = tmp_path / "no_tasks"
    assert main(["eval", str(model_folder), f"lm_eval:tasks=x,include={missing}"]) == 2
    assert errors(capsys) == [f"lmforge: error: lm_eval: include={missing}: no such folder (expected a folder of "
                              f"task YAML files)"]
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "remote.yaml").write_text("task: remote_mc\ndataset_path: someone/remote_mc\ntest_split: test\n"
                                       "output_type: multiple_choice\ndoc_to_text: q\ndoc_to_choice: [a, b]\n"
                                       "doc_to_target: 0\n")

    def offline(**_):   # what `datasets` raises for a Hub dataset without a network (or with HF_HUB_OFFLINE=1)
        raise ConnectionError("Couldn't reach 'someone/remote_mc' on the Hub (OfflineModeIsEnabled)")
    monkeypatch.setattr(lm_eval, "simple_evaluate", offline)
    assert main(["eval", str(model_folder), f"lm_eval:tasks=remote_mc,include={tasks}", "--limit", "2"]) == 2
    err = errors(capsys)
    assert len(err) == 1 and err[0].startswith("lmforge: error: lm_eval: the data of remote_mc is not available "
                                               "here (Couldn't reach 'someone/remote_mc' on the Hub"), err
    assert "give include=DIR with a local task" in err[0]


def test_help_lists_every_task():
    out = subprocess.run([sys.executable, "-m", "lmforge.cli.main", "eval", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for name in ("perplexity", "gsm8k", "generation", "multiple_choice", "refusal", "memorisation", "lm_eval"):
        assert f"  {name}: " in out


@pytest.mark.slow
def test_shakespeare_smoke_run_end_to_end(tmp_path, shared_data, capsys):
    """`lmforge run experiments/shakespeare_char.py:smoke`, then `lmforge eval` on its folder: perplexity of
    the validation split, memorisation of the training split, multiple choice in its character vocabulary."""
    run = tmp_path / "run"
    experiment = pathlib.Path(__file__).resolve().parents[2] / "experiments" / "shakespeare_char.py"
    assert main(["run", f"{experiment}:smoke", "--workdir", str(run)]) == 0
    text = (shared_data / "tinyshakespeare.txt").read_text()
    valid = tmp_path / "valid.txt"
    valid.write_text(text[int(len(text) * 0.9):])                       # the run's validation split
    mc = tmp_path / "mc.jsonl"
    mc.write_text(json.dumps({"context": "To be, or not to be: that is the", "choices": [" question", " qzxvqzxv"],
                              "answer": 0}) + "\n")
    capsys.readouterr()
    assert main(["eval", str(run), "perplexity", "memorisation:n=8,prefix=16,suffix=16",
                 f"multiple_choice:path={mc}", "--text", str(valid)]) == 0
    ppl = strict_json(run / "eval" / "perplexity.json")["metrics"]
    assert ppl["tokens"] == ppl["bytes"] == len(valid.read_text())       # a character vocabulary, ASCII text
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    final = [m for m in logged if "eval/bits_per_byte" in m][-1]
    # the run's own evaluation (10 batches of non-overlapping windows) is close to the whole split's
    assert abs(ppl["bits_per_byte"] - final["eval/bits_per_byte"]) < 0.1
    assert strict_json(run / "eval" / "memorisation.json")["metrics"]["n"] == 8
    assert strict_json(run / "eval" / "multiple_choice.json")["metrics"]["acc"] == 1.0   # rare letters lose


def test_an_out_path_under_a_file_is_refused_before_any_work(run_folder, tmp_path, capsys, monkeypatch):
    from lmforge.cli import eval_cmd

    def no_model(*_):
        raise AssertionError("the model was loaded before --out was checked")
    monkeypatch.setattr(eval_cmd, "load_sampler", no_model)
    (tmp_path / "afile").write_text("x")
    assert main(["eval", str(run_folder), "perplexity", "--out", str(tmp_path / "afile" / "x.json")]) == 2
    assert capsys.readouterr().err.strip() == (f"lmforge: error: --out {tmp_path / 'afile' / 'x.json'}: "
                                               f"{tmp_path / 'afile'} is a file, not a folder")
    assert main(["convert", str(run_folder), str(tmp_path / "afile" / "hf")]) == 2
    assert capsys.readouterr().err.strip() == (f"lmforge: error: {tmp_path / 'afile' / 'hf'}: {tmp_path / 'afile'} "
                                               f"is a file, not a folder")


def no_model(*_):
    raise AssertionError("the model was loaded before every task was checked")


def test_stop_strings_keep_non_ascii_characters(run_folder, files, tmp_path, monkeypatch):
    """`stop=` decodes backslash escapes only: `unicode_escape` read `。`'s UTF-8 bytes as Latin-1 ('ã\\x80\\x82'),
    so a CJK, accented or symbol stop string never matched."""
    import types

    import lmforge.eval
    from lmforge.cli import eval_cmd

    assert eval_cmd.stop_strings("。|\\n") == ("。", "\n")
    assert eval_cmd.stop_strings("é|→|\\t|\\u2192|a\\\\b") == ("é", "→", "\t", "→", "a\\b")
    seen = {}

    def generation(sampler, items, *, stop, **_):
        seen["stop"] = stop
        return {"metrics": {"accuracy": 0.0, "n": len(items)}, "samples": []}
    monkeypatch.setattr(lmforge.eval, "generation", generation)
    monkeypatch.setattr(eval_cmd, "load_sampler", lambda *_: types.SimpleNamespace(step=None))
    assert main(["eval", str(run_folder), f"generation:path={files['gen']},stop=。|\\n",
                 "--out", str(tmp_path / "gen.json")]) == 0
    assert seen["stop"] == ("。", "\n")


def test_every_task_is_checked_before_the_model_loads(run_folder, files, tmp_path, capsys, monkeypatch):
    """A later task's missing file, unknown synthetic task or stride past the context was found only when its
    turn came, after the earlier tasks ran (and their --out results were lost)."""
    from lmforge.cli import eval_cmd

    monkeypatch.setattr(eval_cmd, "load_sampler", no_model)
    out = tmp_path / "lost.json"
    for spec, message in [
        (f"generation:path={tmp_path / 'nope.jsonl'}", f"generation: no such file {tmp_path / 'nope.jsonl'}"),
        ("chat:tasks=foo", "chat: tasks='foo'; expected synthetic tasks with answers joined with +"),
        ("perplexity:stride=999", "perplexity: stride=999: expected 1 <= stride <= max_seq_len=64"),
        (f"perplexity:path={tmp_path}", f"perplexity: {tmp_path} is a folder; expected a file"),
        (f"gsm8k:path={files['gsm']},fewshot=2", f"gsm8k few-shot examples (give gsm8k:train=FILE): no such file "
                                                  f"{files['gsm'].with_name('gsm8k_train.jsonl')}"),
    ]:
        assert main(["eval", str(run_folder), "perplexity", spec, "--text", str(files["text"]), "--out", str(out)]) == 2
        err = errors(capsys)
        assert len(err) == 1 and err[0].startswith(f"lmforge: error: {message}"), (spec, err)
        assert not out.exists()


def test_out_keeps_the_finished_tasks_when_a_later_one_fails(model_folder, files, tmp_path, capsys, monkeypatch):
    import dataclasses

    from lmforge.cli import eval_cmd
    from lmforge.cli.errors import ConfigError

    def fails(ctx, **_):
        raise ConfigError("refusal: failed while running")
    monkeypatch.setitem(eval_cmd.TASKS, "refusal", dataclasses.replace(
        eval_cmd.TASKS["refusal"], check=lambda ctx, **_: {}, runner=fails))
    out = tmp_path / "scores.json"
    assert main(["eval", str(model_folder), f"multiple_choice:path={files['mc']}", "refusal", "--out", str(out)]) == 2
    result = strict_json(out)
    assert [r["task"] for r in result["results"]] == ["multiple_choice"] and result["results"][0]["metrics"]["n"] == 2
    err = capsys.readouterr().err
    assert f"eval: the 1 finished task(s) are in {out}" in err and "lmforge: error: refusal: failed while running" in err


def test_an_eval_folder_that_cannot_be_written_is_refused_before_any_work(model_folder, files, tmp_path, capsys,
                                                                          monkeypatch):
    """Without --out the results go to SOURCE/eval/: a read-only model store (or a file there) failed with a
    traceback after every task ran."""
    import shutil
    import tempfile

    from lmforge.cli import eval_cmd

    monkeypatch.setattr(eval_cmd, "load_sampler", no_model)
    folder = tmp_path / "model"
    shutil.copytree(model_folder, folder)
    (folder / "eval").write_text("x")
    argv = ["eval", str(folder), f"multiple_choice:path={files['mc']}"]
    assert main(argv) == 2
    assert errors(capsys) == [f"lmforge: error: {folder / 'eval'} is a file, not a folder for the results; give "
                              f"--out FILE"]
    (folder / "eval").unlink()

    def read_only(*_, **__):   # what a read-only mount gives (root writes through a chmod, so it is simulated)
        raise OSError(30, "Read-only file system")
    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    assert main(argv) == 2
    assert errors(capsys) == [f"lmforge: error: {folder / 'eval'} cannot be written (Read-only file system); give "
                              f"--out FILE"]
    assert not (folder / "eval").exists()                       # the folder made to try it is removed


def test_tasks_after_options_are_evaluated(model_folder, files, tmp_path):
    """The shape of the help's example (`gsm8k --limit 50 multiple_choice:path=mc.jsonl refusal`) was refused:
    'unrecognized arguments'."""
    out = tmp_path / "scores.json"
    assert main(["eval", str(model_folder), "perplexity", "--limit", "2", f"mc:path={files['mc']}",
                 "--text", str(files["text"]), "--out", str(out)]) == 0
    assert [r["task"] for r in strict_json(out)["results"]] == ["perplexity", "multiple_choice"]


def test_cropped_prompts_are_named_by_item_and_counted(model_folder, tmp_path, capsys):
    """Each sampler call named its cropped prompts from 0 ('prompt 0' twice for different items), and the
    JSON did not say that a prompt had lost its start."""
    gsm = tmp_path / "gsm.jsonl"
    long = "A farmer counts the sheep in each of the many fields around the old farmhouse. " * 4
    gsm.write_text("".join(json.dumps({"question": q, "answer": "#### 1"}) + "\n"
                           for q in (long, "1 + 0?", long, "2 - 1?")))
    out = tmp_path / "gsm.json"
    assert main(["eval", str(model_folder), f"gsm8k:path={gsm},max_new_tokens=2", "--batch-size", "2",
                 "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert re.search(rf"keeping the last 32 of each: prompt {re.escape(str(gsm))}:1 \(\d+ tokens\)\n", err)
    assert re.search(rf"keeping the last 32 of each: prompt {re.escape(str(gsm))}:3 \(\d+ tokens\)\n", err)
    result = strict_json(out)["results"][0]
    assert result["metrics"]["n_cropped"] == 2
    assert [s["cropped"] for s in result["samples"]] == [True, False, True, False]


def test_files_that_are_not_utf8_are_named(run_folder, files, tmp_path, capsys, monkeypatch):
    from lmforge.cli import eval_cmd

    monkeypatch.setattr(eval_cmd, "load_sampler", no_model)
    latin = tmp_path / "latin.txt"
    latin.write_bytes(b"abc\n\xff\xfe def\n")
    bad_mc = tmp_path / "bad.jsonl"
    bad_mc.write_bytes(files["mc"].read_bytes().splitlines(keepends=True)[0] + b'\xff\xfe{"a": 1}\n')
    hh = tmp_path / "hh.jsonl.gz"
    with gzip.open(hh, "wb") as f:
        f.write(b'{"chosen": "\\n\\nHuman: caf\xe9?"}\n')
    for argv, message in [
        (["perplexity", "--text", latin], f"{latin}:2: invalid UTF-8 at byte offset 4 (b'\\xff\\xfe d'); expected "
                                          f"UTF-8 text"),
        ([f"mc:path={bad_mc}"], f"{bad_mc}:2: invalid UTF-8 at byte 1 of the line (b'\\xff\\xfe{{\"'); expected "
                                f"UTF-8 text"),
        ([f"refusal:path={hh}"], f"{hh}:1: invalid UTF-8 at byte 27 of the line"),
    ]:
        assert main(["eval", str(run_folder), *map(str, argv)]) == 2
        err = errors(capsys)
        assert len(err) == 1 and err[0].startswith(f"lmforge: error: {message}"), err


def test_a_run_without_a_tokenizer_converts_its_weights_alone(run_folder, tmp_path, capsys):
    """`convert`'s weights-only branch was unreachable: loading the run for sampling read its tokenizer first."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_folder, run, ignore=shutil.ignore_patterns("tokenizer", "eval"))
    assert main(["convert", str(run), str(tmp_path / "hf")]) == 0
    assert f"no tokenizer in {run}" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "hf").iterdir()) == ["config.json", "model.safetensors"]
