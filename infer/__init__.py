"""lmforge.infer — the sampler (prefill + decode returning arrays: tokens, log-probs, mask, lengths,
finish reasons; n samples per prompt; traced sampling parameters; optional streaming to the host) and its
text edge; chat replies, the tool-call loop (``infer.tools``) and retrieval for RAG (``infer.retrieval``)."""

import lmforge.model  # noqa: F401  (first: it imports flax without IPython, model/__init__.py)
from lmforge.infer.sampler import (
    FINISH_CANCELLED,
    FINISH_LENGTH,
    FINISH_NAMES,
    FINISH_STOP,
    SamplerOutput,
    SamplingConfig,
    StopStrings,
    Stream,
    bucket,
    filter_logits,
    generate,
    sample_token,
)
from lmforge.infer.text import Completion, Sampler, batch_shards, chat_replies, pad_prompts, replier, stop_table

__all__ = [
    "FINISH_CANCELLED", "FINISH_LENGTH", "FINISH_NAMES", "FINISH_STOP", "SamplerOutput", "SamplingConfig", "StopStrings",
    "Stream", "bucket", "filter_logits", "generate", "sample_token", "Completion", "Sampler", "batch_shards", "chat_replies", "replier",
    "pad_prompts", "stop_table",
]
