"""Train-step throughput, MFU and memory of a model preset; prints one JSON object.

    python benchmarks/train_throughput.py gpt2_tiny                      # CPU: well under a minute
    python benchmarks/train_throughput.py gpt2_small --batch-size 16 --seq-len 1024 --dtype bfloat16
    python benchmarks/train_throughput.py llama_1b --mesh 1,-1,1 --remat dots --attention cudnn

What is measured: the sharded, jitted train step of ``lmforge.train.Trainer`` with the pretraining
loss ``lmforge.train.pretrain.lm_loss`` (forward, chunked log-probs, backward, AdamW update; state donated) on random token batches that are already on the devices,
so the number is the step, not the input pipeline. The step is compiled ahead of time first
(``lower(...).compile()``: compile time and XLA's memory analysis are reported), then run
``--warmup`` times untimed and ``--steps`` times timed, each step waited for with
``block_until_ready``; the median and p90 step times are reported, tokens/s and MFU from the
median.

- MFU = tokens/s x model FLOPs per token / (peak FLOP/s per device x devices), FLOPs as in
  ``lmforge.train.metrics.lm_flops_per_token`` (6 N + 12 L T D, no remat recompute) and the
  peak from ``peak_flops_per_device`` for ``--dtype`` (on CPU a measured f32 matmul rate, so CPU
  MFU is relative to that, not to a datasheet).
- ``peak_memory_bytes`` is device 0's ``memory_stats()["peak_bytes_in_use"]`` where the backend
  keeps it (GPU, TPU: it includes creating the state); elsewhere (CPU) the compiled step's
  arguments + outputs - donated aliases + temporaries, per device. ``peak_memory_source`` says
  which.
- ``init_s`` / ``init_compile_s``: the born-sharded parameter init (``create_sharded``), wall and
  XLA-compile seconds (jax.monitoring's backend-compile events); ``--threefry-kernel`` chooses its
  threefry lowering (``auto``: jax's CUDA kernel on one GPU, where the unrolled one compiled ~80 s
  for Llama 1B on an H200).
- Each row is one document (random tokens, like PyTorch's side): the loss runs with
  ``document_mask=False`` (attention gets no segment mask: cuDNN's causal mask alone, as PyTorch's
  ``is_causal=True``); ``--document-mask`` masks by the batch's segment ids (all ones) as packed
  pretraining data does, which costs cuDNN a dense (B, 1, T, T) mask turned into a bias.
- ``--profile-steps N``: after the timed steps, N more under ``jax.profiler``; the line's
  ``profile`` is ``device_profile.summarize``'s per-step breakdown (device busy and idle time,
  time per kernel category, the top kernels).
- Defaults are chosen for CPU (float32, batch 8, sequence 128, 10 steps); on an accelerator the
  dtype defaults to bfloat16 and the sequence to the preset's max_seq_len (at most 2048).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import jax
import numpy as np

from flax import nnx

from lmforge.model import PRESETS, ModelConfig, build_model, create_sharded
from lmforge.model.config import ATTENTION_BACKENDS, DTYPES, REMAT_POLICIES
from lmforge.model.logprobs import VOCAB_CHUNK
from lmforge.train.mesh import DEFAULT_RULES, MeshConfig, batch_axes_size, make_mesh
from lmforge.train.metrics import lm_flops_per_token, peak_flops_per_device
from lmforge.train.optim import OptimConfig
from lmforge.train.pretrain import lm_loss
from lmforge.train.trainer import LoopConfig, Trainer



def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="train_throughput.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("preset", choices=PRESETS, metavar="PRESET", help=f"one of {', '.join(PRESETS)}")
    parser.add_argument("--batch-size", type=int, default=8, help="global batch (rows); default 8")
    parser.add_argument("--seq-len", type=int, default=0,
                        help="tokens per row; default 128 on CPU, else the preset's max_seq_len (at most 2048)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps after compiling (default 2)")
    parser.add_argument("--dtype", choices=DTYPES, default=None,
                        help="compute dtype (params stay float32); default float32 on CPU, else bfloat16")
    parser.add_argument("--attention", choices=ATTENTION_BACKENDS, default="xla")
    parser.add_argument("--remat", choices=REMAT_POLICIES, default="none")
    parser.add_argument("--scan-layers", action="store_true", help="scan over stacked layers")
    parser.add_argument("--mesh", default="-1,1,1", metavar="DATA,FSDP,TENSOR",
                        help="mesh sizes; -1 = the remaining devices (default -1,1,1: pure data parallel)")
    parser.add_argument("--vocab-chunk", type=int, default=VOCAB_CHUNK,
                        help=f"the loss's vocabulary chunk (default {VOCAB_CHUNK}); 0: the whole vocabulary in one")
    parser.add_argument("--threefry-kernel", choices=("auto", "on", "off"), default="auto",
                        help="the parameter init's threefry lowering (model.sharding.init_prng_lowering): "
                             "auto = jax's CUDA kernel on a one-GPU mesh only")
    parser.add_argument("--document-mask", action="store_true",
                        help="pass the batch's segment ids to attention (packed data's document mask); default: "
                             "one document per row, no mask (PyTorch's is_causal)")
    parser.add_argument("--profile-steps", type=int, default=0,
                        help="steps traced with jax.profiler after the timed ones (default 0: none)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    platform = jax.devices()[0].platform
    if args.batch_size < 1 or args.steps < 1 or args.warmup < 0 or args.seq_len < 0 or args.profile_steps < 0:
        parser.error("need --batch-size >= 1, --steps >= 1, --warmup >= 0, --seq-len >= 1, --profile-steps >= 0")
    try:
        sizes = tuple(int(s) for s in args.mesh.split(","))
        if len(sizes) != 3:
            raise ValueError
    except ValueError:
        parser.error(f"--mesh {args.mesh!r}: expected three comma-separated sizes DATA,FSDP,TENSOR such as 1,-1,1")
    args.mesh_sizes = sizes
    args.dtype = args.dtype or ("float32" if platform == "cpu" else "bfloat16")
    if args.attention == "cudnn" and (platform != "gpu" or args.dtype == "float32"):
        parser.error(f"--attention cudnn needs an NVIDIA GPU and --dtype bfloat16 or float16 "
                     f"(have {platform}, {args.dtype})")
    return args


def model_config(args) -> ModelConfig:
    base = ModelConfig.preset(args.preset)
    seq_len = args.seq_len or (min(128, base.max_seq_len) if jax.devices()[0].platform == "cpu"
                               else min(base.max_seq_len, 2048))
    if seq_len > base.max_seq_len:
        raise ValueError(f"--seq-len {seq_len} exceeds {args.preset}'s max_seq_len={base.max_seq_len}")
    args.seq_len = seq_len
    return ModelConfig.preset(args.preset, dtype=args.dtype, attention=args.attention, remat=args.remat,
                              scan_layers=args.scan_layers)


def random_batch(rng: np.random.Generator, b: int, t: int, vocab: int) -> dict:
    tokens = rng.integers(0, vocab, size=(b, t + 1), dtype=np.int32)
    return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "weights": np.ones((b, t), np.float32),
            "segment_ids": np.ones((b, t), np.int32), "positions": np.tile(np.arange(t, dtype=np.int32), (b, 1))}


def memory_analysis(compiled) -> dict | None:
    try:
        m = compiled.memory_analysis()
    except Exception:  # not every backend implements it
        return None
    if m is None:
        return None
    keys = ("argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes", "temp_size_in_bytes",
            "generated_code_size_in_bytes")
    out = {k: int(getattr(m, k)) for k in keys if hasattr(m, k)}
    if {"argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes", "temp_size_in_bytes"} <= set(out):
        out["total_bytes"] = (out["argument_size_in_bytes"] + out["output_size_in_bytes"]
                              - out["alias_size_in_bytes"] + out["temp_size_in_bytes"])
    return out


def compile_clock() -> list[float]:
    """A list that collects the seconds of every XLA compile from now on (jax.monitoring's
    backend-compile event), so a setup time can say how much of it was compiling."""
    spent: list[float] = []

    def listen(event: str, duration: float, **_):
        if event == "/jax/core/compile/backend_compile_duration":
            spent.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listen)
    return spent


THREEFRY_KERNEL = {"auto": None, "on": True, "off": False}


def benchmark(args) -> dict:
    cfg = model_config(args)
    mesh = make_mesh(MeshConfig(*args.mesh_sizes))
    if args.batch_size % batch_axes_size(mesh):
        raise ValueError(f"--batch-size {args.batch_size} is not divisible by the batch mesh axes "
                         f"data x fsdp x expert = {batch_axes_size(mesh)}")
    total = args.warmup + args.steps
    compiles = compile_clock()
    start = time.perf_counter()
    graphdef, params, shardings = create_sharded(lambda: build_model(cfg, rngs=nnx.Rngs(args.seed)), mesh,
                                                 DEFAULT_RULES, threefry_kernel=THREEFRY_KERNEL[args.threefry_kernel])
    jax.block_until_ready(params)
    init_s, init_compile_s = time.perf_counter() - start, sum(compiles)
    document_mask = args.document_mask or cfg.architecture != "decoder"
    trainer = Trainer(lm_loss(graphdef, cfg, vocab_chunk=args.vocab_chunk, document_mask=document_mask), params=params,
                      param_shardings=shardings,
                      optim=OptimConfig(warmup_steps=0), loop=LoopConfig(steps=total), mesh=mesh, rules=DEFAULT_RULES)
    state, frozen = trainer.state, trainer.frozen
    params = sum(x.size for x in jax.tree.leaves(state["params"]))
    data_rng = np.random.default_rng(args.seed)
    with jax.set_mesh(mesh):
        batches = [trainer.global_batch(random_batch(data_rng, args.batch_size, args.seq_len, cfg.vocab_size))
                   for _ in range(2)]
        rng = jax.device_put(jax.random.key(args.seed), jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
        jax.block_until_ready((state, batches, rng))

        start = time.perf_counter()
        compiled = trainer.jitted("train", batches[0]).lower(state, frozen, batches[0], rng).compile()
        compile_s = time.perf_counter() - start
        memory = memory_analysis(compiled)

        times = []
        for i in range(total):
            start = time.perf_counter()
            state, metrics = compiled(state, frozen, batches[i % 2], rng)
            jax.block_until_ready((state, metrics))
            if i >= args.warmup:
                times.append(time.perf_counter() - start)
        loss = float(metrics["train/loss"])
        profile = None
        if args.profile_steps:   # untimed; the state is donated, so each traced step rebinds it
            from device_profile import jax_profile   # benchmarks/

            held = [state]

            def traced_step():
                held[0], out = compiled(held[0], frozen, batches[0], rng)
                jax.block_until_ready((held[0], out))

            profile = jax_profile(traced_step, args.profile_steps)

    device = jax.devices()[0]
    stats = device.memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        peak, source = int(stats["peak_bytes_in_use"]), "memory_stats"
    else:
        peak, source = (memory or {}).get("total_bytes"), "memory_analysis"
    step_s = statistics.median(times)
    tokens_per_s = args.batch_size * args.seq_len / step_s
    flops_per_token = lm_flops_per_token(cfg, args.seq_len)
    peak_flops = peak_flops_per_device(device, args.dtype)
    return {
        "preset": args.preset, "params": int(params), "batch": args.batch_size, "seq_len": args.seq_len,
        "dtype": args.dtype, "attention": args.attention, "remat": args.remat, "scan_layers": args.scan_layers,
        "mesh": dict(mesh.shape), "device_kind": device.device_kind, "num_devices": mesh.size,
        "init_s": round(init_s, 3), "init_compile_s": round(init_compile_s, 3),
        "threefry_kernel": args.threefry_kernel, "vocab_chunk": args.vocab_chunk, "document_mask": document_mask,
        "compile_s": round(compile_s, 3), "steps": args.steps, "warmup": args.warmup,
        "step_ms_median": round(1e3 * step_s, 3),
        "step_ms_p90": round(1e3 * float(np.percentile(times, 90)), 3),
        "tokens_per_s": round(tokens_per_s, 1),
        "model_flops_per_token": flops_per_token,
        "peak_flops_per_device": peak_flops,
        "mfu": None if not peak_flops else round(tokens_per_s * flops_per_token / (peak_flops * mesh.size), 5),
        "peak_memory_bytes": peak, "peak_memory_source": source, "compiled_memory": memory,
        "final_loss": round(loss, 4), "jax": jax.__version__,
        **({"profile": profile} if profile is not None else {}),
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        result = benchmark(args)
    except ValueError as e:
        print(f"train_throughput.py: error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
