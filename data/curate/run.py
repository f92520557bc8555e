"""``run_curate(cfg, workdir)``: curate with the configured runner, then write the report.

WORKDIR/data holds the shards, WORKDIR/report.md (+ funnel.png, funnel.json) the report. The
return value is the task's final metrics (``lmforge run`` prints them as one JSON line).
"""

from __future__ import annotations

import pathlib
import sys
import time

from lmforge.data.curate.config import CurateConfig
from lmforge.data.curate.funnel import Funnel
from lmforge.data.curate.report import write_report

DATA_DIR = "data"


def curate(cfg: CurateConfig, out_dir: pathlib.Path) -> Funnel:
    """Writes the curated shards of ``cfg`` into ``out_dir``; returns the funnel."""
    if cfg.runner == "beam":
        from lmforge.data.curate.beam import run_beam  # pylint: disable=import-outside-toplevel

        return run_beam(cfg, pathlib.Path(out_dir))
    from lmforge.data.curate.local import run_local  # pylint: disable=import-outside-toplevel

    return run_local(cfg, pathlib.Path(out_dir))


def curate_texts(cfg: CurateConfig, texts: list[str], workdir: pathlib.Path, *, source: str = "documents") -> list[str]:
    """Curates in-memory ``texts`` (e.g. a pretraining source) with ``cfg``'s stages (its own inputs are
    ignored): writes them to ``workdir/input.jsonl``, the shards to ``workdir/DATA_DIR`` and the
    report beside them, and returns the kept texts. A workdir that already holds a finished
    curation (its funnel.json) is reused as it is, so a resumed run reads the same documents."""
    import dataclasses
    import json

    from lmforge.data.curate.document import InputConfig
    from lmforge.data.curate.writers import read_shards

    workdir = pathlib.Path(workdir)
    if not (workdir / "funnel.json").is_file():
        workdir.mkdir(parents=True, exist_ok=True)
        path = workdir / "input.jsonl"
        with open(path, "w", encoding="utf-8") as f:
            for i, text in enumerate(texts):
                f.write(json.dumps({"id": f"{source}-{i}", "text": text}, ensure_ascii=False) + "\n")
        inputs = (InputConfig(paths=(str(path),), format="jsonl", source=source),)
        funnel = curate(dataclasses.replace(cfg, inputs=inputs), workdir / DATA_DIR)
        report = write_report(funnel, workdir)
        print(f"curated {funnel.input_docs} → {funnel.docs[-1]} documents "
              f"({funnel.input_bytes / 1e6:.2f} → {funnel.bytes[-1] / 1e6:.2f} MB){funnel.top_drops()}; report {report}",
              flush=True)
        for line in skipped_records(funnel):
            print(line, file=sys.stderr, flush=True)
    return [doc.text for doc in read_shards(workdir / DATA_DIR)]


def skipped_records(funnel: Funnel) -> list[str]:
    """One line per reason records were skipped when read (``read/*``): how many, and the first one's
    ``[path:LINE]`` with what was expected of it (``input.on_bad_record="skip"``)."""
    return [f"lmforge: skipped {n:,} record(s) as {key}; the first: {funnel.examples[key][0][1]}"
            for key, n in sorted(funnel.drops.items()) if key.startswith("read/") and funnel.examples.get(key)]


def run_curate(cfg: CurateConfig, workdir: pathlib.Path) -> dict[str, float]:
    workdir = pathlib.Path(workdir)
    t0 = time.time()
    funnel = curate(cfg, workdir / DATA_DIR)
    seconds = time.time() - t0
    report = write_report(funnel, workdir)
    print(f"curated {funnel.input_docs} → {funnel.docs[-1]} documents into {workdir / DATA_DIR}{funnel.top_drops()}; "
          f"report {report}", flush=True)
    for line in skipped_records(funnel):
        print(line, file=sys.stderr, flush=True)
    if funnel.input_docs and not funnel.docs[-1]:
        top = min(funnel.drops.items(), key=lambda kv: (-kv[1], kv[0]))[0]   # the report's first reason
        first = (funnel.examples.get(top) or [(0, "")])[0][1]
        raise ValueError(f"curation kept none of the {funnel.input_docs} documents: {top} dropped {funnel.drops[top]}"
                         + (f", the first {first}" if top.startswith("read/") and first else "")
                         + ("; `lmforge data curate --text-field NAME` reads another field" if top == "read/missing_field"
                            else "") + f"; see {report}")
    return {
        "curate/input_documents": funnel.input_docs,
        "curate/input_mb": funnel.input_bytes / 1e6,
        "curate/output_documents": funnel.docs[-1],
        "curate/output_mb": funnel.bytes[-1] / 1e6,
        "curate/seconds": seconds,
        "curate/mb_per_s": funnel.input_bytes / 1e6 / max(seconds, 1e-9),
    }
