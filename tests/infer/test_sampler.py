"""The sampler (one-step filtering is in test_filters.py): greedy == a naive no-cache loop, batching,
stop tokens and strings, per-row limits, n samples per prompt, log-probs == a teacher-forced
forward pass, no recompiles when sampling parameters change, long prompts, windows past
max_seq_len, sharding, and `lmforge sample` on a real smoke run."""

import dataclasses
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import AxisType

from lmforge.cli.main import main
from lmforge.infer import FINISH_LENGTH, FINISH_STOP, Sampler, SamplingConfig
from lmforge.infer import generate, pad_prompts
from lmforge.infer import sampler as sampler_module
from lmforge.model import DEFAULT_RULES, DecoderLM, ModelConfig, axis_rules, create_sharded, token_logprobs

# llama_tiny is GQA (4 q, 2 kv); llama_scan stacks its layers under nnx.scan, which must also work
# inside the decode loop (a while_loop body).
CONFIGS = {"gpt2": ModelConfig.gpt2_tiny(), "llama": ModelConfig.llama_tiny(),
           "llama_scan": ModelConfig.llama_tiny(scan_layers=True)}
GREEDY = SamplingConfig(max_new_tokens=8, temperature=0.0)
# Lengths on both sides of the 16-token padding granule: alone they pad to 16 or 32, batched to 32.
PROMPTS = [[5, 17, 3], list(range(40, 57)), [9, 9, 200, 31, 7, 1, 88, 2, 64]]


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


class Tok:
    """The slice of a tokenizer the Sampler reads: ``vocab_size`` (ids at or past it are never
    sampled), no special ids, and one letter per id for stop strings."""
    pad_id = bos_id = eos_id = -1

    def __init__(self, vocab_size=256):
        self.vocab_size = vocab_size

    def token_bytes(self):
        return [bytes([97 + i % 26]) for i in range(self.vocab_size)]

    def decode(self, ids):
        return "".join(chr(97 + i % 26) for i in ids)


def sampler(mesh, graphdef, params, *, vocab_limit=None, max_seq_len=None, name="gpt2"):
    cfg = CONFIGS[name] if max_seq_len is None else dataclasses.replace(CONFIGS[name], max_seq_len=max_seq_len)
    return Sampler(graphdef, params, Tok(vocab_limit or cfg.vocab_size), cfg, mesh, DEFAULT_RULES)


def run(mesh, graphdef, params, prompts, cfg=GREEDY, *, stop_tokens=(), vocab_limit=None, max_seq_len=None,
        seed=0, name="gpt2"):
    out = sampler(mesh, graphdef, params, vocab_limit=vocab_limit, max_seq_len=max_seq_len, name=name).generate_ids(
        prompts, dataclasses.replace(cfg, stop_token_ids=tuple(stop_tokens)), seed=seed)
    return [out.tokens[i, :out.lengths[i]].tolist() for i in range(len(out.lengths))]


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
    assert run(mesh, graphdef, params, PROMPTS, name=name) == expected
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
    c = run(mesh, graphdef, params, PROMPTS, HOT, seed=1)
    assert a == b and a != c


def test_long_prompts_keep_their_last_tokens_and_empty_ones_are_errors(models, capfd):
    mesh, made = models
    graphdef, params = made["gpt2"]                                     # max_seq_len 128
    long = list(np.random.default_rng(0).integers(0, 256, 150))
    # A prompt longer than the context keeps its last 64 tokens (said on stderr); the other prompt
    # of the call is untouched and continues exactly as alone.
    got = run(mesh, graphdef, params, [long, PROMPTS[0]])
    err = capfd.readouterr().err
    assert "1 prompt(s) reach the model's context of 128 tokens, keeping the last 64 of each: prompt 0 (150 tokens)" in err
    assert got[0] == run(mesh, graphdef, params, [long[-64:]])[0]
    assert got[1] == run(mesh, graphdef, params, [PROMPTS[0]])[0]
    with pytest.raises(ValueError, match="at least one token"):
        run(mesh, graphdef, params, [[1, 2], []])


