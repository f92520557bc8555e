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


def test_an_input_with_no_records_is_an_error_and_no_finished_run(tmp_path, capsys):
    # Data audit #4: an empty input curated "0 → 0 documents" with exit 0 and a final.json, so the
    # folder then counted as finished and a rerun after filling the file did nothing.
    empty = tmp_path / "later.jsonl"
    empty.write_text("\n")
    exp = tmp_path / "exp.py"
    exp.write_text(EXP.format(path=str(empty)))
    run = tmp_path / "run"
    assert main(["data", "curate", str(exp), "--workdir", str(run)]) == 2
    assert capsys.readouterr().err.strip() == f"lmforge: error: {empty}: no records; expected one JSON object per line"
    assert not (run / "final.json").exists()
    (tmp_path / "empty.json").write_text("[]")
    assert main(["data", "curate", str(exp), "--input", str(empty), str(tmp_path / "empty.json"),
                 "--workdir", str(tmp_path / "run2")]) == 2
    assert capsys.readouterr().err.strip().endswith(
        f"{empty}, {tmp_path / 'empty.json'}: no records; expected one JSON object per line / a JSON array of objects")


def test_on_bad_record_and_max_doc_bytes_flags_apply_to_every_input(tmp_path, capsys):
    # Data audit #7: the per-input bad-record policy and size limit had no binding that reached them.
    data = write_jsonl(tmp_path / "in.jsonl", [{"text": web_page(i)} for i in range(2)] + ["{bad"])
    exp = tmp_path / "exp.py"
    exp.write_text(EXP.format(path=str(data)))
    assert main(["data", "curate", str(exp), "--on-bad-record", "fail", "--workdir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"lmforge: error: {data}:3: invalid JSON") and "--on-bad-record skip" in err
    assert main(["data", "curate", str(exp), "--max-doc-bytes", "0", "--workdir", str(tmp_path / "run")]) == 2
    assert "--max-doc-bytes=0: expected an integer >= 1" in capsys.readouterr().err
    run = tmp_path / "run2"
    assert main(["data", "curate", str(exp), "--input", str(data), str(data), "--max-doc-bytes", "10",
                 "--on-bad-record", "skip", "--workdir", str(run)]) == 2   # every document is too large
    err = capsys.readouterr().err
    assert f"read/too_large dropped 4, the first [{data}:1] (" in err and "; read/malformed_json dropped 2; see" in err
    config = json.loads((run / "config.json").read_text())
    assert [(i["max_doc_bytes"], i["on_bad_record"]) for i in config["inputs"]] == [(10, "skip"), (10, "skip")]


def test_kept_none_names_every_reason_with_its_count(tmp_path, capsys):
    # Data audit #13: with three reasons of one document each, one was named, picked by alphabetical tie-break.
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "short.txt").write_text("the cat sat with a dog.")
    exp = tmp_path / "exp.py"
    exp.write_text(EXP.format(path=str(tmp_path / "*.txt")))
    assert main(["data", "curate", str(exp), "--workdir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"lmforge: error: curation kept none of the 3 documents: gopher_quality/few_words dropped 1; "
                          f"read/empty dropped 1; read/invalid_utf8 dropped 1; see ")


def test_inputs_sharing_a_stem_get_distinct_ids_and_sources(tmp_path, capsys):
    # Data audit #2, from the command line: --input 2023/data.jsonl 2024/data.jsonl.
    paths = []
    for k, folder in enumerate(("2023", "2024")):
        (tmp_path / folder).mkdir()
        rows = [{"text": web_page(10 * k + i)} for i in range(2)]
        paths.append(str(write_jsonl(tmp_path / folder / "data.jsonl", rows)))
    exp = tmp_path / "exp.py"
    exp.write_text(EXP.format(path=str(tmp_path / "never_read.jsonl")))
    run = tmp_path / "run"
    assert main(["data", "curate", str(exp), "--input", *paths, "output.format=jsonl", "--workdir", str(run)]) == 0
    docs = [json.loads(line) for shard in sorted((run / "data").iterdir()) for line in shard.read_text().splitlines()]
    assert sorted((d["id"], d["source"]) for d in docs) == [
        ("2023/data:1", "2023/data"), ("2023/data:2", "2023/data"), ("2024/data:1", "2024/data"),
        ("2024/data:2", "2024/data")]


def test_the_same_input_reports_the_same_size_whether_its_records_read_or_not(tmp_path, capsys):
    # Data audit #12: 0.275 MB when every record failed to read (the wrong --text-field), 0.267 MB when they read.
    data = write_jsonl(tmp_path / "in.jsonl", [{"body": web_page(i)} for i in range(3)])
    exp = tmp_path / "exp.py"
    exp.write_text(EXP.format(path=str(data)))
    assert main(["data", "curate", str(exp), "--workdir", str(tmp_path / "wrong")]) == 2
    assert main(["data", "curate", str(exp), "--text-field", "body", "--workdir", str(tmp_path / "right")]) == 0
    capsys.readouterr()
    wrong, right = (json.loads((tmp_path / d / "funnel.json").read_text()) for d in ("wrong", "right"))
    assert wrong["input"] == right["input"] == {"documents": 3, "bytes": data.stat().st_size}
    assert right["left"][0]["bytes"] == sum(len(web_page(i).encode()) for i in range(3))   # read: the texts
    assert "Input MB are the records as stored" in (tmp_path / "right" / "report.md").read_text()


def test_curate_errors_name_keys_as_data_curate_binds_them(tmp_path, capsys):
    # Data audit #13: `runner=spark` was reported as curate.runner, a key `lmforge data curate` rejects.
    exp = tmp_path / "exp.py"
    exp.write_text(EXP.format(path=str(tmp_path / "in.jsonl")))
    for binding, words in (("runner=spark", "runner='spark': expected one of local, beam"),
                           ("workers=-1", "workers=-1: expected >= 0")):
        assert main(["data", "curate", str(exp), binding, "--workdir", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err
        assert words in err and "curate." not in err


def test_eval_set_errors_name_the_decontaminate_keys_before_any_work(tmp_path, capsys, monkeypatch):
    # Data audit #5: a missing eval set was an "input path" error, a record without the field suggested
    # input.on_bad_record, and both came only after the worker pool had started.
    import lmforge.data.curate.local as local

    def no_run(*_):
        raise AssertionError("the runner started")

    monkeypatch.setattr(local, "run_local", no_run)
    data = write_jsonl(tmp_path / "in.jsonl", [{"text": web_page(0)}])
    gsm = write_jsonl(tmp_path / "gsm.jsonl", [{"question": "q", "answer": "a"}])
    exp = tmp_path / "exp.py"
    exp.write_text(EXP.format(path=str(data)))
    cases = ((f"decontaminate.eval_paths=('{tmp_path / 'nope.jsonl'}',)",
              f"lmforge: error: decontaminate.eval_paths[0] '{tmp_path / 'nope.jsonl'}': no such file"),
             (f"decontaminate.eval_paths=('{gsm}',)",
              f"lmforge: error: decontaminate.eval_paths[0]: {gsm}:1: expected a JSON object with a string field "
              f"'text', got keys answer, question (decontaminate.fields=('text',) names the field"),
             (f"decontaminate.eval_paths=('{gsm}',)", "decontaminate.fields=(question,body)",
              f"lmforge: error: decontaminate.eval_paths[0]: {gsm}:1: expected a JSON object with the fields of "
              f"decontaminate.fields=('question', 'body'), got keys answer, question"))
    for k, (*bindings, words) in enumerate(cases):
        assert main(["data", "curate", str(exp), *bindings, "workers=2", "--workdir", str(tmp_path / f"run{k}")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(words) and "input" not in err and "on_bad_record" not in err, err


def test_missing_inputs_and_eval_sets_fail_before_a_run_folder_is_written(tmp_path, capsys):
    """A failed start leaves nothing behind: a missing input, no inputs at all, or a missing evaluation set
    is a one-line error before config.json (or the default runs/ folder) exists."""
    data = write_jsonl(tmp_path / "in.jsonl", [{"text": web_page(i)} for i in range(2)])
    exp = tmp_path / "exp.py"
    exp.write_text(EXP.format(path=str(data)))
    for extra, words in (([ "--input", str(tmp_path / "typo.jsonl")], "typo.jsonl': no such file"),
                         (["inputs=()"], "inputs is empty: expected files to curate"),
                         ([f"decontaminate.eval_paths=('{tmp_path / 'gone.jsonl'}',)"],
                          "decontaminate.eval_paths[0] ")):
        run = tmp_path / "run"
        assert main(["data", "curate", str(exp), *extra, "--workdir", str(run)]) == 2
        err = capsys.readouterr().err
        assert words in err and len(err.strip().splitlines()) == 1, err
        assert not run.exists()
