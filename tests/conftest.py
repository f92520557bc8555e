"""Test setup: 8 fake CPU devices so every test exercises sharding (a (2, 2, 2) mesh fits)."""

import os

# Must happen before jax is imported anywhere.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pathlib

import pytest

SHARED_DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> pathlib.Path:
    """../shared/data beside the checkout; tests that need it skip with the reason when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is absent (real public data lives beside the repo)")
    return SHARED_DATA


class FakeSentencePiece:
    """The slice of a sentencepiece tokenizer that the objective transforms read, with lmforge's ids:
    pad 0, unk 1, bos 2, eos 3, <|mask|> 4, sentinels <|reserved_i|> at 10 + i."""
    vocab_size, bos_id, eos_id = 64, 2, 3
    pieces = {"<|mask|>": 4, **{f"<|reserved_{i}|>": 10 + i for i in range(16)}}

    def token_id(self, piece):
        if piece not in self.pieces:
            raise KeyError(piece)
        return self.pieces[piece]


@pytest.fixture
def fake_tok() -> FakeSentencePiece:
    return FakeSentencePiece()
