"""The one record type curation works on, and the readers that make it from files.

A :class:`Document` is ``(id, text, source, metadata)``. Readers yield every input record as a
:class:`Record`: its ``ordinal`` (a global, runner-independent position: file index << 32 | record
index, files in sorted order) and either a document or the reason it could not be one. So a record
is never dropped without a counter: the ``read`` stage of the funnel counts each reason.

Choices:
- Formats by suffix (``format="auto"``): ``.txt``/``.md`` (one file = one document), ``.jsonl``
  (one document per line; ``.gz`` and ``.zst`` compressed too) and ``.parquet`` (one row = one
  document, read in row groups with pyarrow so a big file never sits in memory whole).
- Bad input, per ``on_bad_record``: ``"skip"`` counts it under ``read/<reason>`` (reasons:
  ``invalid_utf8``, ``malformed_json``, ``missing_field``, ``empty``, ``too_large``) and the first
  such record per reason is printed with ``path:LINE`` and what was expected at the end of the run
  (the report keeps three per reason); ``"fail"`` raises a one-line ``ValueError``
  naming ``path:LINE``. Empty and too-large documents are always counted, never failed.
- A file that cannot be read at all (missing, a folder, a corrupt ``.gz``/``.zst``/parquet) is a
  one-line error naming the file: curation never silently skips a whole input.
- ``id``: the record's ``id_field`` when present, else ``<file stem>:<line or row>``, unique per run.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import pathlib
from collections.abc import Iterator
from typing import Any, NamedTuple

from lmforge.data.sources import ZstdError as _ZstdError
from lmforge.data.sources import open_bytes

FORMATS = ("auto", "text", "jsonl", "parquet")
ON_BAD_RECORD = ("skip", "fail")
_TEXT_SUFFIXES = (".txt", ".md", ".text")


@dataclasses.dataclass(frozen=True)
class Document:
    """One document. ``metadata`` holds JSON-serializable extras (url, timestamps, ...)."""

    id: str
    text: str
    source: str
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "text": self.text, "source": self.source, "metadata": self.metadata}


class Record(NamedTuple):
    """One input record: a document, or ``doc=None`` and why (``reason``, ``where`` = path:line)."""

    ordinal: int
    doc: Document | None
    reason: str = ""
    where: str = ""
    size: int = 0  # bytes of the raw record (its text when it has one)
    why: str = ""  # what was expected of a bad record ("expected ... a string field 'text', got keys id, body")


@dataclasses.dataclass(frozen=True)
class InputConfig:
    """One input: files (paths or globs) of one format, all labeled with one source name."""

    paths: tuple[str, ...] = ()
    format: str = "auto"  # auto | text | jsonl | parquet
    source: str = ""  # source name written into each document; "" → the first file's stem
    text_field: str = "text"
    id_field: str = "id"
    on_bad_record: str = "skip"  # "skip" (count it) | "fail" (raise naming file:line)
    max_doc_bytes: int = 2_000_000  # larger documents are dropped and counted as read/too_large

    def __post_init__(self):
        if self.format not in FORMATS:
            raise ValueError(f"input.format={self.format!r}: expected one of {', '.join(FORMATS)}")
        if self.on_bad_record not in ON_BAD_RECORD:
            raise ValueError(f"input.on_bad_record={self.on_bad_record!r}: expected one of {', '.join(ON_BAD_RECORD)}")
        if self.max_doc_bytes < 1:
            raise ValueError(f"input.max_doc_bytes={self.max_doc_bytes}: expected >= 1")


def resolve_files(inputs: tuple[InputConfig, ...]) -> list[tuple[InputConfig, pathlib.Path]]:
    """Every input file as (its config, path), inputs in order and each input's files sorted."""
    if not inputs:
        raise ValueError("curate.inputs is empty: expected at least one InputConfig(paths=(...))")
    out = []
    for cfg in inputs:
        if not cfg.paths:
            raise ValueError("an InputConfig has no paths: expected files or globs in input.paths")
        files: set[pathlib.Path] = set()
        for pattern in cfg.paths:
            expanded = os.path.expanduser(pattern)
            if glob.has_magic(expanded):
                matches = [pathlib.Path(m) for m in glob.glob(expanded, recursive=True) if os.path.isfile(m)]
                if not matches:
                    raise FileNotFoundError(f"input path {pattern!r}: the glob matched no files (cwd {os.getcwd()})")
                files.update(matches)
            else:
                p = pathlib.Path(expanded)
                if not p.exists():
                    raise FileNotFoundError(f"input path {pattern!r}: no such file ({p.resolve()})")
                if not p.is_file():
                    raise ValueError(f"input path {pattern!r}: is not a regular file (a folder? use a glob such as dir/*.jsonl)")
                files.add(p)
        out += [(cfg, p) for p in sorted(files)]
    return out


def file_format(cfg: InputConfig, path: pathlib.Path) -> str:
    """The format ``path`` is read in: ``cfg.format``, or the suffix's for ``"auto"``."""
    return cfg.format if cfg.format != "auto" else _format_of(path)


