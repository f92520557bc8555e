"""The curation config: inputs, one config per stage (each with its thresholds), output, runner.

A curation run is ``run_curate(CurateConfig, workdir)``; ``lmforge data curate EXP.py`` and
``lmforge run EXP.py`` both call it, with gin-style bindings such as
``near_dedup.threshold=0.7 quality.min_words=100`` applied to this tree first.
"""

from __future__ import annotations

import dataclasses

from lmforge.data.curate.c4 import C4Config
from lmforge.data.curate.decontam import DecontamConfig
from lmforge.data.curate.dedup import ExactDedupConfig, NearDedupConfig
from lmforge.data.curate.document import InputConfig
from lmforge.data.curate.gopher import GopherQualityConfig, GopherRepetitionConfig
from lmforge.data.curate.language import LanguageConfig
from lmforge.data.curate.normalize import NormalizeConfig
from lmforge.data.curate.pii import PIIConfig
from lmforge.data.curate.safety import SafetyConfig

OUTPUT_FORMATS = ("jsonl.zst", "parquet", "arrayrecord", "jsonl")
RUNNERS = ("local", "beam")


@dataclasses.dataclass(frozen=True)
class OutputConfig:
    format: str = "jsonl.zst"  # jsonl.zst | parquet | arrayrecord | jsonl (uncompressed, for a quick look)
    num_shards: int = 4
    prefix: str = "part"
    zstd_level: int = 3
    examples_per_reason: int = 3  # dropped documents shown per reason in the report

    def __post_init__(self):
        if self.format not in OUTPUT_FORMATS:
            raise ValueError(f"output.format={self.format!r}: expected one of {', '.join(OUTPUT_FORMATS)}")
        if self.num_shards < 1:
            raise ValueError(f"output.num_shards={self.num_shards}: expected >= 1")


@dataclasses.dataclass(frozen=True)
class CurateConfig:
    """Stages run in the order of the fields below, from ``normalize`` to ``near_dedup``."""

    inputs: tuple[InputConfig, ...] = ()
    normalize: NormalizeConfig = NormalizeConfig()
    language: LanguageConfig = LanguageConfig()
    gopher_repetition: GopherRepetitionConfig = GopherRepetitionConfig()
    gopher_quality: GopherQualityConfig = GopherQualityConfig()
    c4: C4Config = C4Config()
    safety: SafetyConfig = SafetyConfig()
    decontaminate: DecontamConfig = DecontamConfig()
    pii: PIIConfig = dataclasses.field(default_factory=PIIConfig)  # built per config: the phonenumbers
    # check of its __post_init__ then runs when curation is configured, not when lmforge.data.curate is imported
    exact_dedup: ExactDedupConfig = ExactDedupConfig()
    near_dedup: NearDedupConfig = NearDedupConfig()
    output: OutputConfig = OutputConfig()
    runner: str = "local"  # "local" (multiprocessing) | "beam"
    workers: int = 0  # local runner processes; 0 → os.cpu_count(); 1 → in this process
    chunk_size: int = 64  # documents per task sent to a local worker
    beam_options: tuple[str, ...] = ("--runner=DirectRunner",)  # e.g. ("--runner=DataflowRunner", ...)

    def __post_init__(self):
        # Keys as `lmforge data curate` binds them (`lmforge run` names the section, curate.*, before this).
        if self.runner not in RUNNERS:
            raise ValueError(f"runner={self.runner!r}: expected one of {', '.join(RUNNERS)}")
        if self.workers < 0:
            raise ValueError(f"workers={self.workers}: expected >= 0 (0: one per CPU core)")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size={self.chunk_size}: expected >= 1")

    def check_runnable(self, workdir=None) -> None:   # pylint: disable=unused-argument
        """The input files and evaluation sets exist, checked before a run folder is written (``lmforge data
        curate``, ``lmforge run`` of a curation). Raises ValueError (FileNotFoundError for a missing file)."""
        from lmforge.data.curate.document import expand_path, resolve_files   # pylint: disable=import-outside-toplevel

        if not self.inputs:
            raise ValueError("inputs is empty: expected files to curate (--input FILE ... or inputs=(InputConfig(...),))")
        resolve_files(self.inputs)
        if self.decontaminate.enabled:
            for i, pattern in enumerate(self.decontaminate.eval_paths):
                expand_path(pattern, f"decontaminate.eval_paths[{i}]")
