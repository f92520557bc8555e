"""``lmforge plan``: what a run costs per device, before it runs (``lmforge.train.plan``).

    lmforge plan experiments/shakespeare_char.py:cpu_tuned model.vocab_size=65
    lmforge plan --preset llama3_70b mesh.fsdp=64 mesh.tensor=8 data.batch_size=64 model.dtype=bfloat16 \
        model.attention=cudnn model.remat=full
    lmforge plan --preset llama3_405b mesh.data=2 mesh.fsdp=128 mesh.tensor=8 model.dtype=bfloat16 \
        model.attention=cudnn model.remat=full model.scan_layers=true --mfu 0.38 --json
    lmforge plan experiments/sft/sft_lora.py init_from=runs/base256

The experiment (``EXP.py[:VARIANT]``) gives the model, mesh, batch, sequence, optimizer and the loss's
``vocab_chunk`` (``vocab_chunk=0``: the whole logits at once, as the run would hold them); a
fine-tune's (SFT's) model is its ``init_from``'s, read without the weights, with its ``model.*``
and LoRA adapters (which alone then hold optimizer state), and so is continued pretraining's (with
``model.dtype``, ``attention``, ``remat``, ``dropout`` from the config, as the run). With
``model.vocab_size=0`` a SentencePiece run's vocabulary is ``tokenizer.vocab_size`` rounded up to
``model.vocab_multiple``, as the run builds it (a char tokenizer's needs ``model.vocab_size=N``).
The objective and sequence length must fit the model, as ``lmforge run`` checks.
``--preset NAME`` replaces its model with a named preset (``lmforge.model.PRESETS``), or, without an
experiment, plans a pretraining config of that model whose batch defaults to one row per
data-parallel device and whose sequence defaults to the model's ``max_seq_len``. Bindings apply as
in ``lmforge run``. A mesh axis of -1 takes the devices ``--devices`` leaves (without it: 1).

Prints parameters, FLOPs per token, memory per device and the step time at ``--mfu`` of the
device's peak as a table, or as one JSON object with ``--json``. The device is ``--device`` (default
``h100``: 989 TFLOP/s for bf16 compute, 494.5 for float32 (TF32: JAX's default matmul precision), 80
GiB; ``here``: this machine's first device, its peak as ``lmforge run`` takes it -- a CPU's measured
matmul rate -- and its memory), and ``--peak-tflops`` / ``--memory-gib`` override either figure. The
device's name and the precision its peak is for are printed beside the figures; notes say what
bf16 compute or a flash attention kernel would change. A ``--preset`` alone plans ModelConfig's
defaults (float32, attention=xla, no remat, unrolled layers: what ``lmforge run`` would build); a
note gives the usual large-model recipe's total beside it. The collectives line is the bytes FSDP
and data parallelism move per device per step and their time at ``--device``'s links
(``--link-gbs``): compute and communication side by side, as the scaling-book's rooflines set them
(tensor-parallel and expert all-to-all traffic are not counted).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math

from .bindings import apply_bindings, split_binding
from .errors import ConfigError
from .typecheck import check_flag


# name: (dense bf16 peak TFLOP/s, dense float32-matmul peak TFLOP/s, memory GiB, what it is): datasheet
# figures. A float32 model's matmuls run at JAX's default precision: TF32 tensor cores on an NVIDIA GPU
# (half the bf16 rate), one bf16 pass of the MXU on a TPU (the bf16 rate).
DEVICES = {
    "h100": (989.0, 494.5, 80.0, "H100 SXM"),
    "h200": (989.0, 494.5, 141.0, "H200 SXM"),
    "a100": (312.0, 156.0, 80.0, "A100 80GB"),
    "tpu-v5e": (197.0, 197.0, 16.0, "TPU v5e"),
    "tpu-v5p": (459.0, 459.0, 95.0, "TPU v5p"),
}
# name: ((GB/s per device within a node, what), (GB/s per device across nodes, what), devices per node):
# the bandwidth a collective over the mesh gets, datasheet figures. A GPU mesh larger than a node is held
# to the network (8 x 400 Gb/s InfiniBand per DGX H100 node: 50 GB/s per GPU; A100: 8 x 200 Gb/s);
# a TPU slice's ICI joins every chip (v5e 1,600 Gb/s, v5p 4,800 Gb/s per chip).
LINKS = {
    "h100": ((450.0, "NVLink 4, one direction"), (50.0, "InfiniBand 400 Gb/s per GPU"), 8),
    "h200": ((450.0, "NVLink 4, one direction"), (50.0, "InfiniBand 400 Gb/s per GPU"), 8),
    "a100": ((300.0, "NVLink 3, one direction"), (25.0, "InfiniBand 200 Gb/s per GPU"), 8),
    "tpu-v5e": ((200.0, "ICI 1,600 Gb/s"), (200.0, "ICI 1,600 Gb/s"), 256),
    "tpu-v5p": ((600.0, "ICI 4,800 Gb/s"), (600.0, "ICI 4,800 Gb/s"), 8960),
}


def device_link(device: str, devices: int) -> tuple[float, str]:
    """(bytes/s per device, what) a collective over ``devices`` of a :data:`LINKS` entry gets: the
    node's links when the mesh fits in one node, else the network's."""
    inside, across, per_node = LINKS[device]
    gbs, what = inside if devices <= per_node else across
    return gbs * 1e9, what


def device_peak(device: str, dtype: str) -> tuple[float, float, str]:
    """(peak TFLOP/s, memory GiB, name) of a :data:`DEVICES` entry for a model computing in ``dtype``:
    the bf16 peak for 16-bit compute, the float32-matmul one (TF32 on NVIDIA GPUs) for float32."""
    bf16, fp32, memory, name = DEVICES[device]
    if dtype == "float32":
        return fp32, memory, name + (", float32 as one bf16 MXU pass" if device.startswith("tpu") else ", tf32")
    return bf16, memory, f"{name}, {'bf16' if dtype == 'bfloat16' else dtype}"


def add_plan_parser(sub) -> None:
    p = sub.add_parser("plan", help="parameters, FLOPs, memory per device and step time of a run, before it runs",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", nargs="?", metavar="EXP.py[:VARIANT]", help="an experiment (optional with --preset)")
    p.add_argument("bindings", nargs="*", default=[], metavar="KEY=VALUE", help="overrides, e.g. mesh.fsdp=64 mesh.tensor=8")
    p.add_argument("--preset", help="a model preset, e.g. llama3_70b (see lmforge.model.PRESETS)")
    p.add_argument("--devices", type=int, help="devices in all, for a mesh axis of -1 (default: -1 counts as 1)")
    p.add_argument("--mfu", type=float, default=0.4, help="model FLOPs utilisation the step time assumes (0.4)")
    p.add_argument("--device", default="h100", choices=(*DEVICES, "here"),
                   help="the device planned for (default h100); here: this machine's first device")
    p.add_argument("--peak-tflops", type=float, help="dense peak TFLOP/s per device (default: --device's)")
    p.add_argument("--memory-gib", type=float, help="memory per device in GiB (default: --device's)")
    p.add_argument("--link-gbs", type=float,
                   help="GB/s per device for FSDP / data-parallel collectives (default: --device's links: a node's "
                        "NVLink up to 8 GPUs, InfiniBand beyond; a TPU's ICI)")
    p.add_argument("--decode-batch", type=int, default=1, help="rows decoded at once, for the KV cache (1)")
    p.add_argument("--decode-len", type=int, default=0, help="tokens held in the KV cache (0: model.max_seq_len)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.set_defaults(handler=plan_cmd)


def plan_cmd(args: argparse.Namespace) -> int:
    """Plan the run an experiment (or a preset) describes; see the module docstring."""
    from lmforge.model import ModelConfig, ModelRuntime
    from lmforge.model.logprobs import VOCAB_CHUNK
    from lmforge.train.plan import GIB, Device, format_plan, plan

    check_flag("--mfu", args.mfu, low=0, high=1, low_open=True)
    if args.peak_tflops is not None:
        check_flag("--peak-tflops", args.peak_tflops, low=0, low_open=True)
    if args.memory_gib is not None:
        check_flag("--memory-gib", args.memory_gib, low=0, low_open=True)
    if args.link_gbs is not None:
        check_flag("--link-gbs", args.link_gbs, low=0, low_open=True)
    check_flag("--decode-batch", args.decode_batch, low=1)
    check_flag("--decode-len", args.decode_len, low=0)
    if args.devices is not None:
        check_flag("--devices", args.devices, low=1)
    bindings = list(args.bindings)
    if args.experiment and "=" in args.experiment and not args.experiment.split("=")[0].endswith(".py"):
        bindings.insert(0, args.experiment)      # `lmforge plan --preset X mesh.fsdp=8`: no experiment
        args.experiment = None
    if args.experiment and args.preset and ".py" not in args.experiment:
        raise ConfigError(f"{args.experiment!r}: expected a KEY=VALUE binding or an experiment file (EXP.py[:VARIANT])")
    if not args.experiment and not args.preset:
        raise ConfigError("lmforge plan needs an experiment (EXP.py[:VARIANT]) or --preset NAME")
    bound = {split_binding(b)[0] for b in bindings}
    if args.experiment:
        from .experiment import experiment_config, load_experiment
        module, variant = load_experiment(args.experiment)
        config = experiment_config(module, variant)
        if args.preset:
            config = dataclasses.replace(config, model=ModelConfig.preset(args.preset))
    else:
        from lmforge.train.mesh import MeshConfig
        from lmforge.train.pretrain import PretrainConfig
        config = PretrainConfig(model=ModelConfig.preset(args.preset), mesh=MeshConfig(data=1))
    config = apply_bindings(config, bindings)
    for field in ("model", "mesh", "data", "optim"):
        if not hasattr(config, field):
            raise ConfigError(f"{type(config).__qualname__} has no '{field}'; lmforge plan reads model, mesh, data "
                              f"and optim (a pretraining or SFT config)")
    model, mesh_cfg, data, optim = config.model, config.mesh, config.data, config.optim
    if isinstance(model, ModelRuntime):   # a fine-tune: the model is its init_from's, computed as model.* says
        model = _source_model(config)
    elif getattr(config, "init_from", "") and not args.preset:   # continued pretraining: init_from's, as start_from
        from lmforge.train.pretrain import with_runtime
        from lmforge.weights import source_model_config
        model = with_runtime(source_model_config(config.init_from), model)
    from lmforge.align.grpo import GRPOConfig
    from lmforge.align.ppo import PPOConfig
    from lmforge.align.reward import RewardConfig
    if isinstance(config, (GRPOConfig, PPOConfig)):
        raise ConfigError(f"lmforge plan counts one training step on fixed batches; a "
                          f"{'GRPO' if isinstance(config, GRPOConfig) else 'PPO'} step also samples its rollouts "
                          f"(prefill, decode, a KV cache), which is not planned yet")
    if isinstance(config, RewardConfig) or model.num_labels:
        raise ConfigError("lmforge plan counts language-model training (an unembedding, its logits, decoding); a "
                          "reward model (a score head, two rows per pair) is not planned yet")
    lora = getattr(config, "lora", None)
    if lora is not None and lora.rank:    # adapters on the model; alone trainable unless optim says, as run_sft
        from lmforge.model.lora import ADAPTER_PATTERN
        from lmforge.weights.load import with_fresh_lora
        model = with_fresh_lora(model, lora, getattr(config, "init_from", "") or "the model")
        optim = optim if optim.trainable else dataclasses.replace(optim, trainable=(ADAPTER_PATTERN,))
    vocab_note = None
    if model.vocab_size == 0:
        tokenizer = getattr(config, "tokenizer", None)
        if tokenizer is None or tokenizer.kind != "sentencepiece":   # a char vocabulary is the data's characters
            raise ConfigError("model.vocab_size=0 is taken from the tokenizer when the run starts"
                              + (f" (a {tokenizer.kind} tokenizer: the characters of the data)" if tokenizer else "")
                              + "; bind model.vocab_size=N to plan")
        from lmforge.train.pretrain import resolve_model
        model = resolve_model(model, tokenizer.vocab_size)       # what the run will build: SentencePiece's size, rounded
        vocab_note = (f"model.vocab_size=0: the tokenizer's {tokenizer.vocab_size:,} ids (tokenizer.vocab_size) "
                      f"rounded up to model.vocab_multiple={model.vocab_multiple}: {model.vocab_size:,}")
    sizes = {"data": mesh_cfg.data, "fsdp": mesh_cfg.fsdp, "expert": mesh_cfg.expert, "tensor": mesh_cfg.tensor}
    fixed = math.prod(s for s in sizes.values() if s != -1)
    for axis, size in sizes.items():
        if size == -1:
            if args.devices is not None and args.devices % fixed:
                raise ConfigError(f"--devices {args.devices} is not divisible by the fixed mesh axes ({fixed})")
            sizes[axis] = 1 if args.devices is None else args.devices // fixed
    if args.devices is not None and math.prod(sizes.values()) != args.devices:
        raise ConfigError(f"mesh {sizes} has {math.prod(sizes.values())} devices, not --devices {args.devices}")
    batch_axes = math.prod(sizes[a] for a in ("data", "fsdp", "expert"))
    seq_len = data.seq_len if (args.experiment or "data.seq_len" in bound) else model.max_seq_len
    batch = data.batch_size if (args.experiment or "data.batch_size" in bound) else batch_axes * optim.grad_accum
    if hasattr(config, "objective"):      # pretraining: the objective and lengths fit the model, as the run checks
        from lmforge.train.pretrain import check_objective
        try:
            check_objective(dataclasses.replace(config, data=dataclasses.replace(data, seq_len=seq_len)), model)
        except ValueError as e:
            whose = (f"--preset {args.preset}: " if args.preset else
                     f"init_from={config.init_from} (the model is its, not this config's model.*): "
                     if getattr(config, "init_from", "") else "")
            raise ConfigError(f"{whose}{e}") from None
    peak_tflops, memory_gib, name = here(model.dtype) if args.device == "here" else device_peak(args.device, model.dtype)
    if args.peak_tflops is not None or args.memory_gib is not None:
        name += ", with " + " and ".join(f for f in (args.peak_tflops is not None and "--peak-tflops",
                                                      args.memory_gib is not None and "--memory-gib") if f)
    devices = math.prod(sizes.values())
    link, link_name = device_link(args.device, devices) if args.device != "here" else (50e9, "assumed")
    if args.link_gbs is not None:
        link, link_name = args.link_gbs * 1e9, "--link-gbs"
    device = Device(peak_flops=(args.peak_tflops or peak_tflops) * 1e12, mfu=args.mfu,
                    memory_bytes=(args.memory_gib or memory_gib) * GIB, name=name, link_bytes_per_s=link,
                    link=link_name)
    options = dict(batch_size=batch, seq_len=seq_len, optim=optim, rules=mesh_cfg.rules, device=device,
                   decode_batch=args.decode_batch, decode_len=args.decode_len,
                   vocab_chunk=getattr(config, "vocab_chunk", VOCAB_CHUNK))
    try:
        result = plan(model, sizes, **options)
    except ValueError as e:
        raise ConfigError(f"--decode-len {args.decode_len}: {e}" if str(e).startswith("decode_len=") else str(e)) \
            from None
    notes = (vocab_note,) if vocab_note else ()
    recipe = {"dtype": "bfloat16", "attention": "splash" if args.device.startswith("tpu") else "cudnn",
              "remat": "full", "scan_layers": True}
    unbound = {k: v for k, v in recipe.items() if f"model.{k}" not in bound and getattr(model, k) != v}
    if args.preset and not args.experiment and unbound:   # ModelConfig's defaults: what `lmforge run` would build
        bf16_peak = args.peak_tflops or (device_peak(args.device, "bfloat16")[0] if args.device != "here" else
                                         peak_tflops)
        usual = plan(dataclasses.replace(model, **unbound), sizes,
                     **{**options, "device": dataclasses.replace(device, peak_flops=bf16_peak * 1e12)})
        notes += ("--preset plans ModelConfig's defaults (" + ", ".join(f"model.{k}={getattr(model, k)}"
                                                               for k in unbound)
                  + f"), as `lmforge run` would build it; the usual large-model recipe, "
                  + " ".join(f"model.{k}={v}" for k, v in unbound.items())
                  + f", needs {usual.memory['total'] / GIB:.2f} GiB per device "
                  + f"({'fits' if usual.fits else 'does not fit'}) and {usual.step_time_s:.4g} s per step",)
    if model.dtype == "float32" and args.device != "here" and args.peak_tflops is None:
        notes += (f"model.dtype=float32: the step time is at the device's float32-matmul peak ({name.split(', ', 1)[1]}, "
                  f"{peak_tflops:g} TFLOP/s); model.dtype=bfloat16 (mixed precision, float32 master weights) plans "
                  f"for {DEVICES[args.device][0]:g}",)
    if notes:
        result = dataclasses.replace(result, notes=(*notes, *result.notes))
    if args.json:
        print(json.dumps(result.to_json(), sort_keys=True))
    else:
        source = args.experiment or "(no experiment)"
        print(f"plan: {source}" + (f" with --preset {args.preset}" if args.preset else ""))
        print(format_plan(result))
    return 0


def _source_model(config):
    """The ModelConfig a fine-tune's config (``model`` a ModelRuntime) starts from: its ``init_from``'s,
    read without the weights, computed as ``model.*`` says."""
    from lmforge.weights import source_model_config

    if not getattr(config, "init_from", ""):
        raise ConfigError(f"{type(config).__qualname__} fine-tunes the model of init_from, which is not set: bind "
                          f"init_from=FOLDER (a run, model or transformers folder) or pass --preset NAME")
    return dataclasses.replace(source_model_config(config.init_from), **config.model.overrides())


def here(dtype: str) -> tuple[float, float, str]:
    """(peak TFLOP/s, memory GiB, name) of this machine's first device: the peak ``lmforge run`` uses for
    MFU (``peak_flops_per_device``: a CPU's is a measured float32 matmul rate), the memory the runtime
    reports (a CPU's: the machine's RAM). Raises ConfigError for an accelerator of unknown peak."""
    import os   # pylint: disable=import-outside-toplevel

    import jax   # pylint: disable=import-outside-toplevel

    from lmforge.train.metrics import peak_flops_per_device   # pylint: disable=import-outside-toplevel

    device = jax.devices()[0]
    peak = peak_flops_per_device(device, dtype)
    if peak is None:
        raise ConfigError(f"--device here: no known peak for {device.device_kind!r}; give --peak-tflops")
    if device.platform == "cpu":
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        what = f"this machine's CPU ({os.cpu_count()} cores), {peak / 1e9:.0f} GFLOP/s measured"
    else:
        memory = (device.memory_stats() or {}).get("bytes_limit", 0)
        what = f"this machine's {device.device_kind}, {jax.numpy.dtype(dtype).name}"
    return peak / 1e12, memory / 2**30, what
