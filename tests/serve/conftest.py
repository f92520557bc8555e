"""A tiny decoder-only model with a SentencePiece tokenizer (lmforge's chat specials) as a model folder,
a run folder whose tokenizer is nanoGPT's char vocabulary (no chat specials), and a scripted sampler
that writes given replies (``scripted``)."""

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


SERVED_NAME = "tiny"   # the model name the test servers answer to


@pytest.fixture(scope="module")
def model(model_folder):
    """The ChatModel of ``model_folder``, loaded once per test module."""
    from lmforge.serve import load_chat_model
    return load_chat_model(model_folder)


@pytest.fixture(scope="module")
def client(model):
    """A FastAPI test client of ``create_app(model)`` serving ``SERVED_NAME`` (8 rows a call, no wait)."""
    testclient = pytest.importorskip("fastapi.testclient", reason="lmforge serve needs the serve extra (FastAPI)")
    from lmforge.serve import create_app
    app = create_app(model, model_name=SERVED_NAME, max_batch=8, batch_wait_ms=0)
    with testclient.TestClient(app) as c:
        yield c


@pytest.fixture(scope="session")
def scripted():
    """``scripted(model, replies, seen, configs=None)``: a ChatModel whose sampler writes ``replies`` (below)."""
    return _scripted


def _scripted(model, replies: list[str], seen: list, configs: list | None = None):
    """``model`` with a sampler that answers each call with the next of ``replies`` (then its end of turn)
    and keeps the prompts it was given in ``seen`` (and each call's ``(cfg, max_tokens)`` in ``configs``): what a
    model fine-tuned on tool calls would write. Stop strings cut the text (``RowText``), not the tokens."""
    import copy
    import dataclasses

    import numpy as np

    from lmforge.infer.sampler import FINISH_STOP, SamplerOutput
    from lmforge.serve.chat import ChatModel

    sampler = copy.copy(model.sampler)
    sampler.model_cfg = dataclasses.replace(sampler.model_cfg, max_seq_len=1024)   # room for tool schemas: never run
    end = model.template.stop_ids[0]

    def generate_ids(prompts, cfg, *, seed=0, stream=None, max_tokens=None, **kw):
        seen.append([list(p) for p in prompts])
        if configs is not None:
            configs.append((cfg, None if max_tokens is None else list(max_tokens)))
        ids = sampler.tok.encode(replies[len(seen) - 1]) + [end]
        rows = len(prompts) * cfg.n
        tokens = np.zeros((rows, len(ids)), np.int32)
        tokens[:] = ids
        z = np.zeros(tokens.shape, np.float32)
        return SamplerOutput(tokens, z, z, np.ones(tokens.shape, bool), np.full(rows, len(ids), np.int32),
                             np.full(rows, FINISH_STOP, np.int32), np.arange(rows, dtype=np.int32) // cfg.n,
                             np.zeros((*tokens.shape, 0), np.int32), np.zeros((*tokens.shape, 0), np.float32))

    sampler.generate_ids = generate_ids
    return ChatModel(sampler, model.template, model.source)


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
