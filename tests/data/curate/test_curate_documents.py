"""Readers and bad input: every format, invalid UTF-8, empty and 10 MB documents, malformed jsonl
lines (file:line, skip-and-count or fail), unreadable files; nothing dropped without a counter."""

import gzip
import json

import pytest
import zstandard

from conftest import write_jsonl
from lmforge.data.curate import InputConfig, read_file, resolve_files


def records(cfg):
    return [r for i, (c, p) in enumerate(resolve_files((cfg,))) for r in read_file(c, p, i)]


def test_formats_give_the_same_documents(tmp_path):
    rows = [{"text": f"document {i} é", "id": f"x{i}", "url": f"u{i}"} for i in range(5)]
    raw = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    (tmp_path / "a.jsonl").write_bytes(raw)
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress(raw))
    (tmp_path / "c.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(raw))
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    want = [(r["id"], r["text"], {"url": r["url"]}) for r in rows]
    for name in ("a.jsonl", "b.jsonl.gz", "c.jsonl.zst", "d.parquet"):
        got = records(InputConfig(paths=(str(tmp_path / name),), source="web"))
        assert [(r.doc.id, r.doc.text, r.doc.metadata) for r in got] == want, name
        assert {r.doc.source for r in got} == {"web"}
    (tmp_path / "t.txt").write_text("one file, one document")
    [r] = records(InputConfig(paths=(str(tmp_path / "*.txt"),)))
    assert (r.doc.id, r.doc.source, r.ordinal) == ("t", "t", 0)


def test_bad_records_are_counted_with_reasons(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"text": "good one"}\n{not json\n\n{"txt": "wrong field"}\n["a list"]\n'
                     b'{"text": "bad \xff\xfe utf8"}\n{"text": "   "}\n{"text": "' + b"x" * 3000 + b'"}\n')
    got = records(InputConfig(paths=(str(path),), max_doc_bytes=2000))
    assert [r.reason for r in got] == ["", "malformed_json", "missing_field", "missing_field", "invalid_utf8",
                                       "empty", "too_large"]
    assert [r.where for r in got[1:3]] == [f"{path}:2", f"{path}:4"]  # blank line 3 is not a record
    assert len({r.ordinal for r in got}) == len(got)


def test_fail_policy_names_file_and_line(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"text": "ok"}, "{oops"])
    with pytest.raises(ValueError, match=rf"{path}:2: invalid JSON.*on_bad_record='fail'"):
        records(InputConfig(paths=(str(path),), on_bad_record="fail"))


def test_invalid_utf8_text_file_and_10mb_document(tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"caf\xe9 latin-1")
    [r] = records(InputConfig(paths=(str(tmp_path / "bad.txt"),)))
    assert r.doc is None and r.reason == "invalid_utf8"
    big = write_jsonl(tmp_path / "big.jsonl", [{"text": "word " * 2_000_000}])  # 10 MB
    [r] = records(InputConfig(paths=(str(big),)))
    assert (r.reason, r.size) == ("too_large", 10_000_000)
    [r] = records(InputConfig(paths=(str(big),), max_doc_bytes=20_000_000))
    assert len(r.doc.text) == 10_000_000


def test_unreadable_inputs_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        resolve_files((InputConfig(paths=(str(tmp_path / "missing.jsonl"),)),))
    with pytest.raises(FileNotFoundError, match="matched no files"):
        resolve_files((InputConfig(paths=(str(tmp_path / "*.parquet"),)),))
    with pytest.raises(ValueError, match="not a regular file"):
        resolve_files((InputConfig(paths=(str(tmp_path),)),))
    (tmp_path / "x.jsonl.gz").write_bytes(b"not gzip at all")
    (tmp_path / "y.jsonl.zst").write_bytes(b"not zstd at all")
    (tmp_path / "z.parquet").write_bytes(b"not parquet")
    for name in ("x.jsonl.gz", "y.jsonl.zst", "z.parquet"):
        with pytest.raises(ValueError, match=rf"{name}: cannot read this"):
            records(InputConfig(paths=(str(tmp_path / name),)))
    (tmp_path / "w.csv").write_text("a,b")
    with pytest.raises(ValueError, match="cannot tell the format"):
        records(InputConfig(paths=(str(tmp_path / "w.csv"),)))
    with pytest.raises(ValueError, match="on_bad_record"):
        InputConfig(on_bad_record="ignore")


def named_records(*cfgs):
    """Every record of a run's inputs, read as the runners read them (file names unique in the run)."""
    from lmforge.data.curate.document import named_files

    return [r for i, (c, p, name) in enumerate(named_files(cfgs)) for r in read_file(c, p, i, name)]


