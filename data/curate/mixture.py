"""Mixtures: weighted sampling of sources into one stream of documents, with grain.

A mixture is a list of sources (``lmforge.data.sources.MixtureSource``: a name, a ``SourceConfig``,
a weight), typically curated outputs (``SourceConfig(kind="curated", path=WORKDIR)`` of a
``run_curate``) with weights, e.g. Llama-1's (Touvron et al. 2023, Table 1: CommonCrawl 67%, C4
15%, GitHub 4.5%, Wikipedia 4.5%, Books 4.5%, ArXiv 2.5%, StackExchange 2%; see
experiments/data/llama1_mixture.py). To *pretrain* on a mixture, set ``DataConfig.mixture``
instead: it mixes packed training sequences, so its weights are shares of tokens exactly.

Choices:
- A weight is a share of the stream's text in UTF-8 bytes, as Llama-1's sampling proportions are
  shares of data, not of documents: source ``s`` is drawn per document with weight
  ``weight_s / mean_bytes_s`` (its mean document size), so a source of long books and one of short
  posts at 1:1 give the stream equal bytes, not equal document counts.
- Each source is a ``grain.MapDataset`` of its documents' texts, repeated 1000 times and shuffled
  (grain's index shuffle, its own seed per source), then ``grain.MapDataset.mix`` interleaves
  them deterministically in proportion to those weights. So a small source with a large weight
  is seen for several epochs, as in Llama-1 (Wikipedia and Books ~2 epochs), and element ``i`` of
  the stream is a pure function of ``i``: resumable and shardable like every grain MapDataset.
- ``mixture_documents(cfg, n)`` takes the first ``n`` elements: a fixed list for a tokenizer or
  for ``train_dataset``.
"""

from __future__ import annotations

import dataclasses
import functools

import grain

from lmforge.data.sources import MixtureSource, SourceConfig, check_mixture, read_documents

_EPOCHS = 1000  # each source is repeated this many times (shuffled across the repeats)

__all__ = ["MixtureConfig", "MixtureSource", "mixture_dataset", "mixture_documents"]


@dataclasses.dataclass(frozen=True)
class MixtureConfig:
    sources: tuple[MixtureSource, ...] = ()
    seed: int = 0
    shuffle: bool = True

    def __post_init__(self):
        if not isinstance(self.sources, tuple):
            raise ValueError(f"mixture.sources is a {type(self.sources).__name__}; expected a tuple of MixtureSource items")
        check_mixture(self.sources, "mixture.sources")

    def proportions(self) -> dict[str, float]:
        """Each source's share of the stream's bytes: its weight over the sum of the weights."""
        total = sum(s.weight for s in self.sources)
        return {s.name: s.weight / total for s in self.sources}


@functools.lru_cache(maxsize=16)
def _texts(source: SourceConfig) -> tuple[str, ...]:
    return tuple(read_documents(source))


def mixture_dataset(cfg: MixtureConfig) -> grain.MapDataset:
    """A MapDataset of document texts drawn from the sources by weight, as shares of UTF-8 bytes
    (1000 epochs of each source). Raises ValueError: no sources, or a source holds no documents or
    only empty ones."""
    if not cfg.sources:
        raise ValueError("mixture.sources is empty: expected at least one MixtureSource(name, SourceConfig(...), weight)")
    parts, weights = [], []
    for i, s in enumerate(cfg.sources):
        texts = _texts(s.source)
        n_bytes = sum(len(t.encode("utf-8")) for t in texts)
        if not n_bytes:
            raise ValueError(f"mixture source {s.name!r}: {s.source.kind} source {s.source.path or ''} holds no text")
        ds = grain.MapDataset.source(list(texts)).repeat(_EPOCHS)
        if cfg.shuffle:  # after repeat: shuffle-then-repeat re-derives the permutation per element (~100x slower)
            ds = ds.shuffle(seed=cfg.seed * 1_000_003 + i)
        parts.append(ds)
        weights.append(s.weight * len(texts) / n_bytes)   # weight / mean bytes per document
    return grain.MapDataset.mix(parts, weights)


def mixture_documents(cfg: MixtureConfig, n: int) -> list[str]:
    """The first ``n`` texts of the mixture stream."""
    ds = mixture_dataset(cfg)
    return [ds[i] for i in range(n)]
