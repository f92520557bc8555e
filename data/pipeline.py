"""Grain pipelines from documents to training batches, and the exact validation pass.

Every batch is a dict of numpy arrays, all ``(B, T)``:
  inputs int32, targets int32 (the next token), weights float32 (1 = score this target),
  segment_ids int32 (1, 2, ... per packed document; 0 = padding), positions int32 (0-based,
  restarting per segment).

Choices:
- Token stream: each document is encoded on its own; SentencePiece documents get bos before and
  eos after, char documents (nanoGPT's ``shakespeare_char``) nothing, since that vocabulary has no
  special ids (pad/bos/eos = -1). Padding is always id 0 with weight 0 and segment id 0, so a
  tokenizer without a pad id needs nothing special. Long documents are encoded in ~64K-character
  pieces cut after a ``"\\n"`` (``"\\n"`` is an atomic piece, so the ids are the same, and
  SentencePiece is ~4x faster on short inputs); a progress bar shows above 1 MB of text.
- ``packing="windows"`` is nanoGPT's ``get_batch``: one concatenated int32 stream of the train
  documents; example ``i`` is ``stream[o:o + T + 1]`` with ``o`` drawn from
  ``np.random.default_rng([seed, i])`` (``o = i*T mod (len - T)`` without shuffle). Example ``i``
  depends on ``i`` only, so the iterator state is a step index and process sharding is exact:
  global row ``r`` of step ``s`` is example ``s*B + r`` and process ``p`` reads rows
  ``[p*L, (p+1)*L)``, ``L = B / process_count``.
- ``packing="pack"``: documents are cut into chunks of at most T+1 tokens overlapping by one
  (consecutive chunks share a token, so every token after a document's first is a target exactly
  once); each chunk becomes an (inputs = c[:-1], targets = c[1:]) pair *before* packing, and the
  pairs are packed into rows of T with grain's ``FirstFitPackIterDataset``. So a target is always
  the true next token of its own document: weights are 0 only on padding, there is no
  "last token of a segment" to mask, and the model must not attend across segment ids.
  The chunks are shuffled per epoch (grain's index shuffle, reseeded each epoch) and the packed
  rows within each group of bins are shuffled too.
- Process sharding for "pack": process ``p`` packs chunks ``p::process_count`` by itself (the
  usual choice, as in seqio/MaxText), so the global batch of N processes is *not* row-for-row the
  1-process one; each process still sees a disjoint, equally sized share of the data.
- The iterator is grain's: ``get_state()``/``set_state()`` resume exactly, and it works with
  ``grain.checkpoint.CheckpointSave/CheckpointRestore``. Reads use 2 threads and a small prefetch
  buffer (grain's default of 500 elements would hold 500 batches).
- ``eval_batches`` scores the whole validation split once: non-overlapping windows of T targets
  over the concatenated val stream, the last one padded with weight 0; in "pack" mode the
  windows also carry segment ids and positions per document, and the targets that cross a
  document boundary (eos -> next bos) get weight 0, matching what training saw. The last batch is
  padded with all-zero-weight rows so every batch has the same shape (one compile).
- ``mixture_train_dataset`` (``DataConfig.mixture``, and replay in continued pretraining): each
  source becomes its own endless stream of single rows (packed, or windows), grain's
  ``IterDataset.mix`` interleaves the rows with the asked weights, and the rows are batched after
  mixing, so a weight is the share of training *sequences* (so of tokens: rows are full but for
  packing's ~1% padding) from its source, in every batch alike. grain's mix is a deterministic
  interleave (weights scaled to integers, the smallest one to 100), not a random draw: replay at
  0.25 puts exactly 1 replay row in every 4, so a batch of 16 holds exactly 4; a ratio that is not
  a whole number of hundredths is rounded down by at most 1% of the smallest weight (1/3 -> 100
  of 300: 0.3333). Its iterator state holds each stream's position under the source's name
  (``data`` and ``replay`` for replay), so a checkpoint resumes the mixture exactly. Source ``i``
  draws its shuffles with ``data.seed + i``.
- ``mixture_splits`` reads each source of ``DataConfig.mixture`` and splits it with
  ``data.val_fraction`` on its own, so every source has its own held-out split (scored as
  ``eval/NAME/*``).
- ``check_splits`` refuses, before a tokenizer is trained, a train or validation split that cannot
  fill one sequence of ``seq_len + 1`` tokens: training would repeat a few tokens forever and the
  validation loss would come from a handful of positions. The count is exact for a char
  tokenizer (one token a character) and an upper bound for SentencePiece (UTF-8 bytes plus bos
  and eos: no piece is shorter than a byte), so only splits that surely cannot fill a sequence
  are refused.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence

import grain
import numpy as np

from lmforge.data.sources import MixtureSource, SourceConfig, check_mixture, read_documents, split_documents
from lmforge.data.tokenizer import Tokenizer

Batch = dict[str, np.ndarray]  # keys: inputs, targets, weights, segment_ids, positions; each (B, T)

PACKINGS = ("pack", "windows")
_PIECE_CHARS = 65_536  # encode long documents in pieces of about this many characters
_PROGRESS_CHARS = 1_000_000  # show a progress bar when tokenizing more text than this
_PACKING_BINS = 512  # FirstFit bins: 32 -> 97.6%, 512 -> 99.4% real tokens (python_docs, T=256)
_READ = grain.ReadOptions(num_threads=2, prefetch_buffer_size=8)
_DTYPES = {"inputs": np.int32, "targets": np.int32, "weights": np.float32, "segment_ids": np.int32, "positions": np.int32}


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the documents come from and how they become batches."""

    source: SourceConfig = SourceConfig()
    # Several named, weighted sources instead of `source` (weights: shares of training sequences).
    mixture: tuple[MixtureSource, ...] = ()
    val_fraction: float = 0.1
    seq_len: int = 256
    batch_size: int = 16  # GLOBAL batch (all processes together)
    packing: str = "pack"  # "pack" (documents packed, no attention across docs) | "windows" (nanoGPT)
    shuffle: bool = True
    seed: int = 0

    def __post_init__(self):
        _check_config(self)


