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
- NaN/inf guard: if the loss or the gradient norm is not finite, the update is skipped inside the
  step (parameters, optimizer state and step are kept) and ``state["nonfinite"]``, a counter on
  the device, goes up by one; the loop reads it at its next sync point and applies its policy.
- The dropout/sampling key of a step is ``fold_in(rng, step)``: a resumed run draws the same masks.
- The state is a plain dict ``{"params", "opt_state", "step", "nonfinite"}`` of arrays (orbax saves
  it as is) with one sharding per leaf; the step is jitted once with those shardings in and out
  and the state donated (STYLE rule 3).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec

from lmforge.model import axis_rules, logical_spec
from lmforge.model.paths import combine

State = dict[str, Any]
LossFn = Callable[[dict, dict, dict, jax.Array | None], tuple[jax.Array, dict]]
WEIGHT = "weight_sum"
_OBJECTIVE = "_objective"


def with_frozen(trainable: dict, frozen: Mapping) -> tuple[dict, dict]:
    """(the model's whole parameter tree, the other frozen trees) from a state's trainable leaves and
    the frozen dict (whose ``"params"`` entry holds the model's frozen leaves)."""
    others = {k: v for k, v in frozen.items() if k != "params"}
    return combine(trainable, frozen.get("params", {})), others


def _weight(metrics: Mapping) -> jax.Array:
    return jnp.asarray(metrics.get(WEIGHT, 1.0), jnp.float32)


def make_train_step(loss_fn: LossFn, tx: optax.GradientTransformation, schedule: optax.Schedule, *,
                    grad_accum: int = 1, rules=None) -> Callable:
    """``step(state, frozen, batch, rng) -> (state, metrics)``, pure and jittable.

    Metrics: the loss's own, prefixed ``train/`` (``train/loss`` is the loss when the loss function
    does not report one), plus ``train/grad_norm``, ``train/lr`` (the schedule's value for this
    update) and ``train/nonfinite`` (1 when this update was skipped).
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

    def accumulate(trainable, frozen, batch, rng):
        if grad_accum == 1:
            (_, m), grads = grad_fn(trainable, frozen, batch, rng)
            return grads, m
        for k, v in batch.items():   # the leading axis holds whole examples (a DPO pair stays in its row)
            if v.shape[0] % grad_accum:
                raise ValueError(f"batch[{k!r}] has {v.shape[0]} rows, not divisible by grad_accum={grad_accum}")
        micro = {k: v.reshape(grad_accum, v.shape[0] // grad_accum, *v.shape[1:]) for k, v in batch.items()}

        def body(acc, xs):
            mb, i = xs
            (_, m), g = grad_fn(trainable, frozen, mb, None if rng is None else jax.random.fold_in(rng, i))
            w = _weight(m)
            g_acc, m_acc = acc
            g_acc = jax.tree.map(lambda a, x: a + x * w, g_acc, g)
            m_acc = {k: m_acc[k] + (w if k == WEIGHT else m[k].astype(jnp.float32) * w) for k in m_acc}
            return (g_acc, m_acc), None

        first = jax.tree.map(lambda v: v[0], micro)
        m_shape = jax.eval_shape(lambda: micro_loss(trainable, frozen, first, rng)[1])
        m_zeros = {k: jnp.zeros(s.shape, jnp.float32) for k, s in m_shape.items()}
        m_zeros[WEIGHT] = jnp.zeros((), jnp.float32)
        zeros = (jax.tree.map(jnp.zeros_like, trainable), m_zeros)
        (grads, m), _ = jax.lax.scan(body, zeros, (micro, jnp.arange(grad_accum)))
        total = jnp.maximum(m[WEIGHT], 1e-8)
        grads = jax.tree.map(lambda g: g / total, grads)
        m = {k: (v if k == WEIGHT else v / total) for k, v in m.items()}
        return grads, m

    def step(state: State, frozen: dict, batch: dict, rng: jax.Array):
        with _rules(rules):
            rng = jax.random.fold_in(rng, state["step"])
            grads, m = accumulate(state["params"], frozen, batch, rng)
            grad_norm = optax.tree.norm(grads)
            objective = m.pop(_OBJECTIVE)
            finite = jnp.isfinite(objective) & jnp.isfinite(m["loss"]) & jnp.isfinite(grad_norm)
            updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
            params = optax.apply_updates(state["params"], updates)
            keep_if_finite = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
            skipped = 1 - finite.astype(jnp.int32)
            new_state = {"params": keep_if_finite(params, state["params"]),
                         "opt_state": keep_if_finite(opt_state, state["opt_state"]),
                         "step": state["step"] + finite.astype(jnp.int32),
                         "nonfinite": state["nonfinite"] + skipped}
            metrics = {f"train/{k}": v for k, v in m.items()}
            metrics.update({"train/grad_norm": grad_norm, "train/lr": schedule(state["step"]),
                            "train/nonfinite": skipped})
            return new_state, metrics

    return step


def make_eval_step(loss_fn: LossFn, rules=None) -> Callable:
    """``eval_step(params, frozen, batch) -> metrics``: the loss's metrics (means) and ``weight_sum``,
    with no dropout (rng None); :func:`reduce_metrics` combines batches by their weight."""
    def eval_step(trainable: dict, frozen: dict, batch: dict):
        with _rules(rules):
            params, others = with_frozen(trainable, frozen)
            loss, metrics = loss_fn(params, others, batch, None)
            return {"loss": loss, **metrics, WEIGHT: _weight(metrics)}
    return eval_step


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
