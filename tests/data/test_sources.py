"""Sources: python_docs, text files, jsonl, and the train/val split."""

import gzip
import json

import pytest

from lmforge.data import SourceConfig, read_documents, split_documents


# --------------------------------------------------------------------------- python_docs


def test_python_docs_is_big_deterministic_and_starts_with_pydoc_topics():
    from pydoc_data import topics

    docs = read_documents(SourceConfig(kind="python_docs"))
    assert docs == read_documents(SourceConfig())  # the default kind, same order every time
    assert len(docs) > 400
    assert sum(map(len, docs)) > 1_500_000
    assert docs[: len(topics.topics)] == [topics.topics[k] for k in sorted(topics.topics)]
    assert all(isinstance(d, str) and d for d in docs)


def test_python_docs_holds_stdlib_docstrings_not_code():
    text = "\n".join(read_documents(SourceConfig()))
    assert "Return a task factory, or None if the default one is in use." in text  # asyncio docstring
    assert "_MIN_SCHEDULED_TIMER_HANDLES = 100" not in text  # a line of asyncio/base_events.py


# --------------------------------------------------------------------------- text


def test_text_file_is_one_document(tmp_path):
    (tmp_path / "a.txt").write_text("héllo\nwörld 🙂\n", encoding="utf-8")
    assert read_documents(SourceConfig(kind="text", path=str(tmp_path / "a.txt"))) == ["héllo\nwörld 🙂\n"]


def test_text_glob_gives_sorted_documents(tmp_path):
    for name in ("b.txt", "a.txt", "c.txt"):
        (tmp_path / name).write_text(name)
    docs = read_documents(SourceConfig(kind="text", path=str(tmp_path / "*.txt")))
    assert docs == ["a.txt", "b.txt", "c.txt"]


def test_relative_path_resolves_against_cwd(tmp_path, monkeypatch):
    (tmp_path / "x.txt").write_text("x")
    monkeypatch.chdir(tmp_path)
    assert read_documents(SourceConfig(kind="text", path="x.txt")) == ["x"]


def test_invalid_utf8_names_file_and_byte_offset(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"abc\xffdef")
    with pytest.raises(ValueError, match=r"bad\.txt: invalid UTF-8 at byte offset 3"):
        read_documents(SourceConfig(kind="text", path=str(path)))


def test_missing_file_and_empty_glob_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt: no such file"):
        read_documents(SourceConfig(kind="text", path=str(tmp_path / "nope.txt")))
    with pytest.raises(FileNotFoundError, match=r"\*\.md.*matched no files"):
        read_documents(SourceConfig(kind="text", path=str(tmp_path / "*.md")))
    with pytest.raises(ValueError, match="source.path is empty"):
        read_documents(SourceConfig(kind="text"))


def test_a_directory_as_the_path_says_it_is_a_directory(tmp_path):
    # Issue 13: it used to say "no such file" of a folder that exists.
    with pytest.raises(ValueError, match=rf"source.path='{tmp_path}' is a directory \({tmp_path}\); expected a file, "
                                         rf"or a glob such as '{tmp_path}/\*.txt' for the files in it"):
        read_documents(SourceConfig(kind="text", path=str(tmp_path)))
    with pytest.raises(ValueError, match=r"a glob such as '.*/\*.jsonl'"):
        read_documents(SourceConfig(kind="jsonl", path=str(tmp_path)))


def test_bad_config_values_name_the_key():
    with pytest.raises(ValueError, match="source.kind='csv'"):
        read_documents(SourceConfig(kind="csv", path="x"))
    with pytest.raises(ValueError, match="source.on_bad_line='ignore'"):
        read_documents(SourceConfig(kind="jsonl", path="x", on_bad_line="ignore"))


# --------------------------------------------------------------------------- jsonl


def _write_jsonl(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def test_jsonl_one_document_per_line_blank_lines_ignored(tmp_path):
    path = tmp_path / "d.jsonl"
    _write_jsonl(path, [json.dumps({"text": "one", "id": 1}), "", json.dumps({"text": "two\nlines"})])
    assert read_documents(SourceConfig(kind="jsonl", path=str(path))) == ["one", "two\nlines"]


def test_jsonl_gz_and_other_field(tmp_path):
    path = tmp_path / "d.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(json.dumps({"question": "q1"}) + "\n" + json.dumps({"question": "q2 ✓"}) + "\n")
    assert read_documents(SourceConfig(kind="jsonl", path=str(path), text_field="question")) == ["q1", "q2 ✓"]


def test_jsonl_zst_is_read_as_curation_writes_it(tmp_path):
    import zstandard

    path = tmp_path / "part-00000-of-00001.jsonl.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(b"".join(
        (json.dumps({"id": str(i), "text": f"doc {i} \u2713"}) + "\n").encode() for i in range(3))))
    assert read_documents(SourceConfig(kind="jsonl", path=str(path))) == [f"doc {i} \u2713" for i in range(3)]


