"""Reading task files: JSON Lines (optionally gzipped), every bad line a one-line error naming file:line."""

from __future__ import annotations

import gzip
import json
import pathlib
from collections.abc import Iterator


# ../shared/data beside the checkout (GSM8K, HH-RLHF: see PROVENANCE.md there): the default task files.
SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


class TaskFileError(ValueError):
    """A task file that cannot be read: the message names the file and line and what was expected."""


def read_jsonl(path: str | pathlib.Path) -> Iterator[tuple[int, dict]]:
    """Yields ``(line number, object)`` for each non-blank line of a ``.jsonl`` or ``.jsonl.gz`` file."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(2, "No such file", str(path))
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
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
        raise TaskFileError(f"{where}: {key!r} must be a {names}, got {type(value).__name__}")
    return value
