"""`lmforge data curate CONFIG`: runs, writes shards + report; bad input is a one-line error."""

import json

import pytest
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


def test_curated_output_is_a_source_for_pretraining_and_the_tokenizer(tmp_path, capsys):
    """What `lmforge data curate` writes (jsonl.zst by default, or parquet) is read back by the pretraining
    sources, as kind=curated (the workdir) or as zstd jsonl; a folder without a finished curation is named."""
    from lmforge.data import SourceConfig, read_documents

    data = write_jsonl(tmp_path / "in.jsonl", [{"text": web_page(i)} for i in range(4)])
    exp = tmp_path / "exp.py"
    exp.write_text(EXP.format(path=str(data)))
    for fmt in ("jsonl.zst", "parquet"):
        run = tmp_path / fmt
        assert main(["data", "curate", str(exp), f"output.format={fmt}", "--workdir", str(run)]) == 0
        docs = read_documents(SourceConfig(kind="curated", path=str(run)))
        assert sorted(docs) == sorted(web_page(i) for i in range(4))
        assert read_documents(SourceConfig(kind="curated", path=str(run / "data"))) == docs
    assert sorted(read_documents(SourceConfig(kind="jsonl", path=str(tmp_path / "jsonl.zst" / "data" / "*.zst")))) == \
        sorted(web_page(i) for i in range(4))
    with pytest.raises(ValueError, match=r"holds no finished curation \(.*funnel.json is missing\)"):
        read_documents(SourceConfig(kind="curated", path=str(tmp_path)))
    capsys.readouterr()
    tok = tmp_path / "tok"
    assert main(["tokenizer", "train", "--source-kind", "curated", "--path", str(tmp_path / "parquet"),
                 "--vocab-size", "400", "--out", str(tok)]) == 0
    assert (tok / "tokenizer.model").is_file()


def test_curation_that_keeps_nothing_is_an_error_naming_the_first_bad_record(tmp_path, capsys):
    """Records of the wrong shape are skipped and counted; the first of each reason is printed with what
    was expected; a curation left with no document is a one-line error after its report is written."""
    data = write_jsonl(tmp_path / "in.jsonl", [{"id": i, "body": web_page(i)} for i in range(3)] + ["{bad"])
    exp = tmp_path / "exp.py"
    exp.write_text(EXP.format(path=str(data)))
    assert main(["data", "curate", str(exp), "--workdir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == (f"lmforge: skipped 1 record(s) as read/malformed_json; the first: [{data}:4] invalid JSON: "
                      f"Expecting property name enclosed in double quotes (column 2) (5 bytes)")   # with its newline
    assert err[1].startswith(f"lmforge: skipped 3 record(s) as read/missing_field; the first: [{data}:1] expected a "
                             f"JSON object with a string field 'text', got keys body, id (")
    assert err[2].startswith(f"lmforge: error: curation kept none of the 4 documents: read/missing_field dropped 3, "
                             f"the first [{data}:1] expected a JSON object") and len(err) == 3
    assert "`lmforge data curate --text-field NAME` reads another field; see" in err[2]
    assert (tmp_path / "run" / "report.md").is_file()
    assert main(["data", "curate", str(exp), "--text-field", "body", "--workdir", str(tmp_path / "run2")]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["curate/output_documents"] == 3


def test_the_report_table_adds_up_past_the_top_reasons():
    import pathlib
    import tempfile

    from lmforge.data.curate.funnel import Funnel
    from lmforge.data.curate.report import TOP_REASONS, write_report

    funnel = Funnel(stages=("quality",))
    funnel.drops = {f"quality/r{i:02d}": 1 for i in range(TOP_REASONS + 2)}
    with tempfile.TemporaryDirectory() as d:
        text = write_report(funnel, pathlib.Path(d)).read_text()
    assert f"| 2 more reasons (quality/r{TOP_REASONS:02d}, quality/r{TOP_REASONS + 1:02d}) | 2 | 0.000 |" in text