def test_a_corrupt_compressed_file_names_the_file(tmp_path):
    import zstandard  # noqa: F401  (the curate extra, as in the tests' install)

    for name in ("bad.jsonl.gz", "bad.jsonl.zst"):
        (tmp_path / name).write_bytes(b"garbage")
        with pytest.raises(ValueError, match=rf"{name}: not a readable {name.rsplit('.', 1)[1]} file"):
            read_documents(SourceConfig(kind="jsonl", path=str(tmp_path / name)))
    (tmp_path / "cut.txt.gz").write_bytes(gzip.compress(b"some text " * 100)[:30])
    with pytest.raises(ValueError, match=r"cut.txt.gz: not a readable gz file \(EOFError"):
        read_documents(SourceConfig(kind="text", path=str(tmp_path / "cut.txt.gz")))


@pytest.mark.parametrize(
    "bad_line, why",
    [
        ("{not json", "invalid JSON"),
        ('["a list"]', "got a JSON list"),
        ('{"body": "x"}', "field missing; the keys are: body"),
        ('{"text": 3}', "field is a int"),
    ],
)
def test_jsonl_bad_line_names_file_and_line(tmp_path, bad_line, why):
    path = tmp_path / "d.jsonl"
    _write_jsonl(path, [json.dumps({"text": "ok"}), bad_line, json.dumps({"text": "ok"})])
    with pytest.raises(ValueError) as e:
        read_documents(SourceConfig(kind="jsonl", path=str(path)))
    assert str(e.value).startswith(f"{path}:2: expected a JSON object with a string field 'text'")
    assert why in str(e.value)
    assert "\n" not in str(e.value)


def test_jsonl_invalid_utf8_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{"text": "\xff"}\n')
    with pytest.raises(ValueError, match=r"d\.jsonl:2: expected a JSON object .*invalid UTF-8"):
        read_documents(SourceConfig(kind="jsonl", path=str(path)))


def test_jsonl_skip_counts_and_logs(tmp_path, capsys):
    # Issue 13 (data audit): said as curation says it (`lmforge: skipped ...`), not in logging's raw format.
    path = tmp_path / "d.jsonl"
    _write_jsonl(path, ['{"text": "a"}', "oops", '{"text": "b"}', '{"x": 1}'])
    docs = read_documents(SourceConfig(kind="jsonl", path=str(path), on_bad_line="skip"))
    assert docs == ["a", "b"]
    err = capsys.readouterr().err
    assert err.startswith(f"lmforge: skipped 2 bad line(s) of 4 in {path}; the first: {path}:2:")
    assert err.count("\n") == 1


def test_gsm8k_questions(shared_data):
    docs = read_documents(SourceConfig(kind="jsonl", path=str(shared_data / "gsm8k_train.jsonl"), text_field="question"))
    assert len(docs) == 7473


def test_hh_rlhf_gz(shared_data):
    path = shared_data / "hh_rlhf_harmless_base_test.jsonl.gz"
    docs = read_documents(SourceConfig(kind="jsonl", path=str(path), text_field="chosen"))
    assert len(docs) == 2312


# --------------------------------------------------------------------------- split


def test_single_document_splits_by_characters_like_nanogpt():
    doc = "".join(chr(ord("a") + i % 26) for i in range(1000))
    train, val = split_documents([doc], 0.1)
    assert train == [doc[:900]] and val == [doc[900:]]


def test_shakespeare_split_sizes(shared_data):
    text = read_documents(SourceConfig(kind="text", path=str(shared_data / "tinyshakespeare.txt")))
    assert len(text) == 1 and len(text[0]) == 1_115_394
    train, val = split_documents(text, 0.1)
    assert len(train[0]) == 1_003_854 and len(val[0]) == 111_540  # nanoGPT: int(n * 0.9)
    assert train[0] + val[0] == text[0]


@pytest.mark.parametrize("n, frac, n_val", [(10, 0.1, 1), (30, 0.1, 3), (7, 0.1, 1), (3, 0.5, 2), (2, 0.9, 1)])
def test_several_documents_last_ones_are_val(n, frac, n_val):
    docs = [f"doc{i}" for i in range(n)]
    train, val = split_documents(docs, frac)
    assert val == docs[n - n_val :] and train == docs[: n - n_val]


