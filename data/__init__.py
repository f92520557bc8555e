"""lmforge.data: raw sources, tokenizers and grain pipelines (nothing else in lmforge below it)."""

from lmforge.data import knowledge, synthetic   # task modules: synthetic.generate / mixture, knowledge.KnowledgeBase
from lmforge.data.chat import chat_template_for
from lmforge.data.chat_readers import read_conversations
from lmforge.data.corruption import mask_tokens, span_corrupt, span_uncorrupt
from lmforge.data.pipeline import Batch, DataConfig, eval_batches, train_dataset
from lmforge.data.sources import MixtureSource, SourceConfig, read_documents, split_documents
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
    "MixtureSource",
    "SPECIAL_TOKENS",
    "SourceConfig",
    "Tokenizer",
    "TokenizerConfig",
    "chat_template_for",
    "compression_report",
    "eval_batches",
    "knowledge",
    "load_tokenizer",
    "mask_tokens",
    "read_conversations",
    "read_documents",
    "span_corrupt",
    "span_uncorrupt",
    "split_documents",
    "synthetic",
    "train_dataset",
    "train_tokenizer",
]
