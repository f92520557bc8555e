"""The local runner: the per-document stages in a multiprocessing pool, dedup in this process.

Choices:
- Records are read in this process, in order, and sent to ``workers`` processes in chunks of
  ``chunk_size``; ``imap`` returns the results in input order, so the output does not depend on
  the number of workers. ``workers=1`` runs everything in this process (no pool).
- Workers are started with ``spawn``: the parent may hold threads (grain, jax) that ``fork``
  would copy in a locked state. Each worker builds its stages (and loads the language and
  toxicity models) once.
- Dedup needs every key and signature at once; they are small (8 + 8·num_perm bytes per
  document), but the kept documents are held in memory until the shards are written, so this
  runner is for what fits one machine. Beyond that use the Beam runner.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import pathlib
import sys
from collections import defaultdict
from collections.abc import Iterator

from tqdm import tqdm

from lmforge.data.curate.config import CurateConfig
from lmforge.data.curate.dedup import exact_duplicates, near_duplicates
from lmforge.data.curate.document import Record, file_format, named_files, read_file, resolve_files
from lmforge.data.curate.fates import fate
from lmforge.data.curate.funnel import Funnel
from lmforge.data.curate.stages import DocResult, enabled_stages, process_many
from lmforge.data.curate.writers import shard_of, write_shard

_CFG: CurateConfig | None = None


def _init_worker(cfg: CurateConfig) -> None:
    global _CFG
    _CFG = cfg


def _work(records: list[Record]) -> list[DocResult]:
    return process_many(_CFG, records)


def read_records(cfg: CurateConfig) -> Iterator[Record]:
    """Every input record of ``cfg``, files in order (a missing or unreadable file raises first)."""
    for i, (icfg, path, name) in enumerate(named_files(cfg.inputs)):
        yield from read_file(icfg, path, i, name)


def _chunks(records: Iterator[Record], size: int) -> Iterator[list[Record]]:
    while chunk := list(itertools.islice(records, size)):
        yield chunk


def run_local(cfg: CurateConfig, out_dir: pathlib.Path) -> Funnel:
    """Curates ``cfg.inputs`` into shards in ``out_dir``; returns the funnel."""
    workers = cfg.workers or os.cpu_count() or 1
    results: list[DocResult] = []
    chunks = _chunks(read_records(cfg), cfg.chunk_size)
    # Into a log file too, every 10-60 s (as the training bar does); nothing for a curation done in 2 s.
    interactive = sys.stderr.isatty()
    with tqdm(desc="curate", unit="doc", file=sys.stderr, mininterval=0.5 if interactive else 10.0,
              maxinterval=10.0 if interactive else 60.0, ascii=not interactive, delay=2.0) as bar:
        if workers == 1:
            for chunk in chunks:
                results += process_many(cfg, chunk)
                bar.update(len(chunk))
        else:
            ctx = multiprocessing.get_context("spawn")
            with ctx.Pool(workers, initializer=_init_worker, initargs=(cfg,)) as pool:
                for part in pool.imap(_work, chunks):
                    results += part
                    bar.update(len(part))
    return finish(cfg, results, out_dir)


def finish(cfg: CurateConfig, results: list[DocResult], out_dir: pathlib.Path) -> Funnel:
    """The global stages (exact then near dedup), the funnel and the shards."""
    passed = [r for r in results if r.doc is not None]
    exact = exact_duplicates((r.ordinal, r.exact) for r in passed) if cfg.exact_dedup.enabled else {}
    near = (near_duplicates(cfg.near_dedup, ((r.ordinal, r.sig) for r in passed if r.ordinal not in exact))
            if cfg.near_dedup.enabled else {})
    funnel = Funnel(enabled_stages(cfg), cfg.output.examples_per_reason)
    shards: dict[int, list] = defaultdict(list)
    files = [(str(path), file_format(icfg, path)) for icfg, path in resolve_files(cfg.inputs)]
    for r in results:
        stage, reason, detail = fate(r, exact, near, files)
        funnel.add(r, stage, reason, detail)
        if not stage:
            shards[shard_of(r.doc.id, cfg.output.num_shards)].append((r.ordinal, r.doc))
    for i in range(cfg.output.num_shards):
        write_shard(out_dir, cfg.output, i, shards.get(i, []))
    return funnel