def check_splits(cfg: DataConfig, tokenizer_kind: str, train_docs: Sequence[str], val_docs: Sequence[str], *,
                 source_key: str = "data.source") -> None:
    """Refuses splits too small to train or evaluate on (see the module docstring), with the sizes.

    Runs before the tokenizer is trained, so it counts characters (``char``) or UTF-8 bytes + 2 per
    document (SentencePiece) as the most tokens a split can hold. An empty validation split
    (``data.val_fraction=0``) is not checked here.
    """
    need = cfg.seq_len + 1
    total = sum(map(len, train_docs)) + sum(map(len, val_docs))
    for name, docs in (("train", train_docs), ("validation", val_docs)):
        if name == "validation" and not docs:
            continue
        chars = sum(map(len, docs))
        most = chars if tokenizer_kind == "char" else sum(len(d.encode("utf-8")) + 2 for d in docs)
        if most >= need:
            continue
        bound = "" if tokenizer_kind == "char" else f", at most {most:,} tokens"
        fix = (f"more text in {source_key}, a smaller data.seq_len or a larger data.val_fraction"
               if name == "validation" else f"more text in {source_key} or a smaller data.seq_len")
        where = "" if source_key == "data.source" else f"{source_key}: "
        raise ValueError(f"{where}data too small: the {name} split has {chars:,} characters{bound} (of {total:,} in all, "
                         f"data.val_fraction={cfg.val_fraction}), fewer than one sequence of data.seq_len + 1 = "
                         f"{need} tokens; expected {fix}")


