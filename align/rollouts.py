"""What the RL trainers' rollout sources (GRPO's :class:`lmforge.align.grpo.Rollouts`, PPO's
:class:`lmforge.align.ppo.PPORollouts`) share: the stop ids and the prompt-length check, the seeded
order in which prompts are taken, the seed of each rollout, and the rollouts' metrics as means
since the last log. A rollout source is the loop's data iterator (``Trainer.fit``): it samples from
the trainer's current policy, and its position goes into every checkpoint through
``get_state`` / ``set_state`` (bytes of text, as grain's checkpoint handler writes them)."""

from __future__ import annotations

import functools

import numpy as np


class RolloutSource:
    """The shared part of a rollout iterator over ``items`` (their prompt ids ``prompts``) for a config
    with ``seed``, ``data.seed``, ``data.batch_size`` (prompts a rollout) and ``data.max_prompt_len``.
    Subclasses give ``__next__``, ``get_state`` and ``set_state``.

    Raises ValueError for a tokenizer with no end-of-turn or eos id, or a prompt over
    ``data.max_prompt_len`` tokens."""

    def __init__(self, cfg, items: list[dict], prompts: list[list[int]], tok, template):
        self.cfg, self.items, self.prompts, self.tok = cfg, items, prompts, tok
        eos = (tok.eos_id,) if tok.eos_id >= 0 else ()
        self.stops = tuple(dict.fromkeys((*template.stop_ids, *eos)))
        if not self.stops:
            raise ValueError(f"{tok!r} has no end-of-turn or eos id: every completion would run to max_new_tokens")
        long = [i for i, p in enumerate(prompts) if len(p) > cfg.data.max_prompt_len]
        if long:
            raise ValueError(f"prompt {long[0]} has {len(prompts[long[0]])} tokens, over data.max_prompt_len="
                             f"{cfg.data.max_prompt_len}")
        self.count = 0                                   # rollouts drawn
        self._metrics: list[dict[str, float]] = []

    def __iter__(self):
        return self

    def seed(self, k: int, *more: int) -> int:
        """Rollout ``k``'s seed (``more``: e.g. an epoch, for a shuffle), drawn from ``(seed, k, *more)``: the
        sampler seeds its calls ``seed``, ``seed + 1``, ... (one per ``max_rows``), so consecutive integers
        would repeat noise across rollouts."""
        return int(np.random.SeedSequence([self.cfg.seed, k, *more]).generate_state(1)[0] >> 1)

    @functools.lru_cache(maxsize=2)   # a rollout spans at most a pass's end and the next one's start
    def _pass(self, epoch: int) -> np.ndarray:
        return np.random.default_rng((self.cfg.data.seed, epoch)).permutation(len(self.items))

    def order(self, k: int) -> list[int]:
        """The item indices of rollout ``k``'s prompts: every item once a pass, in an order drawn from
        ``(data.seed, pass)``."""
        n, per = len(self.items), self.cfg.data.batch_size
        return [int(self._pass(j // n)[j % n]) for j in range(k * per, (k + 1) * per)]

    def record(self, metrics: dict[str, float]) -> None:
        """Keeps one rollout's metrics for :meth:`pop_metrics`."""
        self._metrics.append(metrics)

    def pop_metrics(self) -> dict[str, float]:
        """Means of the rollouts' metrics since the last call, keyed ``train/...`` (``perf/...`` kept):
        ``Trainer.fit(host_metrics=...)``."""
        keys = dict.fromkeys(k for m in self._metrics for k in m)
        out = {(k if k.startswith("perf/") else f"train/{k}"): float(np.mean([m[k] for m in self._metrics if k in m]))
               for k in keys}
        self._metrics = []
        return out

    def start_prefetch(self) -> None:
        """Grain's handler calls it after ``set_state``: nothing is prepared ahead (a rollout needs the
        weights of the step before it)."""
