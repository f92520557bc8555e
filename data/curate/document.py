"""The one record type curation works on, and the readers that make it from files.

A :class:`Document` is ``(id, text, source, metadata)``. Readers yield every input record as a
:class:`Record`: its ``ordinal`` (a global, runner-independent position: file index << 32 | record
index, files in sorted order) and either a document or the reason it could not be one. So a record
is never dropped without a counter: the ``read`` stage of the funnel counts each reason.

Choices:
- Formats by suffix (``format="auto"``): ``.txt``/``.md`` (one file = one document), ``.jsonl``
  (one document per line; ``.gz`` and ``.zst`` compressed too), ``.json`` (``json``: one JSON array,
  one document per item, read whole, as Alpaca-style sets ship; a ``.json`` file of JSON lines is
  read as ``jsonl``) and ``.parquet`` (one row = one document, read in row groups with pyarrow so a
  big file never sits in memory whole).
- Bad input, per ``on_bad_record``: ``"skip"`` counts it under ``read/<reason>`` (reasons:
  ``invalid_utf8``, ``malformed_json``, ``missing_field``, ``empty``, ``too_large``) and the first
  such record per reason is printed with ``path:LINE`` and what was expected at the end of the run
  (the report keeps three per reason); ``"fail"`` raises a one-line ``ValueError``
  naming ``path:LINE``. Empty and too-large documents are always counted, never failed.
- A record's ``raw_size`` is its bytes as stored (a jsonl line, a text file, a parquet row or JSON
  array item written as JSON), whether or not it reads, so an input's size does not depend on which
  of its records are good; ``size`` is its text's bytes once read.
- A file that cannot be read at all (missing, a folder, a corrupt ``.gz``/``.zst``/parquet) is a
  one-line error naming the file: curation never silently skips a whole input.
- ``id``: the record's ``id_field`` when present, else ``<name>:<line, row or item>``, unique per
  run: a file's name is its stem, or, where two of the run's files share a stem, its path from their
  common folder (``2023/data``, ``2024/data``; see :func:`file_names`).
- ``source``: the input's ``source`` when set; else a record's own string ``source`` field (Dolma's
  convention, and what a curation writes, so re-curating an output keeps every document's source);
  else the file's name. A record's ``metadata`` object (a JSON string in lmforge's parquet shards)
  is merged into the document's metadata, beside its other fields.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import json
import os
import pathlib
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

from lmforge.data.sources import ZstdError as _ZstdError
from lmforge.data.sources import data_suffix, is_json_array, json_kind, open_bytes, read_json_array

FORMATS = ("auto", "text", "jsonl", "json", "parquet")
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
    size: int = 0  # bytes of its text when it has one, else of the raw record
    why: str = ""  # what was expected of a bad record ("expected ... a string field 'text', got keys id, body")
    raw_size: int = 0  # bytes of the record as stored, good or bad


@dataclasses.dataclass(frozen=True)
class InputConfig:
    """One input: files (paths or globs) of one format, all labeled with one source name."""

    paths: tuple[str, ...] = ()
    format: str = "auto"  # auto | text | jsonl | json (one array) | parquet
    source: str = ""  # source name written into each document; "" → a record's "source", else its file's name
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
        raise ValueError("inputs is empty: expected at least one InputConfig(paths=(...))")
    out = []
    for cfg in inputs:
        if not cfg.paths:
            raise ValueError("an InputConfig has no paths: expected files or globs in input.paths")
        files: set[pathlib.Path] = set()
        for pattern in cfg.paths:
            files.update(expand_path(pattern, "input path"))
        out += [(cfg, p) for p in sorted(files)]
    return out


def expand_path(pattern: str, key: str) -> list[pathlib.Path]:
    """The files ``pattern`` (a path or glob) names; errors name it as ``key`` (``"input path"``)."""
    expanded = os.path.expanduser(pattern)
    if glob.has_magic(expanded):
        matches = [pathlib.Path(m) for m in glob.glob(expanded, recursive=True) if os.path.isfile(m)]
        if not matches:
            raise FileNotFoundError(f"{key} {pattern!r}: the glob matched no files (cwd {os.getcwd()})")
        return matches
    p = pathlib.Path(expanded)
    if not p.exists():
        raise FileNotFoundError(f"{key} {pattern!r}: no such file ({p.resolve()})")
    if not p.is_file():
        raise ValueError(f"{key} {pattern!r}: is not a regular file (a folder? use a glob such as dir/*.jsonl)")
    return [p]


def named_files(inputs: tuple[InputConfig, ...]) -> list[tuple[InputConfig, pathlib.Path, str]]:
    """``resolve_files(inputs)`` with each file's name (``file_names``): ``read_file``'s ``name``."""
    files = resolve_files(inputs)
    return [(cfg, p, n) for (cfg, p), n in zip(files, file_names([p for _, p in files]))]


def file_names(paths: Sequence[pathlib.Path]) -> list[str]:
    """Each file's name in document ids and default source names: its stem (``a/data.jsonl`` →
    ``data``), unless another of ``paths`` has the same stem: then its path from the common folder of
    those files, without format and compression suffixes (``a/data``, ``b/data``), or with them where
    that still collides (``train.jsonl.gz``, ``train.jsonl.zst``). Files whose stems differ keep them,
    so adding a file changes no other file's ids unless it shares their stem."""
    names = [_stem(p) for p in paths]
    for stem, n in collections.Counter(names).items():
        if n == 1:
            continue
        same = [i for i, name in enumerate(names) if name == stem]
        absolute = [os.path.abspath(paths[i]) for i in same]
        root = os.path.commonpath([os.path.dirname(a) for a in absolute])
        full = [pathlib.Path(os.path.relpath(a, root)).as_posix() for a in absolute]
        short = [_without_suffixes(f) for f in full]
        for i, name in zip(same, short if len(set(short)) == len(short) else full):
            names[i] = name
    return names


