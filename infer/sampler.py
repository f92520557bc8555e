"""The one sampler: prefill + decode over a KV cache, returning arrays.

    out = generate(graphdef, params, prompts, prompt_mask, rng, SamplingConfig(temperature=0.7, n=4))
    out.tokens, out.logprobs, out.mask, out.lengths, out.finish_reason   # (B·n, M) / (B·n,)

Everything that generates — a run's end-of-training samples, ``lmforge sample``, RL rollouts, the
evaluation harness, tools, serving — calls :func:`generate` (text in and out is ``infer.text``).
Samplers return arrays, not strings (STYLE rule 14): the tokens, the log-probabilities of each
sampled token under the model (``logprobs``: temperature 1, no filtering — what a policy-gradient
ratio or a KL needs, equal to a teacher-forced forward pass over the same tokens) and under the
distribution actually sampled (``sampling_logprobs``: after temperature, top-k and top-p), a mask
of the generated positions, lengths and why each row stopped; with ``top_logprobs=K`` also the K
most likely ids at each step and their log-probs under the model (``top_ids``, ``top_logprobs``:
OpenAI's ``top_logprobs``, vLLM's ``logprobs=K`` with its raw log-probs), taken from the same
log-softmax as ``logprobs``, so a greedy token's log-prob equals its top entry exactly.

Choices:
- Prompts are left-padded to one width (padding has segment id 0, so no real token attends to
  it; real tokens' positions start at 0 in every row), so every row writes the same cache slot at
  each decode step: a plain ``dynamic_update_slice``.
- ``n`` samples per prompt: the prompt is prefilled once and its cache repeated n times.
- Temperature, top-k, top-p and the per-row token limits are traced arrays (one per row):
  changing their values never recompiles, only the kind of program (greedy, sampling, filtered:
  below) is static. What else is static — the batch, prompt and generation widths — is bucketed
  (:func:`bucket`: 16, 32, 64, ... ) by the callers in ``infer.text``, so a bounded set of shapes
  is ever compiled. Rows stop at their own limit.
- One sort per step serves top-k (a traced k) and top-p; top-p is applied to the top-k
  distribution (as Hugging Face's processors chain them). Whether that sort runs at all is static
  (``top_k > 0 or top_p < 1``), and so is greedy decoding (``temperature == 0``: the argmax, no
  random draw over the vocabulary, no sort): a program that never filters has no sort, and a
  ``lax.cond`` inside the step would make XLA:GPU's runtime read its predicate back to the host
  every token (``ConditionalThunk``). So a process compiles at most three programs per shape
  (greedy, sampling, sampling with the filter), and any values of the knobs run on the one of their
  kind compiled first. A token is kept while the mass before it is below
  ``top_p - TOP_P_TOLERANCE``: float32 sums that should reach ``top_p`` exactly (0.5 + 0.3 =
  0.79999995) would otherwise keep one token too many. The most likely token is always kept. ``temperature == 0`` is greedy (its sampling log-prob is 0: a point mass).
- Stop token ids end a row (the stop token is included and counted). Stop *strings* are matched
  on the device against the bytes of the generated text: a rolling window of the last bytes of
  each row is updated from a (V, L) table of each token's bytes, and a row stops when one of the
  strings occurs in the window — whatever tokenization produced it. ``infer.text.stop_table``
  builds the tables from a tokenizer.
- Ids at or past ``vocab_limit`` (vocabulary padding) are never sampled.
- The loop is one jitted ``lax.while_loop`` that ends when every row has stopped, checked every
  ``check_every`` steps: on a GPU each check is a host round trip (XLA:GPU's ``WhileThunk`` copies
  the predicate to the host and blocks until the device is idle, so the host cannot queue the next
  token's kernels ahead), so there the loop runs chunks of ``DEFAULT_CHECK_EVERY_GPU`` steps, an
  inner loop of known trip count that XLA runs without a check. Steps past a row's end leave its
  outputs untouched; at most ``check_every - 1`` steps are computed after the last row stops.
  On CPU and TPU the predicate stays on the device's side and each step is checked.
- Streaming (``generate(..., stream=fn)``): after each step a host callback
  (``jax.experimental.io_callback``) hands ``fn`` that step's tokens, and ``fn`` may end the
  generation there (finish reason ``"cancelled"``: a chat's Ctrl-C, a server's closed connection).
  The callback is traced only when a stream is given, so without one the compiled program is the
  one above, untouched; with one there is one more compile per shape, shared by every stream (the
  stream is named by a traced id, not baked into the program). Its operands are gathered to one
  replicated copy first, so a sharded batch reaches the host whole. The price is a host round trip
  per step: 0.3-0.5 ms per callback on the 2-core CPU (busy with other jobs, 2026-11-30), which took
  a 4-layer d256 Llama at batch 1 from 252 to 170 tokens/s (a 2-layer d64 one from 3860 to 830).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import threading
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import io_callback

NEG_INF = -1e30
TOP_P_TOLERANCE = 1e-6
FINISH_LENGTH, FINISH_STOP, FINISH_CANCELLED = 0, 1, 2   # finish_reason codes: the row's token limit, a stop
FINISH_NAMES = ("length", "stop", "cancelled")              # token or string, the stream said stop
DEFAULT_CHECK_EVERY_GPU = 8   # decode steps between the host's checks of "has every row stopped?" on a GPU

# A stream: fn(step, tokens (R,) int32, live (R,) bool) -> True to stop every row after this step.
Stream = Callable[[int, np.ndarray, np.ndarray], bool]


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """What to sample. ``max_new_tokens`` and ``n`` shape the computation, and the kind of program is
    static (greedy when ``temperature == 0``; top-k / top-p filtering on or off); the values are traced."""
    max_new_tokens: int = 200
    temperature: float = 1.0        # 0 → greedy
    top_k: int = 0                  # 0 → off
    top_p: float = 1.0              # 1.0 → off
    n: int = 1                      # samples per prompt
    stop_token_ids: tuple[int, ...] = ()
    stop_strings: tuple[str, ...] = ()
    top_logprobs: int = 0           # K > 0: the K most likely ids and their log-probs at each step (static)

    def __post_init__(self):
        problems = [msg for bad, msg in (
            (self.max_new_tokens < 1, f"max_new_tokens={self.max_new_tokens} must be >= 1"),
            (not self.temperature >= 0, f"temperature={self.temperature} must be >= 0"),
            (self.top_k < 0, f"top_k={self.top_k} must be >= 0"),
            (not 0 < self.top_p <= 1, f"top_p={self.top_p} must be in (0, 1]"),
            (self.n < 1, f"n={self.n} must be >= 1"),
            (self.top_logprobs < 0, f"top_logprobs={self.top_logprobs} must be >= 0"),
            (any(not s for s in self.stop_strings), "stop_strings must not hold an empty string"),
        ) if bad]
        if problems:
            raise ValueError(f"sampling: {'; '.join(problems)}")


class SamplerOutput(NamedTuple):
    """Rows are prompt-major: row ``r`` continues prompt ``r // n`` (``prompt_index``)."""
    tokens: jax.Array             # (R, M) int32; 0 past each row's length
    logprobs: jax.Array           # (R, M) float32: log p(token) under the model (temperature 1, unfiltered)
    sampling_logprobs: jax.Array  # (R, M) float32: under the sampled distribution (0 for greedy)
    mask: jax.Array               # (R, M) bool: a generated position (the stop token included)
    lengths: jax.Array            # (R,) int32
    finish_reason: jax.Array      # (R,) int32: FINISH_LENGTH, FINISH_STOP or FINISH_CANCELLED (a stream stopped it)
    prompt_index: jax.Array       # (R,) int32
    top_ids: jax.Array | None = None        # (R, M, K) int32: the K most likely ids at each step, best first
    top_logprobs: jax.Array | None = None   # (R, M, K) float32: their log-probs under the model (as ``logprobs``)


