"""lmforge.data: raw sources, tokenizers and grain pipelines (nothing else in lmforge below it)."""

from lmforge.data.corruption import mask_tokens, span_corrupt, span_uncorrupt
from lmforge.data.pipeline import Batch, DataConfig, eval_batches, train_dataset
from lmforge.data.sources import SourceConfig, read_documents, split_documents
from lmforge.data.tokenizer import (
    SPECIAL_TOKENS,
    Tokenizer,
    TokenizerConfig,
    compression_report,
    load_tokenizer,
    train_tokenizer,
)

__all__ = [
    "Batch",
    "DataConfig",
    "SPECIAL_TOKENS",
    "SourceConfig",
    "Tokenizer",
    "TokenizerConfig",
    "compression_report",
    "eval_batches",
    "load_tokenizer",
    "mask_tokens",
    "read_documents",
    "span_corrupt",
    "span_uncorrupt",
    "split_documents",
    "train_dataset",
    "train_tokenizer",
]
