"""Decoding a grouped-query-attention model: the KV cache read as it is (a grouped einsum, what the
model does with a cache) against K/V repeated for every query head (what ``xla_attention`` does by
default on CPU, where the grouped einsum's backward pass is slower). One JSON line per batch size.

    python benchmarks/gqa_decode.py                                  # CPU: L4 D256, 8 heads / 2 KV heads
    python benchmarks/gqa_decode.py --batch-sizes 1,8,32 --new-tokens 512

For each batch size B: greedy decoding of exactly ``--new-tokens`` N tokens per row after a 16-token
random prompt (``benchmarks/decode.py``'s ``lmforge_decode``: one call of ``lmforge.infer.generate``),
random float32 weights on one device. The two ways of reading the cache are alternated,
``--repeats`` pairs, each compiled before it is timed (``jax.clear_caches`` between them: the
repeated one is the model's ``xla_attention`` patched to ``repeat_kv=True``); ``ms_per_token`` =
median call time / N, ``speedup`` = repeated / grouped. ``same_tokens``: both decode the same ids.
"""

from __future__ import annotations

import argparse
import functools
import json
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="gqa_decode.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", default="1,8", help="comma-separated (default 1,8)")
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3, help="timed pairs (default 3)")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--scan-layers", action="store_true", help="layers under nnx.scan")
    args = parser.parse_args(argv)

    import jax
    import numpy as np
    from flax import nnx

    import lmforge.model.attention as attention
    from decode import lmforge_decode
    from lmforge.model import DEFAULT_RULES, ModelConfig, build_model, create_sharded
    from lmforge.train.mesh import MeshConfig, make_mesh

    cfg = ModelConfig.llama(num_layers=args.layers, num_heads=args.heads, num_kv_heads=args.kv_heads,
                            embed_dim=args.dim, mlp_dim=3 * args.dim, vocab_size=4096,
                            max_seq_len=16 + args.new_tokens, scan_layers=args.scan_layers)
    mesh = make_mesh(MeshConfig(data=1), devices=jax.devices()[:1])
    graphdef, params, _ = create_sharded(lambda: build_model(cfg, rngs=nnx.Rngs(0)), mesh, DEFAULT_RULES)
    grouped_attention = attention.xla_attention

    def repeated_attention(*a, **kw):
        return grouped_attention(*a, **{**kw, "repeat_kv": True})

    def timed(read: str, prompts) -> tuple[float, list]:
        attention.xla_attention = grouped_attention if read == "grouped" else repeated_attention
        jax.clear_caches()
        out = lmforge_decode(graphdef, params, prompts, args.new_tokens, mesh, DEFAULT_RULES)   # compiles
        start = time.perf_counter()
        lmforge_decode(graphdef, params, prompts, args.new_tokens, mesh, DEFAULT_RULES)
        return time.perf_counter() - start, out

    try:
        for b in (int(x) for x in args.batch_sizes.split(",")):
            prompts = np.random.default_rng(0).integers(0, cfg.vocab_size, (b, 16)).tolist()
            times, outs = {"grouped": [], "repeated": []}, {}
            for _ in range(args.repeats):
                for read in times:
                    seconds, outs[read] = timed(read, prompts)
                    times[read].append(seconds)
            ms = {read: 1e3 * statistics.median(t) / args.new_tokens for read, t in times.items()}
            print(json.dumps({"batch": b, "new_tokens": args.new_tokens, "backend": jax.default_backend(),
                              "model": f"llama L{cfg.num_layers} D{cfg.embed_dim} heads {cfg.num_heads}/"
                                       f"{cfg.kv_heads}" + (" scan" if cfg.scan_layers else ""), "grouped_ms_per_token": round(ms["grouped"], 4),
                              "repeated_ms_per_token": round(ms["repeated"], 4),
                              "speedup": round(ms["repeated"] / ms["grouped"], 3),
                              "same_tokens": outs["grouped"] == outs["repeated"]}), flush=True)
    finally:
        attention.xla_attention = grouped_attention


if __name__ == "__main__":
    main()
