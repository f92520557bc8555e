"""Decode speed of a model preset: lmforge's sampler next to transformers' static-cache ``generate``
and the memory-bandwidth floor, on the same model shape and device; one JSON line per batch size.

    python benchmarks/decode.py llama_1b --batch-sizes 1,8,64             # GPU: bf16, 16-token prompts, 128 new
    python benchmarks/decode.py llama_tiny --batch-sizes 1,4 --new-tokens 16 --hf-compile off   # CPU: a minute

What is measured, for each batch size B: greedy decoding of exactly ``--new-tokens`` N tokens per row
(no stop token, so both sides do the same work) after a prompt of ``--prompt-len`` P random token
ids, with random weights in ``--dtype`` (bf16 on GPU, float32 on CPU; the weights themselves in
that dtype, as an inference checkpoint). One untimed call compiles (``compile_s`` = that call minus
the median); then ``--repeats`` timed calls, median. ``ms_per_step`` = call time / N: one decode
step (B new tokens), the one P-token prefill included (P is small on purpose); ``tokens_per_s`` =
B N / call time.

- lmforge: ``lmforge_decode`` below, one call of the KV-cache sampler (``lmforge.infer.generate``, or
  ``lmforge.train.sampling.generate`` before that package: prefill + a jitted ``lax.while_loop``,
  the token ids copied to the host), the model created sharded on a 1-device mesh
  (``create_sharded`` under ``axis_rules(DEFAULT_RULES)``), ``--attention`` (default ``xla``).
- transformers: ``LlamaForCausalLM`` / ``GPT2LMHeadModel`` built from the same shape (random init),
  ``generate(do_sample=False, cache_implementation="static")``: on CUDA ``generate`` compiles the
  decoding forward itself (``torch.compile``, mode ``reduce-overhead``: CUDA graphs; transformers'
  ``CompileConfig`` defaults) — ``--hf-compile auto``; ``on`` passes ``CompileConfig(fullgraph=True)``
  (and compiles on CPU too), ``off`` runs eager.
- The floor: bytes one decode step must read / memory bandwidth. Bytes = the weights in ``--dtype``
  (all parameters, a tied embedding once; no position table and no untied input table, of which a
  step gathers only B rows) + the KV cache of the B rows at the mean context length P + (N - 1) / 2.
  Bandwidth = a device-to-device copy measured here (``torch`` ``copy_`` of 1 GiB, bytes read +
  written / time; JAX's ``x + 1`` as the second opinion), and the datasheet number (H200: 4.8 TB/s)
  beside it. ``x_floor`` = ms_per_step / floor_ms (1.0 is the floor).

Each side runs in a subprocess of its own (JAX and PyTorch never share the device), one after the
other, each printing one JSON object per batch as it finishes; ``--timeout-s`` bounds both together
(the first gets at most ``--first-share``), and a side that would not finish its next batch size in
its time skips it (``skipped``) rather than losing the ones it has.

``--profile``: one more call per batch size on each side under its profiler (untimed):
``profile`` (per decode step: device busy and idle ms, kernels per step, time by kernel category,
the top kernels; ``benchmarks/device_profile.py``) and ``profile_ms`` side by side in the line. A
step well above the floor with a large idle share waits for the host (launches, round trips).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import statistics
import sys
import time

from device_profile import side_by_side   # benchmarks/

HERE = pathlib.Path(__file__).resolve()

# Datasheet HBM bandwidth (bytes/s) by device name; the first match wins.
DATASHEET_BANDWIDTH = (
    (r"h200", 4.8e12),
    (r"h100 nvl", 3.9e12),
    (r"h100.*pcie", 2.0e12),
    (r"h100|h800", 3.35e12),
    (r"a100.*80", 2.039e12),
    (r"a100", 1.555e12),
    (r"\bl40s\b", 0.864e12),
    (r"\bl4\b", 0.3e12),
)


# --------------------------------------------------------------------------------------- lmforge
def lmforge_model(preset: str, dtype: str, attention: str, seed: int = 0):
    """(cfg, graphdef, params, mesh, rules): the preset with weights in ``dtype``, born sharded on a 1-device mesh."""
    from flax import nnx

    from lmforge.model import ModelConfig, axis_rules, build_model, create_sharded
    from lmforge.train.mesh import DEFAULT_RULES, MeshConfig, make_mesh

    cfg = ModelConfig.preset(preset, dtype=dtype, param_dtype=dtype, attention=attention)
    mesh, rules = make_mesh(MeshConfig()), DEFAULT_RULES
    with axis_rules(rules):
        graphdef, params, _ = create_sharded(lambda: build_model(cfg, rngs=nnx.Rngs(seed)), mesh, rules)
    return cfg, graphdef, params, mesh, rules


def lmforge_decode(graphdef, params, prompts: list[list[int]], new_tokens: int, mesh, rules,
                   check_every: int | None = None) -> list[list[int]]:
    """Greedy continuation of every prompt by exactly ``new_tokens`` ids (no stop tokens): the one
    call of lmforge's sampler here. Returns host lists, so the call has finished when it returns.
    ``check_every``: the sampler's steps between checks of "has every row stopped?" (None: its
    default for the backend; a tree whose sampler predates it takes only None).

    The sampler is ``lmforge.infer.generate`` (arrays in, a ``SamplerOutput`` out) where that package
    exists, else the earlier ``lmforge.train.sampling.generate`` (id lists in and out); every prompt
    here has the same length, so neither pads.
    """
    import jax
    import numpy as np

    from lmforge.model import axis_rules

    with jax.set_mesh(mesh), axis_rules(rules):
        try:
            from lmforge.infer import SamplingConfig, generate
        except ImportError:
            from lmforge.train.sampling import SamplingConfig, generate

            return generate(graphdef, params, prompts, SamplingConfig(max_new_tokens=new_tokens, temperature=0.0),
                            rng=jax.random.key(0))
        tokens = jax.numpy.asarray(np.asarray(prompts, np.int32))
        out = generate(graphdef, params, tokens, jax.numpy.ones_like(tokens), jax.random.key(0),
                       SamplingConfig(max_new_tokens=new_tokens, temperature=0.0),
                       **({} if check_every is None else {"check_every": check_every}))
        ids, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
        return [ids[i, :lengths[i]].tolist() for i in range(len(prompts))]


def jax_copy_bandwidth(nbytes: int) -> float:
    """Bytes read + written per second by ``x + 1`` on a float32 array of ``nbytes`` (median of 10)."""
    import jax
    import jax.numpy as jnp

    x = jnp.ones((nbytes // 4,), jnp.float32)
    f = jax.jit(lambda a: a + 1.0)
    f(x).block_until_ready()
    times = []
    for _ in range(10):
        start = time.perf_counter()
        f(x).block_until_ready()
        times.append(time.perf_counter() - start)
    return 2 * nbytes / statistics.median(times)


def run_lmforge(args) -> None:
    import jax
    import numpy as np

    from train_throughput import compile_clock   # benchmarks/

    platform = jax.devices()[0].platform
    dtype = args.dtype or ("float32" if platform == "cpu" else "bfloat16")
    compiles = compile_clock()
    start = time.perf_counter()
    cfg, graphdef, params, mesh, rules = lmforge_model(args.preset, dtype, args.attention)
    jax.block_until_ready(params)
    setup_compile_s = sum(compiles)
    itemsize = np.dtype(jax.tree.leaves(params)[0].dtype).itemsize
    param_count = sum(x.size for x in jax.tree.leaves(params))
    gathered = (cfg.max_seq_len * cfg.embed_dim if cfg.position == "learned" else 0) + \
               (0 if cfg.tie_embeddings else cfg.vocab_size * cfg.embed_dim)
    try:
        from lmforge.infer.sampler import default_check_every
        check_default = default_check_every()
    except ImportError:   # a tree from before the chunked decode loop: every step is checked
        check_default = 1
    emit({"side": "lmforge", "kind": "setup", "device": jax.devices()[0].device_kind, "platform": platform,
          "dtype": dtype, "attention": args.attention, "params": int(param_count),
          "weights_bytes": int(sum(x.nbytes for x in jax.tree.leaves(params))),
          "weights_read_bytes_per_step": int((param_count - gathered) * itemsize),
          "kv_bytes_per_row_token": int(2 * cfg.num_layers * cfg.kv_heads * cfg.dims_per_head * itemsize),
          "setup_s": round(time.perf_counter() - start, 2), "setup_compile_s": round(setup_compile_s, 2),
          "check_every_default": check_default,
          "bandwidth_bytes_per_s": round(jax_copy_bandwidth(args.bandwidth_bytes(platform)), -6),
          "bandwidth_method": "jax x + 1 (read + write) / time", "jax": jax.__version__})
    effective = lambda every: min(every, max(args.new_tokens - 1, 1))   # the sampler caps it so
    rng = np.random.default_rng(args.seed)
    previous = 0.0
    for b in args.batch_sizes:
        prompts = rng.integers(0, cfg.vocab_size, (b, args.prompt_len)).tolist()
        for every in args.check_every or [None]:   # the first value is the figure's; the others beside it
            if previous and time.time() + previous * 1.5 > args.deadline:
                emit({"side": "lmforge", "batch": b, "check_every": effective(every or check_default),
                      "skipped": "time budget"})
                continue
            t0 = time.perf_counter()
            decode = lambda: lmforge_decode(graphdef, params, prompts, args.new_tokens, mesh, rules, every)
            start = time.perf_counter()
            out = decode()
            first = time.perf_counter() - start
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                out = decode()
                times.append(time.perf_counter() - start)
            line = {**result("lmforge", b, args, first, times, all(len(o) == args.new_tokens for o in out)),
                    "check_every": effective(every or check_default)}
            if args.profile:   # one more call, traced: per decode step (the prefill in it, as ms_per_step)
                from device_profile import jax_profile   # benchmarks/
                line["profile"] = jax_profile(decode, 1, steps_per_call=args.new_tokens)
            emit(line)
            previous = time.perf_counter() - t0


# ---------------------------------------------------------------------------------- transformers
def hf_model(shape: dict, dtype: str, device: str):
    """A transformers causal LM of ``shape`` (lmforge's preset fields), random weights in ``dtype``."""
    import torch
    import transformers

    if shape["family"] == "llama":
        kw = dict(vocab_size=shape["vocab_size"], hidden_size=shape["embed_dim"], intermediate_size=shape["mlp_dim"],
                  num_hidden_layers=shape["num_layers"], num_attention_heads=shape["num_heads"],
                  num_key_value_heads=shape["kv_heads"], head_dim=shape["head_dim"],
                  max_position_embeddings=shape["max_seq_len"], rms_norm_eps=shape["norm_eps"],
                  tie_word_embeddings=shape["tie_embeddings"], attention_bias=False, mlp_bias=False,
                  hidden_act="silu")
        try:   # transformers 5: rope_parameters; 4.x: rope_theta
            conf = transformers.LlamaConfig(**kw, rope_parameters={"rope_type": "default",
                                                                   "rope_theta": shape["rope_theta"]})
        except TypeError:
            conf = transformers.LlamaConfig(**kw, rope_theta=shape["rope_theta"])
        cls = transformers.LlamaForCausalLM
    elif shape["family"] == "gpt2":
        conf = transformers.GPT2Config(vocab_size=shape["vocab_size"], n_positions=shape["max_seq_len"],
                                       n_embd=shape["embed_dim"], n_layer=shape["num_layers"], n_head=shape["num_heads"],
                                       n_inner=shape["mlp_dim"], activation_function="gelu_new",
                                       layer_norm_epsilon=shape["norm_eps"], tie_word_embeddings=True)
        cls = transformers.GPT2LMHeadModel
    else:
        raise ValueError(f"decode.py: no transformers model for family {shape['family']!r} (gpt2 or llama)")
    torch.manual_seed(0)
    with torch.device(device):
        model = cls(conf)
    model = model.to(getattr(torch, dtype)).eval()
    model.generation_config.eos_token_id = None    # never stop early: exactly max_new_tokens
    model.generation_config.pad_token_id = 0
    return model


def hf_decode(model, input_ids, new_tokens: int, compile_mode: str):
    """transformers' greedy static-cache generate; returns the (B, P + N) ids."""
    import torch
    from transformers import CompileConfig

    kw = {}
    if compile_mode == "off":
        kw["disable_compile"] = True
    elif compile_mode == "on":
        cc = CompileConfig(fullgraph=True)
        cc._compile_all_devices = True     # also on CPU (transformers compiles only on accelerators by itself)
        kw["compile_config"] = cc
    # generate runs under torch.no_grad itself; inference_mode is left out (CUDA graphs of the
    # compiled forward and inference tensors have not always mixed).
    return model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), do_sample=False,
                          max_new_tokens=new_tokens, cache_implementation="static", **kw)


