"""The planner: what a training run costs per device before it runs, and the compiled step's report.

:func:`plan` estimates, for a decoder-only model on a mesh (``lmforge plan`` prints it):
parameters, training FLOPs per token, per-device memory (parameters, optimizer state, gradients,
activations under the remat policy, the transient all-gathered weights of FSDP, the KV cache of
decoding) and the step time at a stated MFU and device peak. :func:`abstract_train_state` and
:func:`compile_train_step` build the :class:`~lmforge.train.trainer.Trainer`'s state and step from
abstract arrays only (``jax.ShapeDtypeStruct`` with shardings; nothing is allocated) and compile it
ahead of time, so XLA's own memory analysis and the collectives of the partitioned program
(:func:`hlo_collectives`) can be read for a mesh far larger than the machine.

Choices:
- Parameter and optimizer bytes are not a formula: they are the shard shapes of the real state,
  the model traced abstractly (``lmforge.model.abstract_sharded``) with the experiment's logical
  axis rules and the optimizer's state from ``jax.eval_shape`` with the Trainer's own sharding rule
  (Adam's moments take their parameter's sharding; counts are replicated). A mesh the model does
  not divide is the model's own ``ShardingError``. Unrolled layers are traced stacked (one
  ``nnx.vmap``'d block): the per-device bytes are the same when ``layers`` is replicated, and tracing
  126 unrolled blocks took 92 s against 0.24 s stacked (Llama-3 405B, 2-core CPU, 2026-11-30).
- FLOPs per token are ``lmforge.train.metrics.lm_flops_per_token``: 6 (N + V D) + 12 L T A (Kaplan
  et al. 2020; PaLM appendix B; A the attention's heads x head size): model FLOPs, no remat
  recompute, so the step time at an MFU is the time of a run that reaches that MFU, whatever it
  recomputes. The causal-halved figure (MaxText's count) is given in a note.
- Activations follow Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large
  Transformer Models", sec. 4), counted tensor by tensor for this model (pre-norm, SwiGLU or GELU,
  GQA, no dropout masks) instead of their fixed 34 s b h: what each remat policy of
  ``model/transformer.py`` keeps per layer is listed in :func:`activation_bytes`. Attention that
  materialises scores (``xla``, ``dot_product`` on CPU) keeps (B, N, T, T); the flash kernels (``cudnn``,
  ``flash``, ``splash``) keep only their log-sum-exp. The loss adds one vocabulary chunk of float32
  logits (the run's ``vocab_chunk``, ``VOCAB_CHUNK`` columns by default; 0: the whole vocabulary).
  It is an estimate: ``benchmarks/sharding.py aot`` prints it beside XLA's compiled temporaries.
- Gradients are counted once, sharded like their parameters, in the parameters' dtype (plus an
  accumulator with ``optim.grad_accum > 1``). FSDP's gathered weights (two layers whole) are in the
  compute dtype, as the partitioned program gathers them after the cast.
- Collectives: per device per step, FSDP's two gathers and one reduce-scatter of the layers per
  micro-batch (ring: (f - 1) / f of them each) and data parallelism's all-reduce of the gradient
  shards, in the compute dtype, timed at ``Device.link_bytes_per_s``. Tensor-parallel and expert
  all-to-all traffic are not counted; overlap with compute is not assumed either way.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping

import jax
import numpy as np
import optax
from jax.sharding import AbstractMesh, AxisType, NamedSharding, PartitionSpec

from lmforge.model import DEFAULT_RULES, ModelConfig, abstract_sharded, build_model
from lmforge.model.logprobs import VOCAB_CHUNK, check_vocab_chunk
from lmforge.model.moe import expert_capacity
from lmforge.model.paths import flatten, select
from lmforge.model.sharding import MESH_AXES, Rules, logical_spec
from lmforge.train.metrics import attention_dim, lm_flops_per_token
from lmforge.train.optim import OptimConfig, make_optimizer

GIB = 2 ** 30
FLASH_BACKENDS = ("cudnn", "flash", "splash")    # attention kernels that never materialise the scores
H100_BF16_PEAK = 989e12   # dense bf16 FLOP/s of an H100 SXM (datasheet), the default device peak
COLLECTIVES = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")


# ------------------------------------------------------------------------------ the abstract state
def abstract_mesh(sizes: Mapping[str, int]) -> AbstractMesh:
    """An abstract ``(data, fsdp, expert, tensor)`` mesh of ``sizes`` (no devices needed).

    Raises ValueError for an unknown axis or a size below 1."""
    unknown = sorted(set(sizes) - set(MESH_AXES))
    if unknown:
        raise ValueError(f"mesh axes {unknown} are unknown; mesh axes are {MESH_AXES}")
    shape = tuple(int(sizes.get(a, 1)) for a in MESH_AXES)
    if min(shape) < 1:
        raise ValueError(f"mesh sizes {dict(zip(MESH_AXES, shape))} must all be >= 1")
    return AbstractMesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def _traced_config(cfg: ModelConfig, rules: Rules) -> tuple[ModelConfig, Rules]:
    """Unrolled layers are traced stacked (fast), with ``layers`` replicated as unrolled layers are."""
    if cfg.scan_layers or cfg.architecture != "decoder":
        return cfg, rules
    return dataclasses.replace(cfg, scan_layers=True), tuple((n, None if n == "layers" else a) for n, a in rules)


def abstract_train_state(model_cfg: ModelConfig, optim: OptimConfig, mesh, rules: Rules = DEFAULT_RULES, *,
                         steps: int = 1000, exact_layers: bool = True):
    """The Trainer's state ``{"params", "opt_state", "step", "nonfinite"}`` as ShapeDtypeStructs with
    their NamedShardings, built the way :class:`~lmforge.train.trainer.Trainer` builds it, with
    nothing allocated.

    Args:
      mesh: a ``jax.sharding.Mesh`` (to compile) or an ``AbstractMesh`` (to count bytes).
      exact_layers: False traces unrolled layers stacked (same per-device bytes, much faster).

    Returns ``(graphdef, state, state_shardings, frozen, frozen_shardings)``; ``frozen`` holds the
    parameters ``optim.trainable`` leaves out (``{"params": ...}``, or empty).

    Raises:
      ShardingError: a parameter dimension that its mesh axes do not divide.
      ValueError: an ``optim.trainable`` pattern that matches nothing.
    """
    if not exact_layers:
        model_cfg, rules = _traced_config(model_cfg, rules)
    graphdef, params, shardings = abstract_sharded(lambda: build_model(model_cfg, rngs=_rngs()), mesh, rules)
    frozen, frozen_sh = {}, {}
    if optim.trainable:
        params, frozen_params = select(params, optim.trainable, what="optim.trainable")
        shardings, frozen_params_sh = select(shardings, optim.trainable, what="optim.trainable")
        if frozen_params:
            frozen, frozen_sh = {"params": frozen_params}, {"params": frozen_params_sh}
    tx, _ = make_optimizer(optim, steps)
    rep = NamedSharding(mesh, PartitionSpec())
    opt_shapes = jax.eval_shape(tx.init, params)
    # The Trainer's rule: leaves shaped like the parameters take their shardings, the rest replicate.
    opt_sh = optax.tree_utils.tree_map_params(tx, lambda _, sh: sh, opt_shapes, shardings,
                                              transform_non_params=lambda _: rep)
    opt_state = jax.tree.map(lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh), opt_shapes, opt_sh)
    scalar = jax.ShapeDtypeStruct((), np.int32, sharding=rep)
    state = {"params": params, "opt_state": opt_state, "step": scalar, "nonfinite": scalar}
    state_sh = {"params": shardings, "opt_state": opt_sh, "step": rep, "nonfinite": rep}
    return graphdef, state, state_sh, frozen, frozen_sh


def _rngs():
    from flax import nnx
    return nnx.Rngs(0)


def bytes_per_device(tree) -> int:
    """The largest per-device byte count of a tree of arrays or ShapeDtypeStructs with shardings
    (every leaf's shard shape x its itemsize, summed per device; uneven shards are not produced by
    lmforge's rules, which require divisibility)."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        shape = leaf.sharding.shard_shape(leaf.shape) if getattr(leaf, "sharding", None) is not None else leaf.shape
        total += math.prod(shape) * _itemsize(leaf.dtype)
    return total


def compile_train_step(model_cfg: ModelConfig, optim: OptimConfig, mesh: jax.sharding.Mesh, *, batch_size: int,
                       seq_len: int, rules: Rules = DEFAULT_RULES, z_loss: float = 0.0,
                       vocab_chunk: int = VOCAB_CHUNK):
    """The pretraining train step, lowered and compiled ahead of time from abstract arrays only.

    The step is ``make_train_step(lm_loss(...))`` jitted with the in/out shardings and donation of
    ``Trainer.jitted("train", ...)``; the batch is ``batch_size`` rows of ``seq_len`` tokens over the
    batch mesh axes. Returns ``(compiled, abstract state)``: ``compiled.memory_analysis()`` gives
    XLA's per-device bytes (arguments, outputs, temporaries, donated aliases), ``compiled.as_text()``
    the partitioned HLO.

    Raises ShardingError / ValueError as :func:`abstract_train_state`, and ValueError when
    ``batch_size`` is not divisible by the batch mesh axes.
    """
    from lmforge.train.mesh import batch_axes_size
    from lmforge.train.pretrain import lm_loss
    from lmforge.train.step import batch_sharding, make_train_step

    if batch_size % batch_axes_size(mesh):
        raise ValueError(f"batch_size={batch_size} is not divisible by the batch mesh axes ({batch_axes_size(mesh)})")
    graphdef, state, state_sh, frozen, frozen_sh = abstract_train_state(model_cfg, optim, mesh, rules)
    tx, schedule = make_optimizer(optim, 1000)
    step = make_train_step(lm_loss(graphdef, model_cfg, z_loss=z_loss, vocab_chunk=vocab_chunk), tx, schedule,
                           grad_accum=optim.grad_accum, rules=rules)
    row = lambda dtype: jax.ShapeDtypeStruct((batch_size, seq_len), dtype, sharding=batch_sharding(mesh, rules, 2))
    batch = {"inputs": row(np.int32), "targets": row(np.int32), "weights": row(np.float32),
             "segment_ids": row(np.int32), "positions": row(np.int32)}
    batch_sh = {k: v.sharding for k, v in batch.items()}
    rep = NamedSharding(mesh, PartitionSpec())
    rng = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=rep)
    jitted = jax.jit(step, in_shardings=(state_sh, frozen_sh, batch_sh, rep), out_shardings=(state_sh, rep),
                     donate_argnums=(0,))
    with jax.set_mesh(mesh):
        compiled = jitted.lower(state, frozen, batch, rng).compile()
    return compiled, state


