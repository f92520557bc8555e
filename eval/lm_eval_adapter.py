"""An lmforge model as an EleutherAI lm-evaluation-harness model (the ``lm-eval`` package, 0.4.x).

    import lm_eval
    from lmforge.eval.lm_eval_adapter import LmforgeLM
    lm = LmforgeLM(sampler)                   # a lmforge.infer.Sampler: model, tokenizer, mesh
    lm_eval.simple_evaluate(model=lm, tasks=["my_task"], task_manager=lm_eval.tasks.TaskManager(include_path=DIR))

or from the shell: ``lmforge eval RUN_DIR lm_eval:tasks=my_task,include=DIR``.

The harness's three requests go to the same code as lmforge's own tasks, so a task scores the same
whichever harness runs it:

- ``loglikelihood(context, continuation)``: the harness's ``TemplateLM`` splits the pair into ids
  (``_encode_pair``; ``tok_encode`` adds BOS when the tokenizer has one, as
  ``lmforge.eval.scoring.encode_pair`` does) and :meth:`_loglikelihood_tokens` scores them with
  ``Scorer.score`` — the batches, shapes and forward pass of the multiple-choice task.
- ``loglikelihood_rolling(text)``: the windows of ``scoring.rolling_requests`` (the harness's
  ``get_rolling_token_windows`` + ``make_disjoint_window`` with the default stride) conditioned on
  ``prefix_token_id``; the sum equals ``perplexity(...)["logprob_sum"]`` on the same text.
- ``generate_until(context, gen_kwargs)``: the one sampler (``Sampler.complete``), greedy unless
  ``do_sample``; ``until`` strings stop generation on the device and cut the text; requests with
  the same settings go together in batches of ``batch``.

Returned log-likelihoods are natural logarithms (nats). This module imports ``lm_eval``: install
the ``eval`` extra (``pip install -e '.[eval]'``).
"""

from __future__ import annotations

import math

from lm_eval.api.model import TemplateLM

from lmforge.eval.generation import complete
from lmforge.eval.scoring import Scorer, encode_text, prefix_id, rolling_requests
from lmforge.infer import SamplingConfig


class LmforgeLM(TemplateLM):
    """lm-evaluation-harness's ``LM`` over a ``lmforge.infer.Sampler`` (module docstring).

    Args:
      sampler: the model, tokenizer and mesh.
      rows: rows per log-likelihood batch (``Scorer``).
      batch: prompts per generation call.
      stride: tokens scored per window after the first in ``loglikelihood_rolling`` (default
        ``max_seq_len``: the harness's disjoint windows).
      max_gen_toks: generation length when a request does not give one.
    """

    def __init__(self, sampler, *, rows: int = 16, batch: int = 16, stride: int | None = None,
                 max_gen_toks: int = 256):
        super().__init__()
        self.sampler, self.tok = sampler, sampler.tok
        self.scorer = Scorer.from_sampler(sampler, rows=rows)
        self.batch, self.stride, self.max_gen_toks = batch, stride, max_gen_toks
        if prefix_id(self.tok) is None:
            raise ValueError("lm-eval needs a prefix token; the tokenizer has no BOS, EOS or single-token '\\n'")

    # ------------------------------------------------------------------ what TemplateLM reads
    @property
    def eot_token_id(self) -> int:
        eos = self.tok.eos_id
        return int(eos) if eos is not None and eos >= 0 else prefix_id(self.tok)

    @property
    def prefix_token_id(self) -> int:
        return prefix_id(self.tok)

    @property
    def max_length(self) -> int:
        return int(self.sampler.model_cfg.max_seq_len)

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        return encode_text(self.tok, string, bos=add_special_tokens is not False)

    def tok_decode(self, tokens, **kwargs) -> str:
        return self.tok.decode(tokens)

    # ------------------------------------------------------------------ the three requests
    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        scores = self.scorer.score([(ctx, cont) for _, ctx, cont in requests], progress=not disable_tqdm,
                                   desc="lm-eval loglikelihood")
        out = []
        for (pair, _, _), s in zip(requests, scores):
            if pair is not None:
                self.cache_hook.add_partial("loglikelihood", pair, (s.logprob, s.greedy))
            out.append((s.logprob, s.greedy))
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        windows, owner = [], []
        for i, (text,) in enumerate(req.args for req in requests):
            for w in rolling_requests(self.tok.encode(text), self.max_length, stride=self.stride,
                                      prefix=self.prefix_token_id):
                windows.append(w)
                owner.append(i)
        scores = self.scorer.score(windows, progress=not disable_tqdm, desc="lm-eval rolling")
        per_request: list[list[float]] = [[] for _ in requests]
        for i, s in zip(owner, scores):
            per_request[i].append(s.logprob)
        out = [math.fsum(x) for x in per_request]
        for req, value in zip(requests, out):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, value)
        return out

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        groups: dict[tuple, list[int]] = {}
        for i, req in enumerate(requests):
            context, kwargs = req.args
            groups.setdefault(self._settings(kwargs), []).append(i)
        out: list[str] = [""] * len(requests)
        for (max_tokens, temperature, until), idx in groups.items():
            prompts = [requests[i].args[0] for i in idx]
            if temperature > 0:
                cfg = SamplingConfig(max_new_tokens=max_tokens, temperature=temperature, stop_strings=until)
                texts = []
                for start in range(0, len(prompts), self.batch):
                    texts += self.sampler.complete(prompts[start:start + self.batch], cfg)
            else:
                texts = complete(self.sampler, prompts, max_new_tokens=max_tokens, stop=until, batch=self.batch,
                                 progress=not disable_tqdm, desc="lm-eval generate")
            for i, text in zip(idx, texts):
                out[i] = text
                self.cache_hook.add_partial("generate_until", requests[i].args, text)
        return out

    def _settings(self, kwargs: dict | None) -> tuple[int, float, tuple[str, ...]]:
        """(max new tokens, temperature (0: greedy), stop strings) of one request's gen_kwargs."""
        kwargs = dict(kwargs or {})
        until = kwargs.get("until") or []
        until = [until] if isinstance(until, str) else list(until)
        max_tokens = next((int(kwargs[k]) for k in ("max_gen_toks", "max_new_tokens", "max_tokens") if k in kwargs),
                          self.max_gen_toks)
        temperature = float(kwargs.get("temperature", 0.0)) if kwargs.get("do_sample", False) else 0.0
        return max_tokens, temperature, tuple(s for s in until if s)
