"""The PyTorch baseline of ``train_throughput.py``: lmforge's GPT-2 and Llama presets written plainly in
PyTorch, one training step timed the same way; prints one JSON object.

    python benchmarks/torch_baseline.py gpt2_small --batch-size 16 --seq-len 1024      # GPU: bf16, compiled
    python benchmarks/torch_baseline.py llama_1b --batch-size 16 --seq-len 1024
    python benchmarks/torch_baseline.py gpt2_tiny --device cpu                         # CPU: seconds
    python benchmarks/torch_baseline.py --check-presets    # the table below == lmforge's ModelConfig presets

The models (nanoGPT's ``model.py`` for GPT-2; Llama in the same plain style):
- GPT-2: learned positions, pre-LayerNorm with biases (eps 1e-5), GELU with the tanh approximation
  (lmforge's and GPT-2's; nanoGPT uses the exact erf), fused q/k/v projection, tied embeddings.
- Llama: RoPE ("rotate half", float32 angles), RMSNorm computed in float32, SwiGLU, no biases,
  grouped-query attention through SDPA's ``enable_gqa`` (no repeated K/V in memory).
- Shapes are lmforge's presets (``model/config.py``), copied into ``PRESETS`` so this file needs no
  JAX; ``--check-presets`` compares the two tables field by field.

The step (the same work as lmforge's ``train.step``): forward + cross-entropy under bf16 autocast
(parameters and AdamW state float32), backward, global-norm clipping at 1.0, AdamW (lr 3e-4,
betas 0.9/0.95, decay 0.1 on >= 2-D parameters, ``fused=True``), ``zero_grad(set_to_none=True)``.
The model (with its loss) is ``torch.compile``d; attention is ``F.scaled_dot_product_attention``
restricted to the fused kernels (``--sdpa``, default flash then cuDNN then memory-efficient: never the
math fallback on GPU).

Timing, as ``train_throughput.py``: two random token batches already on the device, used in turn;
the first step (``compile_s``: dynamo + inductor + the step itself, minus a median step) then
``--warmup`` untimed steps, then ``--steps`` timed steps, each followed by
``torch.cuda.synchronize()``; median and p90 step times; tokens/s and MFU from the median.
``--profile-steps N``: N more steps under ``torch.profiler`` after those (untimed); ``profile`` in
the line is ``device_profile.summarize``'s per-step breakdown, as on lmforge's side.

- FLOPs per token = 6 (N + V D) + 12 L T D, with N the non-embedding parameters (blocks and final
  norm: no token/position table, no output matrix) and V D the unembedding matmul: a reimplementation
  of ``lmforge.train.metrics.model_flops_per_token`` (kept here so the file needs no JAX;
  ``compare.py`` checks that both sides report the same FLOPs per token).
- MFU = tokens/s x FLOPs per token / peak; the peak is the dense datasheet number of lmforge's
  ``peak_flops_per_device`` table (H100/H200 SXM bf16: 989 TFLOP/s), on CPU a measured float32
  1024 x 1024 matmul rate (as lmforge), so CPU MFU is relative to that.
- ``peak_memory_bytes`` = ``torch.cuda.max_memory_allocated()`` over the whole process (model,
  optimizer state, step); None on CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import statistics
import sys
import time


@dataclasses.dataclass(frozen=True)
class Shape:
    family: str            # "gpt2" | "llama"
    num_layers: int
    num_heads: int
    num_kv_heads: int
    embed_dim: int
    mlp_dim: int
    vocab_size: int
    max_seq_len: int
    tie_embeddings: bool
    rope_theta: float = 10_000.0
    norm_eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads


# lmforge's ModelConfig presets (model/config.py), the fields that shape the model.
PRESETS = {
    "gpt2_tiny": Shape("gpt2", 2, 4, 4, 64, 256, 256, 128, True),
    "gpt2_small": Shape("gpt2", 12, 12, 12, 768, 3072, 50304, 1024, True),      # 124M
    "gpt2_medium": Shape("gpt2", 24, 16, 16, 1024, 4096, 50304, 1024, True),    # 350M
    "gpt2_large": Shape("gpt2", 36, 20, 20, 1280, 5120, 50304, 1024, True),     # 774M
    "llama_tiny": Shape("llama", 2, 4, 2, 64, 192, 256, 128, False),
    "llama_1b": Shape("llama", 16, 32, 8, 2048, 8192, 128256, 8192, True, rope_theta=500_000.0),  # Llama 3.2 1B
}

# Dense peak FLOP/s (bf16/fp16, float32 = TF32) by device name: lmforge.train.metrics._PEAKS, NVIDIA rows.
NVIDIA_PEAKS = (
    (r"h[18]00.*pcie", 756e12, 378e12),
    (r"h100 nvl", 835e12, 418e12),
    (r"h100|h800|h200", 989e12, 494e12),
    (r"a100|a800", 312e12, 156e12),
    (r"\bl40s\b", 362e12, 183e12),
    (r"\bl4\b", 121e12, 60e12),
    (r"\ba10\b", 125e12, 62.5e12),
)
SDPA_BACKENDS = ("flash", "cudnn", "efficient", "math")


def check_presets() -> list[str]:
    """Differences between PRESETS and lmforge's ModelConfig presets (empty when they agree)."""
    from lmforge.model.config import ModelConfig

    problems = []
    for name, shape in PRESETS.items():
        cfg = ModelConfig.preset(name)
        want = dict(family=cfg.family, num_layers=cfg.num_layers, num_heads=cfg.num_heads,
                    num_kv_heads=cfg.kv_heads, embed_dim=cfg.embed_dim, mlp_dim=cfg.mlp_dim,
                    vocab_size=cfg.vocab_size, max_seq_len=cfg.max_seq_len, tie_embeddings=cfg.tie_embeddings,
                    rope_theta=cfg.rope_theta if cfg.position == "rope" else shape.rope_theta,
                    norm_eps=cfg.norm_eps)
        for key, value in want.items():
            if getattr(shape, key) != value:
                problems.append(f"{name}.{key}: torch_baseline {getattr(shape, key)!r}, lmforge {value!r}")
        expect = ("layernorm", "learned", "gelu", True) if shape.family == "gpt2" else ("rmsnorm", "rope", "swiglu", False)
        if (cfg.norm, cfg.position, cfg.activation, cfg.use_bias) != expect or cfg.dims_per_head != shape.head_dim:
            problems.append(f"{name}: lmforge's norm/position/activation/bias/head_dim changed "
                            f"({cfg.norm}, {cfg.position}, {cfg.activation}, {cfg.use_bias}, {cfg.dims_per_head})")
    return problems