class StopStrings(NamedTuple):
    """Stop strings as arrays for the device (``infer.text.stop_table`` builds them)."""
    token_bytes: jax.Array        # (V, L) int16: each token's bytes, left-aligned, -1 padded
    token_lengths: jax.Array      # (V,) int32
    strings: jax.Array            # (S, P) int16: each stop string's bytes, -1 padded
    string_lengths: jax.Array     # (S,) int32; 0 for padding rows (never match)


def bucket(x: int, smallest: int = 16) -> int:
    """The compiled width for a size ``x``: ``smallest``, then powers of two."""
    width = smallest
    while width < x:
        width *= 2
    return width


def filter_logits(logits: jax.Array, top_k: jax.Array, top_p: jax.Array) -> jax.Array:
    """(R, V) float32 logits with everything outside top-k, then top-p, set to NEG_INF.

    ``top_k``, ``top_p``: scalars or (R,) arrays (traced); 0 and 1.0 switch them off.
    """
    r, v = logits.shape
    top_k = jnp.broadcast_to(jnp.asarray(top_k, jnp.int32), (r,))
    top_p = jnp.broadcast_to(jnp.asarray(top_p, jnp.float32), (r,))
    ordered = -jnp.sort(-logits, axis=-1)                                          # (R, V) descending
    k = jnp.where((top_k > 0) & (top_k < v), top_k, v)
    rank = jnp.arange(v)[None, :]
    ordered = jnp.where(rank < k[:, None], ordered, NEG_INF)                        # the top-k set
    probs = jax.nn.softmax(ordered, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs                                    # mass ranked above
    keep = (before < top_p[:, None] - TOP_P_TOLERANCE) | (rank == 0) | (top_p[:, None] >= 1.0)
    keep &= rank < k[:, None]
    threshold = jnp.min(jnp.where(keep, ordered, jnp.inf), axis=-1)               # (R,) smallest kept logit
    return jnp.where(logits >= threshold[:, None], logits, NEG_INF)


def sample_token(logits: jax.Array, rng: jax.Array, temperature: jax.Array, top_k: jax.Array,
                 top_p: jax.Array, *, filtering: bool = True, greedy: bool = False) -> tuple[jax.Array, jax.Array]:
    """(R, V) float32 logits -> (tokens (R,) int32, their log-prob under the sampled distribution (R,)).

    Rows with ``temperature == 0`` take the argmax (log-prob 0). ``filtering`` (static): apply
    :func:`filter_logits` with ``top_k`` / ``top_p``; False skips its sort and ignores both (the
    caller knows every row has them off). ``greedy`` (static): every row takes the argmax (the
    caller knows every temperature is 0): no draw, no filter.
    """
    if greedy:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32), jnp.zeros(logits.shape[:1], jnp.float32)
    r = logits.shape[0]
    temperature = jnp.broadcast_to(jnp.asarray(temperature, jnp.float32), (r,))
    greedy = temperature <= 0
    scaled = logits / jnp.where(greedy, 1.0, temperature)[:, None]
    filtered = filter_logits(scaled, top_k, top_p) if filtering else scaled
    drawn = jax.random.categorical(rng, filtered, axis=-1).astype(jnp.int32)
    tokens = jnp.where(greedy, jnp.argmax(logits, axis=-1).astype(jnp.int32), drawn)
    lp = jnp.take_along_axis(jax.nn.log_softmax(filtered, axis=-1), tokens[:, None], axis=-1)[:, 0]
    return tokens, jnp.where(greedy, 0.0, lp)


