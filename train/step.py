"""Train state and the sharded, jitted train / eval steps for language-model pretraining (every family).

The state is a plain dict pytree ``{"params", "opt_state", "step"}`` (arrays only), so orbax
saves it as is and every leaf has an explicit sharding. The NNX model is split once
(``graphdef`` + params); the jitted step merges inside (STYLE rule 4).

Choices:
- Gradient accumulation scans over micro-batches and sums *token-summed* losses divided by the
  whole batch's token weight, so accumulating k micro-batches gives exactly the gradient of the
  big batch (a mean of per-micro-batch means would not, with padding or packing).
- NaN/inf guard: if the loss or the gradient norm is not finite, the update is skipped inside the
  step (the returned state equals the input state) and ``train/nonfinite`` is 1; the loop stops.
- The dropout RNG of a step is ``fold_in(rng, step)``: a resumed run draws the same masks.
- One step trains every family: the loss is the weighted cross-entropy of ``targets`` whatever the
  model (next token for decoders, the masked tokens for BERT, the decoder targets of T5 / the
  original Transformer); the objective lives in the batch (``lmforge.data.objectives``), and an
  encoder-decoder batch adds ``encoder_inputs`` / ``encoder_segment_ids`` / ``encoder_positions``.
- A mixture-of-experts model adds its weighted router losses (``model.moe_aux_loss`` × load
  balancing + ``model.moe_z_loss`` × z-loss, averaged over layers) to each micro-batch's loss,
  divided by the number of micro-batches; ``train/loss`` stays the cross-entropy alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from lmforge.data.objectives import ENCODER_KEYS
from lmforge.model import DecoderLM, ModelConfig, axis_rules, build_model, create_sharded, logical_spec
from lmforge.train.objectives import causal_lm_loss
from lmforge.train.optim import OptimConfig, make_optimizer

BATCH_KEYS = ("inputs", "targets", "weights", "segment_ids", "positions")
State = dict[str, Any]


@dataclasses.dataclass
class TrainSetup:
    """Everything built once per run: the model graph, the sharded state, the compiled steps."""
    graphdef: Any
    state: State
    state_shardings: State
    batch_sharding: NamedSharding
    mesh: jax.sharding.Mesh
    rules: tuple
    schedule: optax.Schedule
    train_step: Callable
    eval_step: Callable


def create_state(model_cfg: ModelConfig, optim_cfg: OptimConfig, total_steps: int, mesh, rules, seed: int):
    """Sharded params (born sharded) and optimizer state. Returns (graphdef, state, shardings, tx, schedule)."""
    with axis_rules(rules):
        graphdef, params, param_sh = create_sharded(lambda: build_model(model_cfg, rngs=nnx.Rngs(seed)), mesh, rules)
    tx, schedule = make_optimizer(optim_cfg, total_steps)
    replicated = NamedSharding(mesh, PartitionSpec())
    # Optimizer leaves shaped like the parameters (Adam's mu, nu) take the parameters' shardings;
    # the rest (step counts) are replicated. Zeros would otherwise come out replicated.
    opt_sh = optax.tree_utils.tree_map_params(
        tx, lambda _, sh: sh, jax.eval_shape(tx.init, params), param_sh,
        transform_non_params=lambda _: replicated)
    with jax.set_mesh(mesh):
        opt_state = jax.jit(tx.init, out_shardings=opt_sh)(params)
    state = {"params": params, "opt_state": opt_state,
             "step": jax.device_put(jnp.zeros((), jnp.int32), replicated)}
    shardings = {"params": param_sh, "opt_state": opt_sh, "step": replicated}
    return graphdef, state, shardings, tx, schedule


def lm_forward(graphdef, params, batch: dict, dropout_rng=None) -> jax.Array:
    """The forward pass of the loss: (B, T) batch -> logits (B, T, V)."""
    return lm_forward_aux(graphdef, params, batch, dropout_rng)[0]


def lm_forward_aux(graphdef, params, batch: dict, dropout_rng=None) -> tuple[jax.Array, dict]:
    """Logits (B, T, V) and the model's auxiliary scalars (MoE router losses; {} when dense).

    Encoders score every input position (masked LM); encoder-decoders read ``encoder_*`` and score
    the decoder's positions.
    """
    model = nnx.merge(graphdef, params)
    kw = dict(positions=batch["positions"], segment_ids=batch["segment_ids"], dropout_rng=dropout_rng)
    if isinstance(model, DecoderLM):
        logits, _, aux = model.forward_with_aux(batch["inputs"], **kw)
        return logits, aux
    if "encoder_inputs" in batch:
        kw.update(encoder_tokens=batch["encoder_inputs"], encoder_positions=batch["encoder_positions"],
                  encoder_segment_ids=batch["encoder_segment_ids"])
    logits, _ = model(batch["inputs"], **kw)
    return logits, {}


def batch_keys(model_cfg: ModelConfig) -> tuple[str, ...]:
    """The arrays of one training batch for this model family."""
    return BATCH_KEYS + (ENCODER_KEYS if model_cfg.architecture == "encoder_decoder" else ())


def _split_micro(batch: dict, k: int) -> dict:
    return {key: v.reshape(k, v.shape[0] // k, *v.shape[1:]) for key, v in batch.items()}


def build(model_cfg: ModelConfig, optim_cfg: OptimConfig, *, total_steps: int, mesh, rules, seed: int,
          z_loss: float = 0.0) -> TrainSetup:
    graphdef, state, shardings, tx, schedule = create_state(model_cfg, optim_cfg, total_steps, mesh, rules, seed)
    accum = optim_cfg.grad_accum
    train_dropout = model_cfg.dropout > 0

    def micro_loss(params, micro, rng, denom):
        logits, aux = lm_forward_aux(graphdef, params, micro, rng)
        loss, m = causal_lm_loss(logits, micro["targets"], micro["weights"], z_loss=z_loss)
        # Token-summed loss over the *whole* batch's weight: micro-batch gradients add up exactly.
        loss = loss * m["weight_sum"] / denom
        if aux:  # MoE router losses: per micro-batch means, averaged over the micro-batches
            router = model_cfg.moe_aux_loss * aux["moe_aux_loss"] + model_cfg.moe_z_loss * aux["moe_z_loss"]
            loss = loss + router / accum
            m = {**m, **aux}
        return loss, m

    def train_step(state: State, batch: dict, rng: jax.Array):
        with axis_rules(rules):
            rng = jax.random.fold_in(rng, state["step"])
            denom = jnp.maximum(batch["weights"].astype(jnp.float32).sum(), 1e-8)
            grad_fn = jax.value_and_grad(micro_loss, has_aux=True)
            if accum == 1:
                (_, m), grads = grad_fn(state["params"], batch, rng if train_dropout else None, denom)
            else:
                micro = _split_micro(batch, accum)

                def body(acc, xs):
                    mb, i = xs
                    (_, m), g = grad_fn(state["params"], mb, jax.random.fold_in(rng, i) if train_dropout else None,
                                        denom)
                    return jax.tree.map(jnp.add, acc, (g, m)), None
                first = jax.tree.map(lambda v: v[0], micro)
                m_shape = jax.eval_shape(lambda: micro_loss(state["params"], first, None, denom)[1])
                zeros = (jax.tree.map(jnp.zeros_like, state["params"]),
                         jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), m_shape))
                (grads, m), _ = jax.lax.scan(body, zeros, (micro, jnp.arange(accum)))
            loss = m["nll_sum"] / denom
            grad_norm = optax.tree.norm(grads)
            finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
            updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
            params = optax.apply_updates(state["params"], updates)
            keep_if_finite = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
            params = keep_if_finite(params, state["params"])
            opt_state = keep_if_finite(opt_state, state["opt_state"])
            new_state = {"params": params, "opt_state": opt_state, "step": state["step"] + finite.astype(jnp.int32)}
            metrics = {"train/loss": loss, "train/accuracy": m["accuracy"] / accum,
                       "train/grad_norm": grad_norm, "train/lr": schedule(state["step"]),
                       "train/tokens": denom, "train/nonfinite": 1 - finite.astype(jnp.int32)}
            if z_loss:
                metrics["train/z_loss"] = m["z_loss"] / accum
            for key in ("moe_aux_loss", "moe_z_loss", "moe_dropped"):
                if key in m:
                    metrics[f"train/{key}"] = m[key] / accum
            return new_state, metrics

    def eval_step(params, batch: dict):
        with axis_rules(rules):
            logits = lm_forward(graphdef, params, batch)
            _, m = causal_lm_loss(logits, batch["targets"], batch["weights"])
            return {"nll_sum": m["nll_sum"], "weight_sum": m["weight_sum"],
                    "correct_sum": m["accuracy"] * m["weight_sum"]}

    replicated = NamedSharding(mesh, PartitionSpec())
    batch_sharding = NamedSharding(mesh, logical_spec(("act_batch", "act_seq"), rules, mesh))
    batch_shardings = {k: batch_sharding for k in batch_keys(model_cfg)}
    train_jit = jax.jit(train_step, in_shardings=(shardings, batch_shardings, replicated),
                        out_shardings=(shardings, replicated), donate_argnums=(0,))
    eval_jit = jax.jit(eval_step, in_shardings=(shardings["params"], batch_shardings), out_shardings=replicated)
    return TrainSetup(graphdef=graphdef, state=state, state_shardings=shardings, batch_sharding=batch_sharding,
                      mesh=mesh, rules=rules, schedule=schedule, train_step=train_jit, eval_step=eval_jit)


def global_batch(local: dict, sharding: NamedSharding) -> dict:
    """This process's rows (numpy) -> one global jax.Array per key, sharded over the batch axes."""
    out = {}
    for key, x in local.items():
        shape = (x.shape[0] * jax.process_count(), *x.shape[1:])
        out[key] = jax.make_array_from_process_local_data(sharding, x, shape)
    return out
