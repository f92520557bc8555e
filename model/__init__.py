"""lmforge.model — Flax NNX modules only: no optimizer, no data, no files."""

import sys


def _import_flax_without_ipython() -> None:
    """flax.nnx imports IPython (nnx.reprlib, .visualization, .summary) only to ask whether it runs
    inside IPython. When IPython is not imported, it does not; the import would cost ~0.3 s of every
    command's start-up (IPython, prompt_toolkit, jedi: benchmarks/README.md, fixed cost). A ``None``
    entry in ``sys.modules`` makes ``from IPython import ...`` raise the ImportError flax handles;
    it is removed at once, so a later ``import IPython`` works."""
    if "IPython" in sys.modules or "flax.nnx" in sys.modules:
        return
    sys.modules["IPython"] = None
    try:
        import flax.nnx  # noqa: F401
    finally:
        if "IPython" in sys.modules and sys.modules["IPython"] is None:
            del sys.modules["IPython"]


_import_flax_without_ipython()

from lmforge.model.config import PRESETS, LoRAConfig, ModelConfig, ModelRuntime
from lmforge.model.sharding import (
    DEFAULT_RULES,
    ShardingError,
    abstract_sharded,
    axis_rules,
    constrain,
    create_sharded,
    logical_spec,
    param_shardings,
    use_mesh,
)
from lmforge.model.encdec import EncoderDecoderLM
from lmforge.model.encoder import EncoderLM, mean_pool
from lmforge.model.layers import Dense
from lmforge.model.logprobs import TokenLogprobs, forward_logprobs, token_logprobs
from lmforge.model.lora import ADAPTER_PATTERN, LoRA, adapter_params, apply_lora
from lmforge.model.paths import combine, flatten, select, unflatten
from lmforge.model.transformer import DecoderLM


def build_model(cfg: ModelConfig, *, rngs):
    """The module of ``cfg.family``: DecoderLM (gpt2, llama), EncoderLM (bert) or EncoderDecoderLM
    (transformer, t5), with LoRA adapters on the projections ``cfg.lora.targets`` when ``cfg.lora.rank > 0``."""
    kind = {"decoder": DecoderLM, "encoder": EncoderLM, "encoder_decoder": EncoderDecoderLM}[cfg.architecture]
    model = kind(cfg, rngs=rngs)
    if cfg.lora.rank:
        apply_lora(model, cfg.lora, rngs)
    return model


__all__ = [
    "PRESETS", "ModelConfig", "ModelRuntime", "LoRAConfig", "LoRA", "apply_lora", "Dense", "TokenLogprobs", "token_logprobs",
    "forward_logprobs", "ADAPTER_PATTERN", "adapter_params", "combine", "flatten", "select", "unflatten", "DecoderLM", "EncoderLM", "EncoderDecoderLM", "build_model", "mean_pool",
    "DEFAULT_RULES", "ShardingError", "abstract_sharded", "axis_rules", "constrain", "create_sharded", "logical_spec", "param_shardings", "use_mesh",
]