def read_file(cfg: InputConfig, path: pathlib.Path, file_index: int) -> Iterator[Record]:
    """All records of one file, in order; ordinals are ``file_index << 32 | record index``."""
    fmt = file_format(cfg, path)
    source = cfg.source or _stem(path)
    base = file_index << 32
    try:
        if fmt == "text":
            yield from _read_text(cfg, path, base, source)
        elif fmt == "jsonl":
            yield from _read_jsonl(cfg, path, base, source)
        else:
            yield from _read_parquet(cfg, path, base, source)
    except (OSError, EOFError, _ZstdError) as e:  # corrupt compression, permission denied, ...
        raise ValueError(f"{path}: cannot read this {fmt} file: {type(e).__name__}: {e}") from None


def _format_of(path: pathlib.Path) -> str:
    name = path.name.lower()
    for suffix in (".gz", ".zst"):
        name = name.removesuffix(suffix)
    if name.endswith(".jsonl") or name.endswith(".json"):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith(_TEXT_SUFFIXES):
        return "text"
    raise ValueError(f"{path}: cannot tell the format from the suffix; expected .txt/.md, .jsonl[.gz|.zst] "
                     f"or .parquet, or set input.format")


def _stem(path: pathlib.Path) -> str:
    return path.name.split(".")[0]


def _make(cfg: InputConfig, ordinal: int, text: str, doc_id: str, source: str, metadata: dict, where: str) -> Record:
    size = len(text.encode("utf-8"))
    if size > cfg.max_doc_bytes:  # counted, never failed: one huge page must not stop a crawl's run
        return Record(ordinal, None, "too_large", where, size)
    if not text.strip():
        return Record(ordinal, None, "empty", where, size)
    return Record(ordinal, Document(doc_id, text, source, metadata), size=size)


def _bad(cfg: InputConfig, ordinal: int, reason: str, where: str, why: str, size: int) -> Record:
    if cfg.on_bad_record == "fail":
        raise ValueError(f"{where}: {why} (input.on_bad_record='fail'; set 'skip' to count and skip such records)")
    return Record(ordinal, None, reason, where, size, why)


def _read_text(cfg: InputConfig, path: pathlib.Path, base: int, source: str) -> Iterator[Record]:
    with open_bytes(path) as f:
        data = f.read()
    where = f"{path}:1"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        yield _bad(cfg, base, "invalid_utf8", where, f"invalid UTF-8 at byte {e.start}; expected UTF-8 text", len(data))
        return
    yield _make(cfg, base, text, _stem(path), source, {}, where)


def _read_jsonl(cfg: InputConfig, path: pathlib.Path, base: int, source: str) -> Iterator[Record]:
    stem = _stem(path)
    with open_bytes(path) as raw:
        for i, line in enumerate(raw):
            if not line.strip():
                continue
            where = f"{path}:{i + 1}"
            try:
                obj = json.loads(line)
            except UnicodeDecodeError as e:
                yield _bad(cfg, base | i, "invalid_utf8", where, f"invalid UTF-8 at byte {e.start} of the line", len(line))
                continue
            except json.JSONDecodeError as e:
                yield _bad(cfg, base | i, "malformed_json", where, f"invalid JSON: {e.msg} (column {e.colno})", len(line))
                continue
            text = obj.get(cfg.text_field) if isinstance(obj, dict) else None
            if not isinstance(text, str):
                what = (f"a JSON {type(obj).__name__}" if not isinstance(obj, dict) else
                        f"keys {', '.join(sorted(obj)[:8]) or '(none)'}")
                yield _bad(cfg, base | i, "missing_field", where,
                           f"expected a JSON object with a string field {cfg.text_field!r}, got {what}", len(line))
                continue
            doc_id = obj.get(cfg.id_field)
            doc_id = str(doc_id) if doc_id is not None else f"{stem}:{i + 1}"
            meta = {k: v for k, v in obj.items() if k not in (cfg.text_field, cfg.id_field)}
            yield _make(cfg, base | i, text, doc_id, source, meta, where)


def _read_parquet(cfg: InputConfig, path: pathlib.Path, base: int, source: str) -> Iterator[Record]:
    import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
    import pyarrow as pa  # pylint: disable=import-outside-toplevel

    try:
        pf = pq.ParquetFile(path)
    except pa.ArrowException as e:
        raise ValueError(f"{path}: cannot read this parquet file: {e}") from None
    names = pf.schema_arrow.names
    if cfg.text_field not in names:
        raise ValueError(f"{path}: no column {cfg.text_field!r} (input.text_field); the columns are: {', '.join(names)}")
    stem, i = _stem(path), 0
    for batch in pf.iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            where = f"{path}:row {i + 1}"
            text = row.pop(cfg.text_field)
            if not isinstance(text, str):
                yield _bad(cfg, base | i, "missing_field", where, f"column {cfg.text_field!r} is null", 0)
            else:
                doc_id = row.pop(cfg.id_field, None)
                doc_id = str(doc_id) if doc_id is not None else f"{stem}:{i + 1}"
                # lmforge's own parquet shards keep metadata as one JSON string column.
                nested = row.pop("metadata", None)
                meta = {k: v for k, v in row.items() if k != "source"}
                if isinstance(nested, str):
                    meta.update(json.loads(nested))
                yield _make(cfg, base | i, text, doc_id, source, meta, where)
            i += 1
