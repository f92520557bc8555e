"""The engine behind ``lmforge serve``: one thread owns the model and batches queued requests into
sampler calls; each row's text comes out whole, cut before a stop string.

    engine = Engine(chat_model, max_batch=16, batch_wait_ms=5)
    engine.submit(Job(prompts=[ids], sampling=SamplingConfig(...), stop_ids=(end_id,), seed=None,
                      on_done=print, on_piece=lambda row, text: ...))

``serve.server`` puts OpenAI's HTTP API in front of it; the choices (which requests share a call, a
seeded request alone, stop strings held back while streaming, cancellation) are in that module's
docstring.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from lmforge.infer import FINISH_NAMES, FINISH_STOP, SamplingConfig
from lmforge.serve.chat import ChatModel, TextStream


# -------------------------------------------------------------------------------------- text of a row
class RowText:
    """One reply's text as its tokens arrive: whole characters (``TextStream``), cut before the first
    stop string, and a held-back tail that could still become one (see ``serve.server``'s module docstring)."""

    def __init__(self, tok, skip: Sequence[int], stops: Sequence[str]):
        self._stream = TextStream(tok, skip=skip)
        self._stops = tuple(stops)
        self.text, self.stopped = "", False
        self._sent = 0

    def push(self, token_id: int) -> str:
        """The text that may be sent now that ``token_id`` arrived ('' if none)."""
        if self.stopped:
            return ""
        self.text += self._stream.push(token_id)
        return self._release(final=False)

    def finish(self) -> str:
        """Whatever was held back, at the end of the reply."""
        if not self.stopped:
            self.text += self._stream.flush()
        return self._release(final=True)

    def _release(self, *, final: bool) -> str:
        hits = [i for i in (self.text.find(s) for s in self._stops) if i >= 0]
        if hits:
            self.text, self.stopped, final = self.text[:min(hits)], True, True
        end = len(self.text)
        if not final:   # the longest tail that is a proper prefix of a stop string waits
            end -= max((k for s in self._stops for k in range(1, len(s)) if self.text.endswith(s[:k])), default=0)
        piece, self._sent = self.text[self._sent:end], max(self._sent, end)
        return piece


# -------------------------------------------------------------------------------------- the engine
@dataclasses.dataclass(eq=False)
class Job:
    """One request's rows for the engine: ``prompts`` (id lists) continued ``sampling.n`` times each.

    ``on_piece(row, text)`` gets streamed text (rows prompt-major, as the sampler's); ``on_done``
    gets the list of :class:`RowResult` or the exception that ended the call. ``sampling.top_logprobs``
    (K) asks for each token's K most likely alternatives; ``echo`` for the prompt's per-token
    log-probs too (``RowResult.prompt``, with K alternatives each). ``hide``: ids left out of the text
    that do not stop it (special tokens: vLLM's ``skip_special_tokens``)."""
    prompts: list[list[int]]
    sampling: SamplingConfig
    stop_ids: tuple[int, ...]
    seed: int | None
    on_done: Callable[[Any], None]
    on_piece: Callable[[int, str], None] | None = None
    echo: bool = False
    hide: tuple[int, ...] = ()
    cancelled: threading.Event = dataclasses.field(default_factory=threading.Event)

    @property
    def rows(self) -> int:
        return len(self.prompts) * self.sampling.n

    def key(self):
        """Jobs with equal keys share a sampler call (``max_new_tokens`` and ``top_logprobs`` differ per
        row: the call takes the largest of each)."""
        return dataclasses.replace(self.sampling, max_new_tokens=1, top_logprobs=0), self.stop_ids


@dataclasses.dataclass
class RowResult:
    text: str                    # cut before any stop string; stop ids and ``Job.hide`` ids left out
    tokens: list[int]            # as sampled, the stop token included
    logprobs: list[float]
    finish_reason: str           # "stop" | "length" | "cancelled" (every request of its call went away)
    prompt_tokens: int
    top: list[list[tuple[int, float]]] = dataclasses.field(default_factory=list)   # per token: K (id, logprob)
    prompt: Any = None           # with echo: the prompt's lmforge.eval.scoring.PromptLogprobs (K alternatives)


class Engine:
    """The thread that owns the model and batches queued jobs (see ``serve.server``'s module docstring)."""

    def __init__(self, model: ChatModel, *, max_batch: int = 16, batch_wait_ms: float = 5.0):
        if max_batch < 1:
            raise ValueError(f"max_batch={max_batch}: expected >= 1")
        self.model, self.max_batch, self.batch_wait_s = model, int(max_batch), batch_wait_ms / 1000.0
        self.sampler = model.sampler
        self.sampler.max_rows = max(self.sampler.max_rows, self.max_batch)
        self._queue: queue.Queue = queue.Queue()
        self._waiting: list[Job] = []
        self._closing = False
        self._calls = 0
        self._scorer = None                # the prompt scorer for echo, made at the first echo
        self.batches: list[int] = []       # rows per sampler call, in order (for tests and /health)
        self._thread = threading.Thread(target=self._run, name="lmforge-serve-engine", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        self._queue.put(job)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=60)

    # the engine thread --------------------------------------------------------------------------
    def _take(self, block: bool, timeout: float | None = None) -> bool:
        """Moves one queued job to ``_waiting``; False when none came (or the queue said close)."""
        try:
            job = self._queue.get(block=block, timeout=timeout)
        except queue.Empty:
            return False
        if job is None:
            self._closing = True
            return False
        self._waiting.append(job)
        return True

    def _run(self) -> None:
        while True:
            if not self._waiting:
                if self._closing:
                    return
                self._take(block=True)
                continue
            while self._take(block=False):   # everything queued now
                pass
            batch = self._select()
            if batch[0].seed is None and self.batch_wait_s > 0:
                deadline = time.monotonic() + self.batch_wait_s   # a moment for more to arrive
                while sum(j.rows for j in batch) < self.max_batch and not self._closing \
                        and (left := deadline - time.monotonic()) > 0:
                    if self._take(block=True, timeout=left):
                        batch = self._select()
            for job in batch:
                self._waiting.remove(job)
            batch = [j for j in batch if not j.cancelled.is_set()]
            try:
                if batch:
                    self._call(batch)
            except Exception as e:   # noqa: BLE001 -- a bug here must not leave requests waiting forever
                for job in batch:
                    job.on_done(e)

    def _select(self) -> list[Job]:
        """The first waiting job, and the later ones that can share its call: up to ``max_batch`` rows,
        the longest prompt and the largest limit within the context together."""
        first = self._waiting[0]
        if first.seed is not None:
            return [first]
        context = self.sampler.model_cfg.max_seq_len
        batch, rows = [first], first.rows
        longest, limit = max(map(len, first.prompts)), first.sampling.max_new_tokens
        for job in self._waiting[1:]:
            if job.seed is not None or job.key() != first.key() or rows + job.rows > self.max_batch:
                continue
            a, b = max(longest, *map(len, job.prompts)), max(limit, job.sampling.max_new_tokens)
            if a + b <= context:
                batch.append(job)
                rows, longest, limit = rows + job.rows, a, b
        return batch

    def _call(self, batch: list[Job]) -> None:
        tok = self.sampler.tok
        n = batch[0].sampling.n
        prompts = [p for job in batch for p in job.prompts]
        owners = [(job, r) for job in batch for r in range(job.rows)]   # row -> (job, its row)
        stops = batch[0].sampling.stop_strings
        texts = [RowText(tok, (*job.stop_ids, *job.hide), stops) for job, _ in owners]
        limits = [job.sampling.max_new_tokens for job, _ in owners]
        cfg = dataclasses.replace(batch[0].sampling, max_new_tokens=max(limits),
                                  top_logprobs=max(job.sampling.top_logprobs for job in batch))
        streaming = any(job.on_piece is not None for job in batch)

        def on_step(step: int, tokens: np.ndarray, live: np.ndarray) -> bool:
            for row, (job, r) in enumerate(owners):
                if live[row] and job.on_piece is not None and not job.cancelled.is_set():
                    piece = texts[row].push(tokens[row])
                    if piece:
                        job.on_piece(r, piece)
            return all(job.cancelled.is_set() for job in batch)

        seed = batch[0].seed if batch[0].seed is not None else (1 << 20) + self._calls
        self._calls += 1
        self.batches.append(len(owners))
        try:
            out = self.sampler.generate_ids(prompts, cfg, seed=seed, stream=on_step if streaming else None,
                                            max_tokens=limits)
            echoed = self._prompt_logprobs(batch)
        except Exception as e:   # noqa: BLE001 -- every request of the call hears of it
            for job in batch:
                job.on_done(e)
            return
        results: dict[Job, list[RowResult]] = {job: [] for job in batch}
        for row, (job, r) in enumerate(owners):
            k = int(out.lengths[row])
            toks = out.tokens[row, :k].tolist()
            text = texts[row]
            if job.on_piece is None:
                for t in toks:
                    text.push(t)
            tail = text.finish()
            if tail and job.on_piece is not None and not job.cancelled.is_set():
                job.on_piece(r, tail)
            finish = "stop" if text.stopped or int(out.finish_reason[row]) == FINISH_STOP else \
                FINISH_NAMES[int(out.finish_reason[row])]
            want = job.sampling.top_logprobs
            top = [list(zip(out.top_ids[row, i, :want].tolist(), out.top_logprobs[row, i, :want].tolist()))
                   for i in range(k)] if want else []
            results[job].append(RowResult(text.text, toks, out.logprobs[row, :k].tolist(), finish,
                                          len(job.prompts[r // n]), top=top, prompt=echoed.get((job, r // n))))
        for job in batch:
            job.on_done(results[job])

    def _prompt_logprobs(self, batch: list[Job]) -> dict:
        """``{(job, prompt index): PromptLogprobs}`` for the jobs that asked for ``echo`` (one scorer call,
        with the largest K among them; each keeps its own)."""
        asked = [job for job in batch if job.echo]
        if not asked:
            return {}
        if self._scorer is None:
            from lmforge.eval.scoring import Scorer   # pylint: disable=import-outside-toplevel
            self._scorer = Scorer.from_sampler(self.sampler, rows=self.max_batch)
        keys = [(job, i) for job in asked for i in range(len(job.prompts))]
        got = self._scorer.prompt_logprobs([job.prompts[i] for job, i in keys],
                                           top=max(job.sampling.top_logprobs for job in asked))
        return {(job, i): p._replace(top_ids=p.top_ids[:, :job.sampling.top_logprobs],
                                     top_logprobs=p.top_logprobs[:, :job.sampling.top_logprobs])
                for (job, i), p in zip(keys, got)}
