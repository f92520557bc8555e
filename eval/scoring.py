"""Teacher-forced log-likelihoods of continuations, batched into a few compiled shapes.

    scorer = Scorer.from_sampler(sampler)                       # the sampler's model, tokenizer, mesh
    ctx, cont = encode_pair(scorer.tok, "The capital of France is", " Paris")
    [s] = scorer.score([(ctx, cont)])
    s.logprob, s.greedy, s.num_tokens                           # nats, bool, int

Every log-likelihood task (perplexity, multiple choice, the lm-evaluation-harness adapter's
``loglikelihood`` and ``loglikelihood_rolling``) is a list of requests ``(context ids,
continuation ids)`` handed to :meth:`Scorer.score`: one forward pass over ``context +
continuation[:-1]`` (``model.hidden_states``) and ``token_logprobs`` over the continuation's
positions — a forward pass, never sampling. Log-probabilities are natural logarithms (nats).

Choices:
- Pair encoding is lm-evaluation-harness's (``TemplateLM._encode_pair``, EleutherAI 2021-):
  whitespace at the end of the context moves to the front of the continuation; the continuation's
  ids are those of ``encode(context + continuation)`` past the ids of ``encode(context)``, so the
  split never changes how the whole text tokenizes; a tokenizer with BOS starts the context with it
  (as training documents start). An empty context conditions on one prefix token
  (:func:`prefix_id`: BOS, else EOS, else the id of ``"\\n"`` for a character vocabulary).
- A request longer than the model's context keeps its last ``max_seq_len + 1`` tokens (the
  context is cut on the left, as the harness's HF model does); a continuation that alone exceeds
  the context is an error naming its length.
- Batches: requests are sorted longest first (so a batch wastes little padding, and the same set
  of requests always forms the same batches, whatever order they came in) and cut into batches of
  ``rows`` rows (a multiple of the mesh's batch shards). Rows are right-padded to a width from
  ``infer.bucket`` (16, 32, 64, ...; at most ``max_seq_len``), so a task compiles a handful of
  widths and one row count. Padding has segment id 0 and is never read by a real token.
- The forward pass is jitted once per shape and runs under the model's mesh and axis rules
  (``use_mesh``); each row's sum and "every token was the argmax" come back, not (B, T) arrays.
- :meth:`Scorer.prompt_logprobs` is the per-token view a server's ``echo`` needs (vLLM's
  ``prompt_logprobs``): every token's log-prob after the ones before it and, with ``top=K``, the K
  most likely ids at each position, from one log-softmax (so a token that is the argmax has exactly
  its top entry's value, which lm-evaluation-harness's greedy check compares), ids past the
  tokenizer's vocabulary left out of the top lists as the sampler never draws them.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lmforge.data.preference import encode_reply
from lmforge.infer import bucket
from lmforge.model import token_logprobs, use_mesh

Request = tuple[Sequence[int], Sequence[int]]   # (context ids, continuation ids)


class PromptLogprobs(NamedTuple):
    """Per-token log-probs of one sequence of n tokens (the first has none: nothing comes before it)."""
    logprobs: np.ndarray       # (n - 1,) float32: log p(token i | tokens < i), i = 1..n-1, nats
    top_ids: np.ndarray        # (n - 1, K) int32: the K most likely ids at each of those positions, best first
    top_logprobs: np.ndarray   # (n - 1, K) float32: their log-probs


class Score(NamedTuple):
    """One request's result."""
    logprob: float      # sum over the continuation of log p(token | everything before it), nats
    greedy: bool        # every continuation token was the model's most likely next token
    num_tokens: int     # continuation tokens scored


def prefix_id(tok) -> int | None:
    """The token an empty context conditions on: BOS, else EOS, else ``"\\n"`` when it is one token
    (nanoGPT's character vocabulary has no special ids; documents follow a newline), else None."""
    for i in (tok.bos_id, tok.eos_id):
        if i is not None and i >= 0:
            return int(i)
    try:
        ids = tok.encode("\n")
    except ValueError:
        return None
    return int(ids[0]) if len(ids) == 1 else None


def encode_text(tok, text: str, *, bos: bool = True) -> list[int]:
    """``[BOS] + encode(text)`` (BOS only when the tokenizer has one and ``bos``)."""
    lead = [tok.bos_id] if bos and tok.bos_id is not None and tok.bos_id >= 0 else []
    return lead + list(tok.encode(text))


