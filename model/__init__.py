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
from lmforge.model.transformer import DecoderLM

__all__ = [
    "PRESETS", "ModelConfig", "DecoderLM", "ShardingError", "axis_rules", "constrain", "create_sharded",
    "logical_spec", "param_shardings",
]
