"""Memorisation probe: given ``prefix`` tokens of a training document, does greedy decoding
reproduce the document's next ``suffix`` tokens verbatim?

This is the extraction test of Carlini et al. 2021 ("Extracting Training Data from Large Language
Models") in the form of Carlini et al. 2023 ("Quantifying Memorization Across Neural Language
Models", 50 tokens to reproduce) and Biderman et al. 2023 ("Emergent and Predictable Memorization in
Large Language Models", Pythia: 32-token prefixes): a sequence is *memorised* when the greedy
continuation of its prefix equals its true continuation token for token. The default here is a
32-token prefix and 50 tokens to reproduce.

Probes (:func:`probes`): ``n`` spans of ``prefix + suffix`` tokens drawn with ``seed`` from the
training documents long enough to hold one — documents first, one span each (a uniform offset
inside the document); when there are fewer such documents than ``n`` (a single-file corpus such as
Tiny Shakespeare), the remaining spans come from further offsets in the same documents. Documents
are encoded without BOS/EOS, as text, so a span may start anywhere in a document; a document may
also be given as its token ids (a pre-tokenized corpus), which are used as they are.

Scores: ``memorised_rate`` (exact reproduction of all ``suffix`` tokens), and
``mean_matched_tokens`` (how many tokens match before the first difference, averaged) which moves
before the exact rate does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lmforge.infer import SamplingConfig


def probes(tok, documents: Sequence[str | Sequence[int]], *, n: int, prefix: int, suffix: int, seed: int = 0
           ) -> list[tuple[int, int, list[int], list[int]]]:
    """``n`` probes ``(document index, token offset, prefix ids, suffix ids)`` (module docstring).

    Raises ValueError when no document holds ``prefix + suffix`` tokens.
    """
    if n < 1 or prefix < 1 or suffix < 1:
        raise ValueError(f"memorisation: n={n}, prefix={prefix}, suffix={suffix} must all be >= 1")
    span = prefix + suffix
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(documents))
    encoded: dict[int, list[int]] = {}
    usable = []
    for d in order:                       # encode lazily: a big corpus needs only about n documents
        doc = documents[d]
        ids = list(tok.encode(doc)) if isinstance(doc, str) else [int(t) for t in doc]
        if len(ids) >= span:
            encoded[int(d)] = ids
            usable.append(int(d))
            if len(usable) >= n:
                break
    if not usable:
        raise ValueError(f"memorisation: no training document holds prefix + suffix = {span} tokens")
    out = []
    for i in range(n):
        d = usable[i % len(usable)]
        ids = encoded[d]
        o = int(rng.integers(0, len(ids) - span + 1))
        out.append((d, o, ids[o:o + prefix], ids[o + prefix:o + span]))
    return out


def matched_tokens(generated: Sequence[int], truth: Sequence[int]) -> int:
    """How many leading tokens of ``generated`` equal ``truth``."""
    k = 0
    for g, t in zip(generated, truth):
        if g != t:
            break
        k += 1
    return k


def memorisation(sampler, documents: Sequence[str | Sequence[int]], *, n: int = 100, prefix: int = 32, suffix: int = 50,
                 seed: int = 0, batch: int = 16, progress: bool = False) -> dict:
    """Greedy decoding of each probe's prefix: ``{"metrics": {"memorised_rate", "mean_matched_tokens",
    "n", "prefix", "suffix"}, "samples": [...]}``. Stop tokens are off: all ``suffix`` tokens are compared.
    Raises ValueError when ``prefix + suffix`` passes the model's ``max_seq_len`` (the sampler would go on
    in windows, predicting the suffix from a cropped prefix)."""
    from tqdm.auto import tqdm   # pylint: disable=import-outside-toplevel

    context = sampler.model_cfg.max_seq_len
    if prefix + suffix > context:
        raise ValueError(f"memorisation: prefix={prefix} + suffix={suffix} = {prefix + suffix} tokens: expected at "
                         f"most max_seq_len={context}, so that every suffix token is predicted from the whole prefix")

    found = probes(sampler.tok, documents, n=n, prefix=prefix, suffix=suffix, seed=seed)
    cfg = SamplingConfig(max_new_tokens=suffix, temperature=0.0)
    matched: list[int] = []
    with tqdm(total=len(found), desc="memorisation", unit="doc", disable=not progress, leave=False) as bar:
        for start in range(0, len(found), batch):
            chunk = found[start:start + batch]
            out = sampler.generate_ids([p for _, _, p, _ in chunk], cfg)
            for r, (_, _, _, truth) in enumerate(chunk):
                matched.append(matched_tokens(out.tokens[r, :int(out.lengths[r])].tolist(), truth))
            bar.update(len(chunk))
    samples = [{"document": d, "offset": o, "matched_tokens": m, "memorised": m == suffix}
               for (d, o, _, _), m in zip(found, matched)]
    return {"metrics": {"memorised_rate": sum(m == suffix for m in matched) / len(matched),
                        "mean_matched_tokens": float(np.mean(matched)), "n": len(matched), "prefix": prefix,
                        "suffix": suffix},
            "samples": samples}
