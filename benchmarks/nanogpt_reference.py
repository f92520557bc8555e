"""nanoGPT's own recipe in PyTorch, as the side-by-side reference for ``shakespeare_char``.

    python benchmarks/nanogpt_reference.py                 # the CPU recipe: 2000 iterations
    python benchmarks/nanogpt_reference.py --recipe gpu    # the GPU recipe (needs CUDA)
    python benchmarks/nanogpt_reference.py --learning-rate 3e-3 --max-iters 1200   # a tuned variant

A faithful transcription of Karpathy's nanoGPT ``model.py`` + ``train.py`` for
``config/train_shakespeare_char.py`` (the GPT, its init, AdamW with decay on >= 2-D parameters,
``get_lr``, ``get_batch`` with random offsets, one update per iteration, grad clip 1.0, the
``eval_interval`` estimates over ``eval_iters`` random batches), with nanoGPT's README CPU
overrides for ``--recipe cpu`` (``--device=cpu --compile=False --eval_iters=20 --block_size=64
--batch_size=12 --n_layer=4 --n_head=4 --n_embd=128 --max_iters=2000 --lr_decay_iters=2000
--dropout=0.0``). It reads the same text as the lmforge experiment (first 90% train, last 10%
val, vocabulary = the sorted characters of the whole file, as nanoGPT's ``prepare.py``).

On CUDA (``--recipe gpu``) it runs as nanoGPT's ``train.py`` does by default there: bf16 autocast
(``dtype='bfloat16'``; parameters and AdamW state float32), ``compile=True`` (``torch.compile`` of
the model), TF32 matmuls and the fused AdamW; ``--dtype float32 --no-compile`` gives plain eager
float32 (which this script ran before it had those switches). The CPU recipe is float32 and eager,
as nanoGPT's CPU overrides (``--compile=False``; nanoGPT's autocast is a no-op on CPU).

It prints one JSON object: nanoGPT's own estimates at each eval, the wall time of the run as
nanoGPT measures it (the training loop with its evals, after the data is loaded), and, after the
timer stops, the loss on the *whole* validation split in non-overlapping windows of
``block_size`` targets — the number lmforge reports — so the two frameworks are compared on the
same metric. Requires ``torch`` (the CPU wheel is enough); exits with a message without it.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
import time

import numpy as np

DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"

RECIPES = {
    # config/train_shakespeare_char.py
    "gpu": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch_size=64, dropout=0.2, max_iters=5000,
                lr_decay_iters=5000, eval_interval=250, eval_iters=200),
    # nanoGPT README, "I only have a macbook" (CPU) overrides
    "cpu": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12, dropout=0.0, max_iters=2000,
                lr_decay_iters=2000, eval_interval=250, eval_iters=20),
}
COMMON = dict(learning_rate=1e-3, min_lr=1e-4, warmup_iters=100, beta1=0.9, beta2=0.99, weight_decay=0.1,
              grad_clip=1.0, bias=False)


def build_model(torch, vocab_size: int, cfg: dict):
    nn, F = torch.nn, torch.nn.functional

    class LayerNorm(nn.Module):
        def __init__(self, ndim, bias):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(ndim))
            self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

        def forward(self, x):
            return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)

    class CausalSelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_attn = nn.Linear(cfg["n_embd"], 3 * cfg["n_embd"], bias=cfg["bias"])
            self.c_proj = nn.Linear(cfg["n_embd"], cfg["n_embd"], bias=cfg["bias"])
            self.resid_dropout = nn.Dropout(cfg["dropout"])
            self.n_head, self.dropout = cfg["n_head"], cfg["dropout"]

        def forward(self, x):
            B, T, C = x.size()
            q, k, v = self.c_attn(x).split(C, dim=2)
            q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=None,
                                               dropout_p=self.dropout if self.training else 0, is_causal=True)
            return self.resid_dropout(self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C)))

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_fc = nn.Linear(cfg["n_embd"], 4 * cfg["n_embd"], bias=cfg["bias"])
            self.gelu = nn.GELU()
            self.c_proj = nn.Linear(4 * cfg["n_embd"], cfg["n_embd"], bias=cfg["bias"])
            self.dropout = nn.Dropout(cfg["dropout"])

        def forward(self, x):
            return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.attn = LayerNorm(cfg["n_embd"], cfg["bias"]), CausalSelfAttention()
            self.ln_2, self.mlp = LayerNorm(cfg["n_embd"], cfg["bias"]), MLP()

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            return x + self.mlp(self.ln_2(x))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.transformer = nn.ModuleDict(dict(
                wte=nn.Embedding(vocab_size, cfg["n_embd"]), wpe=nn.Embedding(cfg["block_size"], cfg["n_embd"]),
                drop=nn.Dropout(cfg["dropout"]), h=nn.ModuleList([Block() for _ in range(cfg["n_layer"])]),
                ln_f=LayerNorm(cfg["n_embd"], cfg["bias"])))
            self.lm_head = nn.Linear(cfg["n_embd"], vocab_size, bias=False)
            self.transformer.wte.weight = self.lm_head.weight  # weight tying
            self.apply(self._init_weights)
            for name, p in self.named_parameters():
                if name.endswith("c_proj.weight"):
                    torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg["n_layer"]))

        @staticmethod
        def _init_weights(module):
            if isinstance(module, nn.Linear):
                torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
                if module.bias is not None:
                    torch.nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

        def logits(self, idx):
            pos = torch.arange(idx.size(1), dtype=torch.long, device=idx.device)
            x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
            for block in self.transformer.h:
                x = block(x)
            return self.lm_head(self.transformer.ln_f(x))

        def forward(self, idx, targets, reduction="mean"):
            logits = self.logits(idx)
            return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1,
                                   reduction=reduction)

    return GPT()


def run(recipe: str, data_path: pathlib.Path, seed: int, device: str, overrides: dict | None = None,
        dtype: str = "float32", compile: bool = False) -> dict:
    import contextlib

    import torch

    cfg = {**COMMON, **RECIPES[recipe], **(overrides or {})}
    text = data_path.read_text(encoding="utf-8")
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    ids = np.array([stoi[c] for c in text], dtype=np.int64)
    n = len(ids)
    train, val = ids[: int(n * 0.9)], ids[int(n * 0.9):]
    T, B = cfg["block_size"], cfg["batch_size"]

    torch.manual_seed(1337 + seed)
    if device == "cuda":   # nanoGPT's train.py: TF32 on for matmul and cuDNN
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    raw_model = build_model(torch, len(chars), cfg).to(device)
    params = [p for p in raw_model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg["weight_decay"]},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    # nanoGPT's configure_optimizers: the fused kernel where the device is CUDA
    optimizer = torch.optim.AdamW(groups, lr=cfg["learning_rate"], betas=(cfg["beta1"], cfg["beta2"]),
                                  **({"fused": True} if device == "cuda" else {}))
    model = torch.compile(raw_model) if compile else raw_model
    ctx = (torch.autocast(device_type=device, dtype=torch.bfloat16) if dtype == "bfloat16"
           else contextlib.nullcontext())

    def get_batch(split):
        data = train if split == "train" else val
        ix = torch.randint(len(data) - T, (B,))
        x = torch.stack([torch.from_numpy(data[i : i + T]) for i in ix.tolist()])
        y = torch.stack([torch.from_numpy(data[i + 1 : i + 1 + T]) for i in ix.tolist()])
        return x.to(device), y.to(device)

    @torch.no_grad()
    def estimate_loss():
        model.eval()
        out = {}
        for split in ("train", "val"):
            with ctx:
                losses = [model(*get_batch(split)) for _ in range(cfg["eval_iters"])]
            out[split] = float(torch.stack(losses).float().mean())
        model.train()
        return out

    def get_lr(it):
        if it < cfg["warmup_iters"]:
            return cfg["learning_rate"] * (it + 1) / (cfg["warmup_iters"] + 1)
        if it > cfg["lr_decay_iters"]:
            return cfg["min_lr"]
        ratio = (it - cfg["warmup_iters"]) / (cfg["lr_decay_iters"] - cfg["warmup_iters"])
        return cfg["min_lr"] + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (cfg["learning_rate"] - cfg["min_lr"])

    evals = []
    X, Y = get_batch("train")
    t0 = time.time()
    it = 0
    while True:
        for g in optimizer.param_groups:
            g["lr"] = get_lr(it)
        if it % cfg["eval_interval"] == 0 or it == cfg["max_iters"]:   # (the last: when not a multiple)
            evals.append({"iter": it, **estimate_loss()})
            print(f"step {it}: train loss {evals[-1]['train']:.4f}, val loss {evals[-1]['val']:.4f}",
                  file=sys.stderr, flush=True)
        with ctx:
            loss = model(X, Y)
        X, Y = get_batch("train")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        it += 1
        if it > cfg["max_iters"]:
            break
    if device == "cuda":
        torch.cuda.synchronize()
    wall = time.time() - t0

    # The whole validation split, every target once, as lmforge's evaluator scores it (with the
    # uncompiled module: its last, shorter batch would make torch.compile compile again).
    model = raw_model
    model.eval()
    nll, count = 0.0, 0
    with torch.no_grad():
        for s in range(0, len(val) - 1, T * 64):
            x = torch.from_numpy(val[s : s + T * 64])
            y = torch.from_numpy(val[s + 1 : s + 1 + T * 64])
            k = min(len(x), len(y))
            x, y = x[:k], y[:k]
            pad = -k % T
            x = torch.cat([x, torch.zeros(pad, dtype=torch.long)]).view(-1, T).to(device)
            y = torch.cat([y, torch.full((pad,), -1, dtype=torch.long)]).view(-1, T).to(device)
            with ctx:
                nll += float(model(x, y, reduction="sum"))
            count += k
    final = next(e for e in evals if e["iter"] == cfg["max_iters"])
    return {
        "framework": f"pytorch {torch.__version__} (nanoGPT transcription)",
        "recipe": recipe,
        "device": device if device == "cpu" else torch.cuda.get_device_name(),
        "threads": torch.get_num_threads(),
        "dtype": dtype,
        "compile": compile,
        "seed": seed,
        "iters": cfg["max_iters"],
        "wall_s": round(wall, 2),
        "ms_per_iter": round(1000 * wall / (cfg["max_iters"] + 1), 2),
        "val_loss_nanogpt_estimate": round(final["val"], 4),
        "best_val_loss_nanogpt_estimate": round(min(e["val"] for e in evals), 4),
        "val_loss_whole_split": round(nll / count, 4),
        "val_targets": count,
        "evals": evals,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="nanogpt_reference.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="cpu")
    parser.add_argument("--data", type=pathlib.Path, default=DATA, help=f"text file (default {DATA})")
    parser.add_argument("--seed", type=int, default=0, help="added to nanoGPT's 1337")
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="peak learning rate (nanoGPT: 1e-3); min_lr follows at a tenth")
    parser.add_argument("--max-iters", type=int, default=None,
                        help="iterations, and lr_decay_iters with them (recipe: 2000 cpu, 5000 gpu)")
    parser.add_argument("--eval-interval", type=int, default=None, help="iterations between nanoGPT's estimates")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                        help="bfloat16 = autocast, as nanoGPT on CUDA (default there); float32 (CPU default)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile the model (nanoGPT's default on CUDA; off on CPU, as its CPU overrides)")
    args = parser.parse_args(argv)
    overrides = {}
    if args.learning_rate is not None:
        if args.learning_rate <= 0:
            parser.error(f"--learning-rate must be > 0, got {args.learning_rate}")
        overrides.update(learning_rate=args.learning_rate, min_lr=args.learning_rate / 10)
    if args.max_iters is not None:
        if args.max_iters <= COMMON["warmup_iters"]:
            parser.error(f"--max-iters must exceed the {COMMON['warmup_iters']} warmup iterations, got {args.max_iters}")
        overrides.update(max_iters=args.max_iters, lr_decay_iters=args.max_iters)
    if args.eval_interval is not None:
        if args.eval_interval < 1:
            parser.error(f"--eval-interval must be >= 1, got {args.eval_interval}")
        overrides.update(eval_interval=args.eval_interval)
    try:
        import torch
    except ImportError:
        print("nanogpt_reference.py: needs torch (pip install torch; the CPU wheel is enough)", file=sys.stderr)
        return 2
    if not args.data.is_file():
        print(f"nanogpt_reference.py: data file {args.data} not found (expected ../shared/data/tinyshakespeare.txt "
              "or --data PATH)", file=sys.stderr)
        return 2
    device = "cuda" if args.recipe == "gpu" else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        print("nanogpt_reference.py: --recipe gpu needs a CUDA device", file=sys.stderr)
        return 2
    dtype = args.dtype or ("bfloat16" if device == "cuda" else "float32")
    compile = args.compile if args.compile is not None else device == "cuda"
    print(json.dumps(run(args.recipe, args.data, args.seed, device, overrides, dtype=dtype, compile=compile)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
