"""The curation report: ``report.md`` (funnel table and plot, top drop reasons, the counts each
stage keeps — rewrites such as ``pii/EMAIL`` and notes such as ``c4/wrapped_documents``, the
documents C4 judged as hard-wrapped prose — and examples of dropped documents per reason),
``funnel.png`` and ``funnel.json`` (the same numbers, for scripts).

The markdown and JSON hold no timings or paths of the machine, so two runs over the same input
write the same bytes.
"""

from __future__ import annotations

import pathlib

from lmforge.data.curate.funnel import Funnel

TOP_REASONS = 15


def _mb(n: int) -> str:
    return f"{n / 1e6:.3f}"


def write_report(funnel: Funnel, workdir: pathlib.Path, title: str = "Curation report") -> pathlib.Path:
    """Writes report.md, funnel.png and funnel.json into ``workdir``; returns report.md's path."""
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "funnel.json").write_text(funnel.dumps() + "\n", encoding="utf-8")
    plot_funnel(funnel, workdir / "funnel.png")
    lines = [f"# {title}", "",
             f"Input: {funnel.input_docs} records, {_mb(funnel.input_bytes)} MB. "
             f"Output: {funnel.docs[-1] if funnel.docs else 0} documents, "
             f"{_mb(funnel.bytes[-1] if funnel.bytes else 0)} MB.", "",
             "Input MB are the records as stored (JSON lines with their keys, text files, parquet rows and JSON "
             "array items as JSON), good or bad; from `read` on, MB are the documents' text, so the `read` row "
             "also drops the records' framing.", "",
             "## Funnel", "", "![funnel](funnel.png)", "",
             "| stage | documents left | % of input | MB left | % of input bytes |",
             "|---|---:|---:|---:|---:|"]
    for stage, d, b in zip(funnel.stages, funnel.docs, funnel.bytes):
        lines.append(f"| {stage} | {d} | {100 * d / max(funnel.input_docs, 1):.1f} | {_mb(b)} | "
                     f"{100 * b / max(funnel.input_bytes, 1):.1f} |")
    lines += ["", "## Top drop reasons", "", "| stage/reason | documents | MB |", "|---|---:|---:|"]
    ranked = sorted(funnel.drops.items(), key=lambda kv: (-kv[1], kv[0]))
    for key, n in ranked[:TOP_REASONS]:
        lines.append(f"| {key} | {n} | {_mb(funnel.dropped_bytes.get(key, 0))} |")
    rest = ranked[TOP_REASONS:]
    if rest:   # the table still adds up to every document dropped
        lines.append(f"| {len(rest)} more reasons ({', '.join(k for k, _ in rest[:4])}{', ...' if len(rest) > 4 else ''}) "
                     f"| {sum(n for _, n in rest)} | {_mb(sum(funnel.dropped_bytes.get(k, 0) for k, _ in rest))} |")
    if not ranked:
        lines.append("| (nothing dropped) | 0 | 0 |")
    if funnel.counts:
        lines += ["", "## Counts per stage (rewrites, and notes such as c4/wrapped_documents)", "",
                  "| stage/what | count |", "|---|---:|"]
        lines += [f"| {k} | {v} |" for k, v in sorted(funnel.counts.items())]
    lines += ["", "## Examples of dropped documents", ""]
    for key, _ in ranked:
        lines.append(f"### {key}")
        lines.append("")
        for _, text in funnel.examples.get(key, []):
            quoted = text.replace("\n", " ⏎ ").replace("`", "'")
            lines.append(f"- `{quoted}`")
        lines.append("")
    path = workdir / "report.md"
    path.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    return path


def plot_funnel(funnel: Funnel, path: pathlib.Path) -> None:
    """Two bar charts: documents and MB left after each stage."""
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    stages = ["input", *funnel.stages]
    docs = [funnel.input_docs, *funnel.docs]
    mbs = [funnel.input_bytes / 1e6, *(b / 1e6 for b in funnel.bytes)]
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.45 * len(stages) + 1.5))
    for ax, values, label in ((axes[0], docs, "documents left"), (axes[1], mbs, "MB left")):
        ax.barh(range(len(stages)), values, color="tab:blue")
        ax.set_yticks(range(len(stages)), stages)
        ax.invert_yaxis()
        ax.set_xlabel(label)
        top = max(values) if values and max(values) > 0 else 1
        for i, v in enumerate(values):
            ax.text(v + 0.01 * top, i, f"{v:,.0f}" if label.startswith("doc") else f"{v:,.2f}", va="center", fontsize=8)
    fig.suptitle("Curation funnel")
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
