"""Corruption transforms for the two denoising objectives: BERT's masked LM and T5's span corruption.

Both are pure numpy functions of token ids and a ``np.random.Generator``: the same seed gives the
same output on every machine, so a grain pipeline can call them with a per-example generator
(``np.random.default_rng([seed, index])``) and stay checkpointable.

- :func:`mask_tokens` (Devlin et al. 2019, sec. 3.1 and appendix A.1): each non-special token is
  chosen with probability ``rate`` (0.15); a chosen token becomes the mask token with probability
  0.8, a uniformly random non-special token with 0.1, and stays itself with 0.1. The loss is on
  the chosen positions only (``weights``). This is Hugging Face's ``DataCollatorForLanguageModeling``
  rule, except that random replacements are drawn from the non-special ids only (BERT never
  substitutes a ``[CLS]`` / ``[PAD]``).
- :func:`span_corrupt` (Raffel et al. 2020, sec. 3.1.4; T5's ``random_spans_noise_mask``): exactly
  ``round(length * noise_density)`` tokens are noise, split into ``round(noise / mean_span_length)``
  spans; noise and non-noise span lengths are random compositions (every span non-empty) and
  spans alternate, starting with non-noise. Each noise span is replaced in the inputs by one
  sentinel (sentinel ``i`` for the ``i``-th span); the targets are each sentinel followed by the
  span it replaced. ``sentinels`` come from the tokenizer's reserved ids.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MASK_PROB, RANDOM_PROB = 0.8, 0.1  # of the chosen tokens; the remaining 0.1 keep their id


def mask_tokens(ids: np.ndarray, rng: np.random.Generator, *, mask_id: int, vocab_size: int,
                special_ids: Sequence[int], rate: float = 0.15) -> dict[str, np.ndarray]:
    """BERT's masking of ``ids`` (any shape, int) -> {"inputs", "targets", "weights"} of that shape.

    ``targets`` are the original ids and ``weights`` is 1.0 exactly where a token was chosen (the
    only positions the masked-LM loss counts). Ids in ``special_ids`` (pad, cls, sep, mask, …) are
    never chosen and never drawn as random replacements.
    """
    ids = np.asarray(ids)
    if not 0.0 < rate < 1.0:
        raise ValueError(f"mask_tokens: rate must be in (0, 1), got {rate}")
    if not 0 <= mask_id < vocab_size:
        raise ValueError(f"mask_tokens: mask_id={mask_id} is outside the vocabulary [0, {vocab_size})")
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        raise ValueError(f"mask_tokens: ids must lie in [0, {vocab_size}); got min {ids.min()}, max {ids.max()}")
    special = np.zeros(vocab_size, bool)
    special[[int(s) for s in special_ids if 0 <= s < vocab_size]] = True
    special[mask_id] = True
    ordinary = np.flatnonzero(~special)
    if ordinary.size == 0:
        raise ValueError("mask_tokens: every id is special; nothing to substitute")

    chosen = (rng.random(ids.shape) < rate) & ~special[ids]
    action = rng.random(ids.shape)
    replacement = ordinary[rng.integers(0, ordinary.size, ids.shape)]
    inputs = np.where(chosen & (action < MASK_PROB), mask_id, ids)
    inputs = np.where(chosen & (action >= MASK_PROB) & (action < MASK_PROB + RANDOM_PROB), replacement, inputs)
    return {"inputs": inputs.astype(ids.dtype), "targets": ids.copy(), "weights": chosen.astype(np.float32)}


def random_spans_noise_mask(length: int, rng: np.random.Generator, *, noise_density: float = 0.15,
                            mean_span_length: float = 3.0) -> np.ndarray:
    """T5's noise mask: (length,) bool, True on noise tokens, in alternating non-noise/noise spans."""
    if length < 2:
        raise ValueError(f"span corruption needs at least 2 tokens, got {length}")
    if not 0.0 < noise_density < 1.0 or mean_span_length < 1.0:
        raise ValueError(f"span corruption: need 0 < noise_density < 1 and mean_span_length >= 1, got "
                         f"{noise_density}, {mean_span_length}")
    num_noise = min(max(int(round(length * noise_density)), 1), length - 1)
    num_spans = min(max(int(round(num_noise / mean_span_length)), 1), num_noise, length - num_noise)

    def composition(total: int) -> np.ndarray:
        """A uniformly random split of ``total`` items into ``num_spans`` non-empty parts."""
        first = np.zeros(total, bool)
        first[1 + rng.permutation(total - 1)[: num_spans - 1]] = True  # where parts 2.. begin
        return np.bincount(np.cumsum(first), minlength=num_spans)

    noise_lengths, keep_lengths = composition(num_noise), composition(length - num_noise)
    lengths = np.stack([keep_lengths, noise_lengths], axis=1).reshape(-1)  # keep, noise, keep, noise, ...
    span_index = np.repeat(np.arange(2 * num_spans), lengths)
    return span_index % 2 == 1


