"""``run_curate(cfg, workdir)``: curate with the configured runner, then write the report.

WORKDIR/data holds the shards, WORKDIR/report.md (+ funnel.png, funnel.json) the report. The
return value is the task's final metrics (``lmforge run`` prints them as one JSON line).
"""

from __future__ import annotations

import pathlib
import sys
import time

from lmforge.data.curate.config import CurateConfig
from lmforge.data.curate.decontam import check_eval_sets
from lmforge.data.curate.document import file_format, resolve_files
from lmforge.data.curate.funnel import Funnel
from lmforge.data.curate.report import write_report

DATA_DIR = "data"
# What a file that gave no record was expected to hold, by format (a text file is always one record).
_EXPECTED = {"jsonl": "one JSON object per line", "json": "a JSON array of objects", "parquet": "at least one row"}


def curate(cfg: CurateConfig, out_dir: pathlib.Path) -> Funnel:
    """Writes the curated shards of ``cfg`` into ``out_dir``; returns the funnel. The inputs and the
    evaluation sets are resolved and read here first, so a bad one fails before any worker starts."""
    resolve_files(cfg.inputs)
    check_eval_sets(cfg.decontaminate)
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
        text_bytes = sum(len(t.encode("utf-8")) for t in texts)   # the texts, not the JSON lines wrapping them
        print(f"curated {funnel.input_docs} → {funnel.docs[-1]} documents "
              f"({text_bytes / 1e6:.2f} → {funnel.bytes[-1] / 1e6:.2f} MB){funnel.top_drops()}; report {report}",
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
    if not funnel.input_docs:
        raise ValueError(no_records(cfg))
    report = write_report(funnel, workdir)
    print(f"curated {funnel.input_docs} → {funnel.docs[-1]} documents into {workdir / DATA_DIR}{funnel.top_drops()}; "
          f"report {report}", flush=True)
    for line in skipped_records(funnel):
        print(line, file=sys.stderr, flush=True)
    if not funnel.docs[-1]:
        raise ValueError(kept_none(funnel, report))
    return {
        "curate/input_documents": funnel.input_docs,
        "curate/input_mb": funnel.input_bytes / 1e6,
        "curate/output_documents": funnel.docs[-1],
        "curate/output_mb": funnel.bytes[-1] / 1e6,
        "curate/seconds": seconds,
        "curate/mb_per_s": funnel.input_bytes / 1e6 / max(seconds, 1e-9),
    }


def no_records(cfg: CurateConfig) -> str:
    """The error for inputs that held no record at all: which files, and what they should hold."""
    files = [(str(path), file_format(icfg, path)) for icfg, path in resolve_files(cfg.inputs)]
    names = ", ".join(path for path, _ in files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
    expected = " / ".join(dict.fromkeys(_EXPECTED.get(fmt, "a record") for _, fmt in files))
    return f"{names}: no records; expected {expected}"


def kept_none(funnel: Funnel, report: pathlib.Path) -> str:
    """The error for a curation that kept no document: every reason with its count, the first bad
    record of the top one, and a hint when the text field looks wrong."""
    ranked = sorted(funnel.drops.items(), key=lambda kv: (-kv[1], kv[0]))
    top = ranked[0][0]
    first = (funnel.examples.get(top) or [(0, "")])[0][1]
    reasons = [f"{top} dropped {ranked[0][1]}" + (f", the first {first}" if top.startswith("read/") and first else "")]
    reasons += [f"{key} dropped {n}" for key, n in ranked[1:]]
    hint = ("; `lmforge data curate --text-field NAME` reads another field"
            if any(key == "read/missing_field" for key, _ in ranked) else "")
    return f"curation kept none of the {funnel.input_docs} documents: {'; '.join(reasons)}{hint}; see {report}"