def encode_pair(tok, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids), split as lm-evaluation-harness splits them (module docstring).

    Raises ValueError when an empty context has no prefix token to condition on, or the
    continuation encodes to no tokens.
    """
    if context == "":
        cont = list(tok.encode(continuation))
        p = prefix_id(tok)
        if p is None:
            raise ValueError("an empty context needs a prefix token, and the tokenizer has no BOS, EOS or '\\n'")
        ctx, cont = ([p], cont) if not cont or cont[0] != p else (cont[:1], cont[1:])
    else:
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
        ctx = encode_text(tok, context)
        cont = encode_text(tok, context + continuation)[len(ctx):]
    if not cont:
        raise ValueError(f"continuation {continuation!r} encodes to no tokens")
    return ctx, cont


def chat_requests(template, conversations: Sequence[Sequence[dict]], replies: Sequence[str]) -> list[Request]:
    """``(context ids, continuation ids)`` scoring each assistant reply after its conversation with a chat
    template: the context is ``template.prompt(conversation)`` (the generation prompt included), the
    continuation the reply's tokens, its end of turn and whatever the template closes with (eos).
    Raises ValueError for counts that differ or a conversation the template cannot render."""
    if len(conversations) != len(replies):
        raise ValueError(f"{len(conversations)} conversations but {len(replies)} replies; expected one reply each")
    out = []
    for i, (conv, reply) in enumerate(zip(conversations, replies)):
        ids, _ = encode_reply(template, list(conv), [{"role": "assistant", "content": reply}], f"conversation {i}")
        head = len(template.prompt(conv))
        out.append((ids[:head].tolist(), ids[head:].tolist()))
    return out


def chat_logprobs(scorer: Scorer, template, conversations: Sequence[Sequence[dict]], replies: Sequence[str]
                   ) -> list[float]:
    """``log p(reply | conversation)`` (nats, summed over the reply's tokens and its end of turn) of each
    assistant reply after its conversation, by ``scorer``'s model: :func:`chat_requests` scored. The
    ``score`` callable of ``lmforge.align.constitutional.ai_feedback`` is this with ``scorer`` and
    ``template`` bound. Unlike ``Scorer.score``, which keeps the end of a request past the model's context
    (as the harness does), a conversation and reply longer than the context is an error: cut at its start,
    it would lose what the reply answers. Raises ValueError for that, and as :func:`chat_requests`."""
    requests = chat_requests(template, conversations, replies)
    for i, (ctx, cont) in enumerate(requests):
        if len(ctx) + len(cont) > scorer.max_len + 1:
            raise ValueError(f"conversation {i} and its reply take {len(ctx) + len(cont)} tokens; the model reads "
                             f"{scorer.max_len} (max_seq_len) and would lose their start: shorten them")
    return [s.logprob for s in scorer.score(requests)]


def rolling_requests(ids: Sequence[int], max_len: int, *, stride: int | None = None,
                     prefix: int | None = None) -> list[tuple[list[int], list[int]]]:
    """Windows that score every token of ``ids`` exactly once, each with as much context as fits.

    ``full = [prefix] + ids`` (no prefix: the first token is context only). The first window reads
    ``full[:max_len]`` and scores all of it; each next one scores the following ``stride`` tokens
    (default ``max_len``: disjoint windows) after the ``max_len - stride`` or more tokens before
    them. With the default stride these are exactly lm-evaluation-harness's
    ``get_rolling_token_windows(context_len=1)`` + ``make_disjoint_window``: the last window is
    always full. Returns requests ``(context ids, continuation ids)`` for :meth:`Scorer.score`.
    """
    stride = max_len if stride is None else stride
    if not 1 <= stride <= max_len:
        raise ValueError(f"stride={stride}: expected 1 <= stride <= max_seq_len={max_len}")
    full = ([prefix] if prefix is not None else []) + list(ids)
    out, a = [], 1                              # full[0] is never a target: nothing comes before it
    end = min(len(full), max_len + 1)
    while a < len(full):
        out.append((full[max(0, end - 1 - max_len):a], full[a:end]))
        a, end = end, min(len(full), end + stride)
    return out


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _score_batch(graphdef, params, tokens, targets, segment_ids, positions, weights):
    """(R, W) arrays -> (per-row sum of scored log-probs (R,) float32, all scored tokens argmax (R,) bool)."""
    model = nnx.merge(graphdef, params)
    hidden, _, _ = model.hidden_states(tokens, positions=positions, segment_ids=segment_ids)   # (R, W, D)
    head, bias = model.output_head()
    lp = token_logprobs(hidden, head, targets, bias=bias)                                     # (R, W)
    scored = weights > 0
    # where, not a product: a padding position's value is never read, whatever it holds.
    return jnp.sum(jnp.where(scored, lp.logprobs, 0.0), axis=1), jnp.all(lp.correct | ~scored, axis=1)


@functools.partial(jax.jit, static_argnames=("graphdef", "top"))
def _position_logprobs(graphdef, params, tokens, targets, segment_ids, positions, vocab_limit, *, top: int):
    """(R, W) arrays -> the targets' log-probs (R, W) and the ``top`` most likely ids below ``vocab_limit``
    with their log-probs (R, W, top) each, from one float32 log-softmax of the logits."""
    model = nnx.merge(graphdef, params)
    logits, _ = model(tokens, positions=positions, segment_ids=segment_ids)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)                          # (R, W, V)
    lp = jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    if not top:
        empty = jnp.zeros((*tokens.shape, 0))
        return lp, empty.astype(jnp.int32), empty
    top_lp, top_ids = jax.lax.top_k(jnp.where(jnp.arange(logp.shape[-1]) < vocab_limit, logp, -jnp.inf), top)
    return lp, top_ids.astype(jnp.int32), top_lp


class Scorer:
    """A decoder-only model on its mesh, scoring requests in bucketed batches (module docstring)."""

    def __init__(self, graphdef, params, tok, model_cfg, mesh: jax.sharding.Mesh, rules, *, rows: int = 16,
                 min_rows: int = 1):
        if model_cfg.architecture != "decoder":
            raise ValueError(f"log-likelihood tasks need a decoder-only model; model.family={model_cfg.family!r} "
                             f"is {model_cfg.architecture.replace('_', '-')}")
        if rows < 1:
            raise ValueError(f"rows={rows}: expected >= 1")
        self.graphdef, self.params, self.tok, self.model_cfg = graphdef, params, tok, model_cfg
        self.mesh, self.rules = mesh, rules
        self.max_len = int(model_cfg.max_seq_len)
        self.rows = -(-rows // min_rows) * min_rows      # whole batch shards

    @classmethod
    def from_sampler(cls, sampler, *, rows: int = 16) -> Scorer:
        """The scorer of a ``lmforge.infer.Sampler``'s model (same parameters, tokenizer and mesh)."""
        return cls(sampler.graphdef, sampler.params, sampler.tok, sampler.model_cfg, sampler.mesh, sampler.rules,
                   rows=rows, min_rows=sampler.min_rows)

    def score(self, requests: Sequence[Request], *, progress: bool = False, desc: str = "scoring") -> list[Score]:
        """Scores each ``(context ids, continuation ids)``; results in the order of ``requests``.

        ``progress``: a tqdm bar (stderr) counting requests.
        """
        prepared = [self._prepare(i, ctx, cont) for i, (ctx, cont) in enumerate(requests)]
        order = sorted(range(len(prepared)), key=lambda i: (-len(prepared[i][0]), i))
        results: list[Score | None] = [None] * len(prepared)
        from tqdm.auto import tqdm   # pylint: disable=import-outside-toplevel

        with tqdm(total=len(prepared), desc=desc, unit="req", disable=not progress, leave=False) as bar:
            for start in range(0, len(order), self.rows):
                chunk = order[start:start + self.rows]
                totals, greedy = self._run([prepared[i] for i in chunk])
                for j, i in enumerate(chunk):
                    results[i] = Score(float(totals[j]), bool(greedy[j]), prepared[i][1])
                bar.update(len(chunk))
        return results

    def prompt_logprobs(self, sequences: Sequence[Sequence[int]], *, top: int = 0) -> list[PromptLogprobs]:
        """Each token's log-prob after the tokens before it (teacher-forced, temperature 1: what the
        sampler's ``logprobs`` are for sampled tokens) and, with ``top`` > 0, the ``top`` most likely ids
        at each position — the prompt side of a server's ``echo`` (module docstring).

        Args:
          sequences: id lists of 1 to ``max_seq_len`` tokens each.
          top: K >= 0 alternatives per position.

        Returns:
          One :class:`PromptLogprobs` per sequence, in order: arrays of n - 1 positions.

        Raises:
          ValueError: an empty sequence, one longer than the model's context, or ``top`` < 0.
        """
        if top < 0:
            raise ValueError(f"prompt_logprobs: top={top}; expected >= 0")
        for i, seq in enumerate(sequences):
            if not 1 <= len(seq) <= self.max_len:
                raise ValueError(f"prompt_logprobs: sequence {i} has {len(seq)} tokens; expected 1 to "
                                 f"{self.max_len} (max_seq_len)")
        vocab_limit = getattr(self.tok, "vocab_size", self.model_cfg.vocab_size)
        order = sorted(range(len(sequences)), key=lambda i: (-len(sequences[i]), i))
        out: list[PromptLogprobs | None] = [None] * len(sequences)
        for start in range(0, len(order), self.rows):
            chunk = order[start:start + self.rows]
            width = min(bucket(max(max(len(sequences[i]) - 1, 1) for i in chunk)), self.max_len)
            shape = (self.rows, width)
            tokens, targets = np.zeros(shape, np.int32), np.zeros(shape, np.int32)
            segments, positions = np.zeros(shape, np.int32), np.zeros(shape, np.int32)
            for r, i in enumerate(chunk):
                seq = list(sequences[i])
                n = max(len(seq) - 1, 1)            # a one-token sequence reads itself and scores nothing
                tokens[r, :n], targets[r, :len(seq) - 1] = seq[:n], seq[1:]
                segments[r, :n], positions[r, :n] = 1, np.arange(n)
            segments[len(chunk):, 0] = 1
            with use_mesh(self.mesh, self.rules):
                lp, ids, top_lp = jax.device_get(_position_logprobs(
                    self.graphdef, self.params, *map(jnp.asarray, (tokens, targets, segments, positions)),
                    jnp.int32(vocab_limit), top=int(top)))
            for r, i in enumerate(chunk):
                k = len(sequences[i]) - 1
                out[i] = PromptLogprobs(np.asarray(lp[r, :k], np.float32), np.asarray(ids[r, :k], np.int32),
                                        np.asarray(top_lp[r, :k], np.float32))
        return out

    def _prepare(self, index: int, ctx: Sequence[int], cont: Sequence[int]) -> tuple[list[int], int]:
        """(the tokens read plus the last target, number of scored targets)."""
        if len(cont) == 0:
            raise ValueError(f"request {index}: the continuation has no tokens")
        if len(cont) > self.max_len:
            raise ValueError(f"request {index}: a continuation of {len(cont)} tokens exceeds the model's context "
                             f"(max_seq_len={self.max_len}); score it in windows (rolling_requests)")
        if len(ctx) == 0:
            raise ValueError(f"request {index}: the context has no tokens (condition on prefix_id(tok))")
        whole = (list(ctx) + list(cont))[-(self.max_len + 1):]
        return whole, len(cont)

    def _run(self, batch: list[tuple[list[int], int]]) -> tuple[np.ndarray, np.ndarray]:
        width = min(bucket(max(len(w) - 1 for w, _ in batch)), self.max_len)
        shape = (self.rows, width)
        tokens, targets = np.zeros(shape, np.int32), np.zeros(shape, np.int32)
        segments, positions = np.zeros(shape, np.int32), np.zeros(shape, np.int32)
        weights = np.zeros(shape, np.float32)
        for r, (whole, k) in enumerate(batch):
            n = len(whole) - 1
            tokens[r, :n], targets[r, :n] = whole[:-1], whole[1:]
            segments[r, :n], positions[r, :n] = 1, np.arange(n)
            weights[r, n - k:n] = 1.0
        segments[len(batch):, 0] = 1     # filler rows: one real token each (their scores are dropped)
        with use_mesh(self.mesh, self.rules):
            totals, greedy = _score_batch(self.graphdef, self.params, *map(jnp.asarray, (tokens, targets, segments,
                                                                                          positions, weights)))
        return np.asarray(jax.device_get(totals)), np.asarray(jax.device_get(greedy))