def _model_logprobs(logits: jax.Array, tokens: jax.Array, vocab_ok: jax.Array, k: int):
    """``tokens``' log-probs (R,) under ``softmax(logits)`` and, with ``k`` > 0, the ``k`` most likely
    ids below the vocabulary limit and their log-probs ((R, k) each; else None), from one log-softmax."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    lp = jnp.take_along_axis(logp, tokens[:, None], axis=-1)[:, 0]
    if not k:
        return lp, None
    top_lp, top_id = jax.lax.top_k(jnp.where(vocab_ok, logp, NEG_INF), k)
    return lp, (top_id.astype(jnp.int32), top_lp)


def _append_bytes(tail: jax.Array, tokens: jax.Array, stop: StopStrings) -> jax.Array:
    """The last W bytes of each row after appending ``tokens``' bytes: (R, W) int16."""
    w = tail.shape[1]
    full = jnp.concatenate([tail, stop.token_bytes[tokens]], axis=1)               # (R, W + L)
    n = stop.token_lengths[tokens]
    return jax.vmap(lambda row, s: jax.lax.dynamic_slice(row, (s,), (w,)))(full, n)


def _stop_hit(tail: jax.Array, stop: StopStrings) -> jax.Array:
    """(R,) bool: one of the stop strings occurs in the rolling byte window."""
    r, w = tail.shape
    s, p = stop.strings.shape
    padded = jnp.concatenate([tail, jnp.full((r, p), -1, tail.dtype)], axis=1)     # (R, W + P)
    windows = jax.vmap(lambda o: jax.lax.dynamic_slice_in_dim(padded, o, p, axis=1), out_axes=1)(jnp.arange(w))
    # windows (R, W, P) vs strings (S, P): a byte past a string's length always matches.
    beyond = jnp.arange(p)[None, :] >= stop.string_lengths[:, None]                 # (S, P)
    same = (windows[:, :, None, :] == stop.strings[None, None, :, :]) | beyond[None, None]
    return jnp.any(jnp.all(same, axis=-1) & (stop.string_lengths > 0)[None, None, :], axis=(1, 2))