def torch_copy_bandwidth(torch, device: str, nbytes: int) -> float:
    """Bytes read + written per second by ``dst.copy_(src)`` (median of 10)."""
    src = torch.ones(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    dst.copy_(src)
    sync()
    times = []
    for _ in range(10):
        start = time.perf_counter()
        dst.copy_(src)
        sync()
        times.append(time.perf_counter() - start)
    del src, dst
    return 2 * nbytes / statistics.median(times)


def run_transformers(args) -> None:
    import torch
    import transformers

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = args.dtype or ("float32" if device == "cpu" else "bfloat16")
    bandwidth = torch_copy_bandwidth(torch, device, args.bandwidth_bytes("gpu" if device == "cuda" else "cpu"))
    start = time.perf_counter()
    model = hf_model(args.shape, dtype, device)
    unique = {id(p): p for p in model.parameters()}.values()
    emit({"side": "transformers", "kind": "setup", "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
          "dtype": dtype, "compile": args.hf_compile, "params": int(sum(p.numel() for p in unique)),
          "weights_bytes": int(sum(p.numel() * p.element_size() for p in unique)),
          "setup_s": round(time.perf_counter() - start, 2), "bandwidth_bytes_per_s": round(bandwidth, -6),
          "bandwidth_method": "torch copy_ (read + write) / time",
          "torch": torch.__version__, "transformers": transformers.__version__})
    gen = torch.Generator().manual_seed(args.seed)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    previous = 0.0
    for b in args.hf_batch_sizes:
        if previous and time.time() + previous * 1.5 > args.deadline:
            emit({"side": "transformers", "batch": b, "skipped": "time budget"})
            continue
        t0 = time.perf_counter()
        ids = torch.randint(0, args.shape["vocab_size"], (b, args.prompt_len), generator=gen).to(device)
        sync()
        start = time.perf_counter()
        out = hf_decode(model, ids, args.new_tokens, args.hf_compile)
        sync()
        first = time.perf_counter() - start
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            out = hf_decode(model, ids, args.new_tokens, args.hf_compile)
            sync()
            times.append(time.perf_counter() - start)
        line = result("transformers", b, args, first, times, tuple(out.shape) == (b, args.prompt_len + args.new_tokens))
        if args.profile:
            from device_profile import torch_profile   # benchmarks/
            line["profile"] = torch_profile(torch, lambda: (hf_decode(model, ids, args.new_tokens, args.hf_compile), sync()),
                                            1, steps_per_call=args.new_tokens)
        emit(line)
        previous = time.perf_counter() - t0


# ----------------------------------------------------------------------------------------- common
def result(side: str, b: int, args, first: float, times: list[float], complete: bool) -> dict:
    t = statistics.median(times)
    return {"side": side, "batch": b, "prompt_len": args.prompt_len, "new_tokens": args.new_tokens,
            "ms_per_step": round(1e3 * t / args.new_tokens, 4), "tokens_per_s": round(b * args.new_tokens / t, 1),
            "call_s_median": round(t, 4), "call_s": [round(x, 4) for x in times],
            "compile_s": round(max(first - t, 0.0), 2), "first_call_s": round(first, 2),
            "all_rows_got_new_tokens": bool(complete)}


def emit(obj: dict) -> None:
    print(json.dumps(obj), flush=True)


def model_shape(preset: str) -> dict:
    from lmforge.model.config import ModelConfig

    cfg = ModelConfig.preset(preset)
    if cfg.architecture != "decoder":
        raise ValueError(f"decode.py: {preset} is not a decoder-only preset")
    return dict(family=cfg.family, vocab_size=cfg.vocab_size, embed_dim=cfg.embed_dim, mlp_dim=cfg.mlp_dim,
                num_layers=cfg.num_layers, num_heads=cfg.num_heads, kv_heads=cfg.kv_heads,
                head_dim=cfg.dims_per_head, max_seq_len=cfg.max_seq_len, norm_eps=cfg.norm_eps,
                tie_embeddings=cfg.tie_embeddings, rope_theta=cfg.rope_theta)


def child(args, side: str, timeout: float) -> list[dict]:
    """Runs one side in a subprocess; returns the JSON objects it printed (also when it ran out of time)."""
    from compare import run_side   # benchmarks/compare.py: process group, timeout, JSON lines

    cmd = [sys.executable, str(HERE), args.preset, "--side", side, "--deadline", str(time.time() + timeout - 5),
           "--batch-sizes", ",".join(map(str, args.batch_sizes)),
           "--hf-batch-sizes", ",".join(map(str, args.hf_batch_sizes)),
           "--prompt-len", str(args.prompt_len), "--new-tokens", str(args.new_tokens), "--repeats", str(args.repeats),
           "--attention", args.attention, "--hf-compile", args.hf_compile, "--seed", str(args.seed),
           "--check-every", ",".join(map(str, args.check_every)), *(["--profile"] if args.profile else []),
           "--shape-json", json.dumps(args.shape)] + (["--dtype", args.dtype] if args.dtype else [])
    run = run_side(cmd, timeout)
    objs = list(run["objects"])
    if run["error"]:
        objs.append({"side": side, "error": run["error"], "stderr_tail": run.get("stderr_tail", "")})
    return objs


def datasheet_bandwidth(device: str | None) -> float | None:
    for pattern, bw in DATASHEET_BANDWIDTH:
        if device and re.search(pattern, device.lower()):
            return bw
    return None


def combine(args, objs: list[dict]) -> list[dict]:
    setup = {o["side"]: o for o in objs if o.get("kind") == "setup"}
    runs, by_check = {}, {}
    for o in objs:
        if "batch" in o:
            runs.setdefault((o["side"], o["batch"]), o)   # lmforge: the first --check-every value's
            if "check_every" in o and "ms_per_step" in o:
                by_check.setdefault(o["batch"], {})[str(o["check_every"])] = o["ms_per_step"]
    errors = [o for o in objs if "error" in o]
    lm, hf = setup.get("lmforge", {}), setup.get("transformers", {})
    device = lm.get("device") or hf.get("device")
    measured = hf.get("bandwidth_bytes_per_s") or lm.get("bandwidth_bytes_per_s")
    sheet = datasheet_bandwidth(device)
    weights = lm.get("weights_read_bytes_per_step")
    kv_row_token = lm.get("kv_bytes_per_row_token")
    lines = []
    for b in sorted(set(args.batch_sizes) | set(args.hf_batch_sizes)):
        L, H = runs.get(("lmforge", b), {}), runs.get(("transformers", b), {})
        line = {"figure": f"decode/{args.preset}/b{b}", "preset": args.preset, "batch": b, "device": device,
                "dtype": lm.get("dtype") or hf.get("dtype"), "prompt_len": args.prompt_len,
                "new_tokens": args.new_tokens}
        floor = None
        if weights and kv_row_token:
            kv = kv_row_token * b * (args.prompt_len + (args.new_tokens - 1) / 2)
            floor = {"weights_bytes": weights, "kv_bytes_mean": int(kv),
                     "bandwidth_measured_bytes_per_s": measured, "bandwidth_datasheet_bytes_per_s": sheet,
                     "floor_ms_measured_bw": None if not measured else round(1e3 * (weights + kv) / measured, 4),
                     "floor_ms_datasheet_bw": None if not sheet else round(1e3 * (weights + kv) / sheet, 4)}
        line["ms_per_step"] = {"lmforge": L.get("ms_per_step"), "transformers": H.get("ms_per_step")}
        line["tokens_per_s"] = {"lmforge": L.get("tokens_per_s"), "transformers": H.get("tokens_per_s")}
        line["compile_s"] = {"lmforge": L.get("compile_s"), "transformers": H.get("compile_s")}
        line["floor"] = floor
        for side, r in (("lmforge", L), ("transformers", H)):
            ms = r.get("ms_per_step")
            if floor and ms:
                line[f"x_floor_{side}"] = {
                    "measured_bw": None if not floor["floor_ms_measured_bw"] else round(ms / floor["floor_ms_measured_bw"], 3),
                    "datasheet_bw": None if not floor["floor_ms_datasheet_bw"] else round(ms / floor["floor_ms_datasheet_bw"], 3)}
        if L.get("ms_per_step") and H.get("ms_per_step"):
            line["speedup_vs_transformers"] = round(H["ms_per_step"] / L["ms_per_step"], 3)
        profile_ms = side_by_side({"lmforge": L.get("profile"), "transformers": H.get("profile")})
        if profile_ms:   # --profile: device time per step side by side
            line["profile_ms"] = profile_ms
        if len(by_check.get(b, {})) > 1:   # lmforge's ms per step by its steps between stop checks
            line["lmforge_ms_per_step_by_check_every"] = by_check[b]
        line["lmforge"], line["transformers"] = L or None, H or None
        line["setup"] = {"lmforge": lm or None, "transformers": hf or None}
        if errors:
            line["errors"] = errors
        lines.append(line)
    return lines


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="decode.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("preset", help="a decoder-only lmforge preset (llama_1b, gpt2_small, llama_tiny, ...)")
    ints = lambda s: [int(x) for x in s.split(",") if x.strip()]
    parser.add_argument("--batch-sizes", type=ints, default=[1, 8, 64], help="lmforge's (default 1,8,64)")
    parser.add_argument("--hf-batch-sizes", type=ints, default=None, help="transformers' (default: --batch-sizes)")
    parser.add_argument("--prompt-len", type=int, default=16, help="prompt tokens (default 16: lmforge pads to 16s)")
    parser.add_argument("--new-tokens", type=int, default=128, help="new tokens per row (default 128)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per batch size (default 3)")
    parser.add_argument("--dtype", choices=("bfloat16", "float32", "float16"), default=None,
                        help="weights and compute; default bfloat16 on GPU, float32 on CPU")
    parser.add_argument("--attention", default="xla", help="lmforge's attention backend (default xla)")
    parser.add_argument("--check-every", type=ints, default=[],
                        help="lmforge: decode steps between checks of 'has every row stopped?', one run per "
                             "value (the first is the figure's); default: the sampler's for the backend")
    parser.add_argument("--hf-compile", choices=("auto", "on", "off"), default="auto",
                        help="transformers: auto = generate's own compile on CUDA (default), on = also on CPU, "
                             "fullgraph; off = eager")
    parser.add_argument("--profile", action="store_true",
                        help="one more call per batch size under the profiler (jax / torch): device busy and idle "
                             "time per step, kernels by category (benchmarks/device_profile.py)")
    parser.add_argument("--side", choices=("both", "lmforge", "transformers"), default="both")
    parser.add_argument("--timeout-s", type=float, default=600.0, help="both sides together (default 600)")
    parser.add_argument("--first-share", type=float, default=0.5, help="at most this share for lmforge (default 0.5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--deadline", type=float, default=float("inf"), help=argparse.SUPPRESS)
    parser.add_argument("--shape-json", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.hf_batch_sizes = args.hf_batch_sizes or args.batch_sizes
    if (min(args.batch_sizes + args.hf_batch_sizes + args.check_every) < 1 or args.prompt_len < 1
            or args.new_tokens < 1 or args.repeats < 1):
        parser.error("need batch sizes >= 1, --check-every >= 1, --prompt-len >= 1, --new-tokens >= 1, --repeats >= 1")
    # 1 GiB on GPU (far past any cache), 256 MiB on CPU
    args.bandwidth_bytes = lambda platform: (1 << 30) if platform != "cpu" else (1 << 28)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.side == "lmforge":
        run_lmforge(args)
        return 0
    if args.side == "transformers":
        args.shape = json.loads(args.shape_json) if args.shape_json else model_shape(args.preset)
        run_transformers(args)
        return 0
    args.shape = model_shape(args.preset)
    start = time.perf_counter()
    objs = child(args, "lmforge", args.timeout_s * args.first_share)
    objs += child(args, "transformers", args.timeout_s - (time.perf_counter() - start))
    lines = combine(args, objs)
    for line in lines:
        emit(line)
    return 0 if not any("errors" in line for line in lines) else 1


if __name__ == "__main__":
    sys.exit(main())
