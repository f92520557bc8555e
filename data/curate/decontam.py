"""Decontamination: drop training documents that share a long n-gram with an evaluation set.

Choices:
- GPT-3's rule (Brown et al. 2020, App. C): word 13-grams, after lowercasing and dropping
  punctuation; a document is dropped (``decontaminate/eval_overlap``) when at least
  ``min_matches`` of its n-grams occur in an evaluation document. An eval document shorter than
  ``ngram`` words cannot match (lower ``ngram`` for sets of short items).
- Eval sets are files read with the same readers as the inputs (``jsonl``: the fields in
  ``fields`` are joined, so GSM8K's question and answer both count). The n-gram set is built once
  per process and cached; n-grams are kept as 64-bit blake2b hashes, so 1M n-grams take ~60 MB.
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

from lmforge.data.curate.document import Document, InputConfig, read_file, resolve_files
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
    """The hashed n-grams of every evaluation document (cached per process and config)."""
    keys: set[bytes] = set()
    field = cfg.fields[0] if len(cfg.fields) == 1 else "\x00unused"
    for i, (icfg, path) in enumerate(resolve_files((InputConfig(paths=cfg.eval_paths, text_field=field,
                                                                on_bad_record="fail"),))):
        if len(cfg.fields) > 1:
            texts = _joined_fields(path, cfg.fields)
        else:
            texts = [r.doc.text for r in read_file(icfg, path, i) if r.doc is not None]
        for text in texts:
            keys.update(ngram_keys(text, cfg.ngram))
    return frozenset(keys)


def _joined_fields(path: pathlib.Path, fields: tuple[str, ...]) -> list[str]:
    from lmforge.data.sources import open_bytes  # pylint: disable=import-outside-toplevel

    out = []
    with open_bytes(path) as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                out.append("\n".join(str(obj[k]) for k in fields))
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
                raise ValueError(f"{path}:{lineno}: expected a JSON object with fields {list(fields)} "
                                 f"(decontaminate.fields): {type(e).__name__} {e}") from None
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
