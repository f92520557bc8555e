"""The KV-cache sampler: filtering numerics, greedy == a naive no-cache loop, batching, stops,
vocabulary limit, sharding, and `lmforge sample` on a real smoke run."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import AxisType

from lmforge.cli.main import main
from lmforge.model import DecoderLM, ModelConfig, axis_rules, create_sharded
from lmforge.train.mesh import DEFAULT_RULES
from lmforge.train.sampling import NEG_INF, SamplingConfig, filter_logits, generate, sample_token

CONFIGS = {"gpt2": ModelConfig.gpt2_tiny(), "llama": ModelConfig.llama_tiny()}   # llama_tiny is GQA (4 q, 2 kv)
GREEDY = SamplingConfig(max_new_tokens=8, temperature=0.0)
# Lengths on both sides of the 16-token padding granule: alone they pad to 16 or 32, batched to 32.
PROMPTS = [[5, 17, 3], list(range(40, 57)), [9, 9, 200, 31, 7, 1, 88, 2, 64]]


def kept(logits) -> np.ndarray:
    return np.asarray(logits) > NEG_INF / 2


# ------------------------------------------------------------------------------ filter / sample
def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05], [0.05, 0.15, 0.3, 0.5]]))
    np.testing.assert_array_equal(kept(filter_logits(logits, top_k=0, top_p=0.8)),
                                  [[1, 1, 0, 0], [0, 0, 1, 1]])
    np.testing.assert_array_equal(kept(filter_logits(logits, top_k=0, top_p=0.9)),
                                  [[1, 1, 1, 0], [0, 1, 1, 1]])
    # The top token survives however small top_p is; kept logits are unchanged.
    out = filter_logits(logits, top_k=0, top_p=1e-6)
    np.testing.assert_array_equal(kept(out), [[1, 0, 0, 0], [0, 0, 0, 1]])
    np.testing.assert_allclose(out[0, 0], logits[0, 0])
    np.testing.assert_array_equal(filter_logits(logits, top_k=0, top_p=1.0), logits)   # off


def test_top_k_keeps_the_k_largest():
    logits = jnp.array([[0.1, 2.0, -1.0, 0.7, 1.5], [3.0, -2.0, 0.0, 0.5, 0.2]])
    np.testing.assert_array_equal(kept(filter_logits(logits, top_k=1, top_p=1.0)),
                                  [[0, 1, 0, 0, 0], [1, 0, 0, 0, 0]])
    np.testing.assert_array_equal(kept(filter_logits(logits, top_k=3, top_p=1.0)),
                                  [[0, 1, 0, 1, 1], [1, 0, 0, 1, 1]])
    # top-k then top-p: of the top 3 of row 0 (softmax over them ≈ .53, .32, .15) top_p=0.6 keeps 2.
    np.testing.assert_array_equal(kept(filter_logits(logits[:1], top_k=3, top_p=0.6)), [[0, 1, 0, 0, 1]])


def test_temperature_zero_is_argmax():
    logits = jax.random.normal(jax.random.key(0), (16, 50))
    for kw in (dict(top_k=0, top_p=1.0), dict(top_k=5, top_p=0.3)):
        out = sample_token(logits, jax.random.key(1), temperature=0.0, **kw)
        np.testing.assert_array_equal(out, np.argmax(logits, -1))
        assert out.dtype == jnp.int32 and out.shape == (16,)


def test_sampling_frequencies_match_softmax_and_filters_hold():
    n = 20_000
    logits = jnp.log(jnp.array([0.4, 0.3, 0.2, 0.07, 0.03]))
    batch = jnp.broadcast_to(logits, (n, 5))                     # n independent draws in one call
    draws = np.asarray(sample_token(batch, jax.random.key(0), temperature=1.0, top_k=0, top_p=1.0))
    np.testing.assert_allclose(np.bincount(draws, minlength=5) / n, [0.4, 0.3, 0.2, 0.07, 0.03], atol=0.015)
    # temperature 2 flattens: p ∝ sqrt(p0)
    hot = np.asarray(sample_token(batch, jax.random.key(1), temperature=2.0, top_k=0, top_p=1.0))
    np.testing.assert_allclose(np.bincount(hot, minlength=5) / n, jax.nn.softmax(logits / 2), atol=0.015)
    # top-k 2: only the two largest, renormalized (0.4 : 0.3)
    top2 = np.asarray(sample_token(batch, jax.random.key(2), temperature=1.0, top_k=2, top_p=1.0))
    assert set(np.unique(top2)) <= {0, 1}
    np.testing.assert_allclose(np.mean(top2 == 0), 4 / 7, atol=0.015)
    # top-p 0.65: mass before token 2 is 0.7 >= 0.65, so {0, 1}
    nucleus = np.asarray(sample_token(batch, jax.random.key(3), temperature=1.0, top_k=0, top_p=0.65))
    assert set(np.unique(nucleus)) <= {0, 1}


def test_sampling_config_rejects_bad_values():
    for kw in (dict(max_new_tokens=0), dict(temperature=-1.0), dict(top_k=-1), dict(top_p=0.0), dict(top_p=1.5)):
        with pytest.raises(ValueError, match="sampling"):
            SamplingConfig(**kw)


# ------------------------------------------------------------------------------------ generate
def one_device_mesh():
    return jax.make_mesh((1, 1, 1), ("data", "fsdp", "tensor"), axis_types=(AxisType.Auto,) * 3,
                         devices=jax.devices()[:1])


def make(cfg, mesh):
    with axis_rules(DEFAULT_RULES):
        graphdef, params, _ = create_sharded(lambda: DecoderLM(cfg, rngs=nnx.Rngs(0)), mesh, DEFAULT_RULES)
    return graphdef, params


@pytest.fixture(scope="module")
def models():
    mesh = one_device_mesh()
    return mesh, {name: make(cfg, mesh) for name, cfg in CONFIGS.items()}


def run(mesh, graphdef, params, prompts, cfg=GREEDY, **kw):
    with jax.set_mesh(mesh), axis_rules(DEFAULT_RULES):
        return generate(graphdef, params, prompts, cfg, rng=jax.random.key(0), **kw)


def naive_greedy(mesh, graphdef, params, prompt, n, vocab_limit=None, buffer=32):
    """Re-runs the full forward pass (no cache) on the growing sequence and takes the argmax.

    The sequence sits right-padded in a fixed buffer (one compile per model): the mask is causal,
    so the logits at position len-1 never see the padding after it."""
    assert len(prompt) + n <= buffer
    seq = list(prompt)
    with jax.set_mesh(mesh), axis_rules(DEFAULT_RULES):
        for _ in range(n):
            buf = np.zeros((1, buffer), np.int32)
            buf[0, :len(seq)] = seq
            logits = np.asarray(_last_logits(graphdef, params, buf, len(seq)))
            seq.append(int(np.argmax(logits[:vocab_limit])))
    return seq[len(prompt):]


@functools.partial(jax.jit, static_argnums=0)
def _last_logits(graphdef, params, buf, length):
    logits, _ = nnx.merge(graphdef, params)(buf)                            # (1, T, V), no cache
    return jax.lax.dynamic_index_in_dim(logits[0], length - 1, keepdims=False)


@pytest.mark.parametrize("name", CONFIGS)
def test_greedy_equals_naive_loop_and_batching_does_not_leak(models, name):
    mesh, made = models
    graphdef, params = made[name]
    expected = [naive_greedy(mesh, graphdef, params, p, GREEDY.max_new_tokens) for p in PROMPTS]
    assert len({tuple(e) for e in expected}) == len(PROMPTS)             # the prompts matter
    # Batched, each row is left-padded to 32 (up to 29 padding tokens) and continues exactly as the
    # prompt alone does in the naive loop, which has no padding at all.
    assert run(mesh, graphdef, params, PROMPTS) == expected
    if name == "gpt2":   # and as each prompt alone through generate (padded to 16 or 32)
        assert [run(mesh, graphdef, params, [p])[0] for p in PROMPTS] == expected


def test_stop_tokens_end_their_row_only(models):
    mesh, made = models
    graphdef, params = made["gpt2"]
    full = run(mesh, graphdef, params, PROMPTS)
    # A token that row 0 emits first at step k > 0 and the other rows never emit.
    others = set(full[1]) | set(full[2])
    k, stop = next((k, t) for k, t in enumerate(full[0]) if k and t not in full[0][:k] and t not in others)
    out = run(mesh, graphdef, params, PROMPTS, stop_tokens=[stop])
    assert out[0] == full[0][:k + 1] and out[0][-1] == stop
    assert out[1:] == full[1:]
    # A stop on every row's first token ends the whole batch after one step.
    firsts = [row[0] for row in full]
    assert run(mesh, graphdef, params, PROMPTS, stop_tokens=firsts) == [[t] for t in firsts]


HOT = SamplingConfig(max_new_tokens=48, temperature=1.5)


def test_vocab_limit_is_honoured(models):
    mesh, made = models
    graphdef, params = made["gpt2"]
    limit = 10
    out = run(mesh, graphdef, params, PROMPTS, HOT, vocab_limit=limit)
    assert all(len(row) == 48 for row in out)
    assert max(max(row) for row in out) < limit and len({t for row in out for t in row}) > 3
    unlimited = run(mesh, graphdef, params, PROMPTS, HOT)
    assert max(max(row) for row in unlimited) >= limit            # the limit did something
    # greedy: the argmax over the allowed ids only
    assert (run(mesh, graphdef, params, PROMPTS[:1], vocab_limit=limit)[0]
            == naive_greedy(mesh, graphdef, params, PROMPTS[0], GREEDY.max_new_tokens, vocab_limit=limit))


def test_sampling_is_reproducible_per_seed(models):
    mesh, made = models
    graphdef, params = made["gpt2"]
    a, b = run(mesh, graphdef, params, PROMPTS, HOT), run(mesh, graphdef, params, PROMPTS, HOT)
    with jax.set_mesh(mesh), axis_rules(DEFAULT_RULES):
        c = generate(graphdef, params, PROMPTS, HOT, rng=jax.random.key(1))
    assert a == b and a != c


def test_too_long_and_empty_prompts_are_clear_errors(models):
    mesh, made = models
    graphdef, params = made["gpt2"]                                     # max_seq_len 128
    cfg = SamplingConfig(max_new_tokens=40)
    with pytest.raises(ValueError, match=r"a prompt of 128 tokens leaves no room .* max_seq_len=128"):
        run(mesh, graphdef, params, [[1] * 128], cfg)                    # max_seq_len from the model
    with pytest.raises(ValueError, match="max_seq_len=64"):
        run(mesh, graphdef, params, [[1] * 70], cfg, max_seq_len=64)
    with pytest.raises(ValueError, match="at least one token"):
        run(mesh, graphdef, params, [[1, 2], []])


def test_generation_past_max_seq_len_continues_in_half_windows():
    # A larger init than the presets' makes greedy decoding wander instead of repeating one token,
    # so a wrong context after a window shift shows up in the tokens.
    mesh = one_device_mesh()
    graphdef, params = make(dataclasses.replace(ModelConfig.gpt2_tiny(), init_std=0.5), mesh)
    L, n, greedy = 32, 40, SamplingConfig(max_new_tokens=40, temperature=0.0)
    for prompt in (PROMPTS[0], PROMPTS[2]):
        got = run(mesh, graphdef, params, [prompt], greedy, max_seq_len=L)[0]
        # The reference: write up to L - L // 2 tokens (fewer when the prompt leaves less room),
        # then re-read the last L // 2 tokens and go on.
        expected, context = [], list(prompt)
        while len(expected) < n:
            k = min(n - len(expected), L - L // 2, L - len(context))
            expected += naive_greedy(mesh, graphdef, params, context, k)
            context = (list(prompt) + expected)[-(L // 2):]
        assert got == expected and len(set(got)) > 10
    # Batched rows share the window boundaries (set by the longest live context): each row then
    # equals its own windowed run with that boundary, and a stop token ends its row in a later window.
    both = run(mesh, graphdef, params, [PROMPTS[0], PROMPTS[2]], greedy, max_seq_len=L)
    assert both[1] == got and len(both[0]) == n
    k = next(k for k in range(L, n) if both[1][k] not in both[1][:k] and both[1][k] not in both[0])
    stopped = run(mesh, graphdef, params, [PROMPTS[0], PROMPTS[2]], greedy, max_seq_len=L, stop_tokens=[both[1][k]])
    assert stopped == [both[0], both[1][:k + 1]]


def test_sharded_2x2x2_equals_one_device(models):
    mesh1, made = models
    mesh8 = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"), axis_types=(AxisType.Auto,) * 3)
    graphdef, params = make(CONFIGS["llama"], mesh8)
    assert params["blocks"][0]["attn"]["q"].sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor", None)
    # 3 rows over a 4-way batch split (data x fsdp) is uneven, as when the CLI samples one prompt
    # on a data-parallel mesh; heads and kv heads split over tensor.
    assert run(mesh8, graphdef, params, PROMPTS) == run(mesh1, *made["llama"], PROMPTS)


# ------------------------------------------------------------------------------- lmforge sample
@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One real run of the quickstart smoke variant (about a minute), shared by the CLI tests."""
    import pathlib

    exp = pathlib.Path(__file__).resolve().parents[2] / "experiments" / "quickstart.py"
    run_dir = tmp_path_factory.mktemp("quickstart") / "run"
    assert main(["run", f"{exp}:smoke", "--workdir", str(run_dir)]) == 0
    return run_dir


@pytest.mark.slow   # the smoke run (~1 min) + two `lmforge sample` calls: run with -m slow
def test_lmforge_sample_greedy_is_deterministic(smoke_run, capsys):
    argv = ["sample", str(smoke_run), "--prompt", "The", "--max-new-tokens", "8", "--temperature", "0"]
    capsys.readouterr()
    assert main(argv) == 0
    first = capsys.readouterr()
    # ">>> PROMPT", the completion (8 new tokens, stop tokens dropped), a blank line
    assert first.out.startswith(">>> The\n") and first.out.endswith("\n\n")
    assert len(first.out) > len(">>> The\n\n\n")
    assert main(argv) == 0
    assert capsys.readouterr().out == first.out


def test_lmforge_sample_on_a_folder_that_is_not_a_run(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not a run")
    assert main(["sample", str(tmp_path), "--prompt", "The"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lmforge: error: ") and "is not a run folder" in err and "\n" not in err
