"""The Apache Beam runner: the same stages as a Beam pipeline (DirectRunner in tests; Dataflow,
Flink or Spark by ``beam_options``). Needs the ``beam`` extra: ``pip install 'lmforge[beam]'``.

Graph: file list → Reshuffle → read (one file per element) → per-document stages (a DoFn that
builds its stages once in ``setup``) → exact dedup (GroupByKey on the exact key) → near dedup
(GroupByKey on each LSH band key, candidate edges per bucket, union-find over all edges) →
fates → funnel (a CombineFn over :class:`Funnel`) and shards (CoGroupByKey of the kept documents
with every shard index, one shard written per element).

Choices:
- Every decision is the same pure function the local runner calls (``process``,
  ``exact_duplicates`` rule, ``bucket_edges``, ``clusters``, ``fate``, ``write_shard``), so the
  two runners write byte-identical shards and the same report.
- The dedup decisions reach the fates as side inputs (dicts of dropped ordinals): simple and
  fine to tens of millions of documents; the union-find runs in one worker, as datatrove's does.
- Shards and the funnel are written with local paths, so on a cluster ``workdir`` must be a
  shared mount (a GCS FUSE mount on Dataflow).
"""

from __future__ import annotations

import json
import pathlib

from lmforge.data.curate.config import CurateConfig
from lmforge.data.curate.dedup import band_keys, bucket_edges, clusters
from lmforge.data.curate.document import file_format, named_files, read_file
from lmforge.data.curate.fates import fate
from lmforge.data.curate.funnel import Funnel
from lmforge.data.curate.stages import enabled_stages, process
from lmforge.data.curate.writers import shard_of, write_shard

_FUNNEL_FILE = ".funnel.json"


def _import_beam():
    try:
        import apache_beam as beam  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise ValueError("runner='beam' needs Apache Beam: pip install 'lmforge[beam]' "
                         "(or use runner='local')") from None
    return beam


def run_beam(cfg: CurateConfig, out_dir: pathlib.Path) -> Funnel:
    """Curates ``cfg.inputs`` into shards in ``out_dir`` with Beam; returns the funnel."""
    beam = _import_beam()
    from apache_beam.options.pipeline_options import PipelineOptions  # pylint: disable=import-outside-toplevel

    files = [(i, icfg, str(path), name) for i, (icfg, path, name) in enumerate(named_files(cfg.inputs))]
    paths = [(path, file_format(icfg, pathlib.Path(path))) for _, icfg, path, _ in files]
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stages = enabled_stages(cfg)

    class Process(beam.DoFn):
        def process(self, element):
            i, icfg, path, name = element
            for rec in read_file(icfg, pathlib.Path(path), i, name):
                yield process(cfg, rec)

    class FunnelFn(beam.CombineFn):
        def create_accumulator(self):
            return Funnel(stages, cfg.output.examples_per_reason)

        def add_input(self, acc, item):
            r, (stage, reason, detail) = item
            acc.add(r, stage, reason, detail)
            return acc

        def merge_accumulators(self, accs):
            accs = list(accs)
            for other in accs[1:]:
                accs[0].merge(other)
            return accs[0]

        def extract_output(self, acc):
            return acc

    def first_and_rest(kv):
        ordinals = sorted(kv[1])
        return [(o, ordinals[0]) for o in ordinals[1:]]

    def write(kv):
        index, grouped = kv
        write_shard(out_dir, cfg.output, index, grouped["docs"])

    def save_funnel(funnel: Funnel):
        (out_dir / _FUNNEL_FILE).write_text(funnel.dumps())

    with beam.Pipeline(options=PipelineOptions(list(cfg.beam_options))) as p:
        results = (p | "Files" >> beam.Create(files) | beam.Reshuffle()
                   | "Stages" >> beam.ParDo(Process()))
        passed = results | "Passed" >> beam.Filter(lambda r: r.doc is not None)
        if cfg.exact_dedup.enabled:
            exact = (passed | "ExactKey" >> beam.Map(lambda r: (r.exact, r.ordinal))
                     | "ExactGroup" >> beam.GroupByKey() | "ExactDrop" >> beam.FlatMap(first_and_rest))
        else:
            exact = p | "NoExact" >> beam.Create([])
        exact_side = beam.pvalue.AsDict(exact)
        if cfg.near_dedup.enabled:
            near = (passed
                    | "NotExact" >> beam.Filter(lambda r, ex: r.ordinal not in ex, exact_side)
                    | "Bands" >> beam.FlatMap(lambda r: [(k, (r.ordinal, r.sig)) for k in band_keys(cfg.near_dedup, r.sig)])
                    | "BandGroup" >> beam.GroupByKey()
                    | "Edges" >> beam.FlatMap(lambda kv: bucket_edges(kv[1], cfg.near_dedup.threshold))
                    | "AllEdges" >> beam.combiners.ToList()
                    | "UnionFind" >> beam.FlatMap(lambda edges: sorted(clusters(edges).items())))
        else:
            near = p | "NoNear" >> beam.Create([])
        fates = results | "Fates" >> beam.Map(lambda r, ex, nr: (r, fate(r, ex, nr, paths)), exact_side, beam.pvalue.AsDict(near))
        (fates | "Funnel" >> beam.CombineGlobally(FunnelFn()) | "SaveFunnel" >> beam.Map(save_funnel))
        kept = (fates | "Kept" >> beam.Filter(lambda rf: not rf[1][0])
                | "ByShard" >> beam.Map(lambda rf: (shard_of(rf[0].doc.id, cfg.output.num_shards), (rf[0].ordinal, rf[0].doc))))
        indices = p | "ShardIndices" >> beam.Create([(i, None) for i in range(cfg.output.num_shards)])
        ({"docs": kept, "index": indices} | "Join" >> beam.CoGroupByKey() | "Write" >> beam.Map(write))
    data = json.loads((out_dir / _FUNNEL_FILE).read_text())
    (out_dir / _FUNNEL_FILE).unlink()
    return funnel_from_json(data, cfg.output.examples_per_reason)


def funnel_from_json(data: dict, examples_per_reason: int) -> Funnel:
    """Rebuilds a Funnel from ``Funnel.to_json`` (examples keep their order as ordinals)."""
    f = Funnel(tuple(data["stages"]), examples_per_reason, data["input"]["documents"], data["input"]["bytes"],
               [row["documents"] for row in data["left"]], [row["bytes"] for row in data["left"]])
    f.drops = {k: v["documents"] for k, v in data["drops"].items()}
    f.dropped_bytes = {k: v["bytes"] for k, v in data["drops"].items()}
    f.counts = dict(data["rewrites"])
    f.examples = {k: list(enumerate(v)) for k, v in data["examples"].items()}
    return f
