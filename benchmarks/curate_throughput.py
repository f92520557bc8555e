"""Curation throughput: MB/s per core for each lmforge stage and the whole pipeline, and the same
stages in datatrove on the same input in the same run (ratio = lmforge / datatrove).

    python benchmarks/curate_throughput.py [--repeat 2] [--max-mb 2]

Input: Python's own documentation (``SourceConfig(kind="python_docs")``, ~2 MB of English prose
and code samples, no download). Every number is one process on one core (the local runner with
``workers=1``), best of ``--repeat`` runs, MB of *input* text per second. Each stage is timed
alone on all documents; "pipeline" runs every stage in order plus dedup and the shard writer.
datatrove's counterparts: FTFYFormatter, GopherRepetitionFilter, GopherQualityFilter,
C4QualityFilter, PIIFormatter and those five in sequence ("pipeline_common"; lmforge's
"pipeline_common" is the same five stages). datatrove has no offline language-id, toxicity,
decontamination or one-process MinHash step (its MinHash runs as four disk-backed stages), so
those rows have no ratio. datatrove's word filters need spacy (the ``bench`` extra + spacy).

Measured (2-core CPU machine, busy with other engineers' tests; python 3.11, datatrove 0.10.1 +
spacy, python_docs 2.091 MB in 581 docs, ``--repeat 2``), MB/s per core, lmforge / datatrove:

    normalize             1.21 /  2.10   (both ftfy; an earlier run gave 1.85 / 1.81)
    gopher_repetition     2.45 /  0.20
    gopher_quality        7.51 /  0.24
    c4                   24.61 /  0.37
    pii                   2.08 /  5.84   (datatrove: emails + IPs only; lmforge: 6 kinds, validated)
    pipeline_common       0.59 /  0.16   (ratio 3.74)
    language 1.39, safety 2.43, decontaminate 1.81, exact key 7.80,
    minhash 3.45, whole pipeline (all stages, dedup, shards, report) 0.32.

The slowest stages are ftfy, language id, PII and the toxicity model; the Gopher/C4 rules, where
datatrove spends its time in spacy's word tokenizer, are 10-60x faster here.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import functools
import json
import pathlib
import tempfile
import time

from lmforge.data import SourceConfig, read_documents
from lmforge.data.curate import C4Config, CurateConfig, DecontamConfig, Document, InputConfig, run_curate
from lmforge.data.curate.dedup import exact_key, signature
from lmforge.data.curate.document import Record
from lmforge.data.curate.stages import BATCHED, DOC_STAGES, process_many

COMMON = ("normalize", "gopher_repetition", "gopher_quality", "c4", "pii")


def _best(fn, repeat):
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def lmforge_rates(texts, mb, repeat, tmp):
    eval_file = pathlib.Path(tmp) / "eval.jsonl"  # a stand-in eval set: every 10th document
    eval_file.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[::10]))
    cfg = CurateConfig(c4=C4Config(), decontaminate=DecontamConfig(eval_paths=(str(eval_file),)))
    docs = [Document(str(i), t, "python_docs") for i, t in enumerate(texts)]
    rates = {}
    for name, fn in DOC_STAGES:
        stage_cfg = getattr(cfg, name)
        if name in BATCHED:
            run = functools.partial(lambda f, c: [f(c, docs[i:i + 64]) for i in range(0, len(docs), 64)],
                                    BATCHED[name], stage_cfg)
        else:
            run = functools.partial(lambda f, c: [f(c, d) for d in docs], fn, stage_cfg)
        run()  # warm up: loads models
        rates[name] = mb / _best(run, repeat)
    rates["exact_dedup_key"] = mb / _best(lambda: [exact_key(t) for t in texts], repeat)
    rates["near_dedup_minhash"] = mb / _best(lambda: [signature(cfg.near_dedup, t) for t in texts], repeat)
    records = [Record(i, d, size=len(d.text.encode())) for i, d in enumerate(docs)]
    off = {n: type(getattr(cfg, n))(enabled=False) for n, _ in DOC_STAGES if n not in COMMON}
    off.update(exact_dedup=type(cfg.exact_dedup)(enabled=False), near_dedup=type(cfg.near_dedup)(enabled=False))
    common = CurateConfig(**{**cfg.__dict__, **off})
    rates["pipeline_common"] = mb / _best(lambda: [process_many(common, records[i:i + 64])
                                                   for i in range(0, len(records), 64)], repeat)
    path = pathlib.Path(tmp) / "in.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    full = CurateConfig(**{**cfg.__dict__, "inputs": (InputConfig(paths=(str(path),)),), "workers": 1})
    with contextlib.redirect_stdout(sys.stderr):  # stdout is the JSON only
        rates["pipeline"] = mb / _best(lambda: run_curate(full, pathlib.Path(tmp) / f"run{time.time_ns()}"), repeat)
    return rates


def datatrove_rates(texts, mb, repeat):
    try:
        from datatrove.data import Document as DTDocument  # pylint: disable=import-outside-toplevel
        from datatrove.pipeline.filters import (  # pylint: disable=import-outside-toplevel
            C4QualityFilter,
            GopherQualityFilter,
            GopherRepetitionFilter,
        )
        from datatrove.pipeline.formatters import FTFYFormatter, PIIFormatter  # pylint: disable=import-outside-toplevel
    except ImportError as e:
        return {"error": f"datatrove not importable: {e}"}
    steps = {"normalize": FTFYFormatter, "gopher_repetition": GopherRepetitionFilter,
             "gopher_quality": GopherQualityFilter, "c4": C4QualityFilter, "pii": PIIFormatter}

    def run(step_classes):
        data = (DTDocument(text=t, id=str(i)) for i, t in enumerate(texts))
        for cls in step_classes:
            data = cls().run(data)
        for _ in data:
            pass

    rates = {}
    try:
        for name, cls in steps.items():
            run([cls])  # warm up (tokenizer load)
            rates[name] = mb / _best(lambda c=cls: run([c]), repeat)
        rates["pipeline_common"] = mb / _best(lambda: run(list(steps.values())), repeat)
    except ImportError as e:
        rates["error"] = str(e)
    return rates


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--max-mb", type=float, default=0, help="use only the first documents up to this size")
    args = parser.parse_args()
    texts = list(read_documents(SourceConfig(kind="python_docs")))
    if args.max_mb:
        kept, total = [], 0
        for t in texts:
            total += len(t.encode())
            if total > args.max_mb * 1e6:
                break
            kept.append(t)
        texts = kept
    mb = sum(len(t.encode()) for t in texts) / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        ours = lmforge_rates(texts, mb, args.repeat, tmp)
    theirs = datatrove_rates(texts, mb, args.repeat)
    out = {"input": {"source": "python_docs", "documents": len(texts), "mb": round(mb, 3)},
           "unit": "MB/s per core (one process)",
           "lmforge": {k: round(v, 3) for k, v in ours.items()},
           "datatrove": {k: (round(v, 3) if isinstance(v, float) else v) for k, v in theirs.items()},
           "ratio_lmforge_over_datatrove": {k: round(ours[k] / theirs[k], 2) for k in ours
                                            if isinstance(theirs.get(k), float)}}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