def span_corrupt(ids: Sequence[int], rng: np.random.Generator, *, sentinels: Sequence[int],
                 noise_density: float = 0.15, mean_span_length: float = 3.0,
                 eos_id: int | None = None) -> dict[str, np.ndarray]:
    """T5 span corruption of one sequence -> {"inputs", "targets"} (1-D int32, variable length).

    ``inputs`` is ``ids`` with each noise span replaced by its sentinel; ``targets`` is each
    sentinel followed by the span it replaced, in order. With ``eos_id`` both end with it. There
    must be at least as many ``sentinels`` as spans (T5 reserves 100).
    """
    ids = np.asarray(ids, np.int32)
    noise = random_spans_noise_mask(len(ids), rng, noise_density=noise_density, mean_span_length=mean_span_length)
    starts = noise & ~np.concatenate([[False], noise[:-1]])                 # first token of each noise span
    num_spans = int(starts.sum())
    if num_spans > len(sentinels):
        raise ValueError(f"span_corrupt: {num_spans} noise spans need {num_spans} sentinel ids, got "
                         f"{len(sentinels)}; reserve more ids in the tokenizer (num_reserved)")
    sentinel_ids = np.asarray(sentinels, np.int32)
    if len(np.intersect1d(sentinel_ids, ids)):
        raise ValueError("span_corrupt: the text already contains a sentinel id; sentinels must be reserved ids")

    def fold(mask: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """Drop the ``mask`` tokens, putting a sentinel where each masked span began."""
        span_no = np.cumsum(starts) - 1
        out = np.where(starts, sentinel_ids[np.clip(span_no, 0, None)], ids)
        return out[~mask | starts]

    # The mask always starts with a kept span and ends with a noise span, so kept span i precedes
    # noise span i: folding the kept spans instead gives sentinel_0 span_0 sentinel_1 span_1 ...
    keep_starts = ~noise & np.concatenate([[True], noise[:-1]])
    inputs, targets = fold(noise, starts), fold(~noise, keep_starts)
    if eos_id is not None:
        inputs, targets = np.append(inputs, eos_id), np.append(targets, eos_id)
    return {"inputs": inputs.astype(np.int32), "targets": targets.astype(np.int32)}


def span_uncorrupt(inputs: Sequence[int], targets: Sequence[int], *, sentinels: Sequence[int],
                   eos_id: int | None = None) -> list[int]:
    """The inverse of :func:`span_corrupt`: the original ids from inputs and targets."""
    inputs, targets = list(inputs), list(targets)
    if eos_id is not None:
        inputs, targets = inputs[:-1], targets[:-1]
    index = {int(s): i for i, s in enumerate(sentinels)}
    spans: dict[int, list[int]] = {}
    current = None
    for t in targets:
        if int(t) in index:
            current = index[int(t)]
            spans[current] = []
        elif current is None:
            raise ValueError("span_uncorrupt: targets must start with a sentinel")
        else:
            spans[current].append(int(t))
    out: list[int] = []
    for t in inputs:
        out += spans[index[int(t)]] if int(t) in index else [int(t)]
    return out
