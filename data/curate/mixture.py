"""Mixtures: weighted sampling of curated sources into one training stream, with grain.

A mixture is a list of curated outputs (folders of shards written by ``run_curate``) with
weights, e.g. Llama-1's (Touvron et al. 2023, Table 1: CommonCrawl 67%, C4 15%, GitHub 4.5%,
Wikipedia 4.5%, Books 4.5%, ArXiv 2.5%, StackExchange 2%; see experiments/data/llama1_mixture.py).

Choices:
- Each source is a ``grain.MapDataset`` of its documents' texts, repeated 1000 times and shuffled
  (grain's index shuffle, its own seed per source), then ``grain.MapDataset.mix`` interleaves
  them deterministically in proportion to the weights (weights need not sum to 1). So a small
  source with a large weight is seen for several epochs, as in Llama-1 (Wikipedia and Books ~2
  epochs), and element ``i`` of the stream is a pure function of ``i``: resumable and shardable
  like every grain MapDataset.
- ``mixture_documents(cfg, n)`` takes the first ``n`` elements: a fixed list for a tokenizer or
  for ``train_dataset``.
"""

from __future__ import annotations

import dataclasses
import functools

import grain

from lmforge.data.curate.writers import read_shards

_EPOCHS = 1000  # each source is repeated this many times (shuffled across the repeats)


@dataclasses.dataclass(frozen=True)
class MixtureSource:
    name: str = ""
    path: str = ""  # a curated output folder (WORKDIR/data of a curation run)
    weight: float = 1.0


@dataclasses.dataclass(frozen=True)
class MixtureConfig:
    sources: tuple[MixtureSource, ...] = ()
    seed: int = 0
    shuffle: bool = True

    def __post_init__(self):
        for s in self.sources:
            if not s.weight > 0:
                raise ValueError(f"mixture source {s.name!r}: weight={s.weight}, expected > 0")

    def proportions(self) -> dict[str, float]:
        total = sum(s.weight for s in self.sources)
        return {s.name: s.weight / total for s in self.sources}


@functools.lru_cache(maxsize=16)
def _texts(path: str) -> tuple[str, ...]:
    return tuple(d.text for d in read_shards(path))


def mixture_dataset(cfg: MixtureConfig) -> grain.MapDataset:
    """A MapDataset of document texts drawn from the sources by weight (1000 epochs of each)."""
    if not cfg.sources:
        raise ValueError("mixture.sources is empty: expected at least one MixtureSource(name, path, weight)")
    parts = []
    for i, s in enumerate(cfg.sources):
        texts = _texts(s.path)
        if not texts:
            raise ValueError(f"mixture source {s.name!r}: {s.path} holds no documents")
        ds = grain.MapDataset.source(list(texts)).repeat(_EPOCHS)
        if cfg.shuffle:  # after repeat: shuffle-then-repeat re-derives the permutation per element (~100x slower)
            ds = ds.shuffle(seed=cfg.seed * 1_000_003 + i)
        parts.append(ds)
    return grain.MapDataset.mix(parts, [s.weight for s in cfg.sources])


def mixture_documents(cfg: MixtureConfig, n: int) -> list[str]:
    """The first ``n`` texts of the mixture stream."""
    ds = mixture_dataset(cfg)
    return [ds[i] for i in range(n)]
