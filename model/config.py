"""Model configuration: one frozen dataclass and the named presets.

Two decoder-only families share one module tree and differ only in a few fields:
- ``gpt2`` (Radford et al. 2019): learned absolute positions, pre-LayerNorm with biases, GELU
  (tanh approximation, as GPT-2 and Hugging Face's ``gelu_new``), tied input/output embeddings.
- ``llama`` (Touvron et al. 2023): RoPE, RMSNorm, SwiGLU, no biases, grouped-query attention;
  ``qkv_bias=True`` adds biases to the query, key and value projections alone (Qwen2, Yang et al. 2024);
  ``qk_norm=True`` RMS-normalises each head's queries and keys before RoPE (Qwen3, 2025; QK-norm,
  Dehghani et al. 2023 "Scaling Vision Transformers to 22B", against attention-logit growth).
- ``num_experts > 0`` makes a decoder's FFNs mixtures of experts (``moe.py``); ``llama_moe`` is a
  Mixtral-style preset (8 experts, top-2).

``vocab_size=0`` means "take it from the tokenizer" (the pretraining runner fills it in, rounded up
to ``vocab_multiple``, as nanoGPT pads GPT-2's 50257 to 50304 for faster matmuls).
"""

from __future__ import annotations

import dataclasses
import math
import re

FAMILIES = ("gpt2", "llama", "bert", "transformer", "t5")
ARCHITECTURES = {"gpt2": "decoder", "llama": "decoder", "bert": "encoder", "transformer": "encoder_decoder",
                 "t5": "encoder_decoder"}
NORMS = ("layernorm", "rmsnorm")
POSITIONS = ("learned", "rope", "sinusoidal", "relative")
NORM_POSITIONS = ("pre", "post")
ACTIVATIONS = ("gelu", "gelu_exact", "swiglu", "relu", "geglu")
ATTENTION_BACKENDS = ("xla", "dot_product", "cudnn", "flash", "splash")
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch", "save_qkv_proj", "save_dot_except_mlp", "save_attention",
                  "minimal")
DTYPES = ("float32", "bfloat16", "float16")


LORA_TARGETS = (r".*attn\.(q|k|v|o)", r".*mlp\.(up|gate|down)")   # attention and MLP projections
# Where an attention backend runs natively (elsewhere: "xla"; CPU runs flash/splash only interpreted).
NATIVE_PLATFORM = {"cudnn": "gpu", "flash": "gpu", "splash": "tpu"}


@dataclasses.dataclass(frozen=True)
class ModelRuntime:
    """How a loaded model computes, not what it is: set for a fine-tune (``model.attention=flash``)
    or an evaluation of a model trained elsewhere. "" keeps the source's setting, except that an
    attention backend this platform does not run natively (``NATIVE_PLATFORM``: a model trained with
    cuDNN or flash on GPUs, splash on TPUs) becomes ``xla`` when loaded (``lmforge.weights.load_params``)."""
    attention: str = ""              # "" or one of ATTENTION_BACKENDS
    remat: str = ""                  # "" or one of REMAT_POLICIES
    dtype: str = ""                  # "" or one of DTYPES: the compute dtype; the weights keep theirs

    def __post_init__(self):
        for name, allowed in (("attention", ATTENTION_BACKENDS), ("remat", REMAT_POLICIES), ("dtype", DTYPES)):
            if getattr(self, name) not in ("", *allowed):
                raise ValueError(f"model.{name}={getattr(self, name)!r}; expected \"\" (the source's) or one of {allowed}")

    def overrides(self) -> dict[str, str]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v}