def flops_per_token(shape: Shape, non_embedding_params: int, seq_len: int) -> float:
    """6 (N + V D) + 12 L T D: lmforge.train.metrics.model_flops_per_token, reimplemented."""
    return float(6 * (non_embedding_params + shape.vocab_size * shape.embed_dim)
                 + 12 * shape.num_layers * seq_len * shape.embed_dim)


def build_model(torch, shape: Shape, seq_len: int):
    """The GPT-2 or Llama module; ``model(idx, targets)`` returns the mean cross-entropy."""
    nn, F = torch.nn, torch.nn.functional
    D, L = shape.embed_dim, shape.num_layers
    resid_std = 0.02 / math.sqrt(2 * L)

    def attend(q, k, v):  # (B, N, T, H), (B, K, T, H) -> (B, T, N*H)
        gqa = {"enable_gqa": True} if k.size(1) != q.size(1) else {}
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, **gqa)
        return y.transpose(1, 2).contiguous().view(q.size(0), q.size(2), -1)

    class GPT2Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.ln_2 = nn.LayerNorm(D, eps=shape.norm_eps), nn.LayerNorm(D, eps=shape.norm_eps)
            self.c_attn, self.attn_proj = nn.Linear(D, 3 * D), nn.Linear(D, D)
            self.c_fc, self.mlp_proj = nn.Linear(D, shape.mlp_dim), nn.Linear(shape.mlp_dim, D)

        def forward(self, x):
            B, T, _ = x.shape
            q, k, v = self.c_attn(self.ln_1(x)).split(D, dim=2)
            q, k, v = (t.view(B, T, shape.num_heads, shape.head_dim).transpose(1, 2) for t in (q, k, v))
            x = x + self.attn_proj(attend(q, k, v))
            return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))

    class RMSNorm(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(D))

        def forward(self, x):
            x32 = x.float()
            return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + shape.norm_eps) * self.weight).type_as(x)

    def rope(x, cos, sin):  # (B, N, T, H); rotate half, in float32
        x1, x2 = x.float().chunk(2, dim=-1)
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).type_as(x)

    class LlamaBlock(nn.Module):
        def __init__(self):
            super().__init__()
            h, n, kv = shape.head_dim, shape.num_heads, shape.num_kv_heads
            self.attn_norm, self.mlp_norm = RMSNorm(), RMSNorm()
            self.wq, self.wk = nn.Linear(D, n * h, bias=False), nn.Linear(D, kv * h, bias=False)
            self.wv, self.wo = nn.Linear(D, kv * h, bias=False), nn.Linear(n * h, D, bias=False)
            self.w1 = nn.Linear(D, shape.mlp_dim, bias=False)   # gate
            self.w3 = nn.Linear(D, shape.mlp_dim, bias=False)   # up
            self.w2 = nn.Linear(shape.mlp_dim, D, bias=False)   # down

        def forward(self, x, cos, sin):
            B, T, _ = x.shape
            h = self.attn_norm(x)
            q = self.wq(h).view(B, T, shape.num_heads, shape.head_dim).transpose(1, 2)
            k = self.wk(h).view(B, T, shape.num_kv_heads, shape.head_dim).transpose(1, 2)
            v = self.wv(h).view(B, T, shape.num_kv_heads, shape.head_dim).transpose(1, 2)
            x = x + self.wo(attend(rope(q, cos, sin), rope(k, cos, sin), v))
            h = self.mlp_norm(x)
            return x + self.w2(F.silu(self.w1(h)) * self.w3(h))

    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(shape.vocab_size, D)
            if shape.family == "gpt2":
                self.wpe = nn.Embedding(shape.max_seq_len, D)
                self.blocks = nn.ModuleList([GPT2Block() for _ in range(L)])
                self.norm = nn.LayerNorm(D, eps=shape.norm_eps)
            else:
                self.blocks = nn.ModuleList([LlamaBlock() for _ in range(L)])
                self.norm = RMSNorm()
                freq = shape.rope_theta ** (-torch.arange(0, shape.head_dim, 2, dtype=torch.float32) / shape.head_dim)
                angle = torch.arange(seq_len, dtype=torch.float32)[:, None] * freq     # (T, H/2)
                self.register_buffer("cos", angle.cos(), persistent=False)
                self.register_buffer("sin", angle.sin(), persistent=False)
            self.lm_head = nn.Linear(D, shape.vocab_size, bias=False)
            if shape.tie_embeddings:
                self.lm_head.weight = self.wte.weight
            for name, p in self.named_parameters():
                if p.dim() < 2:   # norm scales (the only 1-D weights) 1, biases 0
                    nn.init.ones_(p) if name.endswith("weight") else nn.init.zeros_(p)
                else:
                    std = resid_std if name.endswith(("attn_proj.weight", "mlp_proj.weight", "wo.weight", "w2.weight")) else 0.02
                    nn.init.normal_(p, mean=0.0, std=std)

        def non_embedding_params(self) -> int:
            """Blocks + final norm: no token/position table, no output matrix (tied or not)."""
            skip = {id(self.wte.weight), id(self.lm_head.weight)}
            if shape.family == "gpt2":
                skip.add(id(self.wpe.weight))
            return sum(p.numel() for p in self.parameters() if id(p) not in skip)

        def forward(self, idx, targets):
            T = idx.size(1)
            x = self.wte(idx)
            if shape.family == "gpt2":
                x = x + self.wpe(torch.arange(T, device=idx.device))
                for block in self.blocks:
                    x = block(x)
            else:
                cos, sin = self.cos[:T], self.sin[:T]
                for block in self.blocks:
                    x = block(x, cos, sin)
            logits = self.lm_head(self.norm(x))
            return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))

    return LM()


