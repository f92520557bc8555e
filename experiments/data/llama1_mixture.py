"""The Llama-1 pretraining mixture (Touvron et al. 2023, Table 1) as sampling weights over curated
sources: CommonCrawl 67%, C4 15%, GitHub 4.5%, Wikipedia 4.5%, Books 4.5%, ArXiv 2.5%,
StackExchange 2%.

Each source is the workdir of a ``lmforge data curate`` run of that source (``ROOT/NAME``); the
weights are shares of the stream's bytes. Use it from Python (there is no download here, so the
folders are yours to fill):

    from lmforge.data.curate import mixture_dataset
    ds = mixture_dataset(get_config())      # endless grain.MapDataset of texts, in Llama-1 proportions

To pretrain on the mixture, give the same sources to ``DataConfig.mixture`` (there the weights are
shares of training sequences): ``DataConfig(mixture=get_config().sources)``; see
``experiments/data/mixture_pretrain.py``. The ``smoke`` variant mixes two curated outputs the tests
make, 2:1.
"""

from lmforge.data import MixtureSource, SourceConfig
from lmforge.data.curate import MixtureConfig

VARIANTS = ("default", "smoke")

LLAMA1 = (("commoncrawl", 67.0), ("c4", 15.0), ("github", 4.5), ("wikipedia", 4.5), ("books", 4.5),
          ("arxiv", 2.5), ("stackexchange", 2.0))


def get_config(variant: str = "default", root: str = "runs/curated") -> MixtureConfig:
    if variant == "smoke":
        weights = (("a", 2.0), ("b", 1.0))
    else:
        weights = LLAMA1
    return MixtureConfig(sources=tuple(MixtureSource(name, SourceConfig(kind="curated", path=f"{root}/{name}"), w)
                                       for name, w in weights))
