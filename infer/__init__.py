"""lmforge.infer — the sampler (prefill + decode returning arrays: tokens, log-probs, mask, lengths,
finish reasons; n samples per prompt; traced sampling parameters) and its text edge."""

from lmforge.infer.sampler import (
    FINISH_LENGTH,
    FINISH_NAMES,
    FINISH_STOP,
    SamplerOutput,
    SamplingConfig,
    StopStrings,
    bucket,
    filter_logits,
    generate,
    sample_token,
)
from lmforge.infer.text import Completion, Sampler, batch_shards, pad_prompts, stop_table

__all__ = [
    "FINISH_LENGTH", "FINISH_NAMES", "FINISH_STOP", "SamplerOutput", "SamplingConfig", "StopStrings", "bucket",
    "filter_logits", "generate", "sample_token", "Completion", "Sampler", "batch_shards", "pad_prompts", "stop_table",
]