def test_generation_past_max_seq_len_fills_the_context_then_continues_in_half_windows():
    # A larger init than the presets' makes greedy decoding wander instead of repeating one token,
    # so a wrong context after a window shift shows up in the tokens.
    mesh = one_device_mesh()
    graphdef, params = make(dataclasses.replace(ModelConfig.gpt2_tiny(), init_std=0.5), mesh)
    L, n, greedy = 32, 40, SamplingConfig(max_new_tokens=40, temperature=0.0)
    for prompt in (PROMPTS[0], PROMPTS[2]):
        got = run(mesh, graphdef, params, [prompt], greedy, max_seq_len=L)[0]
        # The reference: fill the context (the prompt and L tokens in all, as transformers does; the first
        # window had stopped at L // 2 new tokens, cropping a context with room left), then re-read the last
        # L // 2 tokens, write L - L // 2 more, and go on.
        expected, context = [], list(prompt)
        while len(expected) < n:
            k = min(n - len(expected), L - len(context))
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
    assert params["blocks"][0]["attn"]["q"]["kernel"].sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor", None)
    # 3 rows over a 4-way batch split (data x fsdp) is uneven, as when the CLI samples one prompt
    # on a data-parallel mesh (the sampler pads the batch); heads and kv heads split over tensor.
    assert (run(mesh8, graphdef, params, PROMPTS, name="llama")
            == run(mesh1, *made["llama"], PROMPTS, name="llama"))
    # the GPU's decode loop (steps in chunks of a known trip count) partitions the same way
    chunked = generate_direct(mesh8, graphdef, params, GREEDY, check_every=8, name="llama")
    np.testing.assert_array_equal(
        chunked.tokens, generate_direct(mesh1, *made["llama"], GREEDY, check_every=1, name="llama").tokens)


@functools.partial(jax.jit, static_argnums=0)
def _teacher_forced_logprobs(graphdef, params, seq):
    """seq (B, T) -> log-prob of each next token (B, T-1), by a full forward pass (no cache)."""
    model = nnx.merge(graphdef, params)
    hidden, _, _ = model.hidden_states(seq[:, :-1])
    return token_logprobs(hidden, model.output_head()[0], seq[:, 1:]).logprobs


def test_logprobs_equal_a_teacher_forced_forward_pass(models):
    """The sampler's log-probs (under the unmodified model) equal token_logprobs of a full forward pass
    over prompt + sampled tokens, whatever temperature / top-k / top-p shaped the draw."""
    mesh, made = models
    graphdef, params = made["llama"]
    cfg = SamplingConfig(max_new_tokens=12, temperature=0.7, top_k=50, top_p=0.9, n=3)
    out = sampler(mesh, graphdef, params, name="llama").generate_ids(PROMPTS, cfg, seed=3)
    assert out.tokens.shape == (9, 12) and out.prompt_index.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    with jax.set_mesh(mesh), axis_rules(DEFAULT_RULES):
        for r in range(9):
            prompt, k = PROMPTS[r // 3], int(out.lengths[r])
            seq = prompt + out.tokens[r, :k].tolist()
            # right-padded to one buffer (one compile): the causal mask keeps the padding out of
            # the log-probs at the sequence's own positions, which are all that is compared
            buf = np.zeros((1, 32), np.int32)
            buf[0, :len(seq)] = seq
            lp = np.asarray(_teacher_forced_logprobs(graphdef, params, buf))[0]
            np.testing.assert_allclose(out.logprobs[r, :k], lp[len(prompt) - 1:len(seq) - 1], atol=1e-4)
    assert out.mask.sum() == out.lengths.sum() and np.all(out.logprobs[~out.mask] == 0)
    # filtering makes each sampled token at least as likely under the sampled distribution
    assert np.all(out.sampling_logprobs[out.mask] >= out.logprobs[out.mask] - 1e-4 - np.log(10))


@functools.partial(jax.jit, static_argnums=0)
def _teacher_forced_log_softmax(graphdef, params, seq):
    """seq (B, T) -> the log-softmax of every position's logits (B, T, V), by a full forward pass."""
    logits, _ = nnx.merge(graphdef, params)(seq)
    return jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)


