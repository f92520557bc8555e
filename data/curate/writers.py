"""Curated shards on disk, and reading them back (for mixtures and pretraining).

Choices:
- A document goes to shard ``blake2b(id) mod num_shards`` and each shard is sorted by ordinal
  (input order), so the bytes of every shard depend only on the kept documents, not on the runner
  or the number of workers. Every shard is written, empty ones too, so the file set is fixed.
- ``jsonl.zst``: one JSON object per line, keys sorted, non-ASCII kept as UTF-8, zstd at
  ``zstd_level`` with a content checksum, one ``compress`` call per shard (so the frame is
  deterministic).
- ``parquet``: columns id, text, source, metadata (JSON string), written by pyarrow with zstd
  compression and no statistics-dependent options; deterministic for a fixed pyarrow version.
- ``arrayrecord``: one JSON record per entry (``group_size:1`` for random access), the format
  grain's ``ArrayRecordDataSource`` reads at scale.
- ``jsonl``: the ``jsonl.zst`` lines uncompressed, for a quick look with ``head`` or ``jq``.
- Files are written to ``*.tmp`` and renamed, so a crash never leaves a half shard under its name.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import pathlib
from collections.abc import Iterable, Iterator

from lmforge.data.curate.config import OutputConfig
from lmforge.data.curate.document import Document

EXTENSIONS = {"jsonl.zst": "jsonl.zst", "parquet": "parquet", "arrayrecord": "array_record", "jsonl": "jsonl"}


def shard_of(doc_id: str, num_shards: int) -> int:
    return int.from_bytes(hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest(), "little") % num_shards


def shard_path(out_dir: pathlib.Path, cfg: OutputConfig, index: int) -> pathlib.Path:
    return out_dir / f"{cfg.prefix}-{index:05d}-of-{cfg.num_shards:05d}.{EXTENSIONS[cfg.format]}"


def _line(doc: Document) -> bytes:
    return json.dumps(doc.to_json(), sort_keys=True, ensure_ascii=False).encode("utf-8")


def write_shard(out_dir: pathlib.Path, cfg: OutputConfig, index: int, docs: Iterable[tuple[int, Document]]) -> pathlib.Path:
    """Writes one shard from (ordinal, document) pairs in any order; returns its path."""
    docs = [d for _, d in sorted(docs, key=lambda od: od[0])]
    path = shard_path(pathlib.Path(out_dir), cfg, index)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if cfg.format == "jsonl.zst":
        import zstandard  # pylint: disable=import-outside-toplevel

        payload = b"".join(_line(d) + b"\n" for d in docs)
        tmp.write_bytes(zstandard.ZstdCompressor(level=cfg.zstd_level, write_checksum=True).compress(payload))
    elif cfg.format == "jsonl":
        tmp.write_bytes(b"".join(_line(d) + b"\n" for d in docs))
    elif cfg.format == "parquet":
        import pyarrow as pa  # pylint: disable=import-outside-toplevel
        import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel

        table = pa.table({
            "id": pa.array([d.id for d in docs], pa.string()),
            "text": pa.array([d.text for d in docs], pa.string()),
            "source": pa.array([d.source for d in docs], pa.string()),
            "metadata": pa.array([json.dumps(d.metadata, sort_keys=True, ensure_ascii=False) for d in docs], pa.string()),
        })
        pq.write_table(table, tmp, compression="zstd")
    else:
        from array_record.python.array_record_module import ArrayRecordWriter  # pylint: disable=import-outside-toplevel

        writer = ArrayRecordWriter(str(tmp), "group_size:1")
        for d in docs:
            writer.write(_line(d))
        writer.close()
    os.replace(tmp, path)
    return path


def shard_files(out_dir: str | os.PathLike) -> list[pathlib.Path]:
    """The curated shards in ``out_dir`` (any of the formats), sorted."""
    found = []
    for ext in EXTENSIONS.values():
        found += glob.glob(os.path.join(os.fspath(out_dir), f"*.{ext}"))
    return sorted(pathlib.Path(p) for p in found)


def read_shards(out_dir: str | os.PathLike) -> Iterator[Document]:
    """Every document of the curated shards in ``out_dir``, shard by shard."""
    files = shard_files(out_dir)
    if not files:
        raise FileNotFoundError(f"{out_dir}: holds no curated shards (*.jsonl.zst, *.jsonl, *.parquet, "
                                f"*.array_record); "
                                f"run `lmforge data curate` first")
    for path in files:
        yield from read_shard(path)


def read_shard(path: pathlib.Path) -> Iterator[Document]:
    def doc(obj: dict) -> Document:
        meta = obj["metadata"]
        return Document(obj["id"], obj["text"], obj["source"], json.loads(meta) if isinstance(meta, str) else meta)

    if path.name.endswith(".jsonl.zst"):
        import zstandard  # pylint: disable=import-outside-toplevel

        with open(path, "rb") as f:
            data = zstandard.ZstdDecompressor().stream_reader(f).read()
        for line in data.splitlines():
            yield doc(json.loads(line))
    elif path.name.endswith(".jsonl"):
        with open(path, "rb") as f:
            for line in f:
                yield doc(json.loads(line))
    elif path.name.endswith(".parquet"):
        import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel

        for row in pq.read_table(path).to_pylist():
            yield doc(row)
    else:
        from array_record.python.array_record_module import ArrayRecordReader  # pylint: disable=import-outside-toplevel

        reader = ArrayRecordReader(str(path))
        for raw in reader.read_all():
            yield doc(json.loads(raw))
        reader.close()
