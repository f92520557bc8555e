"""Peak memory of loss + gradient with chunked vs full logits, from XLA's compiled memory analysis.

    python benchmarks/logprobs_memory.py                     # vocabularies 32k and 128k, CPU
    python benchmarks/logprobs_memory.py --vocab 50304 --batch 8 --seq-len 1024 --embed-dim 768

What is compiled: ``jax.value_and_grad`` of the mean of ``lmforge.model.token_logprobs`` over a
(B, T, D) hidden-state array and a (D, V) head, w.r.t. both — the loss and its gradient as a train
step computes them, without the transformer below. "full" is one chunk (the (B, T, V) float32
logits exist at once, and their softmax for the backward pass); "chunked" scans ``--vocab-chunk``
columns at a time with rematerialisation. The figure is the compiled function's temporary bytes
(``temp_size_in_bytes``: what it allocates beyond its arguments and outputs), per device, read
ahead of time — no step runs. One JSON line per (vocabulary, mode), then a summary line with the
ratio. The (B, T, V) float32 logits alone are ``logits_bytes``.
"""

from __future__ import annotations

import argparse
import json
import sys

import jax
import jax.numpy as jnp

from lmforge.model import DEFAULT_RULES, token_logprobs, use_mesh
from lmforge.train.mesh import MeshConfig, make_mesh


def measure(vocab: int, chunk: int, b: int, t: int, d: int) -> dict:
    mesh = make_mesh(MeshConfig(data=1), devices=jax.devices()[:1])
    hidden = jax.ShapeDtypeStruct((b, t, d), jnp.float32)
    head = jax.ShapeDtypeStruct((d, vocab), jnp.float32)
    targets = jax.ShapeDtypeStruct((b, t), jnp.int32)

    def loss(h, w, y):
        return -token_logprobs(h, w, y, vocab_chunk=chunk).logprobs.mean()

    with use_mesh(mesh, DEFAULT_RULES):
        compiled = jax.jit(jax.value_and_grad(loss, argnums=(0, 1))).lower(hidden, head, targets).compile()
    m = compiled.memory_analysis()
    return {"vocab": vocab, "mode": "full" if chunk >= vocab else "chunked", "vocab_chunk": min(chunk, vocab),
            "batch": b, "seq_len": t, "embed_dim": d, "temp_bytes": int(m.temp_size_in_bytes),
            "argument_bytes": int(m.argument_size_in_bytes), "output_bytes": int(m.output_size_in_bytes),
            "logits_bytes": b * t * vocab * 4, "device": jax.devices()[0].device_kind, "jax": jax.__version__}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab", type=int, nargs="+", default=[32768, 131072])
    parser.add_argument("--vocab-chunk", type=int, default=8192)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--embed-dim", type=int, default=512)
    args = parser.parse_args(argv)
    if min(args.vocab + [args.vocab_chunk, args.batch, args.seq_len, args.embed_dim]) < 1:
        parser.error("all sizes must be >= 1")
    for v in args.vocab:
        full = measure(v, v, args.batch, args.seq_len, args.embed_dim)
        chunked = measure(v, args.vocab_chunk, args.batch, args.seq_len, args.embed_dim)
        print(json.dumps(full))
        print(json.dumps(chunked))
        print(json.dumps({"vocab": v, "full_over_chunked_temp": round(full["temp_bytes"] / max(chunked["temp_bytes"], 1), 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