def _without_suffixes(name: str) -> str:
    for suffix in (".gz", ".zst", ".jsonl", ".json", ".parquet", *_TEXT_SUFFIXES):
        if name.lower().endswith(suffix):
            name = name[:-len(suffix)]
    return name


def file_format(cfg: InputConfig, path: pathlib.Path) -> str:
    """The format ``path`` is read in: ``cfg.format``, or the suffix's for ``"auto"``."""
    return cfg.format if cfg.format != "auto" else _format_of(path)


def read_file(cfg: InputConfig, path: pathlib.Path, file_index: int, name: str = "") -> Iterator[Record]:
    """All records of one file, in order; ordinals are ``file_index << 32 | record index``. ``name``
    (``file_names``; default the file's stem) starts default ids and is the default source name."""
    fmt = file_format(cfg, path)
    name = name or _stem(path)
    source = cfg.source or name
    base = file_index << 32
    try:
        if fmt == "text":
            yield from _read_text(cfg, path, base, source, name)
        elif fmt == "jsonl":
            yield from _read_jsonl(cfg, path, base, source, name)
        elif fmt == "json":
            yield from _read_json_array(cfg, path, base, source, name)
        else:
            yield from _read_parquet(cfg, path, base, source, name)
    except (OSError, EOFError, _ZstdError) as e:  # corrupt compression, permission denied, ...
        raise ValueError(f"{path}: cannot read this {fmt} file: {type(e).__name__}: {e}") from None


def _format_of(path: pathlib.Path) -> str:
    suffix = data_suffix(path)
    if suffix == ".json":   # one JSON array, or JSON lines under a .json name (as `datasets` writes them)
        return "json" if is_json_array(path) else "jsonl"
    if suffix:
        return suffix[1:]
    if path.name.lower().endswith(_TEXT_SUFFIXES):
        return "text"
    raise ValueError(f"{path}: cannot tell the format from the suffix; expected .txt/.md, .jsonl[.gz|.zst], .json "
                     f"or .parquet, or set input.format")


def _stem(path: pathlib.Path) -> str:
    return path.name.split(".")[0]


def _make(cfg: InputConfig, ordinal: int, text: str, doc_id: str, source: str, metadata: dict, where: str,
          raw_size: int) -> Record:
    size = len(text.encode("utf-8"))
    if size > cfg.max_doc_bytes:  # counted, never failed: one huge page must not stop a crawl's run
        return Record(ordinal, None, "too_large", where, size, raw_size=raw_size)
    if not text.strip():
        return Record(ordinal, None, "empty", where, size, raw_size=raw_size)
    return Record(ordinal, Document(doc_id, text, source, metadata), size=size, raw_size=raw_size)


def _bad(cfg: InputConfig, ordinal: int, reason: str, where: str, why: str, size: int) -> Record:
    if cfg.on_bad_record == "fail":
        raise ValueError(f"{where}: {why} (on_bad_record='fail'; `lmforge data curate --on-bad-record skip`, or "
                         f"InputConfig(on_bad_record='skip') in the experiment file, counts and skips such records)")
    return Record(ordinal, None, reason, where, size, why, raw_size=size)