class _Sink:
    """A registered stream and the first exception it raised (re-raised by ``generate``)."""

    def __init__(self, fn: Stream):
        self.fn, self.error = fn, None


_SINKS: dict[int, _Sink] = {}
_SINK_IDS = itertools.count(1)
_SINKS_LOCK = threading.Lock()


def _deliver(stream_id, step, tokens, live) -> np.ndarray:
    """The host side of the streaming callback: hands one step to its stream; True stops the rows."""
    sink = _SINKS.get(int(stream_id))
    if sink is None or sink.error is not None:   # generate() has given up on it: stop
        return np.bool_(True)
    try:
        return np.bool_(bool(sink.fn(int(step), np.asarray(tokens), np.asarray(live))))
    except BaseException as e:   # noqa: BLE001 -- raised again on the caller's thread by generate()
        sink.error = e
        return np.bool_(True)


def _emit(stream, step, tokens, live) -> jax.Array:
    """Sends one step's tokens (R,) and live rows (R,) to the host stream; a () bool: stop now."""
    if not jax.sharding.get_abstract_mesh().empty:   # one whole copy for the host, not a gather per shard
        tokens, live = (jax.lax.with_sharding_constraint(x, jax.sharding.PartitionSpec()) for x in (tokens, live))
    return io_callback(_deliver, jax.ShapeDtypeStruct((), jnp.bool_), stream, step, tokens, live)


def default_check_every() -> int:
    """Decode steps between checks of whether every row has stopped, for the default backend:
    ``DEFAULT_CHECK_EVERY_GPU`` on a GPU (each check is a host round trip there), 1 elsewhere."""
    return DEFAULT_CHECK_EVERY_GPU if jax.default_backend() in ("gpu", "cuda", "rocm") else 1


@functools.partial(jax.jit, static_argnames=("graphdef", "max_new_tokens", "n", "vocab_limit", "greedy",
                                             "filtering", "check_every", "num_top"))
