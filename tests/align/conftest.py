"""What the preference trainers' tests (DPO, reward model) share: a chat-capable tokenizer, a tiny
GPT-2 model folder with it, and JSON-lines files."""

import json

import jax
import pytest
from flax import nnx

from lmforge.data import SourceConfig, TokenizerConfig, load_tokenizer, read_documents, train_tokenizer
from lmforge.model import ModelConfig, build_model, create_sharded
from lmforge.train.mesh import MeshConfig, make_mesh
from lmforge.weights import save_model_folder

CHAT_MODEL = ModelConfig.gpt2_tiny(vocab_size=512, max_seq_len=64)


@pytest.fixture(scope="session")
def write_jsonl():
    """``write_jsonl(path, records)``: one JSON object per line; returns ``path``."""
    def write(path, records):
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
        return path
    return write


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    """A 512-piece sentencepiece tokenizer (with lmforge's role tokens) trained on Python's docs."""
    docs = [d for d in read_documents(SourceConfig(kind="python_docs"))[::16] if len(d) < 20_000][:30]
    directory = tmp_path_factory.mktemp("chat_tok")
    train_tokenizer(TokenizerConfig(vocab_size=512), docs, directory)
    return directory


def _random_model_folder(directory, model, tok_dir):
    """``model`` with random weights (seed 0) and the tokenizer of ``tok_dir``, saved as a model folder."""
    mesh = make_mesh(MeshConfig(data=1), devices=jax.devices()[:1])
    _, params, _ = create_sharded(lambda: build_model(model, rngs=nnx.Rngs(0)), mesh, MeshConfig().rules)
    save_model_folder(directory, model, params)
    load_tokenizer(tok_dir).save(directory / "tokenizer")
    return directory


@pytest.fixture(scope="module")
def random_model_folder(tmp_path_factory, tok_dir):
    """``random_model_folder(name, model_cfg)``: a model folder of ``model_cfg`` with random weights and the
    chat-capable tokenizer."""
    return lambda name, model: _random_model_folder(tmp_path_factory.mktemp(name) / "base", model, tok_dir)


@pytest.fixture(scope="module")
def base(random_model_folder):
    """A tiny GPT-2 (CHAT_MODEL) with random weights and the chat-capable tokenizer, as a model folder."""
    return random_model_folder("chat_base", CHAT_MODEL)


@pytest.fixture(scope="module")
def long_base(random_model_folder):
    """The same tiny GPT-2 with a 256-token context, for the multi-stage recipes' smoke runs."""
    return random_model_folder("chat_long_base", ModelConfig.gpt2_tiny(vocab_size=512, max_seq_len=256))
