"""A tiny decoder-only model with a SentencePiece tokenizer, on a (data 2, fsdp 2, tensor 2) mesh, for
the evaluation harness's tests; and the same model as a run folder and as a model folder."""

import dataclasses
import pathlib

import jax
import pytest
from flax import nnx

from lmforge.data import DataConfig, SourceConfig, TokenizerConfig, read_documents, train_tokenizer
from lmforge.infer import Sampler
from lmforge.model import ModelConfig, build_model, create_sharded
from lmforge.train.mesh import MeshConfig, make_mesh
from lmforge.train.pretrain import PretrainConfig, resolve_model

MESH_CFG = MeshConfig(data=2, fsdp=2, tensor=2)
TOKENIZER = TokenizerConfig(vocab_size=400, num_reserved=0, max_train_chars=200_000)


@dataclasses.dataclass
class Tiny:
    sampler: Sampler
    corpus: pathlib.Path          # the text the tokenizer was trained on (a run's data source)
    cfg: ModelConfig
    params: dict


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Tiny:
    """Random weights (the harness's numerics do not need a trained model), born sharded."""
    root = tmp_path_factory.mktemp("tiny")
    text = "\n".join(read_documents(SourceConfig(kind="python_docs")))[:200_000]
    corpus = root / "corpus.txt"
    corpus.write_text(text)
    tok = train_tokenizer(TOKENIZER, [text], root / "tokenizer")
    cfg = resolve_model(ModelConfig.llama_tiny(vocab_size=0, embed_dim=32, mlp_dim=64, max_seq_len=64), tok.vocab_size)
    mesh = make_mesh(MESH_CFG)
    graphdef, params, _ = create_sharded(lambda: build_model(cfg, rngs=nnx.Rngs(0)), mesh, MESH_CFG.rules)
    return Tiny(Sampler(graphdef, params, tok, cfg, mesh, MESH_CFG.rules), corpus, cfg, params)


@pytest.fixture(scope="session")
def model_folder(tiny, tmp_path_factory) -> pathlib.Path:
    """``lmforge convert``'s output shape: model.json + params.safetensors + tokenizer/."""
    from lmforge.weights import save_model_folder

    folder = tmp_path_factory.mktemp("model_folder")
    save_model_folder(folder, tiny.cfg, jax.device_get(tiny.params))
    tiny.sampler.tok.save(folder / "tokenizer")
    return folder


def pretrain_config(tiny: Tiny) -> PretrainConfig:
    return PretrainConfig(model=dataclasses.replace(tiny.cfg, vocab_size=0), tokenizer=TOKENIZER,
                          data=DataConfig(source=SourceConfig(kind="text", path=str(tiny.corpus)), seq_len=32,
                                          batch_size=8), mesh=MESH_CFG, steps=1)


@pytest.fixture(scope="session")
def run_folder(tiny, tmp_path_factory) -> pathlib.Path:
    """A run folder as ``lmforge run`` leaves it (config.json, model.json, tokenizer/, checkpoints/): the
    tiny model's parameters saved as step 1 by the run's Checkpointer (under ``state["params"]``, where
    the trainer keeps them), without compiling a train step."""
    from lmforge.cli.launch import write_config
    from lmforge.weights import Checkpointer, write_model_config

    run = tmp_path_factory.mktemp("run")
    write_config(pretrain_config(tiny), run)
    write_model_config(run, tiny.cfg)
    tiny.sampler.tok.save(run / "tokenizer")
    with Checkpointer(run / "checkpoints", async_save=False) as ckpt:
        ckpt.save(1, {"params": tiny.params})
    return run


@pytest.fixture(scope="session")
def sft_folder(tiny, run_folder, tmp_path_factory) -> pathlib.Path:
    """A fine-tuning run folder as ``lmforge run`` leaves an SFT run (an SFTConfig config.json, model.json,
    tokenizer/, checkpoints/): the tiny model's parameters saved at steps 2 and 5 (5, the latest, is loaded)."""
    from lmforge.align.sft import SFTConfig
    from lmforge.cli.launch import write_config
    from lmforge.weights import Checkpointer, write_model_config

    run = tmp_path_factory.mktemp("sft")
    write_config(SFTConfig(init_from=str(run_folder), mesh=MESH_CFG, steps=5), run)
    write_model_config(run, tiny.cfg)
    tiny.sampler.tok.save(run / "tokenizer")
    with Checkpointer(run / "checkpoints", async_save=False) as ckpt:
        for step in (2, 5):
            ckpt.save(step, {"params": tiny.params})
    return run
