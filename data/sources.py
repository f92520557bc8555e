"""Raw text sources: read documents from disk (or from Python itself) and split train/val.

Choices:
- ``python_docs`` needs no download: the documentation that ships with every CPython, i.e. the
  pydoc topic texts (``pydoc_data.topics.topics``, one document per topic, sorted by name) plus
  the docstrings of the pure-Python standard library (one document per module, sorted by path).
  About 2.1 MB in 581 documents on CPython 3.11 (the ~10 MB of stdlib *code* is left out: this
  source is prose). Docstrings are found with a small string/comment lexer (a regex), not
  ``ast.parse``: parsing the whole stdlib takes ~9 s on 2 cores, the lexer ~0.4 s. A
  triple-quoted string that starts a line counts as a docstring (this also keeps attribute
  docstrings; it drops ``x = \"\"\"...\"\"\"`` templates and bytes/f-strings). Deterministic for
  a given Python installation, not across Python versions. Read once per process (cached).
- ``text``: one file is one document; a glob gives several, in sorted order. Strict UTF-8. A file
  named as data (``.jsonl``, ``.json``, ``.parquet``, also ``.gz``/``.zst``) is refused rather than
  read as text: its JSON syntax would become the documents (and the tokenizer's merges).
- ``curated``: the documents a finished ``lmforge data curate`` run wrote (its workdir), in any of
  its output formats.
- ``jsonl`` (optionally gzip- or zstd-compressed): one document per line, taken from ``text_field``. Blank lines
  are ignored. A bad line fails naming ``path:LINE`` (or is skipped and counted). A ``.json`` file
  holding one JSON array (as Alpaca-style sets ship) gives one document per item (``path:item N``).
- Empty documents (an empty file, ``{"text": ""}``) are skipped and counted, as curation counts
  ``read/empty``; skips are one ``lmforge: skipped ...`` line on stderr per file. A source left
  with no document is a one-line error naming it.
- ``MixtureSource``: one named, weighted source of a mixture (``DataConfig.mixture`` for pretraining,
  ``lmforge.data.curate.MixtureConfig`` for a document stream). Its name keys its metrics
  (``eval/NAME/loss``) and its position in a checkpointed data iterator, so it is a lower-case
  identifier, and ``replay`` is taken by continued pretraining's replay source.
- ``split_documents`` follows nanoGPT for a single document (first 90% of the characters train,
  the rest val) and holds out the *last* documents otherwise. Both are deterministic, with no
  shuffling, so the val split never changes with a seed.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import gzip
import inspect
import io
import json
import math
import os
import pathlib
import re
import sys
import sysconfig
from collections.abc import Sequence

try:
    from zstandard import ZstdError
except ImportError:  # the curate extra is not installed: .zst inputs fail on open (open_bytes)
    class ZstdError(Exception):
        pass

KINDS = ("python_docs", "text", "jsonl", "curated")
ON_BAD_LINE = ("fail", "skip")


@dataclasses.dataclass(frozen=True)
class SourceConfig:
    """Where the raw documents come from."""

    kind: str = "python_docs"  # "python_docs" | "text" | "jsonl" | "curated"
    path: str = ""  # file path (or glob) for text/jsonl, a `lmforge data curate` workdir for curated; relative to the CWD
    text_field: str = "text"  # jsonl field holding the document text
    on_bad_line: str = "fail"  # jsonl: "fail" (raise naming file:line) or "skip" (skip and count)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"source.kind={self.kind!r}: expected one of {', '.join(KINDS)}")
        if self.on_bad_line not in ON_BAD_LINE:
            raise ValueError(f"source.on_bad_line={self.on_bad_line!r}: expected one of {', '.join(ON_BAD_LINE)}")


_NAME = re.compile(r"[a-z][a-z0-9_]*")
RESERVED_NAMES = ("replay",)  # continued pretraining's replay source (eval/replay/*, the iterator's "replay")


@dataclasses.dataclass(frozen=True)
class MixtureSource:
    """One source of a mixture: a name, where its documents come from, and its weight (a share of the
    mixture: of training sequences in ``DataConfig.mixture``, of UTF-8 bytes in a curate
    ``MixtureConfig``; the weights of a mixture need not sum to 1)."""

    name: str = ""
    source: SourceConfig = SourceConfig()
    weight: float = 1.0

    def __post_init__(self):
        if not _NAME.fullmatch(self.name) or self.name in RESERVED_NAMES:
            raise ValueError(f"mixture source name {self.name!r}: expected a lower-case identifier such as 'web' "
                             f"(it names eval/NAME/* metrics){', not replay' if self.name in RESERVED_NAMES else ''}")
        if not isinstance(self.source, SourceConfig):
            raise ValueError(f"mixture source {self.name!r}: source={self.source!r}; expected a SourceConfig, e.g. "
                             f"SourceConfig(kind='curated', path=CURATION_WORKDIR)")
        if type(self.weight) not in (int, float) or not 0 < self.weight < math.inf:   # NaN fails too
            raise ValueError(f"mixture source {self.name!r}: weight={self.weight!r}; expected a finite number > 0 "
                             f"(a Python int or float)")


def check_mixture(sources: Sequence[MixtureSource], key: str = "mixture") -> None:
    """Raises ValueError unless ``sources`` are MixtureSources with distinct names."""
    for s in sources:
        if not isinstance(s, MixtureSource):
            raise ValueError(f"{key} holds {s!r}; expected MixtureSource(name, SourceConfig(...), weight) items")
    names = [s.name for s in sources]
    if len(set(names)) < len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"{key} names {', '.join(twice)} more than once; expected one name per source")


def read_documents(cfg: SourceConfig) -> list[str]:
    """Returns the documents of ``cfg`` in a deterministic order (at least one)."""
    if cfg.kind not in KINDS:
        raise ValueError(f"source.kind={cfg.kind!r}: expected one of {', '.join(KINDS)}")
    if cfg.on_bad_line not in ON_BAD_LINE:
        raise ValueError(f"source.on_bad_line={cfg.on_bad_line!r}: expected one of {', '.join(ON_BAD_LINE)}")
    if cfg.kind == "python_docs":
        return list(_python_docs())
    if cfg.kind == "curated":
        return _read_curated(cfg.path)
    paths = _resolve_paths(cfg.path, cfg.kind)
    if cfg.kind == "text":
        for p in paths:
            _refuse_data_file(p)
        texts = [(p, read_text_file(p)) for p in paths]
        docs = [t for _, t in texts if t.strip()]
        empty = [p for p, t in texts if not t.strip()]
        if empty and docs:
            print(f"lmforge: skipped {len(empty):,} empty file(s) of {len(paths):,} in source text {cfg.path!r}; "
                  f"the first: {empty[0]}", file=sys.stderr, flush=True)
        if not docs:
            why = f"{paths[0]} is empty" if len(paths) == 1 else f"all {len(paths):,} files are empty"
            raise ValueError(f"source text {cfg.path!r} holds no documents: {why}; expected UTF-8 text")
        return docs
    docs, lines = [], 0
    for p in paths:
        file_docs, file_lines = _read_jsonl_file(p, cfg.text_field, cfg.on_bad_line)
        docs += file_docs
        lines += file_lines
    if not docs:
        where = paths[0] if len(paths) == 1 else f"its {len(paths):,} files"
        why = (f"{where} {'is' if len(paths) == 1 else 'are'} empty" if not lines
               else f"every one of the {lines:,} records was skipped (above)")
        raise ValueError(f"source jsonl {cfg.path!r} holds no documents: {why}; expected one JSON object per line "
                         f"with a non-empty string field {cfg.text_field!r}")
    return docs


def check_source(cfg: SourceConfig, key: str = "data.source") -> None:
    """What :func:`read_documents` needs of the file system, checked without reading a document (before a
    run writes anything): a ``text``/``jsonl`` path or glob that names files, a ``curated`` path that is a
    finished curation's workdir. Raises ValueError or FileNotFoundError naming ``key``."""
    try:
        if cfg.kind in ("text", "jsonl"):
            for path in _resolve_paths(cfg.path, cfg.kind):
                if cfg.kind == "text":
                    _refuse_data_file(path)
        elif cfg.kind == "curated":
            _curated_workdir(cfg.path)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{key}: {e}") from None
    except ValueError as e:
        raise ValueError(f"{key}: {e}") from None


