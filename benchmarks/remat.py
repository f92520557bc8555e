"""Remat policies side by side: XLA's compiled temporary memory, the planner's activation estimate
and the train step's time for each ``model.remat`` policy, on this machine's first device.
Prints one JSON line per policy.

    python benchmarks/remat.py                                   # llama-style L4 D256, batch 8 x 256, CPU
    python benchmarks/remat.py --policies none,full,minimal --steps 20 --rounds 2
    python benchmarks/remat.py --preset llama_1b --batch-size 8 --seq-len 2048 --dtype bfloat16 --scan-layers   # GPU

Each policy is compiled with :func:`lmforge.train.plan.compile_train_step` (the Trainer's step,
its shardings and donation) on a one-device mesh, then run ``--steps`` times on random tokens
from parameters drawn like the model's init; ``step_ms`` is the median after two untimed steps.
``--rounds`` repeats the whole sweep (policies in the same order each round) so neighbours can be
compared on a noisy machine. ``temporaries`` is what the backward pass keeps plus the working set;
``planned_activations`` is :func:`lmforge.train.plan.activation_bytes` for the same shapes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time


def parse_args(argv=None) -> argparse.Namespace:
    from lmforge.model.config import REMAT_POLICIES
    p = argparse.ArgumentParser(prog="remat.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="", help="a ModelConfig preset (default: a 4-layer Llama, D256, GQA 8/4)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--attention", default="xla")
    p.add_argument("--scan-layers", action="store_true")
    p.add_argument("--policies", default=",".join(REMAT_POLICIES))
    p.add_argument("--steps", type=int, default=8, help="timed steps per policy (after 2 untimed)")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--timeout-s", type=float, default=0, help="start no policy after this many seconds (0: no limit)")
    args = p.parse_args(argv)
    args.policies = args.policies.split(",")
    unknown = [r for r in args.policies if r not in REMAT_POLICIES]
    if unknown:
        p.error(f"--policies: unknown {unknown}; expected some of {REMAT_POLICIES}")
    return args


def model_config(args, remat: str):
    from lmforge.model import ModelConfig
    kw = dict(dtype=args.dtype, attention=args.attention, remat=remat, scan_layers=args.scan_layers)
    if args.preset:
        return ModelConfig.preset(args.preset, **kw)
    return ModelConfig.llama(num_layers=4, num_heads=8, num_kv_heads=4, embed_dim=256, mlp_dim=768,
                             vocab_size=4096, max_seq_len=max(args.seq_len, 256), **kw)


def measure(args, remat: str) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from lmforge.train.mesh import MeshConfig, make_mesh
    from lmforge.train.optim import OptimConfig
    from lmforge.train.plan import activation_bytes, compile_train_step, memory_report
    from train_throughput import random_batch   # benchmarks/: the same random tokens as the train figures

    cfg = model_config(args, remat)
    mesh = make_mesh(MeshConfig(data=1), devices=jax.devices()[:1])
    t0 = time.perf_counter()
    compiled, abstract = compile_train_step(cfg, OptimConfig(), mesh, batch_size=args.batch_size,
                                            seq_len=args.seq_len)
    compile_s = time.perf_counter() - t0

    keys = iter(jax.random.split(jax.random.key(0), len(jax.tree.leaves(abstract))))

    def param(a):   # matrices drawn with std 0.02 as the init does, vectors (norm scales) ones
        x = 0.02 * jax.random.normal(next(keys), a.shape, a.dtype) if a.ndim >= 2 else jnp.ones(a.shape, a.dtype)
        return jax.device_put(x, a.sharding)
    zeros = lambda a: jax.device_put(jnp.zeros(a.shape, a.dtype), a.sharding)   # moments and counters
    state = {k: jax.tree.map(param if k == "params" else zeros, v) for k, v in abstract.items()}
    b, t = args.batch_size, args.seq_len
    batch = random_batch(np.random.default_rng(0), b, t, cfg.vocab_size)
    frozen = {}
    times, losses = [], []
    for i in range(args.steps + 2):
        t0 = time.perf_counter()
        state, metrics = compiled(state, frozen, batch, jax.random.key(i))
        loss = float(metrics["train/loss"])
        if i >= 2:
            times.append(time.perf_counter() - t0)
        losses.append(loss)
    planned = activation_bytes(cfg, rows=b, seq_len=t, tensor=1, vocab_split=1)
    return {"remat": remat, "step_ms": round(1e3 * statistics.median(times), 2), "compile_s": round(compile_s, 2),
            "memory": memory_report(compiled), "planned_activations": planned["total"],
            "losses": [round(x, 6) for x in losses[:4]], "params": cfg.num_params(), "batch": [b, t],
            "dtype": args.dtype, "attention": args.attention, "scan_layers": args.scan_layers,
            "device": jax.devices()[0].device_kind, "jax": jax.__version__}


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    for r in range(args.rounds):
        for remat in args.policies:
            if args.timeout_s and time.perf_counter() - start > args.timeout_s:
                print(json.dumps({"round": r, "remat": remat, "skipped": f"past --timeout-s {args.timeout_s:g}"}))
                continue
            print(json.dumps({"round": r, **measure(args, remat)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
