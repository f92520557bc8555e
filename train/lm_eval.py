"""The evaluation of a language model's held-out text, as pretraining reports it: perplexity and bits
per byte derived from the mean loss, one source's or a mixture's sources (``eval/NAME/*`` and all
together), the replay domain of continued pretraining (``eval/replay/*``), and the one format of an
evaluation line."""

from __future__ import annotations

import math

from lmforge.train.step import reduce_metrics
from lmforge.train.trainer import BatchEvaluator


def lm_eval_metrics(bytes_per_token: float | None):
    """Perplexity and bits per byte from the evaluation's mean loss (nats per token); no bits per byte
    when ``bytes_per_token`` is None (an objective that scores a share of the tokens). Span corruption's
    ``content_*`` shares (means over every target, as the evaluation combines them) become the loss and
    accuracy of the dropped text alone, ``span_loss`` and ``span_accuracy``: the sentinels and EOS, a
    quarter of T5's targets, are predicted from their order and would flatter ``token_accuracy`` (an
    audit measured 0.93 on them, 0.043 on the text, 0.28 together)."""
    def derive(m: dict[str, float]) -> dict[str, float]:
        out = {"perplexity": math.exp(min(m["loss"], 50.0)), "tokens": m["weight_sum"]}
        if bytes_per_token is not None:
            out["bits_per_byte"] = m["loss"] / math.log(2) / bytes_per_token
        if m.get("content_share", 0) > 0:
            out["span_loss"] = m["content_nll"] / m["content_share"]
            out["span_accuracy"] = m["content_correct"] / m["content_share"]
        return out
    return derive


def with_replay_eval(evaluate, replay_evaluate):
    """One evaluation callable for both domains: ``evaluate``'s ``eval/*`` metrics plus
    ``replay_evaluate``'s renamed ``eval/replay/*`` (e.g. ``eval/replay/perplexity``)."""
    def both(trainer) -> dict[str, float]:
        replay = {f"eval/replay/{k.removeprefix('eval/')}": v for k, v in replay_evaluate(trainer).items()}
        return {**evaluate(trainer), **replay}
    return both


_DERIVED = ("perplexity", "bits_per_byte", "tokens", "span_loss", "span_accuracy")   # lm_eval_metrics': computed


def with_source_evals(evaluators: dict[str, tuple[BatchEvaluator, float]]):
    """One evaluation callable for a mixture's held-out splits, ``{name: (evaluator, bytes per scored
    token)}``: ``eval/NAME/*`` per source, and ``eval/*`` over all of them together, every scored token
    once (the weighted mean of the sources' losses by their token counts, perplexity and bits per
    byte derived from it), so ``eval/loss`` means what it means for one source (with ``eval_max_batches``,
    each source is capped on its own: the tokens scored weigh the sources)."""
    def each(trainer) -> dict[str, float]:
        out, raw, n_bytes = {}, [], 0.0
        for name, (evaluate, bytes_per_token) in evaluators.items():
            m = {k.removeprefix("eval/"): v for k, v in evaluate(trainer).items()}
            out.update({f"eval/{name}/{k}": v for k, v in m.items()})
            raw.append({k: v for k, v in m.items() if k not in _DERIVED})
            n_bytes = None if n_bytes is None or bytes_per_token is None else n_bytes + bytes_per_token * m["weight_sum"]
        total = reduce_metrics(raw)
        total.update(lm_eval_metrics(None if n_bytes is None else n_bytes / max(total["weight_sum"], 1e-8))(total))
        return {**{f"eval/{k}": v for k, v in total.items()}, **out}
    return each


def eval_line(step: int, m: dict[str, float]) -> str:
    """The one format of an evaluation line, during the run and at its end (issue 13):
    ``step 600: val loss 4.6412, perplexity 103.69, bits/byte 2.3225``."""
    line = f"step {step}: val loss {m['eval/loss']:.4f}, perplexity {m['eval/perplexity']:.2f}"
    if "eval/bits_per_byte" in m:   # not for mlm / span, which score a share of the tokens
        line += f", bits/byte {m['eval/bits_per_byte']:.4f}"
    elif "eval/token_accuracy" in m:   # mlm / span: what the model restored
        line += f", masked-token accuracy {m['eval/token_accuracy']:.4f}" if "eval/span_accuracy" not in m else \
            f", span text: loss {m['eval/span_loss']:.4f}, accuracy {m['eval/span_accuracy']:.4f}"
    sources = [k.split("/")[1] for k in m if k.count("/") == 2 and k.endswith("/loss") and k != "eval/replay/loss"]
    if sources:
        line += "; by source: " + ", ".join(f"{name} {m[f'eval/{name}/loss']:.4f}" for name in sources)
    if "eval/replay/loss" in m:
        line += f"; replay domain: val loss {m['eval/replay/loss']:.4f}, perplexity {m['eval/replay/perplexity']:.2f}"
    return line
