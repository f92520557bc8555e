"""Mixtures: grain mixing of curated outputs follows the weights as shares of bytes; the Llama-1 experiment config."""

import importlib.util
import pathlib

import pytest

from lmforge.data import MixtureSource, SourceConfig
from lmforge.data.curate import Document, MixtureConfig, OutputConfig, mixture_documents, write_shard

ROOT = pathlib.Path(__file__).resolve().parents[3]


def _experiment(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / "data" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _curated(root, name, texts):
    """A finished curation's workdir (its data/ shards and funnel.json) holding ``texts``."""
    write_shard(root / name / "data", OutputConfig(), 0, [(i, Document(f"{name}{i}", t, name)) for i, t in enumerate(texts)])
    (root / name / "funnel.json").write_text("{}")


def _bytes_share(docs, prefix):
    return sum(len(d) for d in docs if d.startswith(prefix)) / sum(map(len, docs))


def test_mixture_follows_weights_and_is_deterministic(tmp_path):
    _curated(tmp_path, "a", [f"a:{i} " + "x" * 50 for i in range(5)])
    _curated(tmp_path, "b", [f"b:{i} " + "y" * 50 for i in range(40)])
    cfg = _experiment("llama1_mixture").get_config("smoke", root=str(tmp_path))
    docs = mixture_documents(cfg, 3000)
    assert abs(_bytes_share(docs, "a:") - 2 / 3) < 0.01  # the small source is repeated to keep its weight
    assert docs == mixture_documents(cfg, 3000)
    assert len({d for d in docs if d.startswith("a:")}) == 5 and len({d for d in docs if d.startswith("b:")}) == 40


def test_weights_are_shares_of_bytes_not_documents(tmp_path):
    """Short posts and long books at 1:1 give the stream equal bytes (Llama-1's proportions are of data)."""
    _curated(tmp_path, "posts", [f"p:{i} " + "x" * 20 for i in range(50)])
    _curated(tmp_path, "books", [f"b:{i} " + "y" * 2000 for i in range(10)])
    cfg = MixtureConfig(sources=tuple(MixtureSource(n, SourceConfig(kind="curated", path=str(tmp_path / n)), 1.0)
                                      for n in ("posts", "books")))
    docs = mixture_documents(cfg, 4000)
    assert abs(_bytes_share(docs, "b:") - 0.5) < 0.02
    assert sum(d.startswith("p:") for d in docs) > 50 * sum(d.startswith("b:") for d in docs)


def test_llama1_recipe_proportions():
    cfg = _experiment("llama1_mixture").get_config()
    p = cfg.proportions()
    assert abs(sum(p.values()) - 1) < 1e-9 and abs(p["commoncrawl"] - 0.67) < 1e-9 and abs(p["stackexchange"] - 0.02) < 1e-9
    assert isinstance(cfg, MixtureConfig)


@pytest.mark.parametrize("sources, match", [
    ((MixtureSource("a"), MixtureSource("a")), "names a more than once"),
    (("runs/a",), "expected MixtureSource"),
])
def test_bad_mixtures_are_one_line_errors(sources, match):
    with pytest.raises(ValueError, match=match):
        MixtureConfig(sources=sources)


@pytest.mark.parametrize("kwargs, match", [
    (dict(name="Web"), "lower-case identifier"),
    (dict(name="replay"), "not replay"),
    (dict(name="web", weight=float("inf")), "finite number > 0"),
    (dict(name="web", weight=0.0), "finite number > 0"),
    (dict(name="web", source="runs/web"), "expected a SourceConfig"),
])
def test_bad_mixture_sources_are_one_line_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MixtureSource(**kwargs)
