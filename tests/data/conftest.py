"""Shared fixtures for the data tests: a small corpus and a small SentencePiece tokenizer."""

import pathlib

import pytest

from lmforge.data import SourceConfig, TokenizerConfig, read_documents, train_tokenizer


@pytest.fixture(scope="session")
def corpus() -> list[str]:
    """About 60 pydoc topics and module docstrings (~250K chars): varied lengths, real prose + code."""
    docs = read_documents(SourceConfig(kind="python_docs"))
    return [d for d in docs[::8] if len(d) < 40_000][:60]


@pytest.fixture(scope="session")
def sp_dir(corpus, tmp_path_factory) -> pathlib.Path:
    directory = tmp_path_factory.mktemp("sp512")
    train_tokenizer(TokenizerConfig(vocab_size=512), corpus, directory)
    return directory


@pytest.fixture(scope="session")
def sp_tok(sp_dir):
    from lmforge.data import load_tokenizer

    return load_tokenizer(sp_dir)