def _generate(graphdef, params, prompts, prompt_mask, rng, temperature, top_k, top_p, max_tokens, stop_ids,
              stop_strings, encoder, stream, *, max_new_tokens: int, n: int, vocab_limit: int, greedy: bool,
              filtering: bool, check_every: int, num_top: int = 0) -> SamplerOutput:
    model = nnx.merge(graphdef, params)
    b, p = prompts.shape
    rows, m = b * n, max_new_tokens
    segments = prompt_mask.astype(jnp.int32)
    positions = jnp.maximum(jnp.cumsum(segments, axis=1) - 1, 0).astype(jnp.int32)
    if encoder is None:
        cache = model.init_cache(b, p + m)
    else:   # an encoder-decoder: the encoder runs once, its keys/values wait in the cache
        cache = model.init_cache(b, p + m, encoder_tokens=encoder[0], encoder_segment_ids=encoder[1])
    logits, cache = model(prompts, positions=positions, segment_ids=segments, cache=cache)
    repeat = (lambda x: x) if n == 1 else (lambda x: jnp.repeat(x, n, axis=0) if x.ndim and x.shape[0] == b else x)
    if n > 1:   # the prompt was prefilled once; each of its n samples gets a copy of its cache
        cache = {k: (jnp.repeat(v, n, axis=1) if k in ("k", "v", "memory_k", "memory_v") else repeat(v))
                 for k, v in cache.items()}
    last = repeat(logits[:, -1].astype(jnp.float32))                                 # (R, V)
    next_pos = repeat(positions[:, -1] + 1)
    limits = jnp.clip(max_tokens, 1, m)
    vocab_ok = jnp.arange(last.shape[-1]) < vocab_limit

    def pick(logits, i):
        tok, slp = sample_token(jnp.where(vocab_ok, logits, NEG_INF), jax.random.fold_in(rng, i),
                                temperature, top_k, top_p, filtering=filtering, greedy=greedy)
        lp, top = _model_logprobs(logits, tok, vocab_ok, num_top)
        return tok, lp, slp, top

    def finished(tok, tail, i):
        hit = jnp.isin(tok, stop_ids)
        if stop_strings is not None:
            tail = _append_bytes(tail, tok, stop_strings)
            hit |= _stop_hit(tail, stop_strings)
        return hit, tail

    tail = None if stop_strings is None else jnp.full(
        (rows, stop_strings.strings.shape[1] + stop_strings.token_bytes.shape[1]), -1, jnp.int16)
    tok, lp, slp, top = pick(last, 0)
    hit, tail = finished(tok, tail, 0)
    done = hit | (limits <= 1)
    cancel = None
    if stream is not None:   # every row's first token; the host may stop them all here
        cancel = _emit(stream, jnp.int32(0), tok, jnp.ones((rows,), jnp.bool_)) & ~done
        done |= cancel
    out = jnp.zeros((rows, m), jnp.int32).at[:, 0].set(tok)
    out_lp = jnp.zeros((rows, m), jnp.float32).at[:, 0].set(lp)
    out_slp = jnp.zeros((rows, m), jnp.float32).at[:, 0].set(slp)
    lengths = jnp.where(done, 1, m)
    finish = jnp.where(hit, FINISH_STOP, FINISH_LENGTH)
    if cancel is not None:
        finish = jnp.where(cancel, FINISH_CANCELLED, finish)
    tops = None if top is None else tuple(jnp.zeros((rows, m, num_top), x.dtype).at[:, 0].set(x) for x in top)
    state = (jnp.int32(1), tok, next_pos, cache, out, out_lp, out_slp, done, lengths, finish, tail, tops)

    def cond(s):
        return (s[0] < m) & ~jnp.all(s[7])

    def body(s):
        i, tok, pos, cache, out, out_lp, out_slp, done, lengths, finish, tail, tops = s
        # A module of this trace level: nnx transforms inside the model (nnx.scan over stacked layers)
        # refuse one merged outside the loop.
        step_model = nnx.merge(graphdef, params)
        logits, cache = step_model(tok[:, None], positions=pos[:, None],
                                   segment_ids=jnp.ones((rows, 1), jnp.int32), cache=cache)
        nxt, lp, slp, top = pick(logits[:, -1].astype(jnp.float32), i)
        nxt = jnp.where(done, 0, nxt)
        # A finished row keeps column i as it is (0 before step M; a step past the last of a chunked
        # loop, i >= M, has every row finished and its out-of-bounds write dropped anyway).
        out, out_lp, out_slp = (a.at[:, i].set(jnp.where(done, a[:, i], x))
                                for a, x in ((out, nxt), (out_lp, lp), (out_slp, slp)))
        if tops is not None:
            tops = tuple(a.at[:, i].set(jnp.where(done[:, None], a[:, i], x)) for a, x in zip(tops, top))
        hit, tail = finished(nxt, tail, i)
        hit &= ~done
        at_limit = ~done & ~hit & (i + 1 >= limits)
        if stream is not None:   # a row the host stops ends here like one at its limit, but "cancelled"
            cancel = _emit(stream, i, nxt, ~done) & ~done & ~hit & ~at_limit
            finish = jnp.where(cancel, FINISH_CANCELLED, finish)
            at_limit |= cancel
        lengths = jnp.where(hit | at_limit, i + 1, lengths)
        finish = jnp.where(hit, FINISH_STOP, finish)
        return i + 1, nxt, pos + 1, cache, out, out_lp, out_slp, done | hit | at_limit, lengths, finish, tail, tops

    def chunk(s):   # a known trip count: XLA:GPU runs it without reading anything back to the host
        return jax.lax.fori_loop(0, check_every, lambda _, s: body(s), s)

    _, _, _, _, out, out_lp, out_slp, _, lengths, finish, _, tops = jax.lax.while_loop(
        cond, body if check_every == 1 else chunk, state)
    lengths = jnp.minimum(lengths, limits)
    mask = jnp.arange(m)[None, :] < lengths[:, None]
    if tops is None:   # K = 0: empty (R, M, 0) arrays, so every output has the same fields
        tops = (jnp.zeros((rows, m, 0), jnp.int32), jnp.zeros((rows, m, 0), jnp.float32))
    return SamplerOutput(tokens=jnp.where(mask, out, 0), logprobs=jnp.where(mask, out_lp, 0.0),
                         sampling_logprobs=jnp.where(mask, out_slp, 0.0), mask=mask, lengths=lengths,
                         finish_reason=finish, prompt_index=jnp.arange(rows, dtype=jnp.int32) // n,
                         top_ids=jnp.where(mask[..., None], tops[0], 0),
                         top_logprobs=jnp.where(mask[..., None], tops[1], 0.0))