@dataclasses.dataclass(frozen=True)
class LoRAConfig:
    rank: int = 0                   # 0 → no adapters
    alpha: float = 16.0
    dropout: float = 0.0            # on the adapter's input, in training only
    targets: tuple[str, ...] = LORA_TARGETS   # regexes over projection paths (attention q/k/v/o, MLP)
    rslora: bool = False            # scale alpha / sqrt(rank) instead of alpha / rank

    def __post_init__(self):
        if self.rank < 0 or self.alpha <= 0 or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA: need rank >= 0, alpha > 0 and 0 <= dropout < 1; got rank={self.rank}, "
                             f"alpha={self.alpha}, dropout={self.dropout}")
        if self.rank and not self.targets:
            raise ValueError("LoRA targets are empty: name the projections to adapt (regexes over paths "
                             "such as 'blocks.0.attn.q')")
        for pattern in self.targets:
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"LoRA target {pattern!r} is not a valid regular expression ({e})") from None

    @property
    def scale(self) -> float:
        return self.alpha / (math.sqrt(self.rank) if self.rslora else self.rank)



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
    qkv_bias: bool = False           # biases on the query, key and value projections alone (Qwen2)
    qk_norm: bool = False            # RMSNorm of each head's queries and keys before RoPE (Qwen3)
    tie_embeddings: bool = True
    dropout: float = 0.0
    init_std: float = 0.02
    attention: str = "xla"           # xla | dot_product | cudnn (GPU) | flash (GPU, Pallas) | splash (TPU, Pallas)
    scan_layers: bool = False
    remat: str = "none"              # REMAT_POLICIES (model/transformer.py): none saves all, full nothing
    dtype: str = "float32"           # compute dtype (activations, matmuls)
    param_dtype: str = "float32"     # master weights
    # Encoder-only and encoder-decoder families (model/encoder.py, model/encdec.py).
    num_decoder_layers: int = 0      # encoder-decoder: decoder depth; 0 → num_layers
    norm_position: str = "pre"       # "pre" (GPT-2, Llama, T5) | "post" (original Transformer, BERT)
    type_vocab_size: int = 0         # BERT token-type (sentence A/B) embeddings; 0 → none
    embed_scale: bool = False        # token embeddings times sqrt(embed_dim) (original Transformer)
    attention_scale: bool = True     # q·k / sqrt(head_dim); T5 folds the factor into its init instead
    relative_buckets: int = 32       # T5 relative position bias: buckets and the distance of the last one
    relative_max_distance: int = 128
    lm_head: bool = True             # encoder: False returns hidden states (sentence encoders, no MLM head)
    output_scale: bool = False       # decoder output times embed_dim ** -0.5 before unembedding (T5 with tied embeddings)
    # Mixture of experts (model/moe.py): every block's FFN becomes num_experts experts of its activation.
    num_experts: int = 0             # 0 → dense MLP
    experts_per_token: int = 2       # top-k routing (Mixtral: 2 of 8)
    moe_capacity_factor: float = 0.0  # 0 → dropless; > 0 → per-sequence capacity ceil(k T factor / E)
    moe_aux_loss: float = 0.01       # weight of the Switch load-balancing loss (1.0 when balanced)
    moe_z_loss: float = 0.001        # weight of the ST-MoE router z-loss
    num_shared_experts: int = 0      # always-on experts beside the routed ones (DeepSeekMoE)
    lora: LoRAConfig = LoRAConfig()  # rank > 0: low-rank adapters on the projections (model/lora.py)
    # Decoder-only: > 0 replaces the unembedding by a score head (D, num_labels) read at each row's last
    # token -- a reward model (transformers' *ForSequenceClassification); 0 → the language-model head.
    num_labels: int = 0

    def __post_init__(self):
        for name, allowed in (("family", FAMILIES), ("norm_position", NORM_POSITIONS), ("norm", NORMS),
                              ("position", POSITIONS), ("activation", ACTIVATIONS), ("attention", ATTENTION_BACKENDS), ("remat", REMAT_POLICIES),
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
        if not self.init_std >= 0:   # NaN fails too
            raise ValueError(f"model.init_std must be >= 0, got {self.init_std}")
        if not self.norm_eps > 0:
            raise ValueError(f"model.norm_eps must be > 0, got {self.norm_eps}")
        self._check_family()
        if self.qkv_bias and self.architecture != "decoder":
            raise ValueError(f"model.qkv_bias (Qwen2's query/key/value biases) is for decoder-only families, not "
                             f"{self.family!r}; model.use_bias puts biases everywhere")
        if self.qk_norm and self.architecture != "decoder":
            raise ValueError(f"model.qk_norm (Qwen3's query/key RMSNorm) is for decoder-only families, not "
                             f"{self.family!r}")
        if self.num_experts < 0 or self.num_shared_experts < 0:
            raise ValueError(f"model.num_experts={self.num_experts} and model.num_shared_experts="
                             f"{self.num_shared_experts} must be >= 0")
        if self.num_experts:
            if not 1 <= self.experts_per_token <= self.num_experts:
                raise ValueError(f"model.experts_per_token={self.experts_per_token} must be in "
                                 f"[1, model.num_experts={self.num_experts}]")
            if self.moe_capacity_factor < 0 or self.moe_aux_loss < 0 or self.moe_z_loss < 0:
                raise ValueError("model.moe_capacity_factor, model.moe_aux_loss and model.moe_z_loss must be >= 0")
            if self.use_bias:
                raise ValueError("model.num_experts > 0 needs model.use_bias=False (experts have no biases, as in Mixtral)")

    def _check_family(self):
        arch = self.architecture
        if arch == "decoder" and (self.position not in ("learned", "rope") or self.norm_position != "pre"):
            raise ValueError(f"model.family={self.family!r} (decoder-only) needs position 'learned' or 'rope' and "
                             f"norm_position 'pre'; got {self.position!r}, {self.norm_position!r}")
        if arch != "decoder":
            if self.position == "rope":
                raise ValueError(f"model.position='rope' is for decoder-only families; {self.family!r} takes "
                                 "'learned', 'sinusoidal' or 'relative'")
            if self.scan_layers or self.remat != "none":
                raise ValueError(f"model.scan_layers / model.remat are implemented for decoder-only families, "
                                 f"not {self.family!r}")
        if self.position == "relative" and (self.relative_buckets < 2 or self.relative_max_distance < self.relative_buckets):
            raise ValueError(f"model.relative_buckets={self.relative_buckets} must be >= 2 and <= "
                             f"model.relative_max_distance={self.relative_max_distance}")
        if self.position == "relative" and self.attention in ("flash", "splash"):
            raise ValueError(f"model.attention={self.attention!r}: its kernel takes no bias, and every attention of a "
                             f"relative-position model ({self.family!r}) adds one; use 'xla'")
        if self.type_vocab_size and arch != "encoder":
            raise ValueError("model.type_vocab_size (token types) is for encoder-only families (bert)")
        if isinstance(self.num_labels, bool) or not isinstance(self.num_labels, int) or self.num_labels < 0:
            raise ValueError(f"model.num_labels={self.num_labels!r}: expected an int >= 0 (0: the language-model head)")
        if self.num_labels and arch != "decoder":
            raise ValueError(f"model.num_labels={self.num_labels} (a score head) is for decoder-only families, not "
                             f"{self.family!r}")

    def family_differences(self) -> dict[str, tuple]:
        """``{field: (this value, the family's)}`` for the fields that make a family what it is (norm,
        its position, positions, activation, biases) where this config leaves its family's preset
        (``ModelConfig.gpt2()``, ``.llama()``, ...): ``model.family=llama`` bound over a GPT-2
        experiment keeps LayerNorm, learned positions, GELU and biases, a network no Llama checkpoint
        or exporter knows. Empty when the config is its family's kind of network. T5's activation
        (ReLU in v1.0, gated GELU in v1.1) is not compared."""
        preset = getattr(ModelConfig, self.family)()
        keys = ("norm", "norm_position", "position", "use_bias") + (("activation",) if self.family != "t5" else ())
        return {k: (getattr(self, k), getattr(preset, k)) for k in keys if getattr(self, k) != getattr(preset, k)}

    @property
    def architecture(self) -> str:
        """"decoder" (gpt2, llama), "encoder" (bert) or "encoder_decoder" (transformer, t5)."""
        return ARCHITECTURES[self.family]

    @property
    def decoder_layers(self) -> int:
        return self.num_decoder_layers or self.num_layers

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads or self.num_heads

    @property
    def dims_per_head(self) -> int:
        return self.head_dim or self.embed_dim // self.num_heads

    def num_params(self, *, embeddings: bool = True, active: bool = False) -> int:
        """Parameter count from the config alone (checked against the real model in tests).

        ``active``: a mixture of experts counts only the ``experts_per_token`` experts a token
        uses (the parameters that cost FLOPs per token, for MFU), not all of them.
        """
        if self.architecture != "decoder":
            raise ValueError(f"num_params() counts decoder-only families; for model.family={self.family!r} count "
                             "the built model's parameters")
        d, f, h = self.embed_dim, self.mlp_dim, self.dims_per_head
        attn = d * h * (self.num_heads * 2 + self.kv_heads * 2)
        mlp = d * f * (3 if self.activation in ("swiglu", "geglu") else 2)
        if self.num_experts:  # routed experts + shared experts + the router (D, E)
            routed = self.experts_per_token if active else self.num_experts
            mlp = mlp * (routed + self.num_shared_experts) + d * self.num_experts
        norms = 2 * d * (2 if self.norm == "layernorm" and self.use_bias else 1)
        bias = (h * (self.num_heads + 2 * self.kv_heads) + d + f + d) if self.use_bias else 0
        if self.use_bias and self.activation in ("swiglu", "geglu"):
            bias += f
        elif self.qkv_bias and not self.use_bias:
            bias = h * (self.num_heads + 2 * self.kv_heads)
        per_layer = attn + mlp + norms + bias + (2 * h if self.qk_norm else 0)
        final_norm = d * (2 if self.norm == "layernorm" and self.use_bias else 1)
        total = self.num_layers * per_layer + final_norm
        untied = not self.tie_embeddings and not self.num_labels
        total += self.num_labels * d  # a score head replaces the unembedding
        if embeddings:
            total += self.vocab_size * d * (2 if untied else 1)
            if self.position == "learned":
                total += self.max_seq_len * d
        elif untied:
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

    # --- the planner's case studies (``lmforge plan --preset NAME``): published shapes ---------
    # Parameter counts (``num_params()``) are checked against the published ones in
    # tests/train/test_plan.py. Sequence lengths are the pretraining context of each paper.
    @classmethod
    def gpt3_175b(cls, **overrides) -> ModelConfig:
        """GPT-3 175B (Brown et al. 2020, table 2.1): 96 layers, d 12288, 96 heads of 128, context 2048,
        GPT-2's architecture (tied embeddings, learned positions). The 50257-token vocabulary is padded
        to 50304 as nanoGPT pads GPT-2's (divisible by 64, so by any tensor-parallel size up to 64)."""
        return cls.gpt2(**{**dict(num_layers=96, num_heads=96, embed_dim=12288, mlp_dim=49152, max_seq_len=2048),
                           **overrides})

    @classmethod
    def llama1(cls, **overrides) -> ModelConfig:
        """Llama 1 (Touvron et al. 2023, table 2): multi-head attention, 32000-token vocabulary, context
        2048, SwiGLU width 2/3 x 4d rounded up to a multiple of 256, RMSNorm eps 1e-6, untied head."""
        return cls.llama(**{**dict(vocab_size=32000, max_seq_len=2048, norm_eps=1e-6, rope_theta=10_000.0),
                            **overrides})

    @classmethod
    def llama1_7b(cls, **overrides) -> ModelConfig:    # 6.74B
        return cls.llama1(**{**dict(num_layers=32, num_heads=32, embed_dim=4096, mlp_dim=11008), **overrides})

    @classmethod
    def llama1_13b(cls, **overrides) -> ModelConfig:   # 13.0B
        return cls.llama1(**{**dict(num_layers=40, num_heads=40, embed_dim=5120, mlp_dim=13824), **overrides})

    @classmethod
    def llama1_33b(cls, **overrides) -> ModelConfig:   # 32.5B
        return cls.llama1(**{**dict(num_layers=60, num_heads=52, embed_dim=6656, mlp_dim=17920), **overrides})

    @classmethod
    def llama1_65b(cls, **overrides) -> ModelConfig:   # 65.3B
        return cls.llama1(**{**dict(num_layers=80, num_heads=64, embed_dim=8192, mlp_dim=22016), **overrides})

    @classmethod
    def llama3(cls, **overrides) -> ModelConfig:
        """Llama 3 / 3.1 (Grattafiori et al. 2024, "The Llama 3 Herd of Models", table 3): grouped-query
        attention with 8 KV heads, 128256-token vocabulary, RoPE theta 500000, untied head, context 8192
        (the pretraining length before the long-context stage)."""
        return cls.llama(**{**dict(num_kv_heads=8, vocab_size=128256, max_seq_len=8192, rope_theta=500_000.0,
                                   norm_eps=1e-5), **overrides})

    @classmethod
    def llama3_8b(cls, **overrides) -> ModelConfig:    # 8.03B
        return cls.llama3(**{**dict(num_layers=32, num_heads=32, embed_dim=4096, mlp_dim=14336), **overrides})

    @classmethod
    def llama3_70b(cls, **overrides) -> ModelConfig:   # 70.6B
        return cls.llama3(**{**dict(num_layers=80, num_heads=64, embed_dim=8192, mlp_dim=28672), **overrides})

    @classmethod
    def llama3_405b(cls, **overrides) -> ModelConfig:  # 405.9B (Llama 3.1)
        return cls.llama3(**{**dict(num_layers=126, num_heads=128, embed_dim=16384, mlp_dim=53248), **overrides})

    @classmethod
    def llama_moe(cls, **overrides) -> ModelConfig:  # Mixtral-style 8 experts top-2: 0.41B total, 0.15B active
        return cls.llama(**{**dict(num_layers=12, num_heads=12, num_kv_heads=4, embed_dim=768, mlp_dim=1536,
                                   vocab_size=32000, max_seq_len=2048, num_experts=8, experts_per_token=2),
                            **overrides})

    @classmethod
    def llama_moe_tiny(cls, **overrides) -> ModelConfig:
        return cls.llama_tiny(**{**dict(mlp_dim=96, num_experts=4, experts_per_token=2), **overrides})

    @classmethod
    def bert(cls, **overrides) -> ModelConfig:
        """BERT (Devlin et al. 2019): post-LN encoder, learned positions, token types, exact GELU, tied MLM head."""
        base = dict(family="bert", norm="layernorm", norm_position="post", norm_eps=1e-12, position="learned",
                    activation="gelu_exact", use_bias=True, tie_embeddings=True, type_vocab_size=2,
                    vocab_size=30522, max_seq_len=512, dropout=0.1)
        return cls(**{**base, **overrides})

    @classmethod
    def bert_tiny(cls, **overrides) -> ModelConfig:
        return cls.bert(**{**dict(num_layers=2, num_heads=4, embed_dim=64, mlp_dim=256, vocab_size=256,
                                  max_seq_len=128, dropout=0.0), **overrides})

    @classmethod
    def bert_base(cls, **overrides) -> ModelConfig:  # 110M
        return cls.bert(**{**dict(num_layers=12, num_heads=12, embed_dim=768, mlp_dim=3072), **overrides})

    @classmethod
    def transformer(cls, **overrides) -> ModelConfig:
        """"Attention Is All You Need" (Vaswani et al. 2017): post-LN encoder-decoder, sinusoidal
        positions, ReLU FFN, one embedding shared by encoder, decoder and output (scaled by sqrt(d))."""
        base = dict(family="transformer", norm="layernorm", norm_position="post", norm_eps=1e-6,
                    position="sinusoidal", activation="relu", use_bias=True, tie_embeddings=True, embed_scale=True,
                    init_std=0.02, dropout=0.1)
        return cls(**{**base, **overrides})

    @classmethod
    def transformer_tiny(cls, **overrides) -> ModelConfig:
        return cls.transformer(**{**dict(num_layers=2, num_heads=4, embed_dim=64, mlp_dim=256, vocab_size=256,
                                         max_seq_len=128, dropout=0.0), **overrides})

    @classmethod
    def transformer_base(cls, **overrides) -> ModelConfig:  # the paper's base model, 6 + 6 layers
        return cls.transformer(**{**dict(num_layers=6, num_heads=8, embed_dim=512, mlp_dim=2048, vocab_size=37000,
                                         max_seq_len=512), **overrides})

    @classmethod
    def t5(cls, **overrides) -> ModelConfig:
        """T5 v1.1 (Raffel et al. 2020 + the v1.1 checkpoints): pre-RMSNorm without biases, relative
        position buckets, gated GELU, untied output layer, no 1/sqrt(H) attention scale.
        The original T5 is ``activation="relu", tie_embeddings=True, output_scale=True``."""
        base = dict(family="t5", norm="rmsnorm", norm_position="pre", norm_eps=1e-6, position="relative",
                    activation="geglu", use_bias=False, tie_embeddings=False, attention_scale=False,
                    relative_buckets=32, relative_max_distance=128, vocab_size=32128, max_seq_len=512, init_std=0.05)
        return cls(**{**base, **overrides})

    @classmethod
    def t5_tiny(cls, **overrides) -> ModelConfig:
        return cls.t5(**{**dict(num_layers=2, num_heads=4, embed_dim=64, mlp_dim=128, vocab_size=256,
                                max_seq_len=128, relative_buckets=8, relative_max_distance=32), **overrides})

    @classmethod
    def t5_small(cls, **overrides) -> ModelConfig:  # T5 v1.1 small, 77M
        return cls.t5(**{**dict(num_layers=8, num_heads=6, head_dim=64, embed_dim=512, mlp_dim=1024), **overrides})

    @classmethod
    def preset(cls, name: str, **overrides) -> ModelConfig:
        if name not in PRESETS:
            import difflib
            near = difflib.get_close_matches(name, PRESETS, n=1)
            raise ValueError(f"unknown model preset {name!r}" + (f"; did you mean {near[0]!r}?" if near else f"; known: {PRESETS}"))
        return getattr(cls, name)(**overrides)


PRESETS = ("gpt2_tiny", "gpt2_small", "gpt2_medium", "gpt2_large", "llama_tiny", "llama_1b", "llama_moe",
           "llama_moe_tiny", "bert_tiny", "bert_base", "transformer_tiny", "transformer_base", "t5_tiny", "t5_small",
           "gpt3_175b", "llama1_7b", "llama1_13b", "llama1_33b", "llama1_65b", "llama3_8b", "llama3_70b", "llama3_405b")
