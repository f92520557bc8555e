"""C4's line rules on hard-wrapped prose: bytes the c4 stage keeps with the plain line rules and
with hard-wrapped paragraphs judged whole (``C4Config.unwrap_paragraphs``), per corpus.

    python benchmarks/c4_wrapping.py [--pipeline] [--limit 5000]

Corpora, all offline:
- ``docstrings``: docstrings of the standard library's modules, classes and functions (read with
  ``ast`` from the source files, nothing imported; >= 20 words and 4+ lines), as their authors
  wrapped them (by hand, at 72-79 columns);
- ``rewrapped72``: the same, each prose paragraph re-filled with ``textwrap`` at 72 columns;
- ``unwrapped``: the same, each prose paragraph on one line (indented blocks as they were): what
  the line rules were written for, so its plain number is the ceiling of the other two;
- ``python_docs``: pydoc's topics and the module docs (``SourceConfig(kind="python_docs")``);
- ``shakespeare``: ../shared/data/tinyshakespeare.txt in chunks of ~40 lines: verse, which must
  not be unwrapped, with some prose speeches, which may be;
- ``hh_rlhf``: the chosen dialogues of ../shared/data/hh_rlhf_harmless_base_test.jsonl.gz, one
  paragraph per line: the output must be byte-identical to the plain rules.

``--pipeline`` also runs the default per-document stages (``process_many`` with
``CurateConfig()``) over ``docstrings`` and reports the bytes entering and leaving the c4 stage.
Prints one JSON object; ``c4.py``'s docstring holds the numbers.
"""

from __future__ import annotations

import argparse
import ast
import gzip
import json
import pathlib
import re
import sysconfig
import textwrap
import time

from lmforge.data import SourceConfig, read_documents
from lmforge.data.curate import C4Config, CurateConfig, Document, c4
from lmforge.data.curate.document import Record
from lmforge.data.curate.stages import process_many

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
_LIST_ITEM = re.compile(r"[-*+•]\s|\d+[.)]\s")


def stdlib_docstrings(limit: int = 5000, min_words: int = 20, min_lines: int = 4) -> list[str]:
    """Docstrings of the standard library (not its tests), in path order, read without importing."""
    root = pathlib.Path(sysconfig.get_paths()["stdlib"])
    out = []
    for path in sorted(root.rglob("*.py")):
        if {"site-packages", "test", "tests", "idlelib"} & set(path.parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc.split()) >= min_words and doc.count("\n") >= min_lines - 1:
                    out.append(doc)
                    if len(out) >= limit:
                        return out
    return out


def unwrap(text: str) -> str:
    """Each prose paragraph (unindented lines, no list items) on one line; other blocks as they are."""
    out = []
    for block in re.split(r"\n\s*\n", text):
        lines = block.split("\n")
        if all(line and not line[0].isspace() and not _LIST_ITEM.match(line) for line in lines):
            out.append(" ".join(line.strip() for line in lines))
        else:
            out.append(block)
    return "\n\n".join(out)


def rewrap(text: str, width: int = 72) -> str:
    return "\n\n".join(textwrap.fill(b, width) if "\n" not in b else b for b in unwrap(text).split("\n\n"))


def shakespeare_chunks(lines_per_chunk: int = 40) -> list[str]:
    path = SHARED / "tinyshakespeare.txt"
    if not path.exists():
        return []
    chunks, cur = [], []
    for speech in path.read_text(encoding="utf-8").split("\n\n"):
        cur.append(speech)
        if sum(s.count("\n") + 1 for s in cur) >= lines_per_chunk:
            chunks.append("\n\n".join(cur))
            cur = []
    return chunks


def hh_dialogues() -> list[str]:
    path = SHARED / "hh_rlhf_harmless_base_test.jsonl.gz"
    if not path.exists():
        return []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line)["chosen"] for line in f]


def corpora(limit: int) -> dict[str, list[str]]:
    docs = stdlib_docstrings(limit)
    sets = {"docstrings": docs, "rewrapped72": [rewrap(t) for t in docs], "unwrapped": [unwrap(t) for t in docs],
            "python_docs": list(read_documents(SourceConfig(kind="python_docs"))),
            "shakespeare": shakespeare_chunks(), "hh_rlhf": hh_dialogues()}
    return {k: v for k, v in sets.items() if v}


