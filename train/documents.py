"""A pretraining run's documents: read (and curated, when the run curates) into train and held-out
splits per source (:func:`data_splits`), and fingerprinted in ``WORKDIR/data.json`` at the first start
so that a resume on other documents is refused (:func:`check_same_data`). ``lmforge.train.pretrain``
runs them; ``lmforge eval``'s memorisation task reads a run's training split through them.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import sys
from typing import TYPE_CHECKING

import jax

from lmforge.data import read_documents, split_documents
from lmforge.data.curate.config import CurateConfig
from lmforge.data.pipeline import mixture_splits
from lmforge.train import distributed

if TYPE_CHECKING:
    from lmforge.train.pretrain import PretrainConfig


def data_splits(cfg: PretrainConfig, workdir: pathlib.Path) -> dict[str, tuple[list[str], list[str]]]:
    """``{source: (train documents, held-out documents)}`` of the run: each source of ``data.mixture``
    under its name (``mixture_splits``), or ``data.source`` as ``"data"``, curated first into
    ``WORKDIR/curated`` when ``cfg.curate`` is set (a finished curation is only read) — except a
    ``kind="curated"`` source, which ``lmforge data curate`` curated already: its documents are used
    as they are, and stderr says the run's curation was skipped."""
    if cfg.data.mixture:
        return mixture_splits(cfg.data)
    docs = read_documents(cfg.data.source)
    if cfg.curate is not None and cfg.data.source.kind == "curated":
        if jax.process_index() == 0:
            print(f"lmforge: data.source.kind=curated: the {len(docs):,} documents of {cfg.data.source.path} are "
                  f"used as curated there; this run's curate stage is skipped (bind curate=None to say so)",
                  file=sys.stderr, flush=True)
    elif cfg.curate is not None:
        docs = curate_documents(cfg.curate, docs, workdir / "curated")
    return {"data": split_documents(docs, cfg.data.val_fraction)}


DATA_FILE = "data.json"   # the run's documents, fingerprinted at its first start (check_same_data)


def data_fingerprint(splits: dict[str, tuple[list[str], list[str]]]) -> dict[str, dict]:
    """``{source: {"train_documents", "val_documents", "characters", "sha256"}}``: what a run trained and
    evaluated on, the digest over every document (length-prefixed UTF-8, train split then held-out)."""
    out = {}
    for name, (train, val) in splits.items():
        digest = hashlib.sha256()
        for doc in (*train, *val):
            data = doc.encode("utf-8", errors="surrogatepass")
            digest.update(len(data).to_bytes(8, "little"))
            digest.update(data)
        out[name] = {"train_documents": len(train), "val_documents": len(val),
                     "characters": sum(map(len, train)) + sum(map(len, val)), "sha256": digest.hexdigest()}
    return out


def check_same_data(workdir: pathlib.Path, splits: dict[str, tuple[list[str], list[str]]]) -> None:
    """Refuses to resume a run in ``workdir`` on documents other than those it started on: the first
    start writes their :func:`data_fingerprint` to ``WORKDIR/data.json``; a start that finds checkpoints
    compares (a run whose source changed on disk — re-curated, edited, another file under the same
    path — would go on with the old tokenizer, the grain iterator's position in other data and an
    evaluation that no longer measures the same split). Without checkpoints it is written anew.
    Raises ValueError naming the source that differs and what changed."""
    from lmforge.weights.load import has_checkpoint   # pylint: disable=import-outside-toplevel

    path = workdir / DATA_FILE
    now = data_fingerprint(splits)
    if path.is_file() and has_checkpoint(workdir):
        try:
            before = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: unreadable ({e}); expected the fingerprint of the run's documents "
                             f"(delete it to resume without the check)") from None
        for name in sorted(set(before) | set(now)):
            old, new = before.get(name), now.get(name)
            if old == new:
                continue
            key = f"data.mixture.{name}.source" if name not in ("data", "replay") else (
                "data.source" if name == "data" else "replay")
            said = lambda f: "absent" if f is None else (   # noqa: E731
                f"{f['train_documents'] + f['val_documents']:,} documents, {f['characters']:,} characters, "
                f"sha256 {f['sha256'][:12]}")
            raise ValueError(f"{key}: the documents differ from those this run started on ({path}: {said(old)}; "
                             f"now {said(new)}); expected the same data to resume — give a new --workdir, or continue "
                             f"from this run on the new data with init_from={workdir}")
        return
    if jax.process_index() == 0:
        _write_json_atomic(path, now)


def _write_json_atomic(path: pathlib.Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def curate_documents(curate_cfg: CurateConfig, docs: list[str], directory: pathlib.Path) -> list[str]:
    """The curation stage (process 0 curates once into WORKDIR/curated; every process reads the shards)."""
    from lmforge.data.curate import curate_texts

    if jax.process_index() == 0:
        kept = curate_texts(curate_cfg, docs, directory)
    distributed.barrier("curate")
    if jax.process_index() != 0:
        kept = curate_texts(curate_cfg, docs, directory)   # finished by process 0: only reads
    if not kept:
        raise ValueError(f"curation kept none of the {len(docs)} documents; see {directory / 'report.md'} and relax "
                         f"its thresholds")
    return kept
