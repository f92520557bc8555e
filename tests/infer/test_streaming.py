"""The sampler's streaming hook (``infer.sampler.generate(stream=...)``, what ``lmforge chat`` stands on):
without a stream the program holds no host callback; with one, the streamed ids are the result's,
step by step, the result is unchanged, every stream shares one compiled program, a stream can stop
the generation, its exception reaches the caller, and a batch sharded over a (2, 2, 2) mesh
streams whole."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import AxisType

from lmforge.infer import FINISH_CANCELLED, FINISH_LENGTH, Sampler, SamplingConfig, generate, pad_prompts
from lmforge.infer import sampler as sampler_module
from lmforge.model import DEFAULT_RULES, DecoderLM, ModelConfig, axis_rules, create_sharded
from lmforge.serve.chat import one_device_mesh

CFG = ModelConfig.gpt2_tiny()
PROMPTS = [[5, 17, 3], list(range(40, 57)), [9, 9, 200, 31, 7]]
GREEDY = SamplingConfig(max_new_tokens=8, temperature=0.0)


class Tok:
    """The slice of a tokenizer the Sampler reads: no special ids, one letter per id."""
    pad_id = bos_id = eos_id = -1
    vocab_size = CFG.vocab_size

    def token_bytes(self):
        return [bytes([97 + i % 26]) for i in range(self.vocab_size)]


def make_sampler(mesh) -> Sampler:
    with axis_rules(DEFAULT_RULES):
        graphdef, params, _ = create_sharded(lambda: DecoderLM(CFG, rngs=nnx.Rngs(0)), mesh, DEFAULT_RULES)
    return Sampler(graphdef, params, Tok(), CFG, mesh, DEFAULT_RULES)


@pytest.fixture(scope="module")
def sampler() -> Sampler:
    return make_sampler(one_device_mesh())


class Recorder:
    """A stream that keeps what it is given; stops after ``stop_after`` steps if set."""

    def __init__(self, stop_after=None):
        self.steps, self.tokens, self.live, self.stop_after = [], [], [], stop_after

    def __call__(self, step, tokens, live):
        self.steps.append(step)
        self.tokens.append(np.array(tokens))
        self.live.append(np.array(live))
        return self.stop_after is not None and len(self.steps) >= self.stop_after

    def as_rows(self, rows: int, width: int) -> np.ndarray:
        """The streamed ids laid out like ``out.tokens`` (0 where a row was not live)."""
        out = np.zeros((rows, width), np.int32)
        for step, toks, live in zip(self.steps, self.tokens, self.live):
            out[:, step] = np.where(live, toks, 0)
        return out


def equal(a, b):
    for x, y in zip(a, b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_no_stream_compiles_no_host_callback(sampler):
    tokens, mask = pad_prompts(PROMPTS, rows=4, width=32)
    with jax.set_mesh(sampler.mesh), axis_rules(DEFAULT_RULES):
        lowered = jax.jit(lambda p, t, m: generate(sampler.graphdef, p, t, m, jax.random.key(0), GREEDY)).lower(
            sampler.params, jnp.asarray(tokens), jnp.asarray(mask)).as_text()
    assert "callback" not in lowered and "stablehlo.while" in lowered


def test_streamed_ids_are_the_result_and_the_result_is_unchanged(sampler):
    for cfg in (GREEDY, SamplingConfig(max_new_tokens=8, temperature=1.0, top_k=20),
                dataclasses.replace(GREEDY, stop_token_ids=(7,))):   # one stop id: the shapes compiled above
        plain = sampler.generate_ids(PROMPTS, cfg, seed=3)
        rec = Recorder()
        streamed = sampler.generate_ids(PROMPTS, cfg, seed=3, stream=rec)
        equal(streamed, plain)
        # in step order, the real rows only, live exactly where the result has a token
        assert rec.steps == list(range(len(rec.steps))) and all(t.shape == (3,) for t in rec.tokens)
        np.testing.assert_array_equal(rec.as_rows(3, 8), plain.tokens)
        np.testing.assert_array_equal(np.stack(rec.live, 1), plain.mask[:, :len(rec.steps)])
        assert len(rec.steps) == int(plain.lengths.max())


def test_every_stream_shares_one_compiled_program(sampler):
    hot = dataclasses.replace(GREEDY, temperature=0.5)
    sampler.generate_ids(PROMPTS, hot, stream=Recorder())
    sampler.generate_ids(PROMPTS, hot)
    before = sampler_module._generate._cache_size()
    for stream in (Recorder(), lambda step, tokens, live: False, Recorder(stop_after=2)):
        sampler.generate_ids(PROMPTS[::-1], dataclasses.replace(hot, temperature=1.5), stream=stream)
    sampler.generate_ids(PROMPTS, dataclasses.replace(hot, temperature=0.7))
    assert sampler_module._generate._cache_size() == before


def test_a_stream_stops_the_generation_and_its_errors_reach_the_caller(sampler):
    full = sampler.generate_ids(PROMPTS, GREEDY)
    rec = Recorder(stop_after=3)
    out = sampler.generate_ids(PROMPTS, GREEDY, stream=rec)
    assert len(rec.steps) == 3 and out.lengths.tolist() == [3, 3, 3]
    assert out.finish_reason.tolist() == [FINISH_CANCELLED] * 3
    np.testing.assert_array_equal(out.tokens[:, :3], full.tokens[:, :3])
    assert not out.tokens[:, 3:].any() and out.mask.sum() == 9
    # stopped at the very first token
    first = sampler.generate_ids(PROMPTS, GREEDY, stream=Recorder(stop_after=1))
    assert first.lengths.tolist() == [1, 1, 1] and first.finish_reason.tolist() == [FINISH_CANCELLED] * 3
    # a row that already ended keeps its own finish reason; the others are cancelled
    limits = sampler.generate_ids(PROMPTS, dataclasses.replace(GREEDY, max_new_tokens=2), stream=Recorder(stop_after=2))
    assert limits.finish_reason.tolist() == [FINISH_LENGTH] * 3

    def broken(step, tokens, live):
        if step == 2:
            raise OSError("the terminal went away")
        return False

    with pytest.raises(OSError, match="terminal went away"):
        sampler.generate_ids(PROMPTS, GREEDY, stream=broken)
    assert not sampler_module._SINKS   # nothing left registered


def test_streaming_a_batch_sharded_over_a_2x2x2_mesh(sampler):
    # the batch splits 4 ways (data x fsdp), heads 2 ways; sharded greedy equals one device (tests/infer)
    mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"), axis_types=(AxisType.Auto,) * 3)
    plain = sampler.generate_ids(PROMPTS, GREEDY)
    rec = Recorder()
    streamed = make_sampler(mesh).generate_ids(PROMPTS, GREEDY, stream=rec)
    np.testing.assert_array_equal(streamed.tokens, plain.tokens)
    np.testing.assert_array_equal(rec.as_rows(3, 8), plain.tokens)