def test_ids_and_sources_stay_unique_when_two_inputs_share_a_stem(tmp_path):
    # Data audit #2: a/data.jsonl and b/data.jsonl both gave ids data:1..data:N and source "data".
    from lmforge.data.curate.document import file_names

    for folder in ("2023", "2024"):
        (tmp_path / folder).mkdir()
        write_jsonl(tmp_path / folder / "data.jsonl", [{"text": f"{folder} one"}, {"text": f"{folder} two"}])
    write_jsonl(tmp_path / "other.jsonl", [{"text": "other one"}])
    got = named_records(InputConfig(paths=(str(tmp_path / "*" / "data.jsonl"),)),
                        InputConfig(paths=(str(tmp_path / "other.jsonl"),)))
    assert [(r.doc.id, r.doc.source) for r in got] == [
        ("2023/data:1", "2023/data"), ("2023/data:2", "2023/data"), ("2024/data:1", "2024/data"),
        ("2024/data:2", "2024/data"), ("other:1", "other")]   # a stem no other file has keeps its old ids
    # the same stem and folder, two compressions: the suffixes tell them apart
    assert file_names([tmp_path / "train.jsonl.gz", tmp_path / "train.jsonl.zst", tmp_path / "x" / "val.jsonl"]) == \
        ["train.jsonl.gz", "train.jsonl.zst", "val"]
    assert file_names([tmp_path / "a.txt", tmp_path / "b.jsonl"]) == ["a", "b"]


def test_a_json_array_file_gives_one_document_per_item(tmp_path):
    # Data audit #9: a pretty-printed .json array was read as JSON lines: one malformed record per line.
    rows = [{"text": f"document {i}", "url": f"u{i}"} for i in range(3)] + [{"body": "no text"}]
    path = tmp_path / "arr.json"
    path.write_text(json.dumps(rows, indent=2))
    got = records(InputConfig(paths=(str(path),)))
    assert [(r.doc.id, r.doc.text, r.doc.metadata) for r in got[:3]] == [
        (f"arr:{i + 1}", f"document {i}", {"url": f"u{i}"}) for i in range(3)]
    assert (got[3].reason, got[3].where) == ("missing_field", f"{path}:item 4")
    assert got[0].raw_size == len(json.dumps(rows[0], ensure_ascii=False))
    (tmp_path / "lines.json").write_text("".join(json.dumps(r) + "\n" for r in rows[:2]))   # JSON lines named .json
    assert [r.doc.text for r in records(InputConfig(paths=(str(tmp_path / "lines.json"),)))] == ["document 0",
                                                                                               "document 1"]
    (tmp_path / "broken.json").write_text('[{"text": "a"},')
    with pytest.raises(ValueError, match=r"broken.json: not a valid JSON array \(Expecting value at line 1"):
        records(InputConfig(paths=(str(tmp_path / "broken.json"),)))


def test_a_present_but_not_string_text_field_says_what_it_is(tmp_path):
    # Data audit #11: {"text": 42} was reported as "got keys text", as if the field were missing.
    path = write_jsonl(tmp_path / "bad.jsonl", [{"text": 42}, {"text": ["a"]}, {"text": None}, {"body": "x"}])
    assert [r.why for r in records(InputConfig(paths=(str(path),)))] == [
        "expected a JSON object with a string field 'text'; field 'text' is a int",
        "expected a JSON object with a string field 'text'; field 'text' is a list",
        "expected a JSON object with a string field 'text'; field 'text' is null",
        "expected a JSON object with a string field 'text', got keys body"]


def test_the_fail_policy_names_the_ways_to_skip(tmp_path):
    # Data audit #7: the message named `input.on_bad_record`, a key no binding reaches.
    path = write_jsonl(tmp_path / "bad.jsonl", ["{oops"])
    with pytest.raises(ValueError, match=r"`lmforge data curate --on-bad-record skip`, or "
                                         r"InputConfig\(on_bad_record='skip'\) in the experiment file"):
        records(InputConfig(paths=(str(path),), on_bad_record="fail"))


def test_input_bytes_are_the_raw_records_whether_they_read_or_not(tmp_path):
    # Data audit #12: a record's input size was its text when it read and its line when it did not, so
    # the same file reported two input sizes.
    rows = [{"text": f"document {i} é", "id": i} for i in range(4)] + ["{oops"]
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    good = records(InputConfig(paths=(str(path),)))
    wrong_field = records(InputConfig(paths=(str(path),), text_field="body"))
    assert sum(r.raw_size for r in good) == sum(r.raw_size for r in wrong_field) == path.stat().st_size
    assert [r.size for r in good[:4]] == [len(f"document {i} é".encode()) for i in range(4)]   # read: the text


@pytest.mark.parametrize("fmt", ["jsonl.zst", "jsonl", "parquet"])
def test_re_reading_a_curated_shard_keeps_each_documents_source_and_metadata(tmp_path, fmt):
    """A curation's output read again (to curate it further) gives back the documents as written: each
    one's own ``source`` (not the shard's name) and its metadata, not nested under ``metadata``; an
    input that names a source still labels every document with it (Dolma's ``source`` field too)."""
    from lmforge.data.curate.config import OutputConfig
    from lmforge.data.curate.document import Document
    from lmforge.data.curate.writers import write_shard

    docs = [Document("a:1", "first text", "wiki", {"url": "u1", "lang": "en"}),
            Document("b:1", "second text", "code", {})]
    path = write_shard(tmp_path, OutputConfig(format=fmt, num_shards=1), 0, enumerate(docs))
    got = records(InputConfig(paths=(str(path),)))
    assert [r.doc for r in got] == docs
    assert {r.doc.source for r in records(InputConfig(paths=(str(path),), source="again"))} == {"again"}
    dolma = write_jsonl(tmp_path / "dolma.jsonl", [{"id": "d1", "text": "t", "source": "pes2o", "added": "2024"}])
    [r] = records(InputConfig(paths=(str(dolma),)))
    assert (r.doc.source, r.doc.metadata) == ("pes2o", {"added": "2024"})
