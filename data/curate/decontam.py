"""Decontamination: drop training documents that share a long n-gram with an evaluation set.

Choices:
- GPT-3's rule (Brown et al. 2020, App. C): word 13-grams, after lowercasing and dropping
  punctuation; a document is dropped (``decontaminate/eval_overlap``) when at least
  ``min_matches`` of its n-grams occur in an evaluation document. An eval document shorter than
  ``ngram`` words cannot match (lower ``ngram`` for sets of short items).
- Eval sets are files read with the same readers as the inputs (``jsonl``: the fields in
  ``fields`` are joined, so GSM8K's question and answer both count). Any bad record fails, naming
  ``decontaminate.eval_paths[i]`` (a skipped eval item would silently let its overlap through). The
  n-gram set is built once per process and cached; the curation's parent builds it before any
  worker starts (``check_eval_sets``), so a bad eval set fails at once. n-grams are kept as 64-bit
  blake2b hashes, so 1M n-grams take ~60 MB.
- The kept documents are not rewritten (GPT-3 cut the overlapping spans; dropping is simpler to
  audit and loses little at web scale).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import pathlib
import re
import sys

from lmforge.data.curate.document import Document, InputConfig, expand_path, read_file
from lmforge.data.curate.verdict import Verdict, drop

_WORD = re.compile(r"[^\W_]+")


@dataclasses.dataclass(frozen=True)
class DecontamConfig:
    enabled: bool = True
    eval_paths: tuple[str, ...] = ()  # jsonl / text / parquet files or globs of evaluation sets
    fields: tuple[str, ...] = ("text",)  # jsonl/parquet fields joined into one eval document
    ngram: int = 13
    min_matches: int = 1

    def __post_init__(self):
        if not self.fields:
            raise ValueError("decontaminate.fields is empty: expected the field(s) holding each evaluation item, "
                             "e.g. ('question', 'answer')")
        if self.ngram < 1 or self.min_matches < 1:
            raise ValueError(f"decontaminate.ngram={self.ngram} and min_matches={self.min_matches}: expected >= 1")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _key(ws: list[str]) -> bytes:
    return hashlib.blake2b(" ".join(ws).encode("utf-8"), digest_size=8).digest()


def ngram_keys(text: str, n: int) -> list[bytes]:
    ws = words(text)
    return [_key(ws[i:i + n]) for i in range(len(ws) - n + 1)]


@functools.lru_cache(maxsize=4)
def eval_ngrams(cfg: DecontamConfig) -> frozenset[bytes]:
    """The hashed n-grams of every evaluation document (cached per process and config). Errors name
    ``decontaminate.eval_paths[i]`` and, for a record without the fields, ``decontaminate.fields``."""
    keys: set[bytes] = set()
    for i, pattern in enumerate(cfg.eval_paths):
        key = f"decontaminate.eval_paths[{i}]"
        for path in sorted(expand_path(pattern, key)):
            try:
                texts = _joined_fields(path, cfg.fields) if len(cfg.fields) > 1 else _texts(path, cfg.fields[0])
            except ValueError as e:
                raise ValueError(f"{key}: {e}") from None
            for text in texts:
                keys.update(ngram_keys(text, cfg.ngram))
    return frozenset(keys)


def check_eval_sets(cfg: DecontamConfig) -> None:
    """Reads the evaluation sets once (``eval_ngrams``), so a missing or malformed one is an error
    before any document is curated."""
    if cfg.enabled and cfg.eval_paths:
        eval_ngrams(cfg)


def _texts(path: pathlib.Path, field: str) -> list[str]:
    icfg = InputConfig(paths=(str(path),), text_field=field, max_doc_bytes=sys.maxsize)
    out = []
    for r in read_file(icfg, path, 0):
        if r.doc is not None:
            out.append(r.doc.text)
        elif r.reason == "missing_field":
            raise ValueError(f"{r.where}: {r.why} (decontaminate.fields=({field!r},) names the field of each "
                             f"evaluation item)")
        elif r.reason != "empty":
            raise ValueError(f"{r.where}: {r.why}")
    return out


def _joined_fields(path: pathlib.Path, fields: tuple[str, ...]) -> list[str]:
    from lmforge.data.sources import open_bytes  # pylint: disable=import-outside-toplevel

    out = []
    with open_bytes(path) as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise ValueError(f"{path}:{lineno}: invalid JSON ({type(e).__name__}: {e}); expected one JSON "
                                 f"object per line") from None
            missing = [k for k in fields if not isinstance(obj, dict) or k not in obj]
            if missing:
                got = f"keys {', '.join(sorted(obj)[:8])}" if isinstance(obj, dict) else f"a JSON {type(obj).__name__}"
                raise ValueError(f"{path}:{lineno}: expected a JSON object with the fields of decontaminate.fields="
                                 f"{fields!r}, got {got}")
            out.append("\n".join(str(obj[k]) for k in fields))
    return out


def decontaminate(cfg: DecontamConfig, doc: Document) -> Verdict:
    if not cfg.eval_paths:
        return Verdict(doc)
    index = eval_ngrams(cfg)
    matches = 0
    for key in ngram_keys(doc.text, cfg.ngram):
        if key in index:
            matches += 1
            if matches >= cfg.min_matches:
                return drop("eval_overlap")
    return Verdict(doc)
