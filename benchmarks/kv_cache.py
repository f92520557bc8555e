"""Decode time per token against the length of the KV cache buffer: what a decoding step costs
beyond its weights. Prints one JSON object.

    python benchmarks/kv_cache.py                                  # llama_tiny, batch 16, S = 256 / 1024 / 4096
    python benchmarks/kv_cache.py --preset gpt2_tiny --lengths 512,2048 --scan-layers

For each buffer length S, a model of ``--preset`` with ``max_seq_len=S`` greedily decodes
``--new-tokens`` N tokens per row after a ``--prompt-len`` P-token random prompt
(``lmforge.infer.generate`` with ``max_new_tokens = S - P``, so the cache is S slots, and per-row
limits of N, so the loop stops after N tokens). One untimed call compiles, then the median of
``--repeats`` calls / N is ``ms_per_step``. A decode step attends over the whole buffer (a static
cache, as transformers' ``cache_implementation="static"``), so it must read the cache once:
``cache_mb`` is its size (keys and values of every layer) and ``cache_read_gb_per_s`` is that size
per step time. A step that copies the cache (slicing layers out and stacking them again) shows as
time growing faster than the buffer's bytes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kv_cache.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="llama_tiny", help="a ModelConfig preset (default llama_tiny)")
    parser.add_argument("--lengths", default="256,1024,4096", help="cache buffer lengths S, comma-separated")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--prompt-len", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--scan-layers", action="store_true", help="layers under nnx.scan")
    args = parser.parse_args(argv)
    args.lengths = [int(s) for s in args.lengths.split(",")]
    if min(args.lengths) < args.prompt_len + args.new_tokens:
        parser.error("every length must hold --prompt-len + --new-tokens")
    return args


def measure(args, length: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from lmforge.infer import SamplingConfig, generate
    from lmforge.model import DEFAULT_RULES, ModelConfig, axis_rules, build_model, create_sharded

    cfg = getattr(ModelConfig, args.preset)(max_seq_len=length, scan_layers=args.scan_layers)
    mesh = jax.make_mesh((1, 1, 1), ("data", "fsdp", "tensor"), devices=jax.devices()[:1],
                         axis_types=(jax.sharding.AxisType.Auto,) * 3)
    with axis_rules(DEFAULT_RULES):
        graphdef, params, _ = create_sharded(lambda: build_model(cfg, rngs=nnx.Rngs(0)), mesh, DEFAULT_RULES)
    b, p, n = args.batch_size, args.prompt_len, args.new_tokens
    prompts = jnp.asarray(np.random.default_rng(0).integers(1, cfg.vocab_size, (b, p)), jnp.int32)
    sampling = SamplingConfig(max_new_tokens=length - p, temperature=0.0)
    limits = jnp.full((b,), n, jnp.int32)

    def call():
        with jax.set_mesh(mesh), axis_rules(DEFAULT_RULES):
            out = generate(graphdef, params, prompts, jnp.ones((b, p), jnp.int32), jax.random.key(0), sampling,
                           max_tokens=limits)
        out = jax.block_until_ready(out)
        assert int(out.lengths.min()) == n, "a row stopped early: the timing would not be per token"

    start = time.perf_counter()
    call()
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    ms = statistics.median(times) / n * 1e3
    cache_bytes = 2 * cfg.num_layers * b * length * cfg.kv_heads * cfg.dims_per_head * jnp.dtype(cfg.dtype).itemsize
    return {"length": length, "ms_per_step": round(ms, 3), "cache_mb": round(cache_bytes / 1e6, 3),
            "cache_read_gb_per_s": round(cache_bytes / (ms * 1e-3) / 1e9, 2), "compile_s": round(compile_s, 2)}


def main(argv=None) -> None:
    args = parse_args(argv)
    import jax
    rows = [measure(args, length) for length in args.lengths]
    print(json.dumps({"preset": args.preset, "scan_layers": args.scan_layers, "batch_size": args.batch_size,
                      "prompt_len": args.prompt_len, "new_tokens": args.new_tokens,
                      "device": jax.devices()[0].device_kind, "rows": rows}))


if __name__ == "__main__":
    main()
