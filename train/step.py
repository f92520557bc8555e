"""The step factory: one jitted, sharded update for every objective.

A task hands the trainer a pure loss function

    loss_fn(params, frozen, batch, rng) -> (loss, metrics)

- ``params``: the model's parameter tree (nested dict). Only its *trainable* leaves (chosen by
  ``OptimConfig.trainable``, regexes over paths) are differentiated and updated; its frozen leaves
  (a base under LoRA adapters, frozen layers) come from ``frozen["params"]`` and are put back in
  place before the call, so a loss never deals with the split.
- ``frozen``: every other tree the loss reads and never trains (``"reference"``: a reference
  policy for DPO/PPO's KL; ``"reward"``: a reward model), each leaf with its own sharding. It is
  an argument of the step, not part of the donated, checkpointed state: frozen trees come back
  from their source (``lmforge.weights.load_params``) when a run resumes.
- ``batch``: a dict of arrays whose leading axis is the batch (sharded over the batch mesh axes).
- ``rng``: a key for dropout and sampling, or None in evaluation (deterministic).
- ``loss``: a scalar, the *mean* over the batch's weight; ``metrics``: scalars, each a mean over
  the same weight, plus ``"weight_sum"``, that weight (tokens for a language-model loss, pairs
  for DPO). A loss without ``weight_sum`` counts each batch as one unit.

Choices:
- Gradient accumulation (``grad_accum`` micro-batches, a ``lax.scan``) weights each micro-batch's
  gradient and metrics by its ``weight_sum``: accumulating k micro-batches gives exactly the big
  batch's gradient even when padding or packing gives them different token counts (a mean of
  per-micro-batch means would not). With one micro-batch the gradient is the loss's own.
  Micro-batch i holds rows i, i + k, i + 2k, ... (strided), so with a data-sharded batch every
  device computes a share of every micro-batch without moving rows between devices.
- NaN/inf guard: if the loss or the gradient norm is not finite, the update is skipped inside the
  step (parameters, optimizer state and step are kept) and ``state["nonfinite"]``, a counter on
  the device, goes up by one; the loop reads it at its next sync point and applies its policy.
  On CPU the skip is a branch (``lax.cond``), elsewhere a select per leaf (see ``step``).
- Data parallelism with whole replicas (``data_parallel_axes`` finds it: every parameter and frozen
  leaf replicated, every mesh axis of size > 1 a batch axis): each device computes the loss and
  gradient of its own rows and one all-reduce sums them, weighted by ``weight_sum`` exactly as
  gradient accumulation weights micro-batches (``jax.shard_map``; the DDP / ``pmap`` step). Left
  to GSPMD, a mean over the global batch puts a second all-reduce (the weight sum) in the middle of
  the forward pass; on CPU host devices, which share one thread pool, each such rendezvous blocks
  a thread while the other device catches up (nanoGPT's CPU recipe on 2 host devices: 49.0-49.5
  vs 51.6-56.1 ms per step, ``benchmarks/cpu_step.py``; on CPU the gradient is all-reduced as one
  concatenated buffer). The loss must therefore be a weighted mean whose per-device parts
  combine by ``weight_sum`` — the contract above: every metric a mean over that weight (a max or a
  count would come back averaged over devices), nothing batch-wide (advantages normalized over the
  whole batch). A device whose rows all weigh 0 contributes nothing, even if its loss is 0/0. A
  mixture-of-experts model's load-balancing loss (``E * sum_e f_e * P_e``, over the tokens the
  loss sees) is then computed over each device's tokens, as Switch Transformer computes it per core.
  Dropout keys differ per device (``fold_in`` of the device's index), so dropout masks differ from
  GSPMD's. ``Trainer(..., per_device=False)`` / ``mesh.per_device_step=false`` keeps GSPMD; so does
  a batch whose rows per device ``grad_accum`` does not divide.
- The dropout/sampling key of a step is ``fold_in(rng, step)``: a resumed run draws the same masks.
- The state is a plain dict ``{"params", "opt_state", "step", "nonfinite"}`` of arrays (orbax saves
  it as is) with one sharding per leaf; the step is jitted once with those shardings in and out
  and the state donated (STYLE rule 3).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree
from jax.sharding import NamedSharding, PartitionSpec

from lmforge.model import axis_rules, logical_spec
from lmforge.model.sharding import LOGICAL_AXES
from lmforge.model.paths import combine

State = dict[str, Any]
LossFn = Callable[[dict, dict, dict, jax.Array | None], tuple[jax.Array, dict]]
WEIGHT = "weight_sum"
_OBJECTIVE = "_objective"
# Inside a per-device computation every array is local: no logical axis maps to a mesh axis.
LOCAL_RULES = tuple((name, None) for name in LOGICAL_AXES)


def with_frozen(trainable: dict, frozen: Mapping) -> tuple[dict, dict]:
    """(the model's whole parameter tree, the other frozen trees) from a state's trainable leaves and
    the frozen dict (whose ``"params"`` entry holds the model's frozen leaves)."""
    others = {k: v for k, v in frozen.items() if k != "params"}
    return combine(trainable, frozen.get("params", {})), others


def _weight(metrics: Mapping) -> jax.Array:
    return jnp.asarray(metrics.get(WEIGHT, 1.0), jnp.float32)


def make_train_step(loss_fn: LossFn, tx: optax.GradientTransformation, schedule: optax.Schedule, *,
                    grad_accum: int = 1, rules=None, data_parallel: DataParallel | None = None) -> Callable:
    """``step(state, frozen, batch, rng) -> (state, metrics)``, pure and jittable.

    Metrics: the loss's own, prefixed ``train/`` (``train/loss`` is the loss when the loss function
    does not report one), plus ``train/grad_norm``, ``train/lr`` (the schedule's value for this
    update) and ``train/nonfinite`` (1 when this update was skipped).

    ``data_parallel`` (from :func:`data_parallel_axes`): compute each device's gradient on its own
    rows and sum them in one all-reduce (see the module docstring); None, or rows per device that
    ``grad_accum`` does not divide, leave the partitioning to GSPMD.

    Raises:
      ValueError: ``grad_accum < 1``, or (at trace time) rows not divisible by ``grad_accum``.
    """
    if grad_accum < 1:
        raise ValueError(f"grad_accum must be >= 1, got {grad_accum}")

    def micro_loss(trainable, frozen, batch, rng):
        params, others = with_frozen(trainable, frozen)
        loss, metrics = loss_fn(params, others, batch, rng)
        # "loss" defaults to the objective (a loss may report its own, e.g. the cross-entropy without
        # z-loss); the objective itself rides along for the finiteness check.
        return loss, {"loss": loss, **metrics, _OBJECTIVE: loss}

    grad_fn = jax.value_and_grad(micro_loss, has_aux=True)

    def scaled_loss(trainable, frozen, batch, rng):
        # The loss times its own (constant) weight: its gradient is w * grad(loss) with no extra op
        # per leaf (the backward pass starts from w instead of 1).
        loss, m = micro_loss(trainable, frozen, batch, rng)
        w = jax.lax.stop_gradient(_weight(m))
        return loss * w, (m, w)

    def weighted_sums(trainable, frozen, batch, rng):
        """(sum of w * gradient, {metric: sum of w * value}, sum of w, whether weight_sum is reported)
        over the micro-batches, w each micro-batch's weight_sum."""
        if grad_accum == 1:
            (_, (m, w)), g = jax.value_and_grad(scaled_loss, has_aux=True)(trainable, frozen, batch, rng)
            return g, {k: v.astype(jnp.float32) * w for k, v in m.items() if k != WEIGHT}, w, WEIGHT in m
        for k, v in batch.items():   # the leading axis holds whole examples (a DPO pair stays in its row)
            if v.shape[0] % grad_accum:
                raise ValueError(f"batch[{k!r}] has {v.shape[0]} rows, not divisible by grad_accum={grad_accum}")
        # Strided micro-batches: micro-batch i is rows i, i + grad_accum, ... Each device's rows of a
        # data-sharded batch are contiguous, so every device holds its share of every micro-batch and
        # the scan slices locally; contiguous micro-batches (rows [i m, (i + 1) m)) lived on a subset of
        # the devices and XLA moved rows between devices every micro-step (21 collective-permutes in
        # the step of a 2-layer model on fsdp=8, none strided: benchmarks/README.md).
        micro = {k: jnp.swapaxes(v.reshape(v.shape[0] // grad_accum, grad_accum, *v.shape[1:]), 0, 1)
                 for k, v in batch.items()}

        def body(acc, xs):
            mb, i = xs
            (_, m), g = grad_fn(trainable, frozen, mb, None if rng is None else jax.random.fold_in(rng, i))
            w = _weight(m)
            g_acc, m_acc, w_acc = acc
            g_acc = jax.tree.map(lambda a, x: a + x * w, g_acc, g)
            m_acc = {k: m_acc[k] + m[k].astype(jnp.float32) * w for k in m_acc}
            return (g_acc, m_acc, w_acc + w), None

        first = jax.tree.map(lambda v: v[0], micro)
        m_shape = jax.eval_shape(lambda: micro_loss(trainable, frozen, first, rng)[1])
        m_zeros = {k: jnp.zeros(s.shape, jnp.float32) for k, s in m_shape.items() if k != WEIGHT}
        zeros = (jax.tree.map(jnp.zeros_like, trainable), m_zeros, jnp.zeros((), jnp.float32))
        (g, m, w), _ = jax.lax.scan(body, zeros, (micro, jnp.arange(grad_accum)))
        return g, m, w, True

    def normalized(g_sum, m_sum, total, with_weight):
        # Sums over the weight -> means (the gradient of the whole batch's mean, exactly).
        denominator = jnp.maximum(total, 1e-8)
        m = {k: v / denominator for k, v in m_sum.items()}
        if with_weight:   # (a loss without weight_sum counts each part as one unit)
            m[WEIGHT] = total
        return jax.tree.map(lambda g: g / denominator, g_sum), m

    def accumulate(trainable, frozen, batch, rng):
        if grad_accum == 1:
            (_, m), grads = grad_fn(trainable, frozen, batch, rng)
            return grads, ({**m, WEIGHT: _weight(m)} if WEIGHT in m else m)   # float32, as on every path
        return normalized(*weighted_sums(trainable, frozen, batch, rng))

    def per_device(trainable, frozen, batch, rng):
        # One device's rows (its micro-batches weighted as in `body`), then one all-reduce of the sums.
        axes = data_parallel.axes
        if rng is not None:
            rng = jax.random.fold_in(rng, jax.lax.axis_index(axes))
        with axis_rules(LOCAL_RULES):
            grads, sums, w, with_weight = weighted_sums(trainable, frozen, batch, rng)
        # A device whose rows all weigh 0 (padding) adds nothing, even where its loss is 0/0 = NaN.
        counts = lambda x: jnp.where(w > 0, x, jnp.zeros_like(x))
        if data_parallel.flat:
            # One buffer: XLA:CPU's all-reduce of a tuple costs ~0.1 ms per leaf (37 leaves, 0.8M
            # floats: 3.4 ms as a tuple, 1.6 ms concatenated, split included; 2 host devices).
            vec, unravel = ravel_pytree((grads, sums, w))
            grads, sums, total = unravel(jax.lax.psum(counts(vec), axes))
        else:
            grads, sums, total = jax.lax.psum(jax.tree.map(counts, (grads, sums, w)), axes)
        return normalized(grads, sums, total, with_weight)

    def gradients(trainable, frozen, batch, rng):
        # Micro-batches must split each device's rows; where they cannot (8 rows, 8 devices,
        # grad_accum=2), GSPMD splits the global batch instead.
        if data_parallel is None or any(v.shape[0] % (data_parallel.size * grad_accum) for v in batch.values()):
            return accumulate(trainable, frozen, batch, rng)
        spec = PartitionSpec(data_parallel.axes)
        return jax.shard_map(per_device, mesh=data_parallel.mesh,
                             in_specs=(PartitionSpec(), PartitionSpec(), {k: spec for k in batch}, PartitionSpec()),
                             out_specs=PartitionSpec(), check_vma=False)(trainable, frozen, batch, rng)

    def step(state: State, frozen: dict, batch: dict, rng: jax.Array):
        with _rules(rules):
            rng = jax.random.fold_in(rng, state["step"])
            grads, m = gradients(state["params"], frozen, batch, rng)
            grad_norm = optax.tree.norm(grads)
            objective = m.pop(_OBJECTIVE)
            finite = jnp.isfinite(objective) & jnp.isfinite(m["loss"]) & jnp.isfinite(grad_norm)

            def update(params, opt_state):
                updates, opt_state = tx.update(grads, opt_state, params)
                return optax.apply_updates(params, updates), opt_state

            if jax.default_backend() == "cpu":
                # A branch: XLA:CPU then updates the donated buffers in place. A select per leaf keeps
                # the old values alive beside the new, so it copies every leaf first (nanoGPT's CPU
                # recipe, 2 host devices: 44-50 ms per step with the branch, 65-76 ms with selects).
                params, opt_state = jax.lax.cond(finite, update, lambda p, o: (p, o), state["params"],
                                                 state["opt_state"])
            else:
                # A select per leaf: XLA:GPU reads a conditional's predicate back to the host, which
                # would put a device-to-host sync inside every step (not measured: no GPU yet).
                params, opt_state = update(state["params"], state["opt_state"])
                keep_if_finite = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
                params, opt_state = keep_if_finite(params, state["params"]), keep_if_finite(opt_state, state["opt_state"])
            skipped = 1 - finite.astype(jnp.int32)
            new_state = {"params": params, "opt_state": opt_state,
                         "step": state["step"] + finite.astype(jnp.int32),
                         "nonfinite": state["nonfinite"] + skipped}
            metrics = {f"train/{k}": v for k, v in m.items()}
            metrics.update({"train/grad_norm": grad_norm, "train/lr": schedule(state["step"]),
                            "train/nonfinite": skipped})
            return new_state, metrics

    return step


def make_eval_step(loss_fn: LossFn, rules=None, data_parallel: DataParallel | None = None) -> Callable:
    """``eval_step(params, frozen, batch) -> metrics``: the loss's metrics (means) and ``weight_sum``,
    with no dropout (rng None); :func:`reduce_metrics` combines batches by their weight.
    ``data_parallel``: each device scores its own rows and one all-reduce combines them by weight,
    as in :func:`make_train_step`."""
    def local(trainable: dict, frozen: dict, batch: dict):
        params, others = with_frozen(trainable, frozen)
        loss, metrics = loss_fn(params, others, batch, None)
        return {"loss": loss, **metrics, WEIGHT: _weight(metrics)}

    def per_device(trainable: dict, frozen: dict, batch: dict):
        with axis_rules(LOCAL_RULES):
            m = local(trainable, frozen, batch)
        w = m[WEIGHT]
        m = jax.lax.psum({k: (w if k == WEIGHT else jnp.where(w > 0, v.astype(jnp.float32) * w, 0.0))
                          for k, v in m.items()}, data_parallel.axes)
        total = jnp.maximum(m[WEIGHT], 1e-8)
        return {k: (v if k == WEIGHT else v / total) for k, v in m.items()}

    def eval_step(trainable: dict, frozen: dict, batch: dict):
        with _rules(rules):
            if data_parallel is None:
                return local(trainable, frozen, batch)
            spec = PartitionSpec(data_parallel.axes)
            return jax.shard_map(per_device, mesh=data_parallel.mesh,
                                 in_specs=(PartitionSpec(), PartitionSpec(), {k: spec for k in batch}),
                                 out_specs=PartitionSpec(), check_vma=False)(trainable, frozen, batch)
    return eval_step


@dataclasses.dataclass(frozen=True)
class DataParallel:
    """A mesh on which every device holds whole replicas, and its batch axes (all of its axes of
    size > 1, and any others the batch is split over): see :func:`data_parallel_axes`."""
    mesh: jax.sharding.Mesh
    axes: tuple[str, ...]
    flat: bool = False     # all-reduce one concatenated buffer instead of one per leaf (CPU)

    @property
    def size(self) -> int:
        """Devices the batch is split over."""
        return math.prod(self.mesh.shape[a] for a in self.axes)


def data_parallel_axes(mesh: jax.sharding.Mesh, rules, *shardings) -> DataParallel | None:
    """The mesh's data parallelism when it is *pure*: more than one device, every sharding in the
    trees ``shardings`` (parameters, optimizer state, frozen trees) fully replicated, and every mesh
    axis of size > 1 one of the batch's axes (``act_batch`` under ``rules``). Else None (FSDP, tensor
    or expert parallelism: GSPMD partitions the step)."""
    if mesh.size == 1:
        return None
    batch_axes = logical_spec(("act_batch",), rules, mesh)[0]
    batch_axes = () if batch_axes is None else ((batch_axes,) if isinstance(batch_axes, str) else tuple(batch_axes))
    if any(size > 1 and name not in batch_axes for name, size in mesh.shape.items()):
        return None
    leaves = jax.tree.leaves(shardings, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))
    if not all(isinstance(s, jax.sharding.Sharding) and s.is_fully_replicated for s in leaves):
        return None
    return DataParallel(mesh, batch_axes, flat=mesh.devices.flat[0].platform == "cpu")


def reduce_metrics(per_batch: list[Mapping[str, Any]]) -> dict[str, float]:
    """Host-side: metrics of many batches -> one mean per key, weighted by each batch's ``weight_sum``
    (which is summed). Exact for means of token-weighted quantities (loss, accuracy)."""
    per_batch = [{k: float(v) for k, v in m.items()} for m in jax.device_get(per_batch)]
    total = sum(m[WEIGHT] for m in per_batch)
    out = {WEIGHT: total}
    for key in per_batch[0] if per_batch else ():
        if key != WEIGHT:
            out[key] = sum(m[key] * m[WEIGHT] for m in per_batch) / max(total, 1e-8)
    return out


class _rules:
    """``axis_rules(rules)`` when rules are given, else nothing (the caller has installed them)."""

    def __init__(self, rules):
        self._cm = axis_rules(rules) if rules is not None else None

    def __enter__(self):
        return self._cm.__enter__() if self._cm is not None else None

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc) if self._cm is not None else None


def batch_sharding(mesh: jax.sharding.Mesh, rules, ndim: int) -> NamedSharding:
    """Leading (batch) axis over the mesh axes of ``act_batch``, every other axis replicated."""
    batch_axes = logical_spec(("act_batch",), rules, mesh)[0]
    return NamedSharding(mesh, PartitionSpec(batch_axes, *([None] * (ndim - 1))))


def global_batch(local: Mapping[str, np.ndarray], mesh: jax.sharding.Mesh, rules) -> dict:
    """This process's rows (numpy) -> one global jax.Array per key, sharded over the batch axes."""
    out = {}
    for key, x in local.items():
        x = np.asarray(x)
        shape = (x.shape[0] * jax.process_count(), *x.shape[1:])
        out[key] = jax.make_array_from_process_local_data(batch_sharding(mesh, rules, x.ndim), x, shape)
    return out