def peak_flops(torch, device: str, dtype: str) -> float | None:
    if device == "cpu":   # as lmforge: a measured float32 1024 x 1024 matmul, median of 5
        a = torch.ones(1024, 1024)
        a @ a
        times = []
        for _ in range(5):
            start = time.perf_counter()
            a @ a
            times.append(time.perf_counter() - start)
        return 2 * 1024**3 / statistics.median(times)
    name = torch.cuda.get_device_name().lower()
    for pattern, half, single in NVIDIA_PEAKS:
        if re.search(pattern, name):
            return single if dtype == "float32" else half
    return None


def benchmark(args) -> dict:
    import torch

    shape = PRESETS[args.preset]
    device = args.device
    cuda = device == "cuda"
    torch.manual_seed(args.seed)
    torch.set_float32_matmul_precision("high")     # TF32 for float32 matmuls, as nanoGPT
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    model = build_model(torch, shape, args.seq_len).to(device)
    params = list(model.parameters())       # a tied matrix once
    n_params = sum(p.numel() for p in params)
    non_embedding = model.non_embedding_params()
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=3e-4, betas=(0.9, 0.95), eps=1e-8, fused=True)
    step_model = torch.compile(model, mode=args.compile_mode) if args.compile else model

    gen = torch.Generator().manual_seed(args.seed)
    batches = []
    for _ in range(2):
        tokens = torch.randint(0, shape.vocab_size, (args.batch_size, args.seq_len + 1), generator=gen)
        batches.append((tokens[:, :-1].contiguous().to(device), tokens[:, 1:].contiguous().to(device)))
    autocast = torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=args.dtype == "bfloat16")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    from torch.nn.attention import SDPBackend, sdpa_kernel
    backends = [{"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
                 "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}[b] for b in args.sdpa]

    def step(i):
        x, y = batches[i % 2]
        with autocast:
            loss = step_model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    times = []
    with sdpa_kernel(backends, set_priority=True):
        sync()
        start = time.perf_counter()
        step(0)
        sync()
        first_step_s = time.perf_counter() - start
        for i in range(1, 1 + args.warmup + args.steps):
            start = time.perf_counter()
            loss = step(i)
            sync()
            if i > args.warmup:
                times.append(time.perf_counter() - start)
        profile = None
        if args.profile_steps:   # untimed, after the timed steps
            from device_profile import torch_profile   # benchmarks/

            profile = torch_profile(torch, lambda: (step(0), sync()), args.profile_steps)
    step_s = statistics.median(times)
    tokens_per_s = args.batch_size * args.seq_len / step_s
    fpt = flops_per_token(shape, non_embedding, args.seq_len)
    peak = peak_flops(torch, device, args.dtype)
    return {
        "framework": f"pytorch {torch.__version__}", "preset": args.preset, "params": int(n_params),
        "non_embedding_params": int(non_embedding), "batch": args.batch_size, "seq_len": args.seq_len,
        "dtype": args.dtype, "compile": args.compile_mode if args.compile else None, "sdpa": args.sdpa,
        "device_kind": torch.cuda.get_device_name() if cuda else "cpu",
        "compile_s": round(max(first_step_s - step_s, 0.0), 3), "first_step_s": round(first_step_s, 3),
        "steps": args.steps, "warmup": args.warmup,
        "step_ms_median": round(1e3 * step_s, 3),
        "step_ms_p90": round(1e3 * float(sorted(times)[min(len(times) - 1, int(0.9 * len(times)))]), 3),
        "tokens_per_s": round(tokens_per_s, 1),
        "model_flops_per_token": fpt, "peak_flops_per_device": peak,
        "mfu": None if not peak else round(tokens_per_s * fpt / peak, 5),
        "peak_memory_bytes": int(torch.cuda.max_memory_allocated()) if cuda else None,
        "peak_memory_reserved_bytes": int(torch.cuda.max_memory_reserved()) if cuda else None,
        "final_loss": round(float(loss.detach()), 4),
        **({"profile": profile} if profile is not None else {}),
    }


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="torch_baseline.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("preset", nargs="?", choices=sorted(PRESETS), metavar="PRESET",
                        help=f"one of {', '.join(PRESETS)}")
    parser.add_argument("--batch-size", type=int, default=8, help="rows per step; default 8")
    parser.add_argument("--seq-len", type=int, default=0,
                        help="tokens per row; default 128 on CPU, else the preset's max_seq_len (at most 2048)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps after the first (default 2)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default=None, help="default: cuda if available")
    parser.add_argument("--dtype", choices=("bfloat16", "float32"), default=None,
                        help="bfloat16 = autocast (float32 parameters); default bfloat16 on cuda, float32 on cpu")
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="eager PyTorch")
    parser.add_argument("--compile-mode", default="default",
                        help="torch.compile mode (default, max-autotune-no-cudagraphs, ...)")
    parser.add_argument("--sdpa", default=None,
                        help="comma-separated SDPA backends in priority order; default flash,cudnn,efficient "
                             "on cuda (no math fallback), all four on cpu")
    parser.add_argument("--profile-steps", type=int, default=0,
                        help="steps traced with torch.profiler after the timed ones (default 0: none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--check-presets", action="store_true",
                        help="compare PRESETS with lmforge's ModelConfig presets (imports lmforge) and exit")
    args = parser.parse_args(argv)
    if args.check_presets:
        return args
    if args.preset is None:
        parser.error("PRESET is required (or --check-presets)")
    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    args.dtype = args.dtype or ("bfloat16" if args.device == "cuda" else "float32")
    shape = PRESETS[args.preset]
    args.seq_len = args.seq_len or (min(128, shape.max_seq_len) if args.device == "cpu" else min(shape.max_seq_len, 2048))
    if args.seq_len > shape.max_seq_len:
        parser.error(f"--seq-len {args.seq_len} exceeds {args.preset}'s max_seq_len={shape.max_seq_len}")
    if args.batch_size < 1 or args.steps < 1 or args.warmup < 0 or args.seq_len < 1:
        parser.error("need --batch-size >= 1, --steps >= 1, --warmup >= 0, --seq-len >= 1")
    sdpa = args.sdpa or ("flash,cudnn,efficient" if args.device == "cuda" else ",".join(SDPA_BACKENDS))
    args.sdpa = [b.strip() for b in sdpa.split(",") if b.strip()]
    unknown = [b for b in args.sdpa if b not in SDPA_BACKENDS]
    if unknown or not args.sdpa:
        parser.error(f"--sdpa {sdpa!r}: expected a comma-separated list of {', '.join(SDPA_BACKENDS)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.check_presets:
        problems = check_presets()
        print(json.dumps({"check": "torch_baseline presets == lmforge presets", "ok": not problems,
                          "problems": problems}))
        return 1 if problems else 0
    print(json.dumps(benchmark(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
