"""The one KV-cache sampler: prefill + decode, greedy / temperature / top-k / top-p, stop tokens.

Everything that generates text (eval samples, RL rollouts, tools, serving) calls
:func:`generate`. The whole decode loop is one jitted ``lax.while_loop`` that exits early when
every row has produced a stop token.

Choices:
- Prompts of different lengths are *left*-padded to a common length (rounded up to a multiple of
  16 to limit recompiles); padding has segment id 0, so no real token attends to it, and real
  tokens' positions start at 0 in every row. The new tokens then sit at the same cache slot in
  every row, which keeps the decode step a plain ``dynamic_update_slice``.
- ``temperature == 0`` is greedy. Top-k then top-p (nucleus; Holtzman et al. 2020) filtering
  happen on temperature-scaled logits; the highest-probability token is always kept.
- Logits of ids at or past ``vocab_limit`` (vocabulary padding) are never sampled.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

NEG_INF = -1e30


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    max_new_tokens: int = 200
    temperature: float = 1.0
    top_k: int = 0          # 0 → off
    top_p: float = 1.0      # 1.0 → off

    def __post_init__(self):
        if self.max_new_tokens < 1 or self.temperature < 0 or self.top_k < 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"sampling: need max_new_tokens >= 1, temperature >= 0, top_k >= 0, "
                             f"0 < top_p <= 1; got {self}")


def filter_logits(logits: jax.Array, *, top_k: int, top_p: float) -> jax.Array:
    """(B, V) float32 logits with everything outside the top-k / top-p set at -inf."""
    if top_k and top_k < logits.shape[-1]:     # top_k >= V keeps everything (as nanoGPT's min(k, V))
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
        logits = jnp.where(logits < kth, NEG_INF, logits)
    if top_p < 1.0:
        order = jnp.argsort(-logits, axis=-1)
        sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        # Keep a token if the mass *before* it is < top_p (so the top token is always kept).
        keep_sorted = (jnp.cumsum(probs, axis=-1) - probs) < top_p
        keep = jnp.zeros_like(keep_sorted).at[jnp.arange(logits.shape[0])[:, None], order].set(keep_sorted)
        logits = jnp.where(keep, logits, NEG_INF)
    return logits


def sample_token(logits: jax.Array, rng: jax.Array, *, temperature: float, top_k: int, top_p: float) -> jax.Array:
    """(B, V) logits -> (B,) int32 token ids."""
    if temperature == 0.0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = filter_logits(logits.astype(jnp.float32) / temperature, top_k=top_k, top_p=top_p)
    return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("graphdef", "cfg", "stop_tokens", "vocab_limit"))
def _generate(graphdef, params, tokens, segment_ids, rng, encoder=None, *, cfg: SamplingConfig,
              stop_tokens: tuple[int, ...], vocab_limit: int):
    model = nnx.merge(graphdef, params)
    b, p = tokens.shape
    positions = jnp.maximum(jnp.cumsum(segment_ids, axis=1) - 1, 0).astype(jnp.int32)
    if encoder is None:
        cache = model.init_cache(b, p + cfg.max_new_tokens)
    else:   # an encoder-decoder: the encoder runs once, its keys/values wait in the cache
        cache = model.init_cache(b, p + cfg.max_new_tokens, encoder_tokens=encoder[0], encoder_segment_ids=encoder[1])
    logits, cache = model(tokens, positions=positions, segment_ids=segment_ids, cache=cache)
    next_pos = positions[:, -1] + 1                                                     # (B,)
    stops = jnp.asarray(stop_tokens if stop_tokens else (-1,), jnp.int32)

    def pick(logits, rng):
        logits = jnp.where(jnp.arange(logits.shape[-1]) < vocab_limit, logits, NEG_INF)
        return sample_token(logits, rng, temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p)

    out = jnp.zeros((b, cfg.max_new_tokens), jnp.int32)
    first = pick(logits[:, -1], jax.random.fold_in(rng, 0))
    done = jnp.isin(first, stops)
    state = (1, first, next_pos, cache, out.at[:, 0].set(first), done, jnp.where(done, 1, cfg.max_new_tokens))

    def cond(s):
        i, _, _, _, _, done, _ = s
        return (i < cfg.max_new_tokens) & ~jnp.all(done)

    def body(s):
        i, tok, pos, cache, out, done, lengths = s
        logits, cache = model(tok[:, None], positions=pos[:, None], segment_ids=jnp.ones((b, 1), jnp.int32),
                              cache=cache)
        nxt = pick(logits[:, -1], jax.random.fold_in(rng, i))
        nxt = jnp.where(done, 0, nxt)
        out = out.at[:, i].set(nxt)
        hit = ~done & jnp.isin(nxt, stops)
        lengths = jnp.where(hit, i + 1, lengths)
        return i + 1, nxt, pos + 1, cache, out, done | hit, lengths

    *_, out, _, lengths = jax.lax.while_loop(cond, body, state)
    return out, lengths


def generate(graphdef, params, prompts: Sequence[Sequence[int]], cfg: SamplingConfig, *, rng: jax.Array,
             stop_tokens: Sequence[int] = (), vocab_limit: int | None = None, max_seq_len: int | None = None,
             pad_id: int = 0, encoder_inputs: Sequence[Sequence[int]] | None = None) -> list[list[int]]:
    """Continues each prompt (a list of token ids); returns the new ids of each, stop token included.

    For an encoder-decoder model, ``encoder_inputs`` (one id list per prompt) is what the encoder
    reads and ``prompts`` start the decoder (usually just BOS).

    Call under the mesh/axis rules the params were created with (``jax.set_mesh`` + ``axis_rules``).
    ``max_seq_len`` defaults to the model's. When a prompt plus ``max_new_tokens`` would pass it,
    generation goes on in windows of at most ``max_seq_len - max_seq_len // 2`` new tokens (fewer
    in the first when the prompt leaves less room): after each, the model re-reads the last
    ``max_seq_len // 2`` tokens (a fresh prefill at positions 0..) and continues from there, as
    nanoGPT's ``sample.py`` crops its context to the block size, but re-prefilling once per
    half-window instead of at every token.
    """
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("generate: every prompt needs at least one token (encode a BOS token for an empty prompt)")
    if max_seq_len is None:
        max_seq_len = getattr(getattr(nnx.merge(graphdef, params), "cfg", None), "max_seq_len", None)
    longest = max(len(p) for p in prompts)
    if encoder_inputs is not None:
        if len(encoder_inputs) != len(prompts) or any(len(e) == 0 for e in encoder_inputs):
            raise ValueError("generate: encoder_inputs needs one non-empty id list per prompt")
        if max_seq_len is not None and longest + cfg.max_new_tokens > max_seq_len:
            raise ValueError(f"generate: an encoder-decoder decodes at most max_seq_len={max_seq_len} tokens; "
                             f"lower max_new_tokens")
        return _generate_batch(graphdef, params, prompts, cfg, rng, stop_tokens, vocab_limit, pad_id, encoder_inputs)
    if max_seq_len is None or longest + cfg.max_new_tokens <= max_seq_len:
        return _generate_batch(graphdef, params, prompts, cfg, rng, stop_tokens, vocab_limit, pad_id)
    if longest >= max_seq_len:
        raise ValueError(f"generate: a prompt of {longest} tokens leaves no room to generate within the model's "
                         f"max_seq_len={max_seq_len}; shorten the prompt")
    keep = max(max_seq_len // 2, 1)
    # Every window after the first reads `keep` tokens and writes max_seq_len - keep, padded to one
    # width, and the last one is cut rather than shortened: one compiled shape for all of them (and
    # for the first too when the prompts fit in `keep`).
    min_width, per_window = keep, max_seq_len - keep
    outs: list[list[int]] = [[] for _ in prompts]
    live = list(range(len(prompts)))                # rows that have not hit a stop token
    contexts = [list(p) for p in prompts]
    remaining, window = cfg.max_new_tokens, 0
    while live and remaining:
        n = min(per_window, max_seq_len - max(len(contexts[i]) for i in live))
        chunk = _generate_batch(graphdef, params, [contexts[i] for i in live],
                                dataclasses.replace(cfg, max_new_tokens=n),
                                rng if window == 0 else jax.random.fold_in(rng, window),
                                stop_tokens, vocab_limit, pad_id, min_width=min_width)
        still = []
        for i, new in zip(live, chunk):
            new = new[:remaining]
            outs[i] += new
            contexts[i] = (list(prompts[i]) + outs[i])[-keep:]
            if len(new) == n and not (stop_tokens and new[-1] in stop_tokens):
                still.append(i)
        live, remaining, window = still, remaining - n, window + 1
    return outs


def _generate_batch(graphdef, params, prompts, cfg, rng, stop_tokens, vocab_limit, pad_id,
                    encoder_inputs=None, min_width: int = 0) -> list[list[int]]:
    width = -(-max(max(len(p) for p in prompts), min_width) // 16) * 16
    tokens = np.full((len(prompts), width), pad_id, np.int32)
    segments = np.zeros((len(prompts), width), np.int32)
    for row, prompt in enumerate(prompts):
        tokens[row, width - len(prompt):] = prompt
        segments[row, width - len(prompt):] = 1
    vocab = vocab_limit if vocab_limit is not None else 1 << 30
    encoder = None
    if encoder_inputs is not None:   # right-padded: the encoder is bidirectional, padding is segment 0
        s = -(-max(len(e) for e in encoder_inputs) // 16) * 16
        enc, enc_seg = np.full((len(prompts), s), pad_id, np.int32), np.zeros((len(prompts), s), np.int32)
        for row, e in enumerate(encoder_inputs):
            enc[row, :len(e)], enc_seg[row, :len(e)] = e, 1
        encoder = (jnp.asarray(enc), jnp.asarray(enc_seg))
    out, lengths = _generate(graphdef, params, jnp.asarray(tokens), jnp.asarray(segments), rng, encoder, cfg=cfg,
                             stop_tokens=tuple(int(t) for t in stop_tokens), vocab_limit=int(vocab))
    out, lengths = np.asarray(out), np.asarray(lengths)
    return [out[i, :lengths[i]].tolist() for i in range(len(prompts))]


def sample_run(run_dir, config, prompts: list[str], *, max_new_tokens: int = 200, temperature: float = 0.8,
               top_k: int = 0, top_p: float = 1.0, seed: int = 0) -> list[str]:
    """Loads a pretraining run folder (tokenizer + latest checkpoint) and continues ``prompts``."""
    from lmforge.train.pretrain import load_for_sampling   # the runner knows its run folder's layout

    return load_for_sampling(run_dir, config).complete(
        prompts, SamplingConfig(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p),
        seed=seed)
