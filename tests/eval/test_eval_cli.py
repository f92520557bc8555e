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
