"""lmforge.data.curate: documents → normalized, filtered, deduplicated, PII-free curated shards.

Stages (each a pure function ``stage(cfg, doc) -> Verdict`` with its own config and counters):
normalize, language, gopher_repetition, gopher_quality, c4, safety, decontaminate, pii, then the
global exact_dedup and near_dedup. Runners: local (multiprocessing) and Apache Beam. Mixtures
sample curated outputs by weight into one grain stream.
"""

from lmforge.data.curate.c4 import C4Config, c4
from lmforge.data.curate.config import CurateConfig, OutputConfig
from lmforge.data.curate.decontam import DecontamConfig, decontaminate
from lmforge.data.curate.dedup import (
    ExactDedupConfig,
    NearDedupConfig,
    exact_duplicates,
    exact_key,
    jaccard,
    near_duplicates,
    signature,
)
from lmforge.data.curate.document import Document, InputConfig, Record, read_file, resolve_files
from lmforge.data.curate.funnel import Funnel
from lmforge.data.curate.gopher import GopherQualityConfig, GopherRepetitionConfig, gopher_quality, gopher_repetition
from lmforge.data.curate.language import LanguageConfig, identify, language
from lmforge.data.curate.mixture import MixtureConfig, MixtureSource, mixture_dataset, mixture_documents
from lmforge.data.curate.normalize import NormalizeConfig, normalize, normalize_text
from lmforge.data.curate.pii import PIIConfig, pii, scrub
from lmforge.data.curate.report import write_report
from lmforge.data.curate.run import DATA_DIR, curate, curate_texts, run_curate
from lmforge.data.curate.safety import SafetyConfig, safety, toxicity
from lmforge.data.curate.stages import DocResult, enabled_stages, process
from lmforge.data.curate.verdict import Verdict
from lmforge.data.curate.writers import read_shards, shard_files, write_shard

__all__ = [
    "C4Config", "CurateConfig", "DATA_DIR", "DecontamConfig", "DocResult", "Document", "ExactDedupConfig", "Funnel",
    "GopherQualityConfig", "GopherRepetitionConfig", "InputConfig", "LanguageConfig", "MixtureConfig",
    "MixtureSource", "NearDedupConfig", "NormalizeConfig", "OutputConfig", "PIIConfig", "Record", "SafetyConfig",
    "Verdict", "c4", "curate", "curate_texts", "decontaminate", "enabled_stages", "exact_duplicates", "exact_key", "gopher_quality",
    "gopher_repetition", "identify", "jaccard", "language", "mixture_dataset", "mixture_documents",
    "near_duplicates", "normalize", "normalize_text", "pii", "process", "read_file", "read_shards",
    "resolve_files", "run_curate", "safety", "scrub", "shard_files", "signature", "toxicity", "write_report",
    "write_shard",
]