def split_documents(docs: Sequence[str], val_fraction: float) -> tuple[list[str], list[str]]:
    """Splits into (train_docs, val_docs).

    One document: its first ``int(len * (1 - val_fraction))`` characters train, the rest val
    (nanoGPT's shakespeare split). Several: the last ``ceil(val_fraction * n)`` documents are val
    (at least one stays train). ``val_fraction == 0`` gives an empty val split.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction={val_fraction}: expected a number in [0, 1)")
    docs = list(docs)
    if not docs:
        raise ValueError("split_documents: got no documents; expected at least one")
    if len(docs) == 1:
        cut = int(len(docs[0]) * (1.0 - val_fraction))
        val = [docs[0][cut:]] if cut < len(docs[0]) else []
        return [docs[0][:cut]], val
    # round() first: 0.1 * 30 is 3.0000000000000004 in floating point, whose ceil would be 4.
    n_val = min(math.ceil(round(val_fraction * len(docs), 9)), len(docs) - 1)
    return docs[: len(docs) - n_val], docs[len(docs) - n_val :]


# --------------------------------------------------------------------------- files


def _resolve_paths(path: str, kind: str) -> list[pathlib.Path]:
    if not path:
        raise ValueError("source.path is empty: expected a file path or glob for kind 'text'/'jsonl'")
    expanded = os.path.expanduser(path)
    if glob.has_magic(expanded):
        matches = sorted(glob.glob(expanded, recursive=True))
        files = [pathlib.Path(m) for m in matches if os.path.isfile(m)]
        if not files:
            raise FileNotFoundError(f"source.path={path!r}: the glob matched no files (cwd {os.getcwd()})")
        return files
    p = pathlib.Path(expanded)
    if p.is_dir():
        pattern = os.path.join(path, "*.txt" if kind == "text" else "*.jsonl")
        raise ValueError(f"source.path={path!r} is a directory ({p.resolve()}); expected a file, or a glob "
                         f"such as {pattern!r} for the files in it")
    if not p.is_file():
        raise FileNotFoundError(f"{p.resolve()}: no such file (source.path={path!r})")
    return [p]


def open_bytes(path: pathlib.Path):
    """A binary file object over ``path``, decompressing ``.gz`` (gzip) and ``.zst`` (zstandard, the
    format ``lmforge data curate`` writes by default). Raises ValueError for ``.zst`` without the
    zstandard package."""
    path = pathlib.Path(path)
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")
    if path.name.endswith(".zst"):
        try:
            import zstandard  # pylint: disable=import-outside-toplevel
        except ImportError:
            raise ValueError(f"{path}: reading .zst needs the zstandard package (pip install 'lmforge[curate]')") from None
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True))
    return open(path, "rb")


def _curated_workdir(path: str) -> pathlib.Path:
    """The finished curation's workdir ``path`` names (it, or its ``data/`` folder). Raises ValueError
    (FileNotFoundError for a missing folder) otherwise."""
    if not path:
        raise ValueError("source.path is empty: expected the workdir of a `lmforge data curate` run for kind 'curated'")
    from lmforge.data.curate.run import DATA_DIR  # pylint: disable=import-outside-toplevel

    given = pathlib.Path(os.path.expanduser(path))
    workdir = given.parent if given.name == DATA_DIR and (given.parent / "funnel.json").is_file() else given
    if not workdir.is_dir():
        raise FileNotFoundError(f"{given.resolve()}: no such folder (source.path={path!r}, kind 'curated': the "
                                f"workdir of a `lmforge data curate` run)")
    if not (workdir / "funnel.json").is_file():
        raise ValueError(f"source.path={path!r} holds no finished curation ({workdir / 'funnel.json'} is missing); "
                         f"expected the workdir of a `lmforge data curate` run that finished")
    return workdir


def _read_curated(path: str) -> list[str]:
    """The documents of a finished ``lmforge data curate`` run (its workdir, or the workdir's ``data/``
    folder), in shard order, in any output format (jsonl.zst, jsonl, parquet, array_record)."""
    from lmforge.data.curate.run import DATA_DIR  # pylint: disable=import-outside-toplevel
    from lmforge.data.curate.writers import read_shards  # pylint: disable=import-outside-toplevel

    workdir = _curated_workdir(path)
    docs = [doc.text for doc in read_shards(workdir / DATA_DIR)]
    if not docs:
        raise ValueError(f"source.path={path!r}: its curation kept no document (see {workdir / 'report.md'})")
    return docs


def _read_compressed(path: pathlib.Path, read):
    """``read(file)`` over ``open_bytes(path)``; a corrupt .gz / .zst is a ValueError naming the file."""
    try:
        with open_bytes(path) as f:
            return read(f)
    except (OSError, EOFError) as e:
        if not path.name.endswith((".gz", ".zst")) or isinstance(e, FileNotFoundError):
            raise
        raise ValueError(f"{path}: not a readable {path.suffix[1:]} file ({type(e).__name__}: {e})") from None
    except ZstdError as e:
        raise ValueError(f"{path}: not a readable zst file (ZstdError: {e})") from None


def read_text_file(path: pathlib.Path) -> str:
    """The UTF-8 text of ``path`` (``.gz``/``.zst`` decompressed); a ValueError naming the file and
    the byte offset for invalid UTF-8."""
    path = pathlib.Path(path)
    data = _read_compressed(path, lambda f: f.read())
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(
                f"{path}: invalid UTF-8 at byte offset {e.start} ({data[e.start:e.start + 4]!r}); "
                "expected UTF-8 text"
        ) from None


def data_suffix(path: pathlib.Path) -> str:
    """``".jsonl"``, ``".json"`` or ``".parquet"`` when ``path``'s name says it holds records
    (``.gz``/``.zst`` too), else ``""``."""
    name = pathlib.Path(path).name.lower().removesuffix(".gz").removesuffix(".zst")
    return next((s for s in (".jsonl", ".json", ".parquet") if name.endswith(s)), "")


def _refuse_data_file(path: pathlib.Path) -> None:
    suffix = data_suffix(path)
    if not suffix:
        return
    if suffix == ".parquet":
        raise ValueError(f"{path}: a parquet file, not text (source.kind='text' reads each file as one document); "
                         f"`lmforge data curate --input {path}` turns it into a kind='curated' source")
    raise ValueError(f"{path}: a {suffix} file holds JSON records, not text (source.kind='text' would read its JSON "
                     f"syntax as one document); expected kind 'jsonl': data.source.kind=jsonl, or "
                     f"`lmforge tokenizer train --source-kind jsonl`")


def json_kind(value) -> str:
    """What a JSON value is, for messages: ``null``, ``a int``, ``a list``, ..."""
    return "null" if value is None else f"a {type(value).__name__}"


def is_json_array(path: pathlib.Path) -> bool:
    """Whether ``path`` is a ``.json`` file (``.gz``/``.zst`` too) holding one JSON array (its first
    non-blank byte is ``[``) rather than JSON lines."""
    def first_byte(f) -> bytes:
        while chunk := f.read(4096):
            if chunk.lstrip():
                return chunk.lstrip()[:1]
        return b""

    return data_suffix(path) == ".json" and _read_compressed(pathlib.Path(path), first_byte) == b"["


def read_json_array(path: pathlib.Path) -> list:
    """The items of a file holding one JSON array, read whole: such files are data sets of thousands
    of records, not crawls. Raises ValueError naming the file for anything else."""
    path = pathlib.Path(path)
    try:
        items = json.loads(_read_compressed(path, lambda f: f.read()))
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: invalid UTF-8 at byte offset {e.start}; expected a UTF-8 JSON array") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not a valid JSON array ({e.msg} at line {e.lineno} column {e.colno}); expected "
                         f"a JSON array of objects, or one JSON object per line") from None
    if not isinstance(items, list):
        raise ValueError(f"{path}: holds a JSON {type(items).__name__}; expected a JSON array of objects")
    return items


def _read_jsonl_file(path: pathlib.Path, field: str, on_bad_line: str) -> tuple[list[str], int]:
    """The documents of a jsonl (or JSON array) file and how many records (non-blank lines) it has."""
    docs, bad, empty, first_bad, first_empty = [], 0, 0, "", ""

    def add(where: str, doc: str | None, why: str) -> None:
        nonlocal bad, empty, first_bad, first_empty
        if doc is None:
            msg = f"{where}: expected a JSON object with a string field {field!r} ({why})"
            if on_bad_line == "fail":
                raise ValueError(msg)
            bad += 1
            first_bad = first_bad or msg
        elif not doc.strip():
            empty += 1
            first_empty = first_empty or where
        else:
            docs.append(doc)

    def read(f) -> None:
        for lineno, raw in enumerate(f, start=1):
            if raw.strip():
                add(f"{path}:{lineno}", *_parse_jsonl_line(raw, field))

    if is_json_array(path):
        for i, item in enumerate(read_json_array(path), start=1):
            add(f"{path}:item {i}", *_text_of(item, field))
    else:
        _read_compressed(path, read)
    records = len(docs) + bad + empty
    if bad:
        print(f"lmforge: skipped {bad:,} bad line(s) of {records:,} in {path}; the first: {first_bad}",
              file=sys.stderr, flush=True)
    if empty:
        print(f"lmforge: skipped {empty:,} empty document(s) of {records:,} in {path}; the first: {first_empty}",
              file=sys.stderr, flush=True)
    return docs, records


def _parse_jsonl_line(raw: bytes, field: str) -> tuple[str | None, str]:
    """Returns (document, "") or (None, why the line is bad)."""
    try:
        obj = json.loads(raw)
    except UnicodeDecodeError as e:
        return None, f"invalid UTF-8 at byte {e.start} of the line"
    except json.JSONDecodeError as e:
        return None, f"invalid JSON: {e.msg} (column {e.colno})"
    return _text_of(obj, field)


def _text_of(obj, field: str) -> tuple[str | None, str]:
    """``obj[field]`` when ``obj`` is an object with a string ``field``: (document, "") or (None, why not)."""
    if not isinstance(obj, dict):
        return None, "got JSON null" if obj is None else f"got a JSON {type(obj).__name__}"
    if field not in obj:
        keys = ", ".join(list(obj)[:8])
        return None, f"field missing; the keys are: {keys}"
    if not isinstance(obj[field], str):
        return None, f"field is {json_kind(obj[field])}"
    return obj[field], ""


# --------------------------------------------------------------------------- python_docs

# A tiny Python lexer for what matters here: comments and string literals, so that quotes inside
# comments or ordinary strings never pair up wrongly. Group "doc" holds triple-quoted bodies.
_LEXER = re.compile(
    r"""
    (?=[\#'"rRuUbBfF])                                          # first-character filter: 3x faster
    (?:
        \#[^\n]*                                                # comment
      | (?P<prefix>[rRuUbBfF]{0,2})(?P<q>\"\"\"|''')(?P<doc>.*?)(?P=q)  # triple-quoted string
      | [rRuUbBfF]{0,2}'(?:\\.|[^'\\\n])*'                      # single-quoted string
      | [rRuUbBfF]{0,2}"(?:\\.|[^"\\\n])*"
    )
    """,
    re.S | re.X,
)
# Folders of the stdlib that hold tests, GUI demos or vendored tools rather than library docs.
_SKIP_DIRS = frozenset({"test", "tests", "idlelib", "site-packages", "dist-packages", "lib2to3",
                        "turtledemo", "ensurepip", "__pycache__"})


@functools.lru_cache(maxsize=1)
def _python_docs() -> tuple[str, ...]:
    try:
        from pydoc_data import topics  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise RuntimeError(
            "source.kind='python_docs': this Python has no pydoc_data module (some distributions strip it); "
            "install the full Python or use kind='text'/'jsonl'"
        ) from None
    docs = [topics.topics[k] for k in sorted(topics.topics)]
    for path in _stdlib_modules(pathlib.Path(sysconfig.get_paths()["stdlib"])):
        text = _module_docstrings(path.read_bytes().decode("utf-8", errors="replace"))
        if text:
            docs.append(text)
    return tuple(docs)


def _stdlib_modules(root: pathlib.Path) -> list[pathlib.Path]:
    """The stdlib's library ``.py`` files, sorted; test, demo and site-packages folders pruned."""
    found = []
    for folder, subdirs, files in os.walk(root):
        subdirs[:] = [d for d in subdirs if d not in _SKIP_DIRS and not d.startswith(("test", "config-"))]
        found += [pathlib.Path(folder, f) for f in files if f.endswith(".py") and not f.startswith("test_")]
    return sorted(found)


def _module_docstrings(source: str) -> str:
    """Triple-quoted strings of ``source`` that start a line (docstrings), dedented and joined."""
    parts = []
    for m in _LEXER.finditer(source):
        doc = m.group("doc")
        if doc is None or "b" in m.group("prefix").lower() or "f" in m.group("prefix").lower():
            continue
        line_start = source.rfind("\n", 0, m.start()) + 1
        if source[line_start : m.start()].strip():
            continue  # not the first thing on its line: an argument or assignment, not a docstring
        doc = inspect.cleandoc(doc)
        if doc:
            parts.append(doc)
    return "\n\n".join(parts)
