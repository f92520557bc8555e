"""Reading task files: text and JSON Lines (optionally gzipped), every bad line (invalid JSON, or bytes that
are not UTF-8) a one-line error naming file:line."""

from __future__ import annotations

import gzip
import json
import pathlib
from collections.abc import Iterator


# ../shared/data beside the checkout (GSM8K, HH-RLHF: see PROVENANCE.md there): the default task files.
SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


class TaskFileError(ValueError):
    """A task file that cannot be read: the message names the file and line and what was expected."""


def read_text(path: str | pathlib.Path) -> str:
    """The UTF-8 text of ``path``; a TaskFileError naming the file and the first byte that is not UTF-8."""
    path = pathlib.Path(path)
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise TaskFileError(f"{path}:{line}: invalid UTF-8 at byte offset {e.start} ({data[e.start:e.start + 4]!r}); "
                            f"expected UTF-8 text") from None


def read_lines(path: str | pathlib.Path) -> Iterator[tuple[int, str]]:
    """Yields ``(line number, text)`` for each line of a text file, gzipped when it ends in ``.gz``; a line
    that is not UTF-8 is a TaskFileError naming file:line (decoded per line: the error is where it is)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(2, "No such file", str(path))
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise TaskFileError(f"{path}:{number}: invalid UTF-8 at byte {e.start + 1} of the line "
                                    f"({raw[e.start:e.start + 4]!r}); expected UTF-8 text") from None


def read_jsonl(path: str | pathlib.Path) -> Iterator[tuple[int, dict]]:
    """Yields ``(line number, object)`` for each non-blank line of a ``.jsonl`` or ``.jsonl.gz`` file."""
    for number, line in read_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise TaskFileError(f"{path}:{number}: not valid JSON ({e.msg}, column {e.colno})") from None
        if not isinstance(obj, dict):
            raise TaskFileError(f"{path}:{number}: expected a JSON object, got {type(obj).__name__}")
        yield number, obj


def field(obj: dict, key: str, kind: type | tuple[type, ...], where: str):
    """``obj[key]``, which must be of ``kind``; else a TaskFileError naming ``where`` (file:line)."""
    if key not in obj:
        raise TaskFileError(f"{where}: missing key {key!r} (has {sorted(obj)})")
    value, kinds = obj[key], (kind if isinstance(kind, tuple) else (kind,))
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):   # True is not an index
        names = "/".join(k.__name__ for k in kinds)
        article = "an" if names[0] in "aeiou" else "a"
        raise TaskFileError(f"{where}: {key!r} must be {article} {names}, got {type(value).__name__}")
    return value