def train_dataset(
    cfg: DataConfig,
    tok: Tokenizer,
    docs: Sequence[str],
    *,
    process_index: int = 0,
    process_count: int = 1,
) -> grain.IterDataset:
    """The endless (epoch after epoch) stream of this process's local batches of ``docs``.

    Yields ``Batch`` dicts of shape ``(batch_size // process_count, seq_len)``. The documents are
    tokenized here, up front (4 bytes a token in memory); iterating only slices and packs.
    """
    _check_config(cfg)
    local = _local_rows(cfg, process_index, process_count)
    tokens = _tokenize_documents(tok, docs)
    if cfg.packing == "windows":
        return _windows_dataset(cfg, tokens, row0=process_index * local, rows=local)
    return _packed_dataset(cfg, tokens, process_index, process_count, rows=local)


def mixture_splits(cfg: DataConfig) -> dict[str, tuple[list[str], list[str]]]:
    """``{name: (train documents, held-out documents)}`` of each source of ``cfg.mixture``, in order,
    each read and split with ``cfg.val_fraction`` on its own (``split_documents``).

    Raises:
      ValueError / FileNotFoundError: a source cannot be read, or holds no documents; the message
        starts with ``data.mixture.NAME.source``.
    """
    out = {}
    for s in cfg.mixture:
        try:
            out[s.name] = split_documents(read_documents(s.source), cfg.val_fraction)
        except (ValueError, FileNotFoundError) as e:
            kind = FileNotFoundError if isinstance(e, FileNotFoundError) else ValueError
            raise kind(f"data.mixture.{s.name}.source: {e}") from None
    return out


def mixture_train_dataset(
    cfg: DataConfig,
    tok: Tokenizer,
    sources: Sequence[tuple[str, Sequence[str], float]],
    *,
    process_index: int = 0,
    process_count: int = 1,
) -> grain.IterDataset:
    """The endless stream of this process's local batches drawn from several sources by weight.

    ``sources`` are ``(name, documents, weight)``; weights are shares of training sequences and
    need not sum to 1. Yields ``Batch`` dicts of shape ``(batch_size // process_count, seq_len)``,
    as ``train_dataset`` does; each row comes whole from one source (see the module docstring: rows
    are mixed with grain's deterministic ``IterDataset.mix``, then batched). Every source uses
    ``cfg``'s packing and sequence length; source ``i`` is shuffled with ``cfg.seed + i``.

    Raises:
      ValueError: no sources, a repeated name, a weight that is not a finite number > 0, or as
        ``train_dataset`` does for any source (with its name).
    """
    _check_config(cfg)
    names = [name for name, _, _ in sources]
    if not sources or len(set(names)) < len(names):
        raise ValueError(f"mixture sources {names}: expected at least one, with distinct names")
    for name, _, weight in sources:
        if not 0.0 < weight < float("inf"):
            raise ValueError(f"mixture source {name!r}: weight={weight}; expected a finite number > 0")
    local = _local_rows(cfg, process_index, process_count)
    streams = {}
    for i, (name, source_docs, _) in enumerate(sources):
        source_cfg = dataclasses.replace(cfg, seed=cfg.seed + i)
        tokens = _tokenize_documents(tok, source_docs)
        try:
            if cfg.packing == "windows":
                # One window per example index; process p takes examples p, p + count, ... (disjoint).
                one_row = dataclasses.replace(source_cfg, batch_size=process_count)
                stream = _windows_dataset(one_row, tokens, row0=process_index, rows=1).map(_FirstRow())
            else:
                stream = _packed_rows(source_cfg, tokens, process_index, process_count,
                                      bins=_PACKING_BINS).map(_ToBatch())
        except ValueError as e:
            raise ValueError(f"mixture source {name!r}: {e}") from None
        streams[name] = stream
    mixed = grain.IterDataset.mix(streams, {name: weight for name, _, weight in sources})
    return mixed.batch(local, drop_remainder=True)