def _read_text(cfg: InputConfig, path: pathlib.Path, base: int, source: str, name: str) -> Iterator[Record]:
    with open_bytes(path) as f:
        data = f.read()
    where = f"{path}:1"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        yield _bad(cfg, base, "invalid_utf8", where, f"invalid UTF-8 at byte {e.start}; expected UTF-8 text", len(data))
        return
    yield _make(cfg, base, text, name, source, {}, where, len(data))


def _read_jsonl(cfg: InputConfig, path: pathlib.Path, base: int, source: str, name: str) -> Iterator[Record]:
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
            yield _from_object(cfg, base | i, obj, where, f"{name}:{i + 1}", source, len(line))


def _read_json_array(cfg: InputConfig, path: pathlib.Path, base: int, source: str, name: str) -> Iterator[Record]:
    for i, obj in enumerate(read_json_array(path)):
        raw_size = len(json.dumps(obj, ensure_ascii=False).encode("utf-8"))
        yield _from_object(cfg, base | i, obj, f"{path}:item {i + 1}", f"{name}:{i + 1}", source, raw_size)


def _from_object(cfg: InputConfig, ordinal: int, obj: Any, where: str, default_id: str, source: str,
                 raw_size: int) -> Record:
    """The record of one parsed jsonl line or JSON array item."""
    text = obj.get(cfg.text_field) if isinstance(obj, dict) else None
    if not isinstance(text, str):
        expected = f"expected a JSON object with a string field {cfg.text_field!r}"
        if not isinstance(obj, dict):
            why = f"{expected}, got a JSON {type(obj).__name__}"
        elif cfg.text_field in obj:
            why = f"{expected}; field {cfg.text_field!r} is {json_kind(text)}"
        else:
            why = f"{expected}, got keys {', '.join(sorted(obj)[:8]) or '(none)'}"
        return _bad(cfg, ordinal, "missing_field", where, why, raw_size)
    doc_id = obj.get(cfg.id_field)
    doc_id = str(doc_id) if doc_id is not None else default_id
    source, meta = _source_and_metadata(cfg, {k: v for k, v in obj.items() if k not in (cfg.text_field, cfg.id_field)},
                                        source)
    return _make(cfg, ordinal, text, doc_id, source, meta, where, raw_size)


def _source_and_metadata(cfg: InputConfig, fields: dict, source: str) -> tuple[str, dict]:
    """A record's source and metadata from its fields beyond text and id (the module's ``source`` rule):
    a string ``source`` field is its source unless the input names one, and a ``metadata`` object (or
    JSON object string) is merged into the rest."""
    own = fields.pop("source", None) if isinstance(fields.get("source"), str) else None
    nested = fields.pop("metadata", None) if isinstance(fields.get("metadata"), (dict, str)) else None
    if isinstance(nested, str):
        try:
            nested = json.loads(nested)
        except ValueError:
            nested = None
    if isinstance(nested, dict):
        fields = {**nested, **fields}
    return (cfg.source or own or source), fields


def _read_parquet(cfg: InputConfig, path: pathlib.Path, base: int, source: str, name: str) -> Iterator[Record]:
    import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
    import pyarrow as pa  # pylint: disable=import-outside-toplevel

    try:
        pf = pq.ParquetFile(path)
    except pa.ArrowException as e:
        raise ValueError(f"{path}: cannot read this parquet file: {e}") from None
    names = pf.schema_arrow.names
    if cfg.text_field not in names:
        raise ValueError(f"{path}: no column {cfg.text_field!r} (input.text_field); the columns are: {', '.join(names)}")
    i = 0
    for batch in pf.iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            where = f"{path}:row {i + 1}"
            raw_size = len(json.dumps(row, ensure_ascii=False, default=str).encode("utf-8"))   # a row as JSON
            text = row.pop(cfg.text_field)
            if not isinstance(text, str):
                yield _bad(cfg, base | i, "missing_field", where, f"column {cfg.text_field!r} is {json_kind(text)}",
                           raw_size)
            else:
                doc_id = row.pop(cfg.id_field, None)
                doc_id = str(doc_id) if doc_id is not None else f"{name}:{i + 1}"
                # lmforge's own parquet shards keep metadata as one JSON string column.
                row_source, meta = _source_and_metadata(cfg, row, source)
                yield _make(cfg, base | i, text, doc_id, row_source, meta, where, raw_size)
            i += 1