def c4_kept(texts: list[str]) -> dict[str, float]:
    """Bytes and documents c4 keeps, plain and unwrapping; documents treated as wrapped; and
    documents whose output differs from the plain rules."""
    plain, unwrapping = C4Config(unwrap_paragraphs=False), C4Config()
    total = sum(len(t.encode()) for t in texts)
    bytes_p = bytes_u = docs_p = docs_u = wrapped = differ = 0
    for i, t in enumerate(texts):
        doc = Document(str(i), t, "bench")
        vp, vu = c4(plain, doc), c4(unwrapping, doc)
        bytes_p += len(vp.doc.text.encode()) if vp.doc else 0
        bytes_u += len(vu.doc.text.encode()) if vu.doc else 0
        docs_p, docs_u = docs_p + (vp.doc is not None), docs_u + (vu.doc is not None)
        wrapped += bool((vu.counts or {}).get("wrapped_documents"))
        differ += (vp.doc and vp.doc.text, vp.reason) != (vu.doc and vu.doc.text, vu.reason)
    n = len(texts)
    return {"documents": n, "mb": round(total / 1e6, 3), "bytes_kept_plain": round(bytes_p / total, 4),
            "bytes_kept_unwrapping": round(bytes_u / total, 4), "docs_kept_plain": round(docs_p / n, 4),
            "docs_kept_unwrapping": round(docs_u / n, 4), "wrapped_documents": round(wrapped / n, 4),
            "output_differs": round(differ / n, 4)}


def c4_throughput(texts: list[str], repeat: int = 3) -> dict[str, float]:
    """MB/s of the c4 stage, plain and unwrapping, best of ``repeat`` (CPU time, one process)."""
    docs = [Document(str(i), t, "bench") for i, t in enumerate(texts)]
    mb = sum(len(t.encode()) for t in texts) / 1e6
    out = {}
    for name, cfg in (("plain", C4Config(unwrap_paragraphs=False)), ("unwrapping", C4Config())):
        best = float("inf")
        for _ in range(repeat):
            t = time.process_time()
            for d in docs:
                c4(cfg, d)
            best = min(best, time.process_time() - t)
        out[f"{name}_mb_per_s"] = round(mb / best, 2)
    return out


def pipeline_c4_bytes(texts: list[str]) -> dict[str, dict[str, float]]:
    """Bytes entering and leaving the c4 stage in the default per-document pipeline."""
    out = {}
    for name, c4cfg in (("plain", C4Config(unwrap_paragraphs=False)), ("unwrapping", C4Config())):
        cfg = CurateConfig(c4=c4cfg)
        names = [n for n in ("normalize", "language", "gopher_repetition", "gopher_quality", "c4", "safety",
                             "decontaminate", "pii") if getattr(cfg, n).enabled]
        at = names.index("c4") + 1  # sizes[0] is the input, sizes[k] after the k-th enabled stage
        records = [Record(i, Document(str(i), t, "bench"), size=len(t.encode())) for i, t in enumerate(texts)]
        into = left = wrapped = 0
        for k in range(0, len(records), 64):
            for r in process_many(cfg, records[k:k + 64]):
                if len(r.sizes) >= at:  # reached c4
                    into += r.sizes[at - 1]
                    left += r.sizes[at] if len(r.sizes) > at else 0
                wrapped += dict(r.counts).get("c4/wrapped_documents", 0)
        out[name] = {"mb_into_c4": round(into / 1e6, 3), "c4_keeps": round(left / max(into, 1), 4),
                     "wrapped_documents": wrapped}
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=5000, help="at most this many docstrings")
    parser.add_argument("--pipeline", action="store_true", help="also run the default per-document stages")
    args = parser.parse_args()
    sets = corpora(args.limit)
    out = {"c4": {name: c4_kept(texts) for name, texts in sets.items()},
           "throughput_python_docs": c4_throughput(sets["python_docs"])}
    if args.pipeline:
        out["pipeline_docstrings"] = pipeline_c4_bytes(sets["docstrings"])
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
