"""A second consumer of DecoderLM's KV-cache contract, written from the public API and docstrings only.

What a researcher's own scoring / decoding loop relies on (transformer.py ``init_cache`` and
``__call__(..., cache=)``, attention.py ``Attention.__call__``, sharding.py ``cache_zeros``):
- feeding a sequence in chunks of any sizes through ``model(chunk, cache=cache)`` gives the logits
  of one full forward pass, with one compile per chunk shape (the cache index is traced, not static);
- on a sharded mesh the cache stays sharded (batch over the batch axes, KV heads over ``tensor``)
  call after call, and the numbers equal one device's;
- the cache is a value: the same prefix cache continues two different ways, and is left unchanged;
- left-padding is segment 0 (attention.py module docstring): a padded row scores like the unpadded one.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import AxisType

from lmforge.model import DEFAULT_RULES, DecoderLM, ModelConfig, axis_rules, create_sharded, use_mesh

AXES = ("data", "fsdp", "tensor")
ONE_DEVICE = jax.make_mesh((1, 1, 1), AXES, axis_types=(AxisType.Auto,) * 3, devices=jax.devices()[:1])
CONFIGS = {"llama": ModelConfig.llama_tiny(), "llama_scan": ModelConfig.llama_tiny(scan_layers=True)}
ATOL, RTOL = 2e-5, 1e-5


def build(cfg, mesh):
    """(graphdef, params) born sharded on ``mesh``."""
    gd, params, _ = create_sharded(lambda: DecoderLM(cfg, rngs=nnx.Rngs(0)), mesh, DEFAULT_RULES)
    return gd, params


class Runner:
    """The researcher's own jitted entry points: a full pass, a cache init and one cached step.

    ``traces`` counts how often the cached step is traced: jit retraces per input shape only."""

    def __init__(self, gd, mesh):
        self.mesh, self.traces = mesh, 0

        @jax.jit
        def full(params, tokens):
            with axis_rules(DEFAULT_RULES):
                return nnx.merge(gd, params)(tokens)[0]

        def init(params, batch, max_len):
            with axis_rules(DEFAULT_RULES):
                return nnx.merge(gd, params).init_cache(batch, max_len)

        @jax.jit
        def step(params, tokens, cache, positions, segment_ids):
            self.traces += 1
            with axis_rules(DEFAULT_RULES):
                return nnx.merge(gd, params)(tokens, cache=cache, positions=positions, segment_ids=segment_ids)

        self._full, self._init, self._step = full, jax.jit(init, static_argnums=(1, 2)), step

    def full(self, params, tokens):
        with jax.set_mesh(self.mesh):
            return self._full(params, tokens)

    def init_cache(self, params, batch, max_len):
        with jax.set_mesh(self.mesh):
            return self._init(params, batch, max_len)

    def step(self, params, tokens, cache, positions=None, segment_ids=None):
        with jax.set_mesh(self.mesh):
            return self._step(params, tokens, cache, positions, segment_ids)


def score_in_chunks(runner, params, tokens, chunks, max_len, on_cache=None):
    """Logits of ``tokens`` (B, T) fed through the cache ``chunks[0]``, ``chunks[1]``, ... tokens at a time."""
    assert sum(chunks) == tokens.shape[1] <= max_len
    cache = runner.init_cache(params, tokens.shape[0], max_len)
    out, start = [], 0
    for n in chunks:
        logits, cache = runner.step(params, tokens[:, start:start + n], cache)
        start += n
        assert logits.shape == (tokens.shape[0], n, params_vocab(params))
        assert int(cache["index"]) == start
        if on_cache is not None:
            on_cache(cache)
        out.append(logits)
    return jnp.concatenate(out, axis=1), cache


def params_vocab(params):
    return params["embed"].shape[0]


CHUNKS = (5, 1, 7, 1, 3)      # 17 tokens in a 24-slot cache (a tail that is never written)


@pytest.mark.parametrize("name", CONFIGS)
def test_chunked_scoring_matches_one_full_pass(name):
    cfg = CONFIGS[name]
    gd, params = build(cfg, ONE_DEVICE)
    runner = Runner(gd, ONE_DEVICE)
    tokens = jax.random.randint(jax.random.key(11), (2, sum(CHUNKS)), 0, cfg.vocab_size)

    full = runner.full(params, tokens)
    chunked, cache = score_in_chunks(runner, params, tokens, CHUNKS, max_len=24)
    np.testing.assert_allclose(chunked, full, atol=ATOL, rtol=RTOL)
    # one compile per chunk shape: the cache index is traced, so repeated 1-token steps reuse the trace
    assert runner.traces == len(set(CHUNKS))
    # the returned cache records what was written: 17 slots of segment 1, the tail still empty (0)
    seg = np.asarray(cache["segment_ids"])
    assert (seg[:, :17] == 1).all() and (seg[:, 17:] == 0).all()
    assert cache["k"].shape == (cfg.num_layers, 2, 24, cfg.kv_heads, cfg.dims_per_head)


def test_chunked_scoring_on_a_2x2x2_mesh_stays_sharded_and_matches_one_device():
    cfg = CONFIGS["llama"]           # kv_heads=2 over tensor=2, batch 4 over data x fsdp = 4
    mesh = jax.make_mesh((2, 2, 2), AXES, axis_types=(AxisType.Auto,) * 3)
    gd, params = build(cfg, mesh)
    runner = Runner(gd, mesh)
    tokens = jax.random.randint(jax.random.key(12), (4, sum(CHUNKS)), 0, cfg.vocab_size)

    def sharded_like_kv(cache):
        for key in ("k", "v"):
            x = cache[key]
            spec = tuple(x.sharding.spec) + (None,) * (x.ndim - len(x.sharding.spec))
            assert not x.sharding.is_fully_replicated, (key, x.sharding)
            assert spec[1] == ("data", "fsdp") and spec[3] == "tensor", (key, spec)
            # each device holds a quarter of the batch and half of the KV heads
            assert x.addressable_shards[0].data.shape == (cfg.num_layers, 1, 24, 1, cfg.dims_per_head)
        assert not cache["segment_ids"].sharding.is_fully_replicated

    sharded_like_kv(runner.init_cache(params, 4, 24))
    chunked, _ = score_in_chunks(runner, params, tokens, CHUNKS, max_len=24, on_cache=sharded_like_kv)

    # the same parameters on one device, unsharded
    params_1 = jax.device_put(jax.device_get(params), jax.devices()[0])
    one = Runner(gd, ONE_DEVICE)
    full_1 = one.full(params_1, tokens)
    np.testing.assert_allclose(chunked, full_1, atol=ATOL, rtol=RTOL)
    chunked_1, _ = score_in_chunks(one, params_1, tokens, CHUNKS, max_len=24)
    np.testing.assert_allclose(chunked, chunked_1, atol=ATOL, rtol=RTOL)


def test_cache_is_a_value_forked_prefix_and_left_padding():
    cfg = CONFIGS["llama_scan"]
    gd, params = build(cfg, ONE_DEVICE)
    runner = Runner(gd, ONE_DEVICE)
    key_p, key_a, key_b = jax.random.split(jax.random.key(13), 3)
    prefix = jax.random.randint(key_p, (2, 6), 0, cfg.vocab_size)
    cont_a = jax.random.randint(key_a, (2, 4), 0, cfg.vocab_size)
    cont_b = jax.random.randint(key_b, (2, 4), 0, cfg.vocab_size)
    assert not np.array_equal(cont_a, cont_b)

    # Fork: one prefix cache, two continuations; neither sees the other, the prefix cache is unchanged.
    _, prefix_cache = runner.step(params, prefix, runner.init_cache(params, 2, 16))
    before = jax.tree.map(np.array, prefix_cache)
    out_a, cache_a = runner.step(params, cont_a, prefix_cache)
    out_b, cache_b = runner.step(params, cont_b, prefix_cache)       # same cache again, after a's step
    full_a = runner.full(params, jnp.concatenate([prefix, cont_a], 1))[:, 6:]
    full_b = runner.full(params, jnp.concatenate([prefix, cont_b], 1))[:, 6:]
    np.testing.assert_allclose(out_a, full_a, atol=ATOL, rtol=RTOL)
    np.testing.assert_allclose(out_b, full_b, atol=ATOL, rtol=RTOL)
    assert not np.allclose(out_a, out_b)
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.array, prefix_cache), before)
    assert int(cache_a["index"]) == int(cache_b["index"]) == 10 and int(prefix_cache["index"]) == 6

    # Left padding (attention.py: padding is segment 0): row 0 is 3 pad tokens then prefix[0, :3]; with
    # its own positions it scores like prefix[0, :3] alone, and keeps doing so while decoding on.
    pad = 3
    padded = jnp.stack([jnp.concatenate([jnp.full((pad,), 7, prefix.dtype), prefix[0, :3]]), prefix[1]])
    seg = jnp.array([[0] * pad + [1] * 3, [1] * 6])
    pos = jnp.array([[0] * pad + [0, 1, 2], list(range(6))])
    logits, cache = runner.step(params, padded, runner.init_cache(params, 2, 16), pos, seg)
    np.testing.assert_allclose(logits[0, pad:], runner.full(params, prefix[:1, :3])[0], atol=ATOL, rtol=RTOL)
    np.testing.assert_allclose(logits[1], runner.full(params, prefix[1:])[0], atol=ATOL, rtol=RTOL)
    # decode cont_a[:, 0] next: row 0 is at position 3, row 1 at 6 (the default positions, cache index
    # + arange, would give row 0 position 6: per-row positions are the caller's job with padding)
    step_pos = jnp.array([[3], [6]])
    logits, _ = runner.step(params, cont_a[:, :1], cache, step_pos, jnp.ones((2, 1), jnp.int32))
    ref_0 = runner.full(params, jnp.concatenate([prefix[:1, :3], cont_a[:1, :1]], 1))[0, -1]
    ref_1 = runner.full(params, jnp.concatenate([prefix[1:], cont_a[1:, :1]], 1))[0, -1]
    np.testing.assert_allclose(logits[0, 0], ref_0, atol=ATOL, rtol=RTOL)
    np.testing.assert_allclose(logits[1, 0], ref_1, atol=ATOL, rtol=RTOL)


def test_more_tokens_than_cache_slots_is_an_error():
    gd, params = build(CONFIGS["llama"], ONE_DEVICE)
    with use_mesh(ONE_DEVICE):
        cache = nnx.merge(gd, params).init_cache(1, 4)
        with pytest.raises(ValueError, match="5 tokens do not fit a KV cache of 4 slots"):
            jax.eval_shape(lambda p, c: nnx.merge(gd, p)(jnp.ones((1, 5), jnp.int32), cache=c), params, cache)