def test_top_logprobs_are_the_most_likely_ids_of_a_teacher_forced_pass(models):
    """top_logprobs=K: at each generated position the K ids of highest log-prob under the model (below
    the vocabulary limit), best first, as a full forward pass gives them; the sampled token's log-prob
    equals its entry exactly when it is the argmax (greedy); past a row's end, zeros. Generation past
    the context (windows) keeps them and the sampling log-probs too; K = 0 gives empty arrays."""
    mesh, made = models
    graphdef, params = made["llama"]
    limit = 200
    cfg = SamplingConfig(max_new_tokens=10, temperature=0.9, top_logprobs=4)
    out = sampler(mesh, graphdef, params, vocab_limit=limit, name="llama").generate_ids(
        PROMPTS[:2], dataclasses.replace(cfg, stop_token_ids=(7,)), seed=1)
    assert out.top_ids.shape == out.top_logprobs.shape == (2, 10, 4)
    with jax.set_mesh(mesh), axis_rules(DEFAULT_RULES):
        for r in range(2):
            prompt, k = PROMPTS[r], int(out.lengths[r])
            buf = np.zeros((1, 32), np.int32)
            buf[0, :len(prompt) + k] = prompt + out.tokens[r, :k].tolist()
            logp = np.asarray(_teacher_forced_log_softmax(graphdef, params, buf))[0, len(prompt) - 1:len(prompt) - 1 + k]
            want = np.argsort(-logp[:, :limit], axis=-1, kind="stable")[:, :4]
            np.testing.assert_array_equal(out.top_ids[r, :k], want)
            np.testing.assert_allclose(out.top_logprobs[r, :k], np.take_along_axis(logp, want, -1), atol=1e-4)
            assert (np.diff(out.top_logprobs[r, :k], axis=-1) <= 0).all()
            assert (out.top_ids[r, k:] == 0).all() and (out.top_logprobs[r, k:] == 0).all()
    greedy = sampler(mesh, graphdef, params, name="llama").generate_ids(
        PROMPTS, dataclasses.replace(GREEDY, top_logprobs=2), seed=0)
    np.testing.assert_array_equal(greedy.top_ids[..., 0][greedy.mask], greedy.tokens[greedy.mask])
    np.testing.assert_array_equal(greedy.top_logprobs[..., 0][greedy.mask], greedy.logprobs[greedy.mask])
    assert sampler(mesh, graphdef, params, name="llama").generate_ids(PROMPTS, GREEDY).top_ids.shape == (3, 8, 0)
    # past the context: 20 new tokens from a 16-token context come in windows, each keeping its arrays
    long = sampler(mesh, graphdef, params, max_seq_len=16, name="llama").generate_ids(
        [PROMPTS[0]], SamplingConfig(max_new_tokens=20, temperature=1.0, top_logprobs=3), seed=2)
    assert long.lengths[0] == 20 and long.top_ids.shape == (1, 20, 3)
    assert (long.top_logprobs[0, :, 0] >= long.logprobs[0] - 1e-6).all() and (long.sampling_logprobs[0] < 0).all()


def test_changing_sampling_parameters_does_not_recompile(models):
    """Temperatures and the values of top-k / top-p are traced; what is static is the kind of program:
    greedy (``temperature == 0``: the argmax, whatever the filters), sampling, and sampling with the
    filter (a sort per step), so that no ``lax.cond`` sits in the loop. One program per kind."""
    mesh, made = models
    graphdef, params = made["gpt2"]
    s = sampler(mesh, graphdef, params)
    size = sampler_module._generate._cache_size
    kinds = {"sampling": [SamplingConfig(max_new_tokens=8, temperature=0.5),
                          SamplingConfig(max_new_tokens=5, temperature=1.7)],       # 5 buckets to 16 too
             "greedy": [SamplingConfig(max_new_tokens=8, temperature=0.0),
                        SamplingConfig(max_new_tokens=8, temperature=0.0, top_k=7, top_p=0.3)],
             "filter": [SamplingConfig(max_new_tokens=8, temperature=1.3, top_p=0.8),
                        SamplingConfig(max_new_tokens=8, temperature=0.9, top_k=3, top_p=0.5),
                        SamplingConfig(max_new_tokens=5, temperature=0.2, top_k=7)]}
    for first, *rest in kinds.values():
        s.generate_ids(PROMPTS, first)
        compiles = size()
        for cfg in rest:
            s.generate_ids(PROMPTS[::-1], cfg)
        assert size() == compiles


def generate_direct(mesh, graphdef, params, cfg, *, check_every, stop_tokens=(), limits=None, name="gpt2"):
    tokens, mask = pad_prompts(PROMPTS, rows=4, width=32)                 # row 3: a filler row
    with jax.set_mesh(mesh), axis_rules(DEFAULT_RULES):
        return jax.device_get(generate(
            graphdef, params, jnp.asarray(tokens), jnp.asarray(mask), jax.random.key(5),
            dataclasses.replace(cfg, stop_token_ids=tuple(stop_tokens)),
            max_tokens=None if limits is None else jnp.asarray(limits, jnp.int32),
            vocab_limit=CONFIGS[name].vocab_size, check_every=check_every))


