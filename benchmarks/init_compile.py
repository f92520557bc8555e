"""The born-sharded parameter init with and without jax's CUDA threefry kernel: seconds (wall and
XLA compile) of each and whether both drew the same parameters; prints one JSON line.

    python benchmarks/init_compile.py llama_1b                    # GPU: bf16, ~2 x 10-90 s
    python benchmarks/init_compile.py llama_tiny                  # CPU: seconds (the flag is not read)

Why: on GPU jax unrolls each threefry call into XLA ops unless ``jax_threefry_gpu_kernel_lowering``
is set, and a jitted init draws once per parameter. On one H200 (jax 0.11.2, 2026-11-30) Llama 1B's
init took 84.5 s, 80.7 s of it compiling (``decode.py``'s ``setup_compile_s``), and the lmforge
side of ``compare.py train gpt2_small`` ran out of its 81 s share before printing a line. lmforge's
``create_sharded`` now takes the kernel on a one-GPU mesh (``model.sharding.init_prng_lowering``); this
script measures both lowerings side by side, each in a fresh process (its own compile caches), in
the order given by ``--order``.

Each child: ``create_sharded(build_model(preset), one-device mesh, threefry_kernel=on|off)``, waited
for, timed; ``init_compile_s`` sums jax.monitoring's backend-compile events; ``digest`` is a SHA-256
over every parameter's bytes (path order). The line: ``kernel`` and ``unrolled`` objects,
``speedup_init_s`` (unrolled / kernel) and ``same_params`` (digests equal; the kernel computes the
same threefry2x32 function, so anything else is a bug).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pathlib
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve()


def child(preset: str, dtype: str | None, kernel: bool) -> dict:
    import jax
    import numpy as np
    from flax import nnx

    from lmforge.model import ModelConfig, build_model, create_sharded
    from lmforge.train.mesh import DEFAULT_RULES, MeshConfig, make_mesh
    from train_throughput import compile_clock   # benchmarks/

    platform = jax.devices()[0].platform
    dtype = dtype or ("float32" if platform == "cpu" else "bfloat16")
    cfg = ModelConfig.preset(preset, dtype=dtype, param_dtype=dtype)
    mesh = make_mesh(MeshConfig(1, 1, 1))
    compiles = compile_clock()
    start = time.perf_counter()
    _, params, _ = create_sharded(lambda: build_model(cfg, rngs=nnx.Rngs(0)), mesh, DEFAULT_RULES,
                                  threefry_kernel=kernel)
    jax.block_until_ready(params)
    init_s = time.perf_counter() - start
    digest = hashlib.sha256()
    for path, leaf in sorted(jax.tree_util.tree_flatten_with_path(params)[0], key=lambda kv: jax.tree_util.keystr(kv[0])):
        digest.update(jax.tree_util.keystr(path).encode())
        digest.update(np.asarray(leaf).tobytes())
    return {"threefry_kernel": kernel, "platform": platform, "device": jax.devices()[0].device_kind,
            "dtype": dtype, "params": int(sum(x.size for x in jax.tree.leaves(params))),
            "init_s": round(init_s, 3), "init_compile_s": round(sum(compiles), 3),
            "digest": digest.hexdigest()[:16], "jax": jax.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("preset", help="an lmforge model preset (llama_1b, gpt2_small, llama_tiny, ...)")
    parser.add_argument("--dtype", default=None, help="weights' dtype; default bfloat16 off CPU, float32 on CPU")
    parser.add_argument("--order", default="kernel,unrolled", help="which lowering runs first (comma-separated)")
    parser.add_argument("--timeout-s", type=float, default=600.0, help="for both children together")
    parser.add_argument("--child", choices=("kernel", "unrolled"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.preset, args.dtype, args.child == "kernel")))
        return
    order = args.order.split(",")
    if sorted(order) != ["kernel", "unrolled"]:
        raise SystemExit(f"init_compile.py: --order {args.order!r}: expected kernel,unrolled or unrolled,kernel")
    line: dict = {"figure": f"init/{args.preset}"}
    deadline = time.time() + args.timeout_s
    for side in order:
        cmd = [sys.executable, str(HERE), args.preset, "--child", side] + (["--dtype", args.dtype] if args.dtype else [])
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            line[side] = {"error": "timed out"}
            continue
        out = [s for s in proc.stdout.splitlines() if s.startswith("{")]
        line[side] = json.loads(out[-1]) if proc.returncode == 0 and out else \
            {"error": f"exit status {proc.returncode}", "stderr_tail": proc.stderr[-1500:]}
    k, u = line.get("kernel", {}), line.get("unrolled", {})
    if "init_s" in k and "init_s" in u:
        line["speedup_init_s"] = round(u["init_s"] / k["init_s"], 2)
        line["same_params"] = k["digest"] == u["digest"]
    print(json.dumps(line))


if __name__ == "__main__":
    main()
