"""Sharding on fake CPU devices: what each strategy costs per device, and an ahead-of-time compile of
a 1B+ preset for a mesh far larger than the machine. Prints one JSON object.

    python benchmarks/sharding.py proof                       # 8 devices: DP, FSDP, TP, FSDP x TP
    python benchmarks/sharding.py aot --preset llama_1b --devices 64 --mesh 1,64,1
    python benchmarks/sharding.py aot --preset llama_1b --devices 256 --mesh 1,32,8 --seq-len 4096
    python benchmarks/sharding.py accum                       # 8 devices: gradient accumulation under GSPMD

``proof`` builds the real :class:`lmforge.train.trainer.Trainer` for a small Llama on 8 CPU devices
under each strategy and reports: per-device parameter + optimizer bytes read from the arrays'
``addressable_shards`` (against the unsharded total), the losses of a few steps on one batch
(the same for every strategy), and the collectives of the compiled step (``compiled.as_text()``, counted by
``lmforge.train.plan.hlo_collectives``: ops and result bytes per kind; CPU XLA writes a
reduce-scatter as an all-reduce whose result each device slices by its partition id).

``accum`` trains the same kind of model with ``grad_accum=2`` on two sharded meshes (fsdp=8, and
data=2 x fsdp=4), where the GSPMD step slices micro-batches out of the sharded batch, and reports
the compiled step's collectives, its median time over 10 steps and the first losses (the same as
one big batch's).

``aot`` runs with ``--xla_force_host_platform_device_count=DEVICES`` and compiles the Trainer's
train step from abstract arrays only (``jax.ShapeDtypeStruct`` with shardings: nothing is
allocated), then prints XLA's per-device memory analysis next to the planner's estimate
(``lmforge.train.plan.plan``) and the step's collectives.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="sharding.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    proof = sub.add_parser("proof", help="DP / FSDP / TP on 8 CPU devices through the Trainer")
    proof.add_argument("--layers", type=int, default=2)
    proof.add_argument("--steps", type=int, default=3)
    accum = sub.add_parser("accum", help="gradient accumulation under GSPMD on 8 CPU devices")
    accum.add_argument("--grad-accum", type=int, default=2)
    accum.add_argument("--steps", type=int, default=12, help="steps run; the first 2 are not timed")
    aot = sub.add_parser("aot", help="compile a preset's train step for a large fake mesh, nothing allocated")
    aot.add_argument("--preset", default="llama_1b")
    aot.add_argument("--devices", type=int, default=64)
    aot.add_argument("--mesh", default="1,-1,1", metavar="DATA,FSDP,TENSOR", help="-1: the remaining devices")
    aot.add_argument("--batch-size", type=int, default=0, help="global rows (default: one per batch-axis device)")
    aot.add_argument("--seq-len", type=int, default=2048)
    aot.add_argument("--dtype", default="bfloat16", help="compute dtype (parameters stay float32)")
    aot.add_argument("--remat", default="full", choices=("none", "full", "dots", "dots_no_batch", "save_qkv_proj",
                                                          "save_dot_except_mlp", "save_attention", "minimal"))
    aot.add_argument("--unrolled", action="store_true", help="unrolled layers (default: scan over layers)")
    args = parser.parse_args(argv)
    if args.command == "aot":
        try:
            args.mesh_sizes = tuple(int(s) for s in args.mesh.split(","))
            assert len(args.mesh_sizes) == 3
        except (ValueError, AssertionError):
            parser.error(f"--mesh {args.mesh!r}: expected DATA,FSDP,TENSOR such as 1,-1,1")
        if args.devices < 1 or args.seq_len < 1 or args.batch_size < 0:
            parser.error("need --devices >= 1, --seq-len >= 1, --batch-size >= 0")
    return args


def proof(args) -> dict:
    import jax
    import numpy as np
    from flax import nnx

    from lmforge.model import DEFAULT_RULES, ModelConfig, build_model, create_sharded
    from lmforge.train.mesh import MeshConfig, make_mesh
    from lmforge.train.optim import OptimConfig
    from lmforge.train.plan import hlo_collectives
    from lmforge.train.pretrain import lm_loss
    from lmforge.train.trainer import LoopConfig, Trainer

    model = ModelConfig.llama_tiny(num_layers=args.layers, num_heads=8, num_kv_heads=8, embed_dim=64, mlp_dim=256,
                                   vocab_size=256, max_seq_len=16)
    strategies = {"dp": MeshConfig(data=8), "fsdp": MeshConfig(data=1, fsdp=8), "tp": MeshConfig(data=1, tensor=8),
                  "fsdp4_tp2": MeshConfig(data=1, fsdp=4, tensor=2)}

    def batch(seed, b=8, t=16):
        tok = np.random.default_rng(seed).integers(0, 256, size=(b, t + 1)).astype(np.int32)
        return {"inputs": tok[:, :-1], "targets": tok[:, 1:], "weights": np.ones((b, t), np.float32),
                "segment_ids": np.ones((b, t), np.int32), "positions": np.tile(np.arange(t, dtype=np.int32), (b, 1))}

    out = {"model": f"llama L{args.layers} D64 F256 heads 8 V256, float32", "params": model.num_params(),
           "devices": jax.device_count(), "strategies": {}}
    for name, mesh_cfg in strategies.items():
        mesh = make_mesh(mesh_cfg)
        graphdef, params, shardings = create_sharded(lambda: build_model(model, rngs=nnx.Rngs(0)), mesh, DEFAULT_RULES)
        trainer = Trainer(lm_loss(graphdef, model), params=params, param_shardings=shardings, mesh=mesh,
                          optim=OptimConfig(lr=3e-3, warmup_steps=1, eps=1e-6), loop=LoopConfig(steps=10))
        state = {"params": trainer.state["params"], "opt_state": trainer.state["opt_state"]}
        per_device = collections.Counter()
        for leaf in jax.tree.leaves(state):
            for shard in leaf.addressable_shards:
                per_device[shard.device.id] += shard.data.nbytes
        unsharded = sum(x.nbytes for x in jax.tree.leaves(state))
        b0 = trainer.global_batch(batch(0))
        t0 = time.perf_counter()
        with jax.set_mesh(mesh):
            compiled = trainer.jitted("train", b0).lower(trainer.state, trainer.frozen, b0, jax.random.key(0)).compile()
        compile_s = time.perf_counter() - t0
        losses = []
        for _ in range(args.steps):
            trainer.state, metrics = compiled(trainer.state, trainer.frozen, b0,
                                              jax.random.key(0))
            losses.append(float(metrics["train/loss"]))
        out["strategies"][name] = {
            "mesh": dict(mesh.shape), "unsharded_state_bytes": unsharded,
            "max_state_bytes_per_device": max(per_device.values()),
            "min_state_bytes_per_device": min(per_device.values()),
            "fraction_of_unsharded": max(per_device.values()) / unsharded,
            "losses": losses, "compile_s": round(compile_s, 2),
            "collectives": {k: v for k, v in hlo_collectives(compiled.as_text()).items() if v["ops"]}}
    dp = out["strategies"]["dp"]["losses"]
    out["max_rel_loss_diff_vs_dp"] = {k: max(abs(a - b) / abs(b) for a, b in zip(v["losses"], dp))
                                      for k, v in out["strategies"].items()}
    return out


def accum(args) -> dict:
    import statistics

    import jax
    import numpy as np
    from flax import nnx

    from lmforge.model import DEFAULT_RULES, ModelConfig, build_model, create_sharded
    from lmforge.train.mesh import MeshConfig, make_mesh
    from lmforge.train.optim import OptimConfig
    from lmforge.train.plan import hlo_collectives
    from lmforge.train.pretrain import lm_loss
    from lmforge.train.trainer import LoopConfig, Trainer

    model = ModelConfig.llama_tiny(num_layers=2, num_heads=8, num_kv_heads=8, embed_dim=64, mlp_dim=256,
                                   vocab_size=256, max_seq_len=32)
    rows, t = 32, 32
    tok = np.random.default_rng(0).integers(0, 256, size=(rows, t + 1)).astype(np.int32)
    local = {"inputs": tok[:, :-1], "targets": tok[:, 1:], "weights": np.ones((rows, t), np.float32),
             "segment_ids": np.ones((rows, t), np.int32), "positions": np.tile(np.arange(t, dtype=np.int32), (rows, 1))}
    out = {"model": "llama L2 D64 F256 heads 8 V256, float32", "rows": rows, "seq_len": t,
           "grad_accum": args.grad_accum, "meshes": {}}
    for name, mesh_cfg in {"fsdp8": MeshConfig(data=1, fsdp=8), "dp2_fsdp4": MeshConfig(data=2, fsdp=4)}.items():
        mesh = make_mesh(mesh_cfg)
        graphdef, params, shardings = create_sharded(lambda: build_model(model, rngs=nnx.Rngs(0)), mesh, DEFAULT_RULES)
        trainer = Trainer(lm_loss(graphdef, model), params=params, param_shardings=shardings, mesh=mesh,
                          optim=OptimConfig(lr=3e-3, warmup_steps=1, eps=1e-6, grad_accum=args.grad_accum),
                          loop=LoopConfig(steps=args.steps))
        batch = trainer.global_batch(local)
        with jax.set_mesh(mesh):
            compiled = trainer.jitted("train", batch).lower(trainer.state, trainer.frozen, batch,
                                                            jax.random.key(0)).compile()
        state, times, losses = trainer.state, [], []
        for _ in range(args.steps):
            start = time.perf_counter()
            state, metrics = compiled(state, trainer.frozen, batch, jax.random.key(0))
            losses.append(float(metrics["train/loss"]))     # waits for the step
            times.append(time.perf_counter() - start)
        out["meshes"][name] = {
            "mesh": dict(mesh.shape), "step_ms_median": round(statistics.median(times[2:]) * 1e3, 1),
            "losses": [round(x, 5) for x in losses[:3]],
            "collectives": {k: v["ops"] for k, v in hlo_collectives(compiled.as_text()).items() if v["ops"]}}
    return out


def aot(args) -> dict:
    import jax

    from lmforge.model import ModelConfig
    from lmforge.train.mesh import MeshConfig, make_mesh
    from lmforge.train.optim import OptimConfig
    from lmforge.train.plan import compile_train_step, hlo_collectives, memory_report, plan

    data, fsdp, tensor = args.mesh_sizes
    mesh = make_mesh(MeshConfig(data=data, fsdp=fsdp, tensor=tensor))
    sizes = dict(mesh.shape)
    model = ModelConfig.preset(args.preset, dtype=args.dtype, remat=args.remat, scan_layers=not args.unrolled)
    batch_axes = sizes["data"] * sizes["fsdp"] * sizes["expert"]
    batch = args.batch_size or batch_axes
    optim = OptimConfig()
    t0 = time.perf_counter()
    compiled, _ = compile_train_step(model, optim, mesh, batch_size=batch, seq_len=args.seq_len)
    compile_s = time.perf_counter() - t0
    planned = plan(model, sizes, batch_size=batch, seq_len=args.seq_len, optim=optim)
    return {"preset": args.preset, "params": model.num_params(), "devices": jax.device_count(), "mesh": sizes,
            "batch_size": batch, "seq_len": args.seq_len, "dtype": args.dtype, "remat": args.remat,
            "scan_layers": not args.unrolled, "compile_s": round(compile_s, 1),
            "compiled_bytes": memory_report(compiled), "planned_bytes": planned.memory,
            "collectives": {k: v for k, v in hlo_collectives(compiled.as_text()).items() if v["ops"]},
            "jax": jax.__version__}


def main(argv=None) -> int:
    args = parse_args(argv)
    devices = args.devices if args.command == "aot" else 8
    # Before JAX starts: this process's CPU becomes `devices` XLA devices.
    kept = [f for f in os.environ.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
    os.environ["XLA_FLAGS"] = " ".join(kept + [f"--xla_force_host_platform_device_count={devices}"])
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    result = {"proof": proof, "accum": accum, "aot": aot}[args.command](args)
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