@pytest.mark.parametrize("cfg", [GREEDY, SamplingConfig(max_new_tokens=13, temperature=1.1, top_p=0.9, n=2)],
                         ids=["greedy", "top_p_n2"])
def test_decode_steps_between_checks_do_not_change_the_result(models, cfg):
    """Chunks of steps between the checks of "has every row stopped?" (the GPU default) give the
    result of checking every step: rows that stop inside a chunk (a stop token, their own limit),
    steps past the last column (13 - 1 steps in chunks of 5 end at step 15), a filler row that stops
    at once."""
    mesh, made = models
    graphdef, params = made["llama"]
    rows = 4 * cfg.n
    free = generate_direct(mesh, graphdef, params, cfg, check_every=1, name="llama")
    stop = int(free.tokens[0, 2])                                         # row 0 stops at its third token
    limits = np.full((rows,), cfg.max_new_tokens)
    limits[-1], limits[1] = 1, 4
    expected = generate_direct(mesh, graphdef, params, cfg, check_every=1, stop_tokens=[stop], limits=limits,
                               name="llama")
    assert expected.lengths[0] <= 3 and expected.lengths[1] <= 4
    assert expected.finish_reason[0] == FINISH_STOP and expected.lengths[-1] == 1
    for every in (5, 8):
        got = generate_direct(mesh, graphdef, params, cfg, check_every=every, stop_tokens=[stop], limits=limits,
                              name="llama")
        for field in expected._fields:
            np.testing.assert_array_equal(getattr(got, field), getattr(expected, field), err_msg=f"{field}, {every}")
    with pytest.raises(ValueError, match="check_every=0"):
        generate_direct(mesh, graphdef, params, cfg, check_every=0, name="llama")


def compiled_generate(mesh, graphdef, params, cfg, *, b=2, p=16, m=16, greedy=False, filtering=False,
                      check_every=1) -> str:
    with jax.set_mesh(mesh), axis_rules(DEFAULT_RULES):
        knobs = (jnp.zeros((b,), jnp.float32), jnp.zeros((b,), jnp.int32), jnp.ones((b,), jnp.float32))
        return sampler_module._generate.lower(
            graphdef, params, jnp.ones((b, p), jnp.int32), jnp.ones((b, p), jnp.int32), jax.random.key(0), *knobs,
            jnp.full((b,), m, jnp.int32), jnp.asarray([-1], jnp.int32), None, None, None,
            max_new_tokens=m, n=1, vocab_limit=cfg.vocab_size, greedy=greedy, filtering=filtering,
            check_every=check_every).compile().as_text()


def loop_hlo(hlo: str) -> str:
    """The lines of the computations that the decode loop's body reaches (calls=, body=, condition=,
    to_apply=): the per-token work, without the prefill before it. The decode loop is the top-level
    ``while`` whose body writes the KV cache (others: threefry's on CPU)."""
    computations, name = {}, None
    for line in hlo.splitlines():
        if line and not line.startswith(" ") and line.rstrip().endswith("{"):
            name = line.split()[1 if line.startswith("ENTRY") else 0].lstrip("%").split("(")[0]
            computations[name] = []
        elif name is not None:
            computations[name].append(line)

    def reach(start: str) -> list[str]:
        seen, todo = set(), [start]
        while todo:
            name = todo.pop()
            if name not in seen and name in computations:
                seen.add(name)
                todo += [m for line in computations[name]
                         for m in re.findall(r"(?:calls|body|condition|to_apply)=%([\w.\-]+)", line)]
        return [line for n in seen for line in computations[n]]

    entry = next(n for n, lines in computations.items() if n.startswith("main") and any(" while(" in l for l in lines))
    bodies = [re.search(r"body=%([\w.\-]+)", line)[1] for line in computations[entry] if " while(" in line]
    return next("\n".join(lines) for lines in map(reach, bodies) if any("dynamic-update-slice(" in l for l in lines))