def test_split_edge_cases():
    assert split_documents(["a", "b"], 0.0) == (["a", "b"], [])
    assert split_documents(["abc"], 0.0) == (["abc"], [])
    with pytest.raises(ValueError, match="val_fraction=1.0"):
        split_documents(["a"], 1.0)
    with pytest.raises(ValueError, match="no documents"):
        split_documents([], 0.1)


# --------------------------------------------------------------------------- data audit


@pytest.mark.parametrize("name", ["d.jsonl", "d.jsonl.zst", "d.json", "d.json.gz", "d.parquet"])
def test_text_kind_refuses_a_file_named_as_records(tmp_path, name):
    # Data audit #8: kind=text read a .jsonl whole, so a tokenizer learned merges such as `{"` and `":`.
    (tmp_path / name).write_bytes(b'{"text": "hello"}\n')
    with pytest.raises(ValueError) as e:
        read_documents(SourceConfig(kind="text", path=str(tmp_path / name)))
    assert str(e.value).startswith(f"{tmp_path / name}: a ") and "\n" not in str(e.value)
    if name.endswith(".parquet"):
        assert "not text" in str(e.value) and "lmforge data curate --input" in str(e.value)
    else:
        assert str(e.value).endswith("expected kind 'jsonl': data.source.kind=jsonl, or "
                                     "`lmforge tokenizer train --source-kind jsonl`")


def test_jsonl_kind_reads_a_json_array_file(tmp_path):
    # Data audit #9: a .json array (Alpaca-style) gives one document per item, bad items named as path:item N.
    path = tmp_path / "arr.json"
    path.write_text(json.dumps([{"text": "one"}, {"text": "two"}], indent=2))
    assert read_documents(SourceConfig(kind="jsonl", path=str(path))) == ["one", "two"]
    path.write_text(json.dumps([{"text": "one"}, {"body": "x"}]))
    with pytest.raises(ValueError, match=rf"^{path}:item 2: expected a JSON object with a string field 'text' "
                                         rf"\(field missing; the keys are: body\)$"):
        read_documents(SourceConfig(kind="jsonl", path=str(path)))


def test_an_empty_source_says_it_holds_no_documents(tmp_path):
    # Data audit #13: an empty jsonl failed later in split_documents ("got no documents"), an empty .txt
    # was one empty document ("too small to hold out 10%").
    (tmp_path / "empty.jsonl").write_text("\n")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match=rf"^source jsonl '{tmp_path / 'empty.jsonl'}' holds no documents: "
                                         rf"{tmp_path / 'empty.jsonl'} is empty; expected one JSON object per line"):
        read_documents(SourceConfig(kind="jsonl", path=str(tmp_path / "empty.jsonl")))
    with pytest.raises(ValueError, match=rf"^source text '{tmp_path / 'empty.txt'}' holds no documents: "
                                         rf"{tmp_path / 'empty.txt'} is empty; expected UTF-8 text$"):
        read_documents(SourceConfig(kind="text", path=str(tmp_path / "empty.txt")))
    _write_jsonl(tmp_path / "blank.jsonl", ['{"text": ""}', "oops"])
    with pytest.raises(ValueError, match="holds no documents: every one of the 2 records was skipped"):
        read_documents(SourceConfig(kind="jsonl", path=str(tmp_path / "blank.jsonl"), on_bad_line="skip"))


def test_empty_documents_are_skipped_and_counted(tmp_path, capsys):
    # Data audit #13: {"text": ""} was kept as an empty document; curation counts it as read/empty.
    path = tmp_path / "d.jsonl"
    _write_jsonl(path, ['{"text": "a"}', '{"text": ""}', '{"text": "  \\n"}', '{"text": "b"}'])
    assert read_documents(SourceConfig(kind="jsonl", path=str(path))) == ["a", "b"]   # not a bad line: never fails
    assert capsys.readouterr().err == f"lmforge: skipped 2 empty document(s) of 4 in {path}; the first: {path}:2\n"
    (tmp_path / "a.txt").write_text("text")
    (tmp_path / "b.txt").write_text(" \n")
    assert read_documents(SourceConfig(kind="text", path=str(tmp_path / "*.txt"))) == ["text"]
    assert capsys.readouterr().err.startswith(f"lmforge: skipped 1 empty file(s) of 2 in source text")