def mixed_train_dataset(
    cfg: DataConfig,
    tok: Tokenizer,
    docs: Sequence[str],
    replay_docs: Sequence[str],
    replay_fraction: float,
    *,
    process_index: int = 0,
    process_count: int = 1,
) -> grain.IterDataset:
    """``train_dataset`` of ``docs`` with ``replay_fraction`` of its rows taken from ``replay_docs``:
    ``mixture_train_dataset`` of ``data`` (seed ``cfg.seed``) and ``replay`` (``cfg.seed + 1``).

    Raises:
      ValueError: ``replay_fraction`` outside (0, 1), or as ``train_dataset`` does for either source.
    """
    if not 0.0 < replay_fraction < 1.0:
        raise ValueError(f"replay_fraction={replay_fraction}: expected a number in (0, 1) for a mixture "
                         f"(use train_dataset for none)")
    return mixture_train_dataset(cfg, tok, [("data", docs, 1.0 - replay_fraction), ("replay", replay_docs, replay_fraction)],
                                 process_index=process_index, process_count=process_count)


def eval_batches(
    cfg: DataConfig, tok: Tokenizer, docs: Sequence[str], *, batch_size: int | None = None
) -> tuple[list[Batch], int]:
    """The whole validation split as fixed-shape batches, and its size in UTF-8 bytes.

    Every val target is scored exactly once: ``sum(weights)`` is ``len(stream) - 1`` for
    "windows" and ``sum(len(doc_tokens) - 1)`` for "pack". ``bits_per_byte = sum(nll) /
    (ln(2) * n_bytes)``.
    """
    _check_config(cfg)
    rows_per_batch = batch_size or cfg.batch_size
    n_bytes = sum(len(d.encode("utf-8")) for d in docs)
    tokens = [t for t in _tokenize_documents(tok, docs) if len(t)]
    n = sum(map(len, tokens))
    if n < 2:
        return [], n_bytes
    T = cfg.seq_len
    stream = np.concatenate(tokens)  # (n,)
    lengths = np.array([len(t) for t in tokens])  # (D,)
    doc_id = np.repeat(np.arange(len(tokens)), lengths)  # (n,) which document each token is in
    n_windows = -(-(n - 1) // T)
    size = n_windows * T
    j = np.arange(n - 1)  # index of each (input, target) pair = index of its input token
    rows = {
        "inputs": _pad_to(stream[:-1], size),
        "targets": _pad_to(stream[1:], size),
        "weights": _pad_to(np.ones(n - 1, np.float32), size),
        "segment_ids": _pad_to(np.ones(n - 1, np.int32), size),
        "positions": _pad_to(j % T, size),
    }
    if cfg.packing == "pack":
        window_start = (j // T) * T
        doc_start = np.repeat(np.cumsum(lengths) - lengths, lengths)  # (n,) where its document starts
        rows["weights"] = _pad_to((doc_id[:-1] == doc_id[1:]).astype(np.float32), size)
        rows["segment_ids"] = _pad_to(doc_id[:-1] - doc_id[window_start] + 1, size)
        rows["positions"] = _pad_to(j - np.maximum(doc_start[:-1], window_start), size)
    rows = {k: v.reshape(n_windows, T).astype(_DTYPES[k]) for k, v in rows.items()}  # (W, T)
    batches = []
    for b in range(0, n_windows, rows_per_batch):
        batches.append({k: _pad_to(v[b : b + rows_per_batch], rows_per_batch) for k, v in rows.items()})
    return batches, n_bytes


# --------------------------------------------------------------------------- shared pieces


def _check_config(cfg: DataConfig) -> None:
    if not isinstance(cfg.mixture, tuple):
        raise ValueError(f"data.mixture is a {type(cfg.mixture).__name__}; expected a tuple of MixtureSource items")
    check_mixture(cfg.mixture, "data.mixture")
    if cfg.mixture and cfg.source != SourceConfig():
        raise ValueError("data.source and data.mixture are both set; expected one: a mixture names its sources "
                         "in MixtureSource(name, SourceConfig(...), weight) items")
    if cfg.packing not in PACKINGS:
        raise ValueError(f"data.packing={cfg.packing!r}: expected one of {', '.join(PACKINGS)}")
    if cfg.seq_len < 1 or cfg.batch_size < 1:
        raise ValueError(f"data.seq_len={cfg.seq_len}, data.batch_size={cfg.batch_size}: expected both >= 1")
    if not 0.0 <= cfg.val_fraction < 1.0:
        raise ValueError(f"data.val_fraction={cfg.val_fraction}: expected a number in [0, 1)")


def _local_rows(cfg: DataConfig, process_index: int, process_count: int) -> int:
    """This process's rows of the global batch."""
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index}, process_count={process_count}: expected 0 <= index < count")
    if cfg.batch_size % process_count:
        raise ValueError(
            f"data.batch_size={cfg.batch_size} is not divisible by process_count={process_count}; "
            "expected a global batch that splits evenly over the processes"
        )
    return cfg.batch_size // process_count


def _pad_to(x: np.ndarray, length: int) -> np.ndarray:
    """Pads axis 0 of ``x`` with zeros up to ``length``."""
    if len(x) >= length:
        return x
    return np.concatenate([x, np.zeros((length - len(x), *x.shape[1:]), x.dtype)])


def _tokenize_documents(tok: Tokenizer, docs: Sequence[str]) -> list[np.ndarray]:
    """One int32 array per document: [bos] + encode(doc) + [eos] (no bos/eos if the ids are < 0)."""
    pieces, owner = [], []  # (P,) text pieces and the document each belongs to
    for d, doc in enumerate(docs):
        for piece in _split_at_newlines(doc, _PIECE_CHARS):
            pieces.append(piece)
            owner.append(d)
    encode_batch = getattr(tok, "encode_batch", None) or (lambda ts: [tok.encode(t) for t in ts])
    total = sum(map(len, pieces))
    bar = None
    if total > _PROGRESS_CHARS:
        from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel

        bar = tqdm(total=total, unit="char", unit_scale=True, desc="tokenizing", leave=False)
    ids: list[list[int]] = []
    group = 64  # pieces per encode call: progress granularity ~4 MB
    for g in range(0, len(pieces), group):
        ids += encode_batch(pieces[g : g + group])
        if bar is not None:
            bar.update(sum(map(len, pieces[g : g + group])))
    if bar is not None:
        bar.close()
    per_doc: list[list[int]] = [[] for _ in docs]
    for d, piece_ids in zip(owner, ids):
        per_doc[d].extend(piece_ids)
    bos = [tok.bos_id] if tok.bos_id >= 0 else []
    eos = [tok.eos_id] if tok.eos_id >= 0 else []
    return [np.asarray(bos + t + eos, dtype=np.int32) for t in per_doc]


def _split_at_newlines(text: str, size: int) -> list[str]:
    """Cuts ``text`` into pieces of about ``size`` chars, each cut right after a newline."""
    out, start = [], 0
    while len(text) - start > size:
        cut = text.find("\n", start + size) + 1
        if cut == 0:
            break
        out.append(text[start:cut])
        start = cut
    out.append(text[start:])
    return out


# --------------------------------------------------------------------------- windows (nanoGPT)


class _WindowBatch(grain.transforms.Map):
    """Step index -> this process's rows of that step's global batch of random windows."""

    def __init__(self, stream: np.ndarray, cfg: DataConfig, row0: int, rows: int):
        self._stream = stream  # (N,) int32
        self._T = cfg.seq_len
        self._B = cfg.batch_size
        self._row0, self._rows = row0, rows
        self._seed, self._shuffle = cfg.seed, cfg.shuffle
        self._span = len(stream) - cfg.seq_len  # window starts are in [0, span)

    def offset(self, example: int) -> int:
        if self._shuffle:
            return int(np.random.default_rng([self._seed, example]).integers(0, self._span))
        return example * self._T % self._span

    def map(self, step: int) -> Batch:
        first = step * self._B + self._row0
        starts = np.array([self.offset(first + r) for r in range(self._rows)])  # (L,)
        w = self._stream[starts[:, None] + np.arange(self._T + 1)]  # (L, T+1)
        shape = (self._rows, self._T)
        return {
            "inputs": w[:, :-1],
            "targets": w[:, 1:],
            "weights": np.ones(shape, np.float32),
            "segment_ids": np.ones(shape, np.int32),
            "positions": np.broadcast_to(np.arange(self._T, dtype=np.int32), shape).copy(),
        }


class _FirstRow(grain.transforms.Map):
    """A one-row ``Batch`` -> its row, each array ``(T,)``."""

    def map(self, batch: Batch) -> Batch:
        return {k: v[0] for k, v in batch.items()}


def _windows_dataset(cfg: DataConfig, tokens: list[np.ndarray], row0: int, rows: int) -> grain.IterDataset:
    stream = np.concatenate(tokens) if tokens else np.zeros(0, np.int32)
    if len(stream) < cfg.seq_len + 1:
        raise ValueError(
            f"data.seq_len={cfg.seq_len}: the train token stream has only {len(stream)} tokens; "
            f"expected at least seq_len + 1 for packing='windows'"
        )
    steps = grain.MapDataset.range(sys.maxsize)  # endless: a step index is all the state there is
    return steps.map(_WindowBatch(stream, cfg, row0, rows)).to_iter_dataset(_READ)


# --------------------------------------------------------------------------- pack


class _ToPair(grain.transforms.Map):
    """A chunk of n+1 tokens -> the (inputs, targets) pair of its n predictions."""

    def map(self, chunk: np.ndarray) -> dict[str, np.ndarray]:
        return {"inputs": chunk[:-1], "targets": chunk[1:]}


class _ToBatch(grain.transforms.Map):
    """FirstFitPackIterDataset's batched output -> a ``Batch``."""

    def map(self, packed: dict[str, np.ndarray]) -> Batch:
        seg = packed["inputs_segment_ids"]  # (L, T); equals targets_segment_ids (packed together)
        return {
            "inputs": packed["inputs"].astype(np.int32),
            "targets": packed["targets"].astype(np.int32),
            "weights": (seg != 0).astype(np.float32),
            "segment_ids": seg.astype(np.int32),
            "positions": packed["inputs_positions"].astype(np.int32),
        }


def _chunks(tokens: list[np.ndarray], T: int) -> list[np.ndarray]:
    """Chunks of at most T+1 tokens, consecutive ones sharing one token; shorter than 2 dropped."""
    return [t[s : s + T + 1] for t in tokens for s in range(0, max(len(t) - 1, 0), T)]


def _packed_dataset(
    cfg: DataConfig, tokens: list[np.ndarray], process_index: int, process_count: int, rows: int
) -> grain.IterDataset:
    packed = _packed_rows(cfg, tokens, process_index, process_count, bins=max(rows, _PACKING_BINS))
    return packed.batch(rows, drop_remainder=True).map(_ToBatch())


def _packed_rows(
    cfg: DataConfig, tokens: list[np.ndarray], process_index: int, process_count: int, bins: int
) -> grain.IterDataset:
    """The endless stream of this process's packed rows (FirstFitPackIterDataset's, unbatched)."""
    chunks = _chunks(tokens, cfg.seq_len)[process_index::process_count]
    if not chunks:
        raise ValueError(
            f"process {process_index} of {process_count} got no training chunks (the train split has "
            f"{sum(map(len, tokens))} tokens); expected documents of at least 2 tokens"
        )
    ds = grain.MapDataset.source(chunks)
    if cfg.shuffle:
        ds = ds.shuffle(seed=cfg.seed)  # reshuffled each epoch by the repeat below
    pairs = ds.repeat(None).map(_ToPair()).to_iter_dataset(_READ)
    return grain.experimental.FirstFitPackIterDataset(
        pairs,
        length_struct={"inputs": cfg.seq_len, "targets": cfg.seq_len},
        num_packing_bins=bins,
        seed=cfg.seed,
        shuffle_bins=cfg.shuffle,
    )

