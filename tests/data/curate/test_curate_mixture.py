"""Mixtures: grain mixing of curated outputs follows the weights; the Llama-1 experiment config."""

import importlib.util
import pathlib

from conftest import web_page
from lmforge.data.curate import Document, MixtureConfig, OutputConfig, mixture_documents, write_shard

ROOT = pathlib.Path(__file__).resolve().parents[3]


def _experiment(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / "data" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mixture_follows_weights_and_is_deterministic(tmp_path):
    for name, n in (("a", 5), ("b", 40)):
        write_shard(tmp_path / name / "data", OutputConfig(), 0,
                    [(i, Document(f"{name}{i}", f"{name}:{web_page(i)}", name)) for i in range(n)])
    cfg = _experiment("llama1_mixture").get_config("smoke", root=str(tmp_path))
    docs = mixture_documents(cfg, 3000)
    share_a = sum(d.startswith("a:") for d in docs) / len(docs)
    assert abs(share_a - 2 / 3) < 0.01  # the small source is repeated to keep its weight
    assert docs == mixture_documents(cfg, 3000)
    assert len({d for d in docs if d.startswith("a:")}) == 5 and len({d for d in docs if d.startswith("b:")}) == 40


def test_llama1_recipe_proportions():
    cfg = _experiment("llama1_mixture").get_config()
    p = cfg.proportions()
    assert abs(sum(p.values()) - 1) < 1e-9 and abs(p["commoncrawl"] - 0.67) < 1e-9 and abs(p["stackexchange"] - 0.02) < 1e-9
    assert isinstance(cfg, MixtureConfig)
