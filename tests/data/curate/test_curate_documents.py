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
