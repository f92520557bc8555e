"""Logical axis names → mesh axes: the one place the model meets the device mesh.

Parameters are annotated with *logical* names (``("embed", "mlp")``) and activations are
constrained with logical names through :func:`constrain`. Which mesh axis (``data``, ``fsdp``,
``expert``, ``tensor``) a logical name lands on is decided by one rules table that lives in the experiment
config (see ``lmforge.train.mesh``), never in the model.

Choices:
- Parameters and activations use *different* logical names (``embed`` vs ``act_embed``), as in
  MaxText: with FSDP the parameter's embed dimension is split over ``fsdp`` while the activation's
  batch dimension already uses ``fsdp``, and one mesh axis may appear only once per spec.
- The rules are held in a context variable set by :func:`axis_rules`; the helper never silently
  does nothing: an unknown logical name is an error even on a one-device mesh, and a dimension
  that the mesh axes do not divide is an error naming the array.
- Outside any mesh :func:`constrain` is an error, not a silent no-op: a model called without its
  mesh would run unsharded without a word (every entry point — the train step, the sampler,
  the evaluation harness — runs under ``jax.set_mesh``; a unit test uses a one-device mesh).
- The ``expert`` mesh axis is optional: a mesh without it, or with it of size 1, drops it from
  every spec, so meshes built before expert parallelism existed keep working unchanged.
  Every other mesh axis a rule names must exist.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

# A rule maps one logical name to a mesh axis, a tuple of mesh axes, or None (replicated).
MeshAxes = str | tuple[str, ...] | None
Rules = tuple[tuple[str, MeshAxes], ...]

# Every logical name the model uses. Params: embed, mlp, heads, kv_heads, head_dim, vocab, layers,
# norm, expert. Activations: act_*. A rules table must cover all of them (missing ones are an error).
# MoE: ``act_expert`` is the expert dimension of dispatched tokens; ``act_batch_no_expert`` is their
# batch dimension, which must leave the mesh axis that ``act_expert`` takes (an all-to-all).
PARAM_AXES = ("embed", "mlp", "heads", "kv_heads", "head_dim", "vocab", "layers", "norm", "pos", "expert")
ACTIVATION_AXES = (
    "act_batch", "act_seq", "act_embed", "act_mlp", "act_heads", "act_kv_heads", "act_head_dim",
    "act_vocab", "act_kv_seq", "act_expert", "act_batch_no_expert",
)
# Mesh axes that a mesh may lack (then they count as size 1).
OPTIONAL_MESH_AXES = ("expert",)
LOGICAL_AXES = PARAM_AXES + ACTIVATION_AXES

# The mesh axes lmforge meshes have (``lmforge.train.mesh`` builds them) and the default table from
# logical names to them: batch over data x fsdp x expert, parameters' embed over fsdp (ZeRO-3 when
# fsdp > 1), heads / MLP / vocabulary over tensor (Megatron), experts over expert. An experiment
# overrides it as ``mesh.rules``; library code takes the table as an argument.
MESH_AXES = ("data", "fsdp", "expert", "tensor")

DEFAULT_RULES: Rules = (
    # activations
    ("act_batch", ("data", "fsdp", "expert")),
    ("act_seq", None),
    ("act_embed", None),
    ("act_mlp", "tensor"),
    ("act_heads", "tensor"),
    ("act_kv_heads", "tensor"),
    ("act_head_dim", None),
    ("act_vocab", "tensor"),
    ("act_kv_seq", None),
    ("act_expert", "expert"),
    ("act_batch_no_expert", ("data", "fsdp")),
    # parameters
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("vocab", "tensor"),
    ("layers", None),
    ("norm", None),
    ("pos", None),
    ("expert", "expert"),
)


_RULES: contextvars.ContextVar[Rules | None] = contextvars.ContextVar("lmforge_axis_rules", default=None)


class ShardingError(ValueError):
    """A logical axis name or a sharded dimension that the rules/mesh cannot honour."""


def check_rules(rules: Rules) -> None:
    """Every logical name used by the model has exactly one rule; no unknown names."""
    names = [name for name, _ in rules]
    unknown = sorted(set(names) - set(LOGICAL_AXES))
    if unknown:
        raise ShardingError(f"axis rules name unknown logical axes {unknown}; known: {list(LOGICAL_AXES)}")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ShardingError(f"axis rules give more than one rule for {dupes}")
    missing = [n for n in LOGICAL_AXES if n not in names]
    if missing:
        raise ShardingError(f"axis rules have no rule for logical axes {missing}")


@contextlib.contextmanager
def axis_rules(rules: Rules) -> Iterator[None]:
    """Installs ``rules`` for :func:`logical_spec` / :func:`constrain` inside the block."""
    check_rules(rules)
    token = _RULES.set(tuple(rules))
    try:
        yield
    finally:
        _RULES.reset(token)


@contextlib.contextmanager
def use_mesh(mesh: jax.sharding.Mesh, rules: Rules = DEFAULT_RULES) -> Iterator[None]:
    """``jax.set_mesh(mesh)`` and :func:`axis_rules` together: how every entry point calls models.

    Already under ``mesh`` (e.g. inside a function jitted under it), only the rules are installed:
    ``jax.set_mesh`` is not allowed inside a trace.
    """
    current = jax.sharding.get_abstract_mesh()
    if not current.empty and current == mesh.abstract_mesh:
        with axis_rules(rules):
            yield
        return
    with jax.set_mesh(mesh), axis_rules(rules):
        yield


def current_rules() -> Rules:
    rules = _RULES.get()
    if rules is None:
        raise ShardingError(
            "no logical axis rules are active: wrap model creation and calls in "
            "`with lmforge.model.sharding.axis_rules(rules):` (see lmforge.train.mesh)"
        )
    return rules


def logical_spec(names: Sequence[str | None], rules: Rules | None = None, mesh=None) -> PartitionSpec:
    """``("act_batch", "act_seq", "act_embed")`` → ``P(("data", "fsdp"), None, None)``.

    With ``mesh``, optional mesh axes it lacks (``OPTIONAL_MESH_AXES``) are dropped from the spec.
    """
    spec = _logical_spec(names, rules)
    return spec if mesh is None else fit_to_mesh(spec, mesh)


def fit_to_mesh(spec: PartitionSpec, mesh) -> PartitionSpec:
    """Drops the optional mesh axes (``expert``) that ``mesh`` lacks or has with size 1, so such a
    mesh gets exactly the specs (and the collectives, and the numerics) it had before the axis."""
    absent = {a for a in OPTIONAL_MESH_AXES if a not in mesh.axis_names or mesh.shape[a] == 1}
    if not absent:
        return spec

    def fit(axes):
        if axes is None:
            return None
        kept = tuple(a for a in ((axes,) if isinstance(axes, str) else axes) if a not in absent)
        return None if not kept else kept[0] if isinstance(axes, str) or len(kept) == 1 else kept
    return PartitionSpec(*(fit(a) for a in spec))


def _logical_spec(names: Sequence[str | None], rules: Rules | None = None) -> PartitionSpec:
    table = dict(rules if rules is not None else current_rules())
    out = []
    used: set[str] = set()
    for name in names:
        if name is None:
            out.append(None)
            continue
        if name not in table:
            raise ShardingError(f"logical axis {name!r} has no rule; rules cover {sorted(table)}")
        axes = table[name]
        flat = (axes,) if isinstance(axes, str) else tuple(axes or ())
        if used & set(flat):
            raise ShardingError(f"logical axes {tuple(names)} map mesh axis {sorted(used & set(flat))} twice")
        used.update(flat)
        out.append(axes if not isinstance(axes, list) else tuple(axes))
    return PartitionSpec(*out)


def _mesh_axis_size(mesh: jax.sharding.Mesh | jax.sharding.AbstractMesh, axes) -> int:
    if axes is None:
        return 1
    flat = (axes,) if isinstance(axes, str) else tuple(axes)
    return math.prod(mesh.shape[a] for a in flat)


def check_divisible(shape: Sequence[int], spec: PartitionSpec, mesh, what: str) -> None:
    for dim, (size, axes) in enumerate(zip(shape, spec)):
        n = _mesh_axis_size(mesh, axes)
        if size % n:
            raise ShardingError(
                f"{what}: dimension {dim} has size {size}, not divisible by mesh axes {axes} of size {n}; "
                f"change the model size or the axis rules"
            )


def named_sharding(mesh: jax.sharding.Mesh, names: Sequence[str | None], shape: Sequence[int], what: str,
                   rules: Rules | None = None) -> NamedSharding:
    spec = logical_spec(names, rules, mesh)
    check_divisible(shape, spec, mesh, what)
    return NamedSharding(mesh, spec)


CACHE_KV = ("layers", "act_batch", "act_kv_seq", "act_kv_heads", "act_head_dim")   # (L, B, S, K, H)


def cache_zeros(shape: Sequence[int], dtype, names: Sequence[str | None]) -> jax.Array:
    """An empty cache buffer laid out by logical names: KV caches (L, B, S, K, H) are born sharded
    like the keys and values written into them (batch over the batch axes, KV heads over
    ``tensor``), instead of wherever GSPMD propagates a constant. Without an active mesh (an eager
    call outside ``jax.set_mesh``) the zeros are plain."""
    x = jnp.zeros(shape, dtype)
    mesh = jax.sharding.get_abstract_mesh()
    return x if mesh is None or mesh.empty else constrain(x, names)


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
    """``with_sharding_constraint`` by logical names, under the active mesh.

    Raises ShardingError when no mesh is active (``jax.set_mesh``), a name has no rule, or the
    number of names is not the array's rank.
    """
    if len(names) != x.ndim:
        raise ShardingError(f"constrain: {len(names)} names {tuple(names)} for an array of rank {x.ndim}")
    spec = logical_spec(names)
    mesh = jax.sharding.get_abstract_mesh()
    if mesh is None or mesh.empty:
        raise ShardingError(
            f"constrain{tuple(names)}: no mesh is active; call models under `with jax.set_mesh(mesh)` "
            "(one device: lmforge.train.mesh.make_mesh(MeshConfig(data=1), devices=jax.devices()[:1]))")
    return jax.lax.with_sharding_constraint(x, fit_to_mesh(spec, mesh))


def _set_path(tree: dict, path: tuple, value) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def param_shardings(state, mesh: jax.sharding.Mesh, rules: Rules | None = None) -> dict:
    """NamedShardings, as a pure dict mirroring ``nnx.to_pure_dict(state)``, from the parameters'
    logical names (``out_sharding`` metadata); an unannotated parameter is replicated."""
    from flax import nnx

    out: dict = {}
    for path, var in nnx.to_flat_state(state):
        shape = var.get_value().shape
        names = var.get_metadata().get("out_sharding") or (None,) * len(shape)
        what = "parameter " + "/".join(str(p) for p in path)
        if len(names) != len(shape):
            raise ShardingError(f"{what}: {len(names)} axis names {tuple(names)} for shape {tuple(shape)}")
        _set_path(out, tuple(path), named_sharding(mesh, names, shape, what, rules))
    return out


def abstract_sharded(make, mesh: jax.sharding.Mesh, rules: Rules):
    """``(graphdef, abstract params, shardings)`` of the module ``make()`` builds, without memory.

    The module is traced abstractly (``nnx.eval_shape``); abstract params are
    ``jax.ShapeDtypeStruct`` leaves carrying their NamedSharding (what an orbax restore or a
    sharded load fills in), in the pure-dict layout of ``nnx.to_pure_dict``.
    """
    from flax import nnx

    check_rules(rules)
    # Traced with no mesh in force (even under a caller's jax.set_mesh): NNX would otherwise read the
    # parameters' *logical* names as mesh axes.
    with nnx.use_eager_sharding(False), jax.sharding.use_abstract_mesh(jax.sharding.AbstractMesh((), ())):
        abstract = nnx.eval_shape(make)
    graphdef, state = nnx.split(abstract)
    shardings = param_shardings(state, mesh, rules)
    shapes = nnx.to_pure_dict(state)
    params = jax.tree.map(lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh), shapes, shardings)
    return graphdef, params, shardings


def create_sharded(make, mesh: jax.sharding.Mesh, rules: Rules, *, threefry_kernel: bool | None = None):
    """Builds an NNX module with its parameters born sharded.

    ``make()`` constructs the module. It is first traced abstractly (``nnx.eval_shape``: no memory),
    the logical names give each parameter a NamedSharding, and then a jitted init with those
    ``out_shardings`` materializes every parameter directly in its shards, so a model too big for
    one device never exists whole on one device. ``threefry_kernel``: see :func:`init_prng_lowering`
    (None: on a one-GPU mesh only; the drawn bits are the same either way).

    A small model on CPU devices is initialised op by op instead (:func:`eager_init`).

    Returns ``(graphdef, params, shardings)``: params a pure dict of arrays, shardings the same tree
    of NamedShardings. ``nnx.merge(graphdef, params)`` gives the module back.
    """
    from flax import nnx

    graphdef, abstract, shardings = abstract_sharded(make, mesh, rules)

    def init():
        with nnx.use_eager_sharding(False):
            return nnx.to_pure_dict(nnx.state(make()))

    return graphdef, run_init(init, shardings, mesh, threefry_kernel=threefry_kernel,
                              nbytes=tree_nbytes(abstract)), shardings


# Parameters (bytes) up to which a CPU mesh initialises op by op (:func:`eager_init`).
EAGER_INIT_MAX_BYTES = 256 << 20


def tree_nbytes(tree) -> int:
    """Bytes of a tree of arrays or ``jax.ShapeDtypeStruct``s."""
    return sum(math.prod(x.shape) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def eager_init(mesh: jax.sharding.Mesh, nbytes: int | None) -> bool:
    """Whether :func:`run_init` runs ``init()`` op by op and then places each parameter in its shards:
    on a mesh of CPU devices, for ``nbytes`` (what ``init()`` materialises) up to
    ``EAGER_INIT_MAX_BYTES``; None (unknown) never.

    Why: XLA:CPU compiles a jitted init as one program with a threefry and a normal transform per
    parameter, 1-3 s for a tiny model even at -O0 (the tiny encoder-decoder, 85 parameters: 2.2-3.1 s
    on the 2-core machine, 2026-12-03), and a new model is a new program. Op by op, each random draw
    is a small program cached by shape: 0.3-0.7 s for the same model, 0.1-0.4 s once its shapes were
    seen in the process. The parameters exist whole on one CPU device for a moment, which on CPU is
    the same host memory. The drawn bits are the same; a normal draw's float transform may round
    differently in the last place (7.5e-9 at most on those models).
    """
    return (nbytes is not None and nbytes <= EAGER_INIT_MAX_BYTES
            and all(d.platform == "cpu" for d in mesh.devices.flat))


def run_init(init, shardings, mesh: jax.sharding.Mesh, *, threefry_kernel: bool | None = None,
             nbytes: int | None = None):
    """Runs ``init()`` (no arguments; returns a tree of fresh parameters) jitted with
    ``out_shardings=shardings`` under ``mesh``: every parameter is born in its shards. The one place
    a parameter init is compiled: its XLA options (:func:`init_compiler_options`) and its threefry
    lowering (:func:`init_prng_lowering`) apply to every caller. With ``nbytes`` (the bytes ``init()``
    materialises) a small init on CPU runs op by op instead (:func:`eager_init`), each parameter then
    placed in its shards (``jax.make_array_from_callback``: every process supplies its own)."""
    if eager_init(mesh, nbytes):
        with jax.sharding.use_abstract_mesh(jax.sharding.AbstractMesh((), ())):
            host = jax.tree.map(np.asarray, init())
        return jax.tree.map(lambda x, sh: jax.make_array_from_callback(x.shape, sh, lambda index: x[index]),
                            host, shardings)
    with jax.set_mesh(mesh), init_prng_lowering(mesh, threefry_kernel):
        return jax.jit(init, out_shardings=shardings, compiler_options=init_compiler_options(mesh))()


@contextlib.contextmanager
def init_prng_lowering(mesh: jax.sharding.Mesh, threefry_kernel: bool | None = None) -> Iterator[None]:
    """Within it, jax lowers threefry to its CUDA kernel (``jax_threefry_gpu_kernel_lowering``)
    when ``threefry_kernel`` is True, or when it is None and the mesh is one GPU.

    Why: on GPU jax unrolls every threefry call into XLA ops by default (less memory at run time,
    per jax's changelog, at a compile-time cost), and a jitted init draws one per parameter: the
    init of Llama 1B spent 80.7 s of its 84.5 s compiling on an H200 (jax 0.11.2, 2026-11-30,
    ``benchmarks/decode.py``'s ``setup_compile_s``), more than the train step's compile (17 s). The
    kernel computes the same threefry2x32 function, so the parameters' bits do not change; its
    temporaries (two uint32 words per drawn number) last only for the init. On CPU and TPU the flag
    is not read. Not by default on meshes of several GPUs: the kernel is a custom call that the
    partitioner may not split, and each device computing a whole parameter's bits would undo the
    born-sharded init (unmeasured; pass True to try). The previous value is restored on exit (it is
    a process-wide jax setting); a jax without the flag (its changelog announces its removal) gets
    its default lowering.
    ``benchmarks/init_compile.py`` measures both lowerings side by side.
    """
    if threefry_kernel is None:
        on = mesh.devices.size == 1 and mesh.devices.flat[0].platform == "gpu"
    else:
        on = threefry_kernel
    before = getattr(jax.config, "jax_threefry_gpu_kernel_lowering", None)
    if before is None or on == before:
        yield
        return
    jax.config.update("jax_threefry_gpu_kernel_lowering", on)
    try:
        yield
    finally:
        jax.config.update("jax_threefry_gpu_kernel_lowering", before)


def init_compiler_options(mesh: jax.sharding.Mesh) -> dict | None:
    """XLA options for a jitted parameter init, which runs once: on CPU the cheapest backend
    optimization compiles it 1.7x faster (3.4 s -> 2.0 s for the nanoGPT CPU model on the 2-core
    machine). Every init of parameters uses them, so the same seed draws the same bits everywhere."""
    return {"xla_backend_optimization_level": 0} if mesh.devices.flat[0].platform == "cpu" else None
