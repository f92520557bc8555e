"""Perplexity and bits per byte of a text, over rolling windows that cover all of it.

    result = perplexity(scorer, pathlib.Path("valid.txt").read_text())
    result["perplexity"], result["bits_per_byte"]

The text is encoded once (no BOS/EOS added) and conditioned on :func:`prefix_id` (BOS, else EOS,
else ``"\\n"``), so every token of the text is predicted exactly once; windows of the model's
context (``rolling_requests``) give each one as much context as fits. With the default stride
(``max_seq_len``, disjoint windows) the summed log-likelihood is what lm-evaluation-harness's
``loglikelihood_rolling`` returns for the same text; ``stride=max_seq_len // 2`` gives every token
at least half a window of context (Hugging Face's "perplexity of fixed-length models" sliding
window) at twice the cost.

Units: ``nll_per_token`` is nats per token, the exact token-weighted mean (the sum of every
token's negative log-likelihood over the number of tokens, summed in float64 on the host, not a
mean of window means); ``perplexity = exp(nll_per_token)``; ``bits_per_byte = sum(nll) / ln 2 /
(UTF-8 bytes of the text)`` — comparable across tokenizers, unlike perplexity.
"""

from __future__ import annotations

import math

from lmforge.eval.scoring import Scorer, prefix_id, rolling_requests


def perplexity(scorer: Scorer, text: str, *, stride: int | None = None, max_windows: int | None = None,
               progress: bool = False) -> dict:
    """Scores ``text`` (module docstring).

    Args:
      scorer: the model.
      text: the text, non-empty.
      stride: tokens scored per window after the first (default ``max_seq_len``: disjoint windows).
      max_windows: score only the first this many windows (``--limit``); bytes then count the
        decoded text of the tokens scored.

    Returns:
      ``{"perplexity", "bits_per_byte", "nll_per_token" (nats), "bits_per_token", "logprob_sum"
      (nats), "tokens", "bytes", "windows"}``.
    """
    if not text:
        raise ValueError("perplexity: the text is empty")
    tok = scorer.tok
    ids = list(tok.encode(text))
    requests = rolling_requests(ids, scorer.max_len, stride=stride, prefix=prefix_id(tok))
    n_bytes = len(text.encode("utf-8"))
    if max_windows is not None and max_windows < len(requests):
        requests = requests[:max_windows]
        scored = sum(len(cont) for _, cont in requests)
        covered = ids[:scored] if prefix_id(tok) is not None else ids[:scored + 1]
        n_bytes = len(tok.decode(covered).encode("utf-8"))
    scores = scorer.score(requests, progress=progress, desc="perplexity")
    total = math.fsum(s.logprob for s in scores)          # float64 on the host
    n_tokens = sum(s.num_tokens for s in scores)
    nll = -total / n_tokens
    return {"perplexity": math.exp(min(nll, 700.0)), "bits_per_byte": -total / math.log(2) / n_bytes,
            "nll_per_token": nll, "bits_per_token": nll / math.log(2), "logprob_sum": total,
            "tokens": n_tokens, "bytes": n_bytes, "windows": len(requests)}
