"""Sampler throughput: new tokens per second at batch 1, 8 and 64 for the quickstart model.

    python benchmarks/sampler_throughput.py                        # the quickstart's model, CPU
    python benchmarks/sampler_throughput.py --batch 1 8 64 --new-tokens 64 --temperature 0.8
    python benchmarks/sampler_throughput.py --batch 1 8 --temperature 0 1e-6 --vocab-size 32000 --embed-dim 256

What is timed: ``lmforge.infer.generate`` (prefill + the jitted decode loop) on random weights of
the quickstart model shape (GPT-2, 4 layers, 4 heads, 128 dim, vocabulary 2048, context 128),
prompts of ``--prompt-len`` random tokens, a fixed number of new tokens (no stop token, so every
row generates them all). Each batch size is compiled first (``compile_s``: the first call), then
called ``--repeats`` times; the median call gives tokens/s = batch x new tokens / seconds and the
time per decode step. One JSON line per batch size and temperature.

Several ``--temperature`` values run side by side: each is compiled first, then the timed calls
alternate between them. Temperature 0 is the greedy program (the argmax); any temperature above
0 the sampling program (a draw over the vocabulary per row and step; 1e-6 gives the argmax's
tokens through it). ``--vocab-size``, ``--embed-dim``, ``--num-layers`` change the model's shape.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lmforge.infer import SamplingConfig, generate
from lmforge.model import DEFAULT_RULES, ModelConfig, build_model, create_sharded, use_mesh
from lmforge.train.mesh import MeshConfig, make_mesh

QUICKSTART = ModelConfig.gpt2(num_layers=4, num_heads=4, embed_dim=128, mlp_dim=512, max_seq_len=128, vocab_size=2048)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--prompt-len", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, nargs="+", default=[0.8],
                        help="one or more; several run side by side, alternating (default 0.8)")
    parser.add_argument("--vocab-size", type=int, default=QUICKSTART.vocab_size)
    parser.add_argument("--embed-dim", type=int, default=QUICKSTART.embed_dim)
    parser.add_argument("--num-layers", type=int, default=QUICKSTART.num_layers)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    if args.prompt_len + args.new_tokens > QUICKSTART.max_seq_len:
        parser.error(f"--prompt-len + --new-tokens must fit the model's context of {QUICKSTART.max_seq_len}")
    if min(args.temperature) < 0 or min(args.vocab_size, args.embed_dim, args.num_layers, args.repeats) < 1:
        parser.error("need --temperature >= 0 and --vocab-size, --embed-dim, --num-layers, --repeats >= 1")
    model_cfg = ModelConfig.gpt2(num_layers=args.num_layers, num_heads=4, embed_dim=args.embed_dim,
                                 mlp_dim=4 * args.embed_dim, max_seq_len=QUICKSTART.max_seq_len,
                                 vocab_size=args.vocab_size)
    mesh = make_mesh(MeshConfig(data=1), devices=jax.devices()[:1])
    graphdef, params, _ = create_sharded(lambda: build_model(model_cfg, rngs=nnx.Rngs(0)), mesh, DEFAULT_RULES)
    rng = np.random.default_rng(0)
    for b in args.batch:
        prompts = jnp.asarray(rng.integers(0, model_cfg.vocab_size, (b, args.prompt_len)), jnp.int32)
        mask = jnp.ones_like(prompts)
        configs = [SamplingConfig(max_new_tokens=args.new_tokens, temperature=t) for t in args.temperature]
        compile_s, times, outs = {}, {t: [] for t in args.temperature}, {}
        with use_mesh(mesh):
            for cfg in configs:   # compile each first
                start = time.perf_counter()
                outs[cfg.temperature] = jax.block_until_ready(
                    generate(graphdef, params, prompts, mask, jax.random.key(0), cfg))
                compile_s[cfg.temperature] = time.perf_counter() - start
            for i in range(args.repeats):   # then alternate
                for cfg in configs:
                    start = time.perf_counter()
                    jax.block_until_ready(generate(graphdef, params, prompts, mask, jax.random.key(i + 1), cfg))
                    times[cfg.temperature].append(time.perf_counter() - start)
        for t in args.temperature:
            assert int(outs[t].lengths.min()) == args.new_tokens
            call = statistics.median(times[t])
            print(json.dumps({"batch": b, "prompt_len": args.prompt_len, "new_tokens": args.new_tokens,
                              "temperature": t, "program": "greedy" if t == 0 else "sampling",
                              "vocab_size": model_cfg.vocab_size, "embed_dim": model_cfg.embed_dim,
                              "num_layers": model_cfg.num_layers, "compile_s": round(compile_s[t], 3),
                              "call_s_median": round(call, 4), "tokens_per_s": round(b * args.new_tokens / call, 1),
                              "ms_per_step": round(1e3 * call / args.new_tokens, 3), "repeats": args.repeats,
                              "same_tokens_as_first": bool((np.asarray(outs[t].tokens)
                                                            == np.asarray(outs[args.temperature[0]].tokens)).all()),
                              "device": jax.devices()[0].device_kind, "jax": jax.__version__}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