def generate(graphdef, params, prompts: jax.Array, prompt_mask: jax.Array, rng: jax.Array, cfg: SamplingConfig, *,
             max_tokens: jax.Array | None = None, stop_strings: StopStrings | None = None,
             vocab_limit: int | None = None, encoder_tokens: jax.Array | None = None,
             encoder_mask: jax.Array | None = None, stream: Stream | None = None,
             check_every: int | None = None) -> SamplerOutput:
    """Samples ``cfg.n`` continuations of each prompt; pure and jittable without ``stream`` (call it under
    the mesh and axis rules the params were created with: ``jax.set_mesh`` + ``lmforge.model.axis_rules``).

    Args:
      graphdef: the model's graph (``nnx.split``); params: its parameters.
      prompts: (B, P) int32, left-padded; prompt_mask: (B, P), 1 on real tokens (each row >= 1).
      rng: a PRNG key.
      cfg: sampling settings; ``max_new_tokens`` (M), ``n`` and the kind (greedy, sampling, filtered)
        are static, the values of temperature, top-k and top-p traced.
      max_tokens: (B·n,) per-row limits (<= M); default M for every row.
      stop_strings: device tables for ``cfg.stop_strings`` (``infer.text.stop_table``).
      vocab_limit: ids >= this are never sampled (vocabulary padding); default: none.
      encoder_tokens, encoder_mask: (B, S) encoder inputs of an encoder-decoder model.
      stream: a host function ``stream(step, tokens, live) -> bool`` called after every step, in
        order, on a runtime thread, while the loop runs: ``tokens`` (R,) int32 are the ids sampled at
        position ``step`` (column ``step`` of the result), ``live`` (R,) bool marks the rows that
        sampled one (a row is live up to and including its stop token). Returning True ends every
        row still going after this step (finish reason FINISH_CANCELLED). With a stream the call
        waits for the result (it is not traceable); without one nothing of this is compiled in.
      check_every: decode steps between checks of whether every row has stopped (static; default
        :func:`default_check_every`: 8 on a GPU, 1 elsewhere; always 1 with a stream, which sees
        every step). The result does not depend on it.

    Returns:
      SamplerOutput with R = B·n rows and M = ``cfg.max_new_tokens`` columns; ``top_ids`` and
      ``top_logprobs`` (R, M, K) with K = ``cfg.top_logprobs`` (K = 0: empty), 0 past each row's length.

    Raises:
      ValueError: ``cfg.stop_strings`` without ``stop_strings`` tables, or mismatched shapes.
      Whatever ``stream`` raised (after the generation stopped at that step).
    """
    if prompts.ndim != 2 or prompts.shape != prompt_mask.shape:
        raise ValueError(f"generate: prompts and prompt_mask must both be (B, P); got {prompts.shape}, "
                         f"{prompt_mask.shape}")
    if cfg.stop_strings and stop_strings is None:
        raise ValueError("generate: cfg.stop_strings needs their byte tables (infer.text.stop_table)")
    if check_every is not None and check_every < 1:
        raise ValueError(f"generate: check_every={check_every} must be >= 1")
    rows = prompts.shape[0] * cfg.n
    if max_tokens is None:
        max_tokens = jnp.full((rows,), cfg.max_new_tokens, jnp.int32)
    knobs = [jnp.broadcast_to(jnp.asarray(v, dt), (rows,)) for v, dt in
             ((cfg.temperature, jnp.float32), (cfg.top_k, jnp.int32), (cfg.top_p, jnp.float32))]
    stop_ids = jnp.asarray(cfg.stop_token_ids if cfg.stop_token_ids else (-1,), jnp.int32)
    encoder = None if encoder_tokens is None else (
        encoder_tokens, jnp.ones_like(encoder_tokens) if encoder_mask is None else encoder_mask.astype(jnp.int32))
    run = functools.partial(
        _generate, graphdef, params, prompts.astype(jnp.int32), prompt_mask, rng, *knobs,
        jnp.asarray(max_tokens, jnp.int32), stop_ids, stop_strings if cfg.stop_strings else None, encoder,
        max_new_tokens=cfg.max_new_tokens, n=cfg.n, vocab_limit=int(vocab_limit) if vocab_limit is not None else 1 << 30,
        greedy=cfg.temperature == 0, filtering=cfg.temperature > 0 and (cfg.top_k > 0 or cfg.top_p < 1.0),
        num_top=cfg.top_logprobs)
    if stream is None:
        return run(None, check_every=min(check_every or default_check_every(), max(cfg.max_new_tokens - 1, 1)))
    with _SINKS_LOCK:
        key = next(_SINK_IDS)
        sink = _SINKS[key] = _Sink(stream)
    try:   # the id is traced: every stream shares one compiled program per shape
        out = jax.block_until_ready(run(jnp.asarray(key, jnp.int32), check_every=1))
    finally:
        with _SINKS_LOCK:
            del _SINKS[key]
    if sink.error is not None:
        raise sink.error
    return out
