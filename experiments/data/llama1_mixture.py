"""The Llama-1 pretraining mixture (Touvron et al. 2023, Table 1) as sampling weights over curated
sources: CommonCrawl 67%, C4 15%, GitHub 4.5%, Wikipedia 4.5%, Books 4.5%, ArXiv 2.5%,
StackExchange 2%.

Each ``path`` is the ``data/`` folder of a ``lmforge data curate`` run of that source. Use it from
Python (there is no download here, so the folders are yours to fill):

    from lmforge.data.curate import mixture_dataset
    ds = mixture_dataset(get_config())      # endless grain.MapDataset of texts, in Llama-1 proportions

The ``smoke`` variant mixes two curated outputs the tests make, 2:1.
"""

from lmforge.data.curate import MixtureConfig, MixtureSource

VARIANTS = ("default", "smoke")

LLAMA1 = (("commoncrawl", 67.0), ("c4", 15.0), ("github", 4.5), ("wikipedia", 4.5), ("books", 4.5),
          ("arxiv", 2.5), ("stackexchange", 2.0))


def get_config(variant: str = "default", root: str = "runs/curated") -> MixtureConfig:
    if variant == "smoke":
        return MixtureConfig(sources=(MixtureSource("a", f"{root}/a/data", 2.0), MixtureSource("b", f"{root}/b/data", 1.0)))
    return MixtureConfig(sources=tuple(MixtureSource(name, f"{root}/{name}/data", w) for name, w in LLAMA1))
