"""`lmforge data curate CONFIG`: runs, writes shards + report; bad input is a one-line error."""

import json

from conftest import web_page, write_jsonl
from lmforge.cli.main import main

EXP = '''
from lmforge.data.curate import CurateConfig, InputConfig, OutputConfig
VARIANTS = ("default",)
def get_config(variant="default"):
    return CurateConfig(inputs=(InputConfig(paths=({path!r},)),), workers=1, output=OutputConfig(num_shards=2))
'''


def test_cli_curate_writes_shards_and_report(tmp_path, capsys):
    data = write_jsonl(tmp_path / "in.jsonl", [{"text": web_page(i)} for i in range(4)] + ["{bad"])
    exp = tmp_path / "exp.py"
    exp.write_text(EXP.format(path=str(data)))
    assert main(["data", "curate", str(exp), "near_dedup.threshold=0.7", "--workdir", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    metrics = json.loads(out.strip().splitlines()[-1])
    assert metrics["curate/input_documents"] == 5 and metrics["curate/output_documents"] == 4
    assert "curated 5 → 4 documents" in out and "; dropped: read/malformed_json 1; report" in out   # said on the console
    assert (tmp_path / "run" / "report.md").is_file() and len(list((tmp_path / "run" / "data").iterdir())) == 2
    assert json.loads((tmp_path / "run" / "config.json").read_text())["near_dedup"]["threshold"] == 0.7


def test_cli_curate_inputs_from_the_command_line_and_plain_jsonl(tmp_path, capsys):
    # Issue 13: input files as arguments (the experiment's inputs replaced), and plain jsonl to look at.
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lmforge.data.curate import read_shards

    a = write_jsonl(tmp_path / "a.jsonl", [{"text": web_page(i)} for i in range(3)])
    b = tmp_path / "b.parquet"
    pq.write_table(pa.table({"text": [web_page(10 + i) for i in range(2)]}), b)
    exp = tmp_path / "exp.py"
    exp.write_text(EXP.format(path=str(tmp_path / "never_read.jsonl")))
    run = tmp_path / "run"
    assert main(["data", "curate", str(exp), "--input", str(a), str(b), "output.format=jsonl",
                 "--workdir", str(run)]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["curate/input_documents"] == 5 and metrics["curate/output_documents"] == 5
    shards = sorted(p.name for p in (run / "data").iterdir())
    assert shards == ["part-00000-of-00002.jsonl", "part-00001-of-00002.jsonl"]
    lines = [json.loads(line) for shard in shards for line in (run / "data" / shard).read_text().splitlines()]
    assert sorted(d["source"] for d in lines) == ["a", "a", "a", "b", "b"]
    assert sorted(d.text for d in read_shards(run / "data")) == sorted(d["text"] for d in lines)
    config = json.loads((run / "config.json").read_text())
    assert [i["paths"] for i in config["inputs"]] == [[str(a)], [str(b)]] and config["output"]["format"] == "jsonl"


def test_cli_curate_errors_are_one_line(tmp_path, capsys):
    exp = tmp_path / "exp.py"
    exp.write_text(EXP.format(path=str(tmp_path / "missing.jsonl")))
    assert main(["data", "curate", str(exp), "--workdir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lmforge: error: ") and "missing.jsonl" in err and "\n" not in err
    assert main(["data", "curate", str(exp), "near_dedup.treshold=0.7"]) == 2
    assert "near_dedup.threshold" in capsys.readouterr().err
    data = write_jsonl(tmp_path / "in.jsonl", ["{bad"])
    exp.write_text(EXP.format(path=str(data)).replace("InputConfig(paths=", "InputConfig(on_bad_record='fail', paths="))
    assert main(["data", "curate", str(exp), "--workdir", str(tmp_path / "run2")]) == 2
    assert f"{data}:1: invalid JSON" in capsys.readouterr().err


def test_curate_dialogues_experiment_smoke(shared_data, tmp_path, monkeypatch, capsys):
    import pathlib

    repo = pathlib.Path(__file__).resolve().parents[3]
    monkeypatch.chdir(repo)   # the experiment reads ../shared/data relative to the repository root
    exp = repo / "experiments" / "data" / "curate_dialogues.py"
    assert main(["data", "curate", f"{exp}:smoke", "--workdir", str(tmp_path / "run")]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["curate/input_documents"] == 2312
    assert 0 < metrics["curate/output_documents"] < metrics["curate/input_documents"]
    funnel = json.loads((tmp_path / "run" / "funnel.json").read_text())
    assert "safety" in json.dumps(funnel)