def memory_report(compiled) -> dict[str, int]:
    """XLA's per-device memory analysis of a compiled step, in bytes: arguments, outputs, temporaries,
    donated aliases, generated code, and ``peak`` = arguments + outputs - aliases + temporaries."""
    ma = compiled.memory_analysis()
    out = {"arguments": int(ma.argument_size_in_bytes), "outputs": int(ma.output_size_in_bytes),
           "temporaries": int(ma.temp_size_in_bytes), "aliased": int(ma.alias_size_in_bytes),
           "code": int(ma.generated_code_size_in_bytes)}
    out["peak"] = out["arguments"] + out["outputs"] - out["aliased"] + out["temporaries"]
    return out


# ------------------------------------------------------------------------------ HLO collectives
_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*)$")
_OPCODE = re.compile(r"(?:^|\s)([a-z][a-z0-9\-]*)\(")
_ARRAY = re.compile(r"\b(pred|[suf]\d+|bf16|c64|c128)\[([\d,]*)\]")
_BYTES = {"pred": 1, "bf16": 2, "c64": 8, "c128": 16}


def _type_bytes(type_text: str) -> int:
    total = 0
    for dt, dims in _ARRAY.findall(type_text):
        size = _BYTES.get(dt, int(dt[1:]) // 8 if dt[1:].isdigit() else 4)
        total += size * math.prod(int(d) for d in dims.split(",") if d)
    return total


def hlo_collectives(hlo_text: str) -> dict[str, dict[str, int]]:
    """Collectives of a compiled (partitioned) HLO module: per kind, the number of ops and the
    bytes of their results on one device.

    Kinds are ``COLLECTIVES``, counting async ``-start`` ops once. XLA's CPU backend has no
    reduce-scatter instruction: the partitioner's reduce-scatter stays an all-reduce whose result
    each device slices by its ``partition-id``. Such all-reduces are also reported as
    ``reduce-scatter (all-reduce + slice)``, so a gradient that ends sharded (FSDP) is told apart
    from one that ends whole (data parallel).
    """
    instrs: dict[str, tuple[str, str, str]] = {}
    users: dict[str, list[str]] = {}
    for line in hlo_text.splitlines():
        m = _INSTR.match(line)
        if not m:
            continue
        name, rest = m.groups()
        op = _OPCODE.search(rest)
        if not op:
            continue
        opcode = op.group(1)
        operands = re.findall(r"%([\w.\-]+)", rest[op.end():])
        instrs[name] = (opcode, rest[:op.start()], " ".join(operands))
        for o in operands:
            users.setdefault(o, []).append(name)
    out = {k: {"ops": 0, "bytes": 0} for k in COLLECTIVES + ("reduce-scatter (all-reduce + slice)",)}
    for name, (opcode, type_text, _) in instrs.items():
        kind = opcode[:-len("-start")] if opcode.endswith("-start") else opcode
        if kind not in COLLECTIVES:
            continue
        nbytes = _type_bytes(type_text)
        out[kind]["ops"] += 1
        out[kind]["bytes"] += nbytes
        if kind == "all-reduce" and _sliced_by_partition(name, instrs, users):
            out["reduce-scatter (all-reduce + slice)"]["ops"] += 1
            out["reduce-scatter (all-reduce + slice)"]["bytes"] += nbytes
    return out


def _sliced_by_partition(name: str, instrs, users, depth: int = 3) -> bool:
    """Some user of ``name`` (through tuple elements, copies, bitcasts, ``-done``) also reads a
    ``partition-id``: the device keeps only its slice of the reduced value."""
    frontier = [name]
    for _ in range(depth):
        nxt = []
        for n in frontier:
            for u in users.get(n, ()):
                opcode, _, operands = instrs.get(u, ("", "", ""))
                if "partition-id" in operands:
                    return True
                if opcode in ("get-tuple-element", "copy", "bitcast", "all-reduce-done", "reshape"):
                    nxt.append(u)
        frontier = nxt
    return False


# ------------------------------------------------------------------------------ the estimate
@dataclasses.dataclass(frozen=True)
class Device:
    """The device a plan is for: peak dense FLOP/s, the MFU the step time assumes, memory, and what
    it is (said beside the figures)."""
    peak_flops: float = H100_BF16_PEAK
    mfu: float = 0.4
    memory_bytes: float = 80 * GIB
    name: str = "H100 SXM, bf16"
    link_bytes_per_s: float = 50e9   # per device, for FSDP / data-parallel collectives (400 Gb/s InfiniBand per GPU)
    link: str = "InfiniBand 400 Gb/s per GPU"

    def __post_init__(self):
        if not self.peak_flops > 0 or not 0 < self.mfu <= 1 or not self.memory_bytes > 0 \
                or not self.link_bytes_per_s > 0:
            raise ValueError(f"device: need peak FLOP/s > 0, 0 < MFU <= 1, memory > 0 and link bandwidth > 0; got "
                             f"{self.peak_flops}, {self.mfu}, {self.memory_bytes}, {self.link_bytes_per_s}")


@dataclasses.dataclass(frozen=True)
class Plan:
    """What :func:`plan` found; bytes are per device, FLOPs per token of training."""
    model: str
    mesh: dict[str, int]
    devices: int
    params: int                    # parameter count
    params_non_embedding: int      # the blocks (attention, MLP, norms; all experts), without V D tables
    params_active: int             # N of 6 (N + V D): the blocks' parameters a token uses (an MoE's top-k experts)
    attention_dim: int             # A of 12 L T A: query heads x head size
    batch_size: int
    seq_len: int
    grad_accum: int
    remat: str
    attention: str
    vocab_chunk: int               # the loss's logits columns at a time; 0: the whole vocabulary
    flops_per_token: float         # 6 (N + V D) + 12 L T A
    flops_attention_per_token: float   # the 12 L T A part
    memory: dict[str, int]         # bytes: parameters, optimizer, gradients, activations, gathered_weights, total
    decode: dict[str, int]         # batch, length (tokens), kv_cache, parameters, total (bytes)
    communication: dict[str, float]   # bytes per device per step of FSDP / data-parallel collectives, and seconds
    step_time_s: float
    tokens_per_s: float
    device: Device
    fits: bool
    decode_fits: bool
    notes: tuple[str, ...]

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["device"] = dataclasses.asdict(self.device)
        d["notes"] = list(self.notes)
        return d


def _itemsize(dtype) -> int:
    return jax.numpy.dtype(dtype).itemsize


def _axes_size(mesh_sizes: Mapping[str, int], rules: Rules, name: str) -> int:
    axes = logical_spec((name,), rules)[0]
    flat = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
    return math.prod(mesh_sizes.get(a, 1) for a in flat)


def activation_bytes(cfg: ModelConfig, *, rows: int, seq_len: int, tensor: int, vocab_split: int,
                     vocab_chunk: int = VOCAB_CHUNK) -> dict[str, int]:
    """Activation bytes one device keeps for the backward pass of one micro-batch of ``rows`` rows.

    Per layer, in the compute dtype, tensors a head- or MLP-split over ``tensor`` devices divide:
    block input x (B T D), norm outputs 2 x (B T D), q k v (B T (N + 2 K) H / t), attention scores
    (B N T T / t, only where they are materialised), attention output (B T N H / t), the output
    projection (B T D), the MLP's up / gate / activation (3 or 2 x B T F / t), down (B T D).
    ``none`` keeps all of it; ``dots`` the matmul outputs (q k v, scores, attention output, o, up,
    gate, down) plus x; ``dots_no_batch`` the projections only (not the two batched attention
    matmuls) plus x; the named policies what they name plus x (``save_qkv_proj``: q k v;
    ``save_dot_except_mlp``: + o; ``save_attention``: + attention output; ``minimal``: + up, gate,
    down); ``full`` x alone. Under ``none``, materialised scores count as autodiff saves them: three
    float32 copies (masked logits, exp, probabilities), the boolean mask and, below float32, the cast
    probabilities. Every policy but ``none`` adds the rest of one layer, recomputed for its backward.
    Plus embeddings and the final norm (2 B T D) and the loss's float32 logits chunk (2 x B T Vc / v;
    Vc = ``vocab_chunk`` columns, the whole vocabulary when 0 or larger).
    A mixture of experts replaces the MLP's tensors by its routed ones (``model/moe.py``): R routed
    rows (dropless: B T K assignments; capacity: B E C slots) each with its input (R D), up / gate /
    activation (R F) and output (R D), the shared experts' B T S F, the float32 router logits and
    probabilities (2 B T E) and, with capacity, the float32 one-hot dispatch and combine (2 B T E C).
    Returns ``{"per_layer", "layers", "head", "total"}`` in bytes; ValueError for a bad ``vocab_chunk``.
    """
    check_vocab_chunk(vocab_chunk)
    b, t, d, f = rows, seq_len, cfg.embed_dim, cfg.mlp_dim
    n, k, h = cfg.num_heads, cfg.kv_heads, cfg.dims_per_head
    itemsize = _itemsize(cfg.dtype)
    bt = b * t
    gated = cfg.activation in ("swiglu", "geglu")
    flash = cfg.attention in FLASH_BACKENDS
    x = bt * d
    norms = 2 * bt * d
    qkv = bt * (n + 2 * k) * h // tensor
    scores = 0 if flash else b * n * t * t // tensor
    lse = b * n * t * 4 // itemsize // tensor if flash else 0   # float32 log-sum-exp of flash attention
    attn_out = bt * n * h // tensor
    o = bt * d
    mlp = (3 if gated else 2) * bt * f // tensor
    up_gate = (2 if gated else 1) * bt * f // tensor
    down = bt * d
    routing = 0
    if cfg.num_experts:
        e = cfg.num_experts
        if cfg.moe_capacity_factor > 0:
            slots = expert_capacity(t, e, cfg.experts_per_token, cfg.moe_capacity_factor)
            routed = b * e * slots
            routing = 2 * bt * e * slots * 4 // itemsize          # float32 (B, T, E, C) dispatch and combine
        else:
            routed = bt * cfg.experts_per_token
        routing += 2 * bt * e * 4 // itemsize                      # float32 router logits and probabilities
        rows = routed + bt * cfg.num_shared_experts
        mlp = (3 if gated else 2) * rows * f // tensor + routed * d
        up_gate = (2 if gated else 1) * rows * f // tensor
        down = routed * d + bt * d
    full_layer = x + norms + qkv + scores + lse + attn_out + o + mlp + down + routing
    saved = {"none": full_layer,
             "dots": x + qkv + scores + lse + attn_out + o + up_gate + down,
             "dots_no_batch": x + qkv + o + up_gate + down,
             "save_qkv_proj": x + qkv,
             "save_dot_except_mlp": x + qkv + o,
             "save_attention": x + qkv + attn_out + o,
             "minimal": x + qkv + attn_out + o + up_gate + down,
             "full": x}[cfg.remat]
    per_layer = saved * itemsize
    if cfg.remat == "none" and scores:
        # Saved whole, materialised attention keeps what the softmax's derivative reads: the masked
        # logits, their exp and the probabilities (float32, as xla_attention computes them), the
        # boolean mask and, below float32, the probabilities cast for the PV matmul (jax's saved
        # residuals). Counting the scores once planned about half the compiled temporaries.
        per_layer += scores * (3 * 4 + 1 + (itemsize if itemsize < 4 else 0)) - scores * itemsize
    # The layer whose backward runs holds what its forward recomputes, beside what every layer saved.
    layers = cfg.num_layers * per_layer + ((full_layer - saved) * itemsize if cfg.remat != "none" else 0)
    head_elems = 2 * bt * d
    chunk = min(cfg.vocab_size, vocab_chunk or cfg.vocab_size)
    logits = 2 * bt * -(-chunk // vocab_split) * 4
    total = layers + head_elems * itemsize + logits
    return {"per_layer": per_layer, "layers": layers, "head": head_elems * itemsize + logits, "total": total}


def plan(model_cfg: ModelConfig, mesh_sizes: Mapping[str, int], *, batch_size: int, seq_len: int,
         optim: OptimConfig = OptimConfig(), rules: Rules = DEFAULT_RULES, device: Device = Device(),
         decode_batch: int = 1, decode_len: int = 0, vocab_chunk: int = VOCAB_CHUNK) -> Plan:
    """The per-device cost of training ``model_cfg`` on a mesh of ``mesh_sizes`` (module docstring).

    Args:
      mesh_sizes: ``{"data": .., "fsdp": .., "expert": .., "tensor": ..}`` (missing axes are 1).
      batch_size, seq_len: the global batch in rows and the tokens per row.
      optim: ``grad_accum`` splits the batch into micro-batches; ``trainable`` limits the optimizer.
      device: peak FLOP/s, the MFU assumed for the step time, memory per device.
      decode_batch, decode_len: the KV cache of decoding (``decode_len`` 0: ``model.max_seq_len``).
      vocab_chunk: the loss's logits columns at a time (a run's ``vocab_chunk``; 0: all at once).

    Raises:
      ValueError: a family other than decoder-only, a batch not divisible by the batch mesh axes and
        ``optim.grad_accum``, a sequence longer than ``model.max_seq_len``, bad sizes or ``vocab_chunk``.
      ShardingError: a parameter that the mesh does not divide (names the parameter).
    """
    if model_cfg.architecture != "decoder":
        raise ValueError(f"plan: model.family={model_cfg.family!r} is not decoder-only; the planner's activation "
                         f"and FLOP counts are for decoder-only families (gpt2, llama)")
    mesh = abstract_mesh(mesh_sizes)
    sizes = dict(mesh.shape)
    devices = math.prod(sizes.values())
    batch_axes = _axes_size(sizes, rules, "act_batch")
    if batch_size < 1 or seq_len < 1 or decode_batch < 1 or decode_len < 0:
        raise ValueError(f"plan: need batch_size, seq_len, decode_batch >= 1; got {batch_size}, {seq_len}, "
                         f"{decode_batch}")
    if batch_size % (batch_axes * optim.grad_accum):
        raise ValueError(f"data.batch_size={batch_size} must be divisible by the batch mesh axes ({batch_axes}) x "
                         f"optim.grad_accum ({optim.grad_accum})")
    if seq_len > model_cfg.max_seq_len:
        raise ValueError(f"data.seq_len={seq_len} exceeds model.max_seq_len={model_cfg.max_seq_len}")
    if decode_len > model_cfg.max_seq_len:
        raise ValueError(f"decode_len={decode_len} exceeds model.max_seq_len={model_cfg.max_seq_len} (the KV cache "
                         f"holds at most the model's context)")
    check_vocab_chunk(vocab_chunk)
    _, state, _, frozen, _ = abstract_train_state(model_cfg, optim, mesh, rules, exact_layers=False)
    param_bytes = bytes_per_device(state["params"]) + bytes_per_device(frozen)
    trainable_bytes = bytes_per_device(state["params"])
    opt_bytes = bytes_per_device(state["opt_state"]) + bytes_per_device({"s": state["step"], "n": state["nonfinite"]})
    grad_bytes = trainable_bytes * (2 if optim.grad_accum > 1 else 1)
    tensor = _axes_size(sizes, rules, "act_heads")
    shape = dict(rows=batch_size // batch_axes // optim.grad_accum, seq_len=seq_len, tensor=tensor,
                 vocab_split=_axes_size(sizes, rules, "act_vocab"), vocab_chunk=vocab_chunk)
    acts = activation_bytes(model_cfg, **shape)
    flash_acts = (acts if model_cfg.attention in FLASH_BACKENDS else
                  activation_bytes(dataclasses.replace(model_cfg, attention="cudnn"), **shape))
    # FSDP all-gathers a layer's weights before its matmuls: two layers (the one computing and the
    # one prefetched) exist whole over the fsdp axis, still split over tensor. The gather moves them
    # cast to the compute dtype (the partitioned program's all-gathers of a bf16 run are bf16).
    n_params = model_cfg.num_params()
    fsdp = _axes_size(sizes, rules, "embed")
    compute = _itemsize(model_cfg.dtype)
    blocks = [x for path, x in flatten({**frozen, "t": state["params"]}) if ".blocks." in f".{path}."]
    per_layer_bytes = sum(x.size * min(_itemsize(x.dtype), compute) for x in blocks) // model_cfg.num_layers
    gathered = 2 * per_layer_bytes // tensor if fsdp > 1 else 0
    memory = {"parameters": param_bytes, "optimizer": opt_bytes, "gradients": grad_bytes,
              "activations": acts["total"], "gathered_weights": gathered}
    memory["total"] = sum(memory.values())

    decode_len = decode_len or model_cfg.max_seq_len
    kv_itemsize = _itemsize(model_cfg.dtype)
    kv_heads_split = _axes_size(sizes, rules, "act_kv_heads")
    batch_split = batch_axes if decode_batch % batch_axes == 0 else 1
    kv = (2 * model_cfg.num_layers * (decode_batch // batch_split) * decode_len
          * -(-model_cfg.kv_heads // kv_heads_split) * model_cfg.dims_per_head * kv_itemsize)
    as_compute = lambda n: n * min(compute, _itemsize(model_cfg.param_dtype)) // _itemsize(model_cfg.param_dtype)
    serve_params = as_compute(param_bytes)   # served in the compute dtype (load_params(dtype=...) casts once)
    decode = {"batch": decode_batch, "length": decode_len, "kv_cache": kv, "parameters": serve_params,
              "total": kv + serve_params}

    flops = lm_flops_per_token(model_cfg, seq_len)
    a_dim = attention_dim(model_cfg)
    attn = 12.0 * model_cfg.num_layers * seq_len * a_dim
    tokens = batch_size * seq_len
    step_time = tokens * flops / (devices * device.peak_flops * device.mfu)

    # Collectives of FSDP (ring: each device receives (f-1)/f of the layer weights it gathers, twice per
    # micro-batch, forward and backward, and sends as much of its gradients in the reduce-scatter) and of
    # data parallelism (an all-reduce of the gradient shards: 2 (d-1)/d of them), in the compute dtype.
    data = _axes_size(sizes, rules, "act_batch") // max(fsdp, 1)
    fsdp_bytes = (3 * (fsdp - 1) / fsdp * (sum(x.size for x in blocks) * compute / tensor) * optim.grad_accum
                  if fsdp > 1 else 0.0)
    dp_bytes = 2 * (data - 1) / data * as_compute(trainable_bytes) if data > 1 else 0.0
    comm_s = (fsdp_bytes + dp_bytes) / device.link_bytes_per_s
    communication = {"fsdp_bytes": fsdp_bytes, "data_parallel_bytes": dp_bytes, "seconds": comm_s,
                     "link_bytes_per_s": device.link_bytes_per_s}

    untied = model_cfg.vocab_size * model_cfg.embed_dim if not model_cfg.tie_embeddings else 0
    blocks_n = model_cfg.num_params(embeddings=False) - untied
    active_n = model_cfg.num_params(embeddings=False, active=True) - untied
    causal = flops - attn / 2
    notes = (
        f"FLOPs per token = 6 (N + V D) + 12 L T A, A = heads x head size = {a_dim} (model FLOPs: no remat "
        f"recompute, no causal halving; halved as MaxText counts causal attention: {_count(causal)}, so the same "
        f"run's MFU reads {flops / causal:.3g}x lower there)",
        f"step time = tokens per step x FLOPs per token / ({devices} devices x {device.peak_flops / 1e12:g} TFLOP/s "
        f"x MFU {device.mfu:g})",
        "parameters and optimizer state: the shard shapes of the Trainer's real state (AdamW mu, nu in the "
        "parameter dtype); gradients: one sharded copy; activations: an estimate (train/plan.py)",
    )
    if comm_s > step_time / 2:
        notes += (f"communication: FSDP / data-parallel collectives move {(fsdp_bytes + dp_bytes) / 1e9:.3g} GB per "
                  f"device per step, {comm_s:.3g} s at {device.link_bytes_per_s / 1e9:g} GB/s ({device.link}) against "
                  f"{step_time:.3g} s of compute: {'communication-bound' if comm_s > step_time else 'hard to hide'} "
                  f"unless they overlap; more tokens per device (a larger batch, fewer fsdp devices with tensor "
                  f"parallelism inside a node) raise compute per byte",)
    if not model_cfg.scan_layers and model_cfg.remat != "none" and model_cfg.num_layers > 1:
        kept = activation_bytes(dataclasses.replace(model_cfg, remat="none"), **shape)["total"]
        notes += (f"model.scan_layers=False: XLA:CPU compiles unrolled layers to the no-remat footprint whatever the "
                  f"policy (measured, benchmarks/README.md; not measured on a GPU): {kept / GIB:.2f} GiB of "
                  f"activations rather than the {acts['total'] / GIB:.2f} planned for remat={model_cfg.remat}; "
                  f"model.scan_layers=True keeps the policy",)
    if model_cfg.num_experts:
        notes += (f"mixture of experts: {model_cfg.num_experts} experts, top-{model_cfg.experts_per_token}"
                  + (f", capacity factor {model_cfg.moe_capacity_factor:g}" if model_cfg.moe_capacity_factor
                     else ", dropless")
                  + f"; FLOPs count the {_count(active_n)} active parameters of {_count(blocks_n)}; activations count "
                    f"the routed rows (expert all-to-all not in the communication)",)
    if decode_batch > 1 and decode_batch % batch_axes:
        notes += (f"decoding: batch {decode_batch} does not split over the {batch_axes} batch devices, so every "
                  f"device holds the whole KV cache",)
    if acts["total"] - flash_acts["total"] > acts["total"] / 10:
        notes += (f"attention={model_cfg.attention} materialises the (B, N, T, T) scores: activations "
                  f"{acts['total'] / GIB:.2f} GiB; a flash kernel keeps only their log-sum-exp "
                  f"(model.attention=cudnn on a GPU, splash on a TPU): {flash_acts['total'] / GIB:.2f} GiB",)
    chunk = vocab_chunk or model_cfg.vocab_size
    if chunk < model_cfg.vocab_size:
        recompute = 2 * model_cfg.vocab_size * model_cfg.embed_dim
        notes += (f"the loss recomputes its logits in the backward pass, {chunk:,} columns at a time: +2 V D = "
                  f"{_count(recompute)} FLOPs per token ({recompute / flops:.1%} of the step), not in the step time; "
                  f"vocab_chunk=0 holds the whole logits instead",)
    return Plan(model=_name(model_cfg), mesh=sizes, devices=devices, params=n_params,
                params_non_embedding=blocks_n, params_active=active_n, attention_dim=a_dim,
                batch_size=batch_size, seq_len=seq_len,
                grad_accum=optim.grad_accum, remat=model_cfg.remat, attention=model_cfg.attention,
                vocab_chunk=vocab_chunk,
                flops_per_token=flops, flops_attention_per_token=attn, memory=memory, decode=decode,
                communication=communication, step_time_s=step_time, tokens_per_s=tokens / step_time, device=device,
                fits=memory["total"] <= device.memory_bytes, decode_fits=decode["total"] <= device.memory_bytes,
                notes=notes)


def _name(cfg: ModelConfig) -> str:
    kv = f"/{cfg.kv_heads} kv" if cfg.kv_heads != cfg.num_heads else ""
    head = f" head {cfg.head_dim}" if cfg.head_dim else ""
    moe = (f" {cfg.num_experts} experts top-{cfg.experts_per_token}"
           + (f" + {cfg.num_shared_experts} shared" if cfg.num_shared_experts else "")) if cfg.num_experts else ""
    return (f"{cfg.family} L{cfg.num_layers} D{cfg.embed_dim} F{cfg.mlp_dim}{moe} heads {cfg.num_heads}{kv}{head} "
            f"V{cfg.vocab_size} {cfg.param_dtype} params, {cfg.dtype} compute")


def _count(n: float, units: str = "TGMk") -> str:
    """``n`` with a unit: T G M k (FLOPs), or ``units="TBMk"`` for parameter counts (B for billions)."""
    for unit, scale in zip(units, (1e12, 1e9, 1e6, 1e3)):
        if n >= scale:
            return f"{n / scale:.3f} {unit}"
    return f"{n:g}"


def format_plan(p: Plan) -> str:
    """The plan as a table (GiB per device)."""
    g = lambda b: f"{b / GIB:10.2f} GiB" if b >= GIB / 10 else f"{b / 2 ** 20:10.2f} MiB"
    mesh = " x ".join(f"{a} {s}" for a, s in p.mesh.items() if s > 1) or "one device"
    lines = [
        f"model       {p.model}",
        f"parameters  {_count(p.params, 'TBMk')}: N = {_count(p.params_non_embedding, 'TBMk')} in the blocks"
        + (f" ({_count(p.params_active, 'TBMk')} active per token)" if p.params_active != p.params_non_embedding
           else "") + "; the rest embeddings and the unembedding",
        f"mesh        {mesh} ({p.devices} device{'s' if p.devices > 1 else ''})",
        f"batch       {p.batch_size} rows x {p.seq_len} tokens = {p.batch_size * p.seq_len:,} tokens per step"
        + (f", {p.grad_accum} micro-batches" if p.grad_accum > 1 else ""),
        f"FLOPs/token {_count(p.flops_per_token)} = 6 (N + V D) {_count(p.flops_per_token - p.flops_attention_per_token)}"
        f" + attention 12 L T A {_count(p.flops_attention_per_token)} (A = {p.attention_dim})",
        "",
        f"memory per device (training, remat={p.remat}, attention={p.attention}, vocab_chunk={p.vocab_chunk})",
        f"  parameters        {g(p.memory['parameters'])}",
        f"  optimizer state   {g(p.memory['optimizer'])}",
        f"  gradients         {g(p.memory['gradients'])}",
        f"  activations       {g(p.memory['activations'])}   (estimate)",
        f"  gathered weights  {g(p.memory['gathered_weights'])}   (FSDP, transient)",
        f"  total             {g(p.memory['total'])}   of {p.device.memory_bytes / GIB:.4g} GiB ({p.device.name}): "
        + ("fits" if p.fits else "DOES NOT FIT"),
        f"decoding, batch {p.decode['batch']} x {p.decode['length']} tokens: KV cache {g(p.decode['kv_cache']).strip()}"
        f", with the parameters (in the compute dtype) {g(p.decode['total']).strip()} per device: "
        + ("fits" if p.decode_fits else "DOES NOT FIT"),
        "",
        f"step time   {p.step_time_s:.4g} s at MFU {p.device.mfu:g} of {p.device.peak_flops / 1e12:.4g} TFLOP/s per "
        f"device ({p.device.name}; {p.tokens_per_s:,.0f} tokens/s)",
    ]
    c = p.communication
    if c["fsdp_bytes"] or c["data_parallel_bytes"]:
        lines.append(f"collectives {(c['fsdp_bytes'] + c['data_parallel_bytes']) / 1e9:.4g} GB per device per step "
                     f"(FSDP gathers and reduce-scatters, data-parallel all-reduce), {c['seconds']:.4g} s at "
                     f"{c['link_bytes_per_s'] / 1e9:g} GB/s ({p.device.link}) if not overlapped")
    return "\n".join(lines + [f"note: {n}" for n in p.notes])


__all__ = ["Device", "Plan", "plan", "format_plan", "activation_bytes", "abstract_mesh", "abstract_train_state",
           "bytes_per_device", "compile_train_step", "memory_report", "hlo_collectives", "COLLECTIVES"]
