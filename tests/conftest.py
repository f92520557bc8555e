"""Test setup: 8 fake CPU devices so every test exercises sharding (a (2, 2, 2) mesh fits)."""

import os
import shutil
import tempfile

# Must happen before jax is imported anywhere. The tests' programs are tiny, so XLA:CPU's compile
# dominates most tests. LLVM at -O0 (--xla_backend_optimization_level=0) and one codegen unit per
# program instead of several compiled in parallel (the split costs more than it saves on 2 cores)
# took the default run from 887 s to 692 s (2-core machine, 2026-11-30, one run each, back to back).
# Both touch only XLA's LLVM code generation, never the HLO passes, so what tests read in compiled
# HLO is the same. Sharing the session's persistent compilation cache with the in-process tests as
# well was tried and saved nothing (the tests' summed time 1276 s against 1290 s). XLA:CPU's older
# elemental emitter for fusions (--xla_cpu_use_fusion_emitters=false) compiles a third faster than the
# MLIR fusion emitters: a tiny Llama's train run, 6 programs, 7.0-7.3 s of backend compile against
# 4.7-5.0 s (2-core machine, 2026-12-02, alternating runs); it changes code generation only.
# The other big share was each new model's jitted parameter init (1-3 s of XLA:CPU compile for a tiny
# model): small CPU inits now run op by op (lmforge.model.sharding.eager_init), 926-1024 s -> 682 s for
# the default run (2026-12-03). Tests that start subprocesses pass these flags on (the device count last).
# The user's XLA_FLAGS come last: XLA takes a flag's last value, so they can override these.
os.environ["XLA_FLAGS"] = (
    "--xla_backend_optimization_level=0 --xla_cpu_parallel_codegen_split_count=1 --xla_cpu_use_fusion_emitters=false "
    + os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The commands' persistent compilation cache (lmforge.train.compile_cache) goes to one temporary
# folder per test session, shared by the xdist workers (they inherit the environment) and the
# `lmforge` processes tests start, never the user's home; removed at the end of the session.
# tests/train/test_compile_cache.py sets its own in child processes.
if "LMFORGE_TEST_XLA_CACHE" not in os.environ:   # the controlling process: the workers inherit it
    os.environ["LMFORGE_TEST_XLA_CACHE"] = tempfile.mkdtemp(prefix="lmforge-test-xla-")
os.environ["LMFORGE_COMPILATION_CACHE"] = os.environ["LMFORGE_TEST_XLA_CACHE"]

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


def pytest_unconfigure(config):
    if not hasattr(config, "workerinput"):   # the controlling process (or a run without xdist)
        shutil.rmtree(os.environ.get("LMFORGE_TEST_XLA_CACHE", ""), ignore_errors=True)