@pytest.mark.parametrize("name", ["llama", "llama_scan"])
def test_decode_loop_reads_back_one_predicate_per_chunk(models, name):
    """XLA:GPU's runtime copies the predicate of a ``conditional`` and of a while loop without a known
    trip count to the host and blocks on it (``ConditionalThunk``, ``WhileThunk``), so the compiled
    decode program has no ``conditional`` and one such loop, whose body runs ``check_every`` steps in a
    loop of known trip count (the others -- the layers' ``nnx.scan``, threefry on CPU -- have one
    too); the sort of top-k / top-p is there only when filtering."""
    mesh, made = models
    graphdef, params = made[name]
    for greedy, filtering in ((True, False), (False, False), (False, True)):
        hlo = compiled_generate(mesh, graphdef, params, CONFIGS[name], greedy=greedy, filtering=filtering,
                                check_every=8)
        loops = [line for line in hlo.splitlines() if " while(" in line]
        unknown = [line for line in loops if "known_trip_count" not in line]
        assert " conditional(" not in hlo
        assert len(unknown) == 1 and '"known_trip_count":{"n":"8"}' in hlo, (len(unknown), len(loops))
        assert (" sort(" in hlo) == filtering


def test_many_prompts_go_in_groups_of_max_rows(models):
    mesh, made = models
    graphdef, params = made["gpt2"]
    s = Sampler(graphdef, params, Tok(), CONFIGS["gpt2"], mesh, DEFAULT_RULES, max_rows=4)
    prompts = [PROMPTS[i % 3] for i in range(7)]
    out = s.generate_ids(prompts, SamplingConfig(max_new_tokens=5, temperature=0.0, n=2))
    assert out.tokens.shape == (14, 5) and out.prompt_index.tolist() == [i // 2 for i in range(14)]
    alone = run(mesh, graphdef, params, PROMPTS, SamplingConfig(max_new_tokens=5, temperature=0.0))
    assert [out.tokens[2 * i].tolist() for i in range(7)] == [alone[i % 3] for i in range(7)]


def test_n_samples_per_prompt_and_per_row_limits(models):
    mesh, made = models
    graphdef, params = made["gpt2"]
    s = sampler(mesh, graphdef, params)
    greedy = s.generate_ids(PROMPTS[:2], SamplingConfig(max_new_tokens=6, temperature=0.0, n=3))
    assert (greedy.tokens[0] == greedy.tokens[1]).all() and (greedy.tokens[3] == greedy.tokens[5]).all()
    assert greedy.tokens[0].tolist() == run(mesh, graphdef, params, PROMPTS[:1], SamplingConfig(6, 0.0))[0]
    hot = s.generate_ids(PROMPTS[:1], SamplingConfig(max_new_tokens=16, temperature=1.5, n=4))
    assert len({tuple(r) for r in hot.tokens.tolist()}) == 4
    assert hot.finish_reason.tolist() == [FINISH_LENGTH] * 4 and hot.lengths.tolist() == [16] * 4
    # per-row token limits, through the pure generate(): rows stop at their own limit
    tokens, mask = pad_prompts(PROMPTS, rows=4, width=32)
    with jax.set_mesh(mesh), axis_rules(DEFAULT_RULES):
        out = generate(graphdef, params, jnp.asarray(tokens), jnp.asarray(mask), jax.random.key(0),
                       SamplingConfig(max_new_tokens=16, temperature=0.0), max_tokens=jnp.array([3, 16, 1, 7]))
    assert np.asarray(out.lengths).tolist() == [3, 16, 1, 7]
    assert np.asarray(out.tokens)[0, :3].tolist() == run(mesh, graphdef, params, PROMPTS[:1], GREEDY)[0][:3]
    # ... and through Sampler.generate_ids (a server's requests of different max_tokens in one call)
    rows = s.generate_ids(PROMPTS[:2], SamplingConfig(max_new_tokens=16, temperature=0.0, n=2), max_tokens=[3, 16, 1, 7])
    assert rows.lengths.tolist() == [3, 16, 1, 7] and (rows.tokens[1, :6] == greedy.tokens[0]).all()
    assert rows.finish_reason.tolist() == [FINISH_LENGTH] * 4 and not rows.tokens[0, 3:].any()
    for bad in ([3, 16, 1], [0, 1, 1, 1], [17, 1, 1, 1]):
        with pytest.raises(ValueError, match="max_tokens needs 4 limits in"):
            s.generate_ids(PROMPTS[:2], SamplingConfig(max_new_tokens=16, temperature=0.0, n=2), max_tokens=bad)


def test_stop_strings_match_generated_text_across_token_boundaries(models):
    mesh, made = models
    graphdef, params = made["gpt2"]
    s = sampler(mesh, graphdef, params)
    full = run(mesh, graphdef, params, PROMPTS, SamplingConfig(max_new_tokens=16, temperature=0.0))
    text = Tok().decode(full[1])
    # a string spanning tokens 4..6 of row 1 (its first occurrence ends at token 6)
    stop = text[4:7]
    end = text.index(stop) + len(stop)
    out = s.generate_ids(PROMPTS, SamplingConfig(max_new_tokens=16, temperature=0.0, stop_strings=(stop,)))
    assert out.tokens[1, :out.lengths[1]].tolist() == full[1][:end]
    assert int(out.finish_reason[1]) == FINISH_STOP
    for r in (0, 2):   # the other rows stop only where the string occurs in their own text
        own = Tok().decode(full[r])
        cut = own.index(stop) + len(stop) if stop in own else 16
        assert int(out.lengths[r]) == cut and int(out.finish_reason[r]) == (FINISH_STOP if stop in own else FINISH_LENGTH)


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
    assert err.startswith("lmforge: error: ") and "is neither a run folder" in err and "\n" not in err


@pytest.mark.parametrize("name", ["llama", "llama_scan"])
def test_decoding_writes_the_kv_cache_in_place(models, name):
    """The decode loop keeps every layer's cache in one (L, B, S, K, H) buffer that each layer
    updates in place: no layer's cache is sliced out and no stack of the layers is rebuilt per
    token (which copied the whole cache three times a token: benchmarks/README.md, KV cache). The
    loop's body is what runs per token; the prefill before it may lay the cache out for its dots.
    A layout copy (``copy(transpose)``) for the grouped-query dots is allowed: under ``nnx.scan``
    XLA:CPU makes one of the whole cache per token, still 1.4-1.8x faster than repeating K/V
    (``benchmarks/gqa_decode.py --scan-layers``)."""
    mesh, made = models
    graphdef, params = made[name]
    cfg = CONFIGS[name]
    b, p, m = 2, 16, 16
    hlo = loop_hlo(compiled_generate(mesh, graphdef, params, cfg, b=b, p=p, m=m))   # per token: the loop
    whole = f"f32[{cfg.num_layers},{b},{p + m},{cfg.kv_heads},{cfg.dims_per_head}]"
    layer = f"f32[{b},{p + m},{cfg.kv_heads},{cfg.dims_per_head}]"
    assert "dynamic-update-slice(" in hlo and whole in hlo
    # (a copy of the zeros that init_cache broadcast happens once, before the loop)
    rebuilt = [line for line in hlo.splitlines() if f"= {whole}" in line and (
        "concatenate(" in line or (" copy(" in line and "broadcast" not in line and "transpose" not in line))]
    sliced = [line for line in hlo.splitlines() if f"= {layer}" in line and (" slice(" in line or " copy(" in line)]
    assert not rebuilt and not sliced, (rebuilt + sliced)[:3]


@pytest.mark.parametrize("name", ["llama", "llama_scan"])
def test_decoding_reads_grouped_kv_heads_as_they_are(models, name):
    """With a cache (no backward pass) a GQA model's attention reads the K/V heads grouped on every
    backend: repeating them for each query head, the CPU default for training, copied each layer's
    cache G times per token (decoding 1.4-2.1x slower on CPU: benchmarks/gqa_decode.py)."""
    mesh, made = models
    graphdef, params = made[name]
    cfg = CONFIGS[name]
    assert cfg.kv_heads < cfg.num_heads
    b, p, m = 2, 16, 16
    hlo = loop_hlo(compiled_generate(mesh, graphdef, params, cfg, b=b, p=p, m=m))
    groups, h = cfg.num_heads // cfg.kv_heads, cfg.dims_per_head
    repeated = [line for line in hlo.splitlines() if f"= f32[{b},{p + m},{cfg.num_heads},{h}]" in line
                or f"= f32[{b},{p + m},{cfg.kv_heads},{groups},{h}]" in line]
    assert not repeated, repeated[:2]


def test_batch_1_decoding_reads_a_tied_table_in_place(models):
    """The tied head is ``x @ table^T`` over the table's own layout: through a transposed (D, V) view
    the batch-1 matrix-vector product made XLA:CPU copy the whole table, transposed, every token."""
    mesh, made = models
    graphdef, params = made["gpt2"]
    cfg = CONFIGS["gpt2"]
    assert cfg.tie_embeddings
    hlo = compiled_generate(mesh, graphdef, params, cfg, b=1, greedy=True)
    d, v = cfg.embed_dim, cfg.vocab_size
    copies = [line for line in hlo.splitlines() if (f"[{d},{v}]" in line or f"[{v},{d}]" in line)
              and (" transpose(" in line or " copy(" in line)]
    assert not copies, copies[:2]
