"""Sampler throughput: new tokens per second at batch 1, 8 and 64 for the quickstart model.

    python benchmarks/sampler_throughput.py                        # the quickstart's model, CPU
    python benchmarks/sampler_throughput.py --batch 1 8 64 --new-tokens 64 --temperature 0.8

What is timed: ``lmforge.infer.generate`` (prefill + the jitted decode loop) on random weights of
the quickstart model shape (GPT-2, 4 layers, 4 heads, 128 dim, vocabulary 2048, context 128),
prompts of ``--prompt-len`` random tokens, a fixed number of new tokens (no stop token, so every
row generates them all). Each batch size is compiled first (``compile_s``: the first call), then
called ``--repeats`` times; the median call gives tokens/s = batch x new tokens / seconds and the
time per decode step. Sampling parameters are traced, so the temperature does not matter for
compile time. One JSON line per batch size.
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
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    if args.prompt_len + args.new_tokens > QUICKSTART.max_seq_len:
        parser.error(f"--prompt-len + --new-tokens must fit the model's context of {QUICKSTART.max_seq_len}")
    mesh = make_mesh(MeshConfig(data=1), devices=jax.devices()[:1])
    graphdef, params, _ = create_sharded(lambda: build_model(QUICKSTART, rngs=nnx.Rngs(0)), mesh, DEFAULT_RULES)
    cfg = SamplingConfig(max_new_tokens=args.new_tokens, temperature=args.temperature)
    rng = np.random.default_rng(0)
    for b in args.batch:
        prompts = jnp.asarray(rng.integers(0, QUICKSTART.vocab_size, (b, args.prompt_len)), jnp.int32)
        mask = jnp.ones_like(prompts)
        times = []
        with use_mesh(mesh):
            start = time.perf_counter()
            out = jax.block_until_ready(generate(graphdef, params, prompts, mask, jax.random.key(0), cfg))
            compile_s = time.perf_counter() - start
            for i in range(args.repeats):
                start = time.perf_counter()
                out = jax.block_until_ready(generate(graphdef, params, prompts, mask, jax.random.key(i + 1), cfg))
                times.append(time.perf_counter() - start)
        assert int(out.lengths.min()) == args.new_tokens
        call = statistics.median(times)
        print(json.dumps({"batch": b, "prompt_len": args.prompt_len, "new_tokens": args.new_tokens,
                          "temperature": args.temperature, "compile_s": round(compile_s, 3),
                          "call_s_median": round(call, 4), "tokens_per_s": round(b * args.new_tokens / call, 1),
                          "ms_per_step": round(1e3 * call / args.new_tokens, 3), "repeats": args.repeats,
                          "device": jax.devices()[0].device_kind, "jax": jax.__version__}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
