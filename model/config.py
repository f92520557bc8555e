"""Model configuration: one frozen dataclass and the named presets.

Two decoder-only families share one module tree and differ only in a few fields:
- ``gpt2`` (Radford et al. 2019): learned absolute positions, pre-LayerNorm with biases, GELU
  (tanh approximation, as GPT-2 and Hugging Face's ``gelu_new``), tied input/output embeddings.
- ``llama`` (Touvron et al. 2023): RoPE, RMSNorm, SwiGLU, no biases, grouped-query attention.

``vocab_size=0`` means "take it from the tokenizer" (the pretraining runner fills it in, rounded up
to ``vocab_multiple``, as nanoGPT pads GPT-2's 50257 to 50304 for faster matmuls).
"""

from __future__ import annotations

import dataclasses

NORMS = ("layernorm", "rmsnorm")
POSITIONS = ("learned", "rope")
ACTIVATIONS = ("gelu", "gelu_exact", "swiglu")
ATTENTION_BACKENDS = ("xla", "dot_product", "cudnn")
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")
DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    family: str = "gpt2"
    vocab_size: int = 50304
    vocab_multiple: int = 1
    num_layers: int = 12
    num_heads: int = 12
    num_kv_heads: int = 0            # 0 → num_heads (multi-head attention); fewer → GQA
    embed_dim: int = 768
    head_dim: int = 0                # 0 → embed_dim // num_heads
    mlp_dim: int = 3072
    max_seq_len: int = 1024
    norm: str = "layernorm"
    norm_eps: float = 1e-5
    position: str = "learned"
    rope_theta: float = 10_000.0
    activation: str = "gelu"
    use_bias: bool = True
    tie_embeddings: bool = True
    dropout: float = 0.0
    init_std: float = 0.02
    attention: str = "xla"
    scan_layers: bool = False
    remat: str = "none"
    dtype: str = "float32"           # compute dtype (activations, matmuls)
    param_dtype: str = "float32"     # master weights

    def __post_init__(self):
        for name, allowed in (("norm", NORMS), ("position", POSITIONS), ("activation", ACTIVATIONS),
                              ("attention", ATTENTION_BACKENDS), ("remat", REMAT_POLICIES),
                              ("dtype", DTYPES), ("param_dtype", DTYPES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"model.{name}={getattr(self, name)!r}; expected one of {allowed}")
        for name in ("num_layers", "num_heads", "embed_dim", "mlp_dim", "max_seq_len"):
            if getattr(self, name) <= 0:
                raise ValueError(f"model.{name} must be positive, got {getattr(self, name)}")
        if self.kv_heads <= 0 or self.num_heads % self.kv_heads:
            raise ValueError(f"model.num_heads={self.num_heads} must be a multiple of model.num_kv_heads={self.kv_heads}")
        if not self.head_dim and self.embed_dim % self.num_heads:
            raise ValueError(f"model.embed_dim={self.embed_dim} is not divisible by model.num_heads={self.num_heads}; set model.head_dim")
        if self.position == "rope" and self.dims_per_head % 2:
            raise ValueError(f"RoPE needs an even head dimension, got {self.dims_per_head}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {self.dropout}")

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads or self.num_heads

    @property
    def dims_per_head(self) -> int:
        return self.head_dim or self.embed_dim // self.num_heads

    def num_params(self, *, embeddings: bool = True) -> int:
        """Parameter count from the config alone (checked against the real model in tests)."""
        d, f, h = self.embed_dim, self.mlp_dim, self.dims_per_head
        attn = d * h * (self.num_heads * 2 + self.kv_heads * 2)
        mlp = d * f * (3 if self.activation == "swiglu" else 2)
        norms = 2 * d * (2 if self.norm == "layernorm" and self.use_bias else 1)
        bias = (h * (self.num_heads + 2 * self.kv_heads) + d + f + d) if self.use_bias else 0
        if self.use_bias and self.activation == "swiglu":
            bias += f
        per_layer = attn + mlp + norms + bias
        final_norm = d * (2 if self.norm == "layernorm" and self.use_bias else 1)
        total = self.num_layers * per_layer + final_norm
        if embeddings:
            total += self.vocab_size * d * (1 if self.tie_embeddings else 2)
            if self.position == "learned":
                total += self.max_seq_len * d
        elif not self.tie_embeddings:
            total += self.vocab_size * d  # the unembedding is a matmul, not a lookup
        return total

    # --- presets -------------------------------------------------------------------------------
    @classmethod
    def gpt2(cls, **overrides) -> ModelConfig:
        base = dict(family="gpt2", norm="layernorm", position="learned", activation="gelu", use_bias=True,
                    tie_embeddings=True, vocab_size=50304, max_seq_len=1024)
        return cls(**{**base, **overrides})

    @classmethod
    def gpt2_tiny(cls, **overrides) -> ModelConfig:
        return cls.gpt2(**{**dict(num_layers=2, num_heads=4, embed_dim=64, mlp_dim=256, vocab_size=256,
                                  max_seq_len=128), **overrides})

    @classmethod
    def gpt2_small(cls, **overrides) -> ModelConfig:  # 124M
        return cls.gpt2(**{**dict(num_layers=12, num_heads=12, embed_dim=768, mlp_dim=3072), **overrides})

    @classmethod
    def gpt2_medium(cls, **overrides) -> ModelConfig:  # 350M
        return cls.gpt2(**{**dict(num_layers=24, num_heads=16, embed_dim=1024, mlp_dim=4096), **overrides})

    @classmethod
    def gpt2_large(cls, **overrides) -> ModelConfig:  # 774M
        return cls.gpt2(**{**dict(num_layers=36, num_heads=20, embed_dim=1280, mlp_dim=5120), **overrides})

    @classmethod
    def llama(cls, **overrides) -> ModelConfig:
        base = dict(family="llama", norm="rmsnorm", position="rope", activation="swiglu", use_bias=False,
                    tie_embeddings=False, norm_eps=1e-5)
        return cls(**{**base, **overrides})

    @classmethod
    def llama_tiny(cls, **overrides) -> ModelConfig:
        return cls.llama(**{**dict(num_layers=2, num_heads=4, num_kv_heads=2, embed_dim=64, mlp_dim=192,
                                   vocab_size=256, max_seq_len=128), **overrides})

    @classmethod
    def llama_1b(cls, **overrides) -> ModelConfig:  # Llama 3.2 1B shape
        return cls.llama(**{**dict(num_layers=16, num_heads=32, num_kv_heads=8, embed_dim=2048, mlp_dim=8192,
                                   vocab_size=128256, max_seq_len=8192, rope_theta=500_000.0,
                                   tie_embeddings=True), **overrides})

    @classmethod
    def preset(cls, name: str, **overrides) -> ModelConfig:
        if name not in PRESETS:
            import difflib
            near = difflib.get_close_matches(name, PRESETS, n=1)
            raise ValueError(f"unknown model preset {name!r}" + (f"; did you mean {near[0]!r}?" if near else f"; known: {PRESETS}"))
        return getattr(cls, name)(**overrides)


PRESETS = ("gpt2_tiny", "gpt2_small", "gpt2_medium", "gpt2_large", "llama_tiny", "llama_1b")
