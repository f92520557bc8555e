"""A tiny decoder-only model with a SentencePiece tokenizer (lmforge's chat specials) as a model folder,
and a run folder whose tokenizer is nanoGPT's char vocabulary (no chat specials)."""

import pathlib

import pytest
from flax import nnx

from lmforge.data import SourceConfig, TokenizerConfig, read_documents, train_tokenizer
from lmforge.model import DEFAULT_RULES, ModelConfig, build_model, create_sharded
from lmforge.serve.chat import one_device_mesh


def tiny_cfg(vocab_size: int) -> ModelConfig:
    return ModelConfig.llama_tiny(vocab_size=vocab_size, embed_dim=32, mlp_dim=64, max_seq_len=128)


def random_params(cfg: ModelConfig) -> dict:
    """Random weights on one device: the chat's mechanics do not need a trained model."""
    _, params, _ = create_sharded(lambda: build_model(cfg, rngs=nnx.Rngs(0)), one_device_mesh(), DEFAULT_RULES)
    return params


@pytest.fixture(scope="session")
def corpus() -> str:
    return "\n".join(read_documents(SourceConfig(kind="python_docs")))[:100_000]


@pytest.fixture(scope="session")
def model_folder(corpus, tmp_path_factory) -> pathlib.Path:
    """``lmforge convert``'s output shape: model.json + params.safetensors + tokenizer/ (SentencePiece BPE,
    400 ids, byte fallback, the chat specials)."""
    from lmforge.weights import save_model_folder

    folder = tmp_path_factory.mktemp("chat_model")
    tok = train_tokenizer(TokenizerConfig(vocab_size=400, num_reserved=0, max_train_chars=100_000), [corpus],
                          folder / "tokenizer")
    cfg = tiny_cfg(tok.vocab_size)
    save_model_folder(folder, cfg, random_params(cfg))
    return folder


@pytest.fixture(scope="session")
def char_run(corpus, tmp_path_factory) -> pathlib.Path:
    """A run folder as a pretraining run leaves it (model.json, tokenizer/, checkpoints/ with step 1), with
    nanoGPT's char tokenizer: it has no chat specials."""
    from lmforge.weights import Checkpointer, write_model_config

    run = tmp_path_factory.mktemp("char_run")
    tok = train_tokenizer(TokenizerConfig(kind="char"), [corpus[:20_000]], run / "tokenizer")
    cfg = tiny_cfg(tok.vocab_size)
    write_model_config(run, cfg)
    with Checkpointer(run / "checkpoints", async_save=False) as ckpt:
        ckpt.save(1, {"params": random_params(cfg)})
    return run
