"""lmforge.model — Flax NNX modules only: no optimizer, no data, no files."""

from lmforge.model.config import PRESETS, ModelConfig
from lmforge.model.sharding import (
    ShardingError,
    axis_rules,
    constrain,
    create_sharded,
    logical_spec,
    param_shardings,
)
from lmforge.model.encdec import EncoderDecoderLM
from lmforge.model.encoder import EncoderLM, mean_pool
from lmforge.model.transformer import DecoderLM


def build_model(cfg: ModelConfig, *, rngs):
    """The module of ``cfg.family``: DecoderLM (gpt2, llama), EncoderLM (bert) or EncoderDecoderLM (transformer, t5)."""
    kind = {"decoder": DecoderLM, "encoder": EncoderLM, "encoder_decoder": EncoderDecoderLM}[cfg.architecture]
    return kind(cfg, rngs=rngs)


__all__ = [
    "PRESETS", "ModelConfig", "DecoderLM", "EncoderLM", "EncoderDecoderLM", "build_model", "mean_pool",
    "ShardingError", "axis_rules", "constrain", "create_sharded", "logical_spec", "param_shardings",
]
