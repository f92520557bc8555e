"""nanoGPT's CPU-recipe training step: lmforge's against PyTorch's, side by side; prints one JSON object.

    python benchmarks/cpu_step.py                      # 4 rounds: lmforge, lmforge (GSPMD), PyTorch
    python benchmarks/cpu_step.py --rounds 6 --steps 200 --sides lmforge,torch

The model, batch and optimizer of ``experiments/shakespeare_char.py:cpu_tuned`` (4 layers, 4 heads,
128 dim, block 64, batch 12, AdamW with grad clip 1.0; lmforge on its two host devices,
``mesh.host_devices=2``) against ``benchmarks/nanogpt_reference.py``'s transcription of nanoGPT's
model and update (PyTorch eager, float32, 2 threads), both on the same random windows of Tiny
Shakespeare. Each *side* is a fresh process (a second model in one process measurably slowed the
first: cache effects on this small machine) and the sides alternate for ``--rounds`` rounds, so each
ratio compares neighbours in time; the machine's speed drifts by up to 40% between minutes.

Sides:
- ``lmforge``: the :class:`lmforge.train.trainer.Trainer` step as a run uses it (its per-device
  data-parallel path: each device's gradient on its 6 rows, one all-reduce; ``train/step.py``).
- ``gspmd``: the same Trainer with that path turned off (GSPMD partitions the global-batch loss).
- ``torch``: forward, backward, ``clip_grad_norm_``, ``AdamW.step`` and ``zero_grad`` per step.

Timed: ``--steps`` steps after ``--warmup``, each waited for (``block_until_ready`` / eager
PyTorch is synchronous); the batches are on the device before the clock starts. Per side and round:
the median step in ms; at the end the median over rounds per side and the median of the per-round
ratios (``torch / lmforge`` > 1: lmforge is faster).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
SIDES = ("lmforge", "gspmd", "torch")
BATCH, BLOCK = 12, 64


def windows(path: pathlib.Path, n: int, seed: int = 0):
    """n random (BATCH, BLOCK + 1) windows of the text's character ids (nanoGPT's get_batch)."""
    import numpy as np

    text = path.read_text(encoding="utf-8")
    stoi = {c: i for i, c in enumerate(sorted(set(text)))}
    ids = np.array([stoi[c] for c in text], np.int32)
    rng = np.random.default_rng(seed)
    return len(stoi), [np.stack([ids[i:i + BLOCK + 1] for i in rng.integers(0, len(ids) - BLOCK - 1, BATCH)])
                        for _ in range(n)]


def time_lmforge(args, data_parallel: bool) -> list[float]:
    import jax

    jax.config.update("jax_num_cpu_devices", 2)
    import dataclasses

    import numpy as np
    from flax import nnx

    sys.path.insert(0, str(ROOT / "experiments"))
    import shakespeare_char
    from lmforge.model import build_model, create_sharded
    from lmforge.train import trainer as trainer_module
    from lmforge.train.mesh import make_mesh
    from lmforge.train.pretrain import lm_loss

    exp = shakespeare_char.get_config("cpu_tuned")
    vocab, raw = windows(args.data, args.steps + args.warmup)
    cfg = dataclasses.replace(exp.model, vocab_size=vocab)
    mesh = make_mesh(dataclasses.replace(exp.mesh, host_devices=0))
    graphdef, params, shardings = create_sharded(lambda: build_model(cfg, rngs=nnx.Rngs(0)), mesh, exp.mesh.rules)
    trainer = trainer_module.Trainer(lm_loss(graphdef, cfg), params=params, param_shardings=shardings,
                                     optim=exp.optim, loop=trainer_module.LoopConfig(steps=exp.steps), mesh=mesh,
                                     rules=exp.mesh.rules, per_device=data_parallel)
    ones = np.ones((BATCH, BLOCK), np.float32)
    pos = np.tile(np.arange(BLOCK, dtype=np.int32), (BATCH, 1))
    batches = [trainer.global_batch({"inputs": w[:, :-1], "targets": w[:, 1:], "weights": ones,
                                     "segment_ids": ones.astype(np.int32), "positions": pos}) for w in raw]
    key = jax.random.key(0)
    jax.block_until_ready(batches)
    times = []
    for i, batch in enumerate(batches):
        start = time.perf_counter()
        jax.block_until_ready(trainer.train_step(batch, key))
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    return times


def time_torch(args) -> list[float]:
    try:
        import torch
    except ImportError:
        raise SystemExit("cpu_step.py: the torch side needs PyTorch (pip install torch --index-url "
                         "https://download.pytorch.org/whl/cpu); or pass --sides lmforge,gspmd")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from nanogpt_reference import COMMON, RECIPES, build_model

    torch.set_num_threads(2)
    torch.manual_seed(1337)
    vocab, raw = windows(args.data, args.steps + args.warmup)
    cfg = {**COMMON, **RECIPES["cpu"]}
    model = build_model(torch, vocab, cfg)
    params = list(model.parameters())
    optimizer = torch.optim.AdamW([{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg["weight_decay"]},
                                   {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
                                  lr=cfg["learning_rate"], betas=(cfg["beta1"], cfg["beta2"]))
    batches = [(torch.from_numpy(w[:, :-1].astype("int64")).contiguous(),
                torch.from_numpy(w[:, 1:].astype("int64")).contiguous()) for w in raw]
    times = []
    for i, (x, y) in enumerate(batches):
        start = time.perf_counter()
        loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    return times


def child(args) -> None:
    times = time_torch(args) if args.child == "torch" else time_lmforge(args, data_parallel=args.child == "lmforge")
    print(json.dumps({"side": args.child, "step_ms_median": round(1e3 * statistics.median(times), 2),
                      "step_ms_p90": round(1e3 * sorted(times)[int(0.9 * (len(times) - 1))], 2)}), flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="cpu_step.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4, help="rounds of alternating sides (default 4)")
    parser.add_argument("--steps", type=int, default=150, help="timed steps per side and round (default 150)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first (default 10)")
    parser.add_argument("--sides", default=",".join(SIDES), help=f"comma-separated, of {', '.join(SIDES)}")
    parser.add_argument("--data", type=pathlib.Path, default=DATA, help=f"text file (default {DATA})")
    parser.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.data.is_file():
        parser.error(f"--data {args.data}: no such file (Tiny Shakespeare lives in ../shared/data)")
    if args.child:
        child(args)
        return 0
    sides = [s for s in args.sides.split(",") if s]
    if not sides or any(s not in SIDES for s in sides) or args.rounds < 1 or args.steps < 1:
        parser.error(f"need --sides from {SIDES}, --rounds >= 1 and --steps >= 1")
    rounds = []
    for r in range(args.rounds):
        row = {}
        for side in sides:
            proc = subprocess.run([sys.executable, __file__, "--child", side, "--steps", str(args.steps),
                                   "--warmup", str(args.warmup), "--data", str(args.data)],
                                  capture_output=True, text=True, cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu"})
            if proc.returncode != 0:
                print(f"cpu_step.py: the {side} side failed: {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
                return 1
            row[side] = json.loads(proc.stdout.strip().splitlines()[-1])["step_ms_median"]
        rounds.append(row)
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{s} {v} ms" for s, v in row.items()), file=sys.stderr)
    out = {"benchmark": "cpu_step", "model": "shakespeare_char.py:cpu_tuned (4L 128D, block 64, batch 12)",
           "steps": args.steps, "rounds": rounds,
           "median_ms": {s: round(statistics.median(r[s] for r in rounds), 2) for s in sides},
           "load_average": os.getloadavg(), "cpus": os.cpu_count()}
    for a, b in (("torch", "lmforge"), ("gspmd", "lmforge")):
        if a in sides and b in sides:
            out[f"ratio_{a}_over_{b}"] = round(statistics.median(r[a] / r[b] for r in rounds), 3)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
