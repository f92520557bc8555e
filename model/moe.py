"""Mixture-of-experts FFN: top-k routing, capacity or dropless dispatch, router losses.

Shape letters: B batch, T sequence, D embed, F expert hidden width, E experts, K experts per token,
C expert capacity per sequence, A = B·T·K token-to-expert assignments.

Choices:
- The router (logits, softmax, top-k) runs in float32 whatever the compute dtype: a tiny logit
  difference decides a discrete choice and bf16 rounding would flip it (Switch Transformer,
  Fedus et al. 2021, "selective precision").
- Top-k of the softmax probabilities, renormalised over the chosen k (Mixtral; the same as a
  softmax over the top-k logits). With k = 1 the raw probability is kept (Switch): renormalised it
  would be 1 and the router would get no gradient from the language-model loss.
- Load balancing (Switch eq. 4, top-k as in GShard): ``E * sum_e f_e * P_e``, f_e the fraction of
  the B·T·K assignments that chose expert e (before capacity drops), P_e the mean router
  probability of e. It is 1.0 when routing is uniform, for every k (Hugging Face's Mixtral loss
  is k times this). Router z-loss (ST-MoE, Zoph et al. 2022, eq. 5): ``mean(logsumexp(logits)^2)``.
  Both average over real tokens only (segment id != 0): padding does not pull the router.
- ``capacity`` dispatch (GShard, Lepikhin et al. 2020; Switch): each sequence is a group with
  C = ceil(K·T·factor / E) slots per expert (at most T). Slots go first to every token's first
  choice, then to second choices, ..., in token order within a choice (GShard's priority). An
  assignment past capacity is dropped: it adds nothing, so a token whose choices were all dropped
  passes through on the residual connection alone. Padding takes no slots. Dispatch and combine
  are one-hot einsums ``BTEC``: plain matmuls on any accelerator, and the expert dimension of the
  dispatched tokens is constrained to the ``expert`` mesh axis, so GSPMD turns the switch from
  batch-sharded to expert-sharded into an all-to-all (expert parallelism). Memory is
  O(B·T·E·C) = O(B·T²·K·factor), which is why a group is one sequence. Decoding one token per
  sequence never drops (C >= 1 and the k choices are distinct), but a prefill or a training batch
  can, so only the dropless mode makes KV-cache decoding equal the full forward pass exactly.
- ``dropless`` dispatch (capacity factor 0; MegaBlocks, Gale et al. 2022; MaxText's sparse
  matmul): sort the assignments by expert and run the expert FFN as grouped matmuls
  (``jax.lax.ragged_dot``) over the contiguous groups. No token is ever dropped, work and memory
  grow with K, not E, and the result is independent of the batch (so KV-cache decoding equals
  the full forward pass). On GPU/TPU ``ragged_dot`` is a grouped GEMM; XLA:CPU lowers it to a
  masked dense matmul over all E groups (E/K times the work: fine for tests and tiny models).
  Under a mesh the sort runs per batch shard inside ``shard_map`` (a global sort would gather the
  whole batch onto every device); the expert weights are all-gathered into it, so dropless mode
  is data parallel only. Expert parallelism with dropless routing needs a ragged all-to-all and
  is not implemented: use the capacity mode on a mesh with ``expert`` > 1.
- Shared experts (DeepSeekMoE, Dai et al. 2024): a dense MLP of width S·F that every token passes
  through, added to the routed output.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from lmforge.model.layers import GATED, MLP, activate, normal, param
from lmforge.model.sharding import constrain, logical_spec


def route(logits: jax.Array, k: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Router logits (..., E) -> (weights (..., K) float32, experts (..., K) int32, probs (..., E))."""
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    weights, experts = jax.lax.top_k(probs, k)
    if k > 1:
        weights = weights / weights.sum(-1, keepdims=True)
    return weights, experts.astype(jnp.int32), probs


def load_balancing_loss(probs: jax.Array, experts: jax.Array, mask: jax.Array) -> jax.Array:
    """Switch / GShard auxiliary loss, 1.0 when balanced. probs (B, T, E), experts (B, T, K), mask (B, T)."""
    e, k = probs.shape[-1], experts.shape[-1]
    mask = mask.astype(jnp.float32)
    n = jnp.maximum(mask.sum(), 1.0)
    chosen = jax.nn.one_hot(experts, e, dtype=jnp.float32).sum(-2)                # (B, T, E)
    f = jnp.einsum("BTE,BT->E", chosen, mask) / (n * k)
    p = jnp.einsum("BTE,BT->E", probs.astype(jnp.float32), mask) / n
    return e * jnp.sum(f * p)


def router_z_loss(logits: jax.Array, mask: jax.Array) -> jax.Array:
    """ST-MoE z-loss: mean over real tokens of logsumexp(logits)^2. logits (B, T, E), mask (B, T)."""
    mask = mask.astype(jnp.float32)
    z = jax.nn.logsumexp(logits.astype(jnp.float32), axis=-1)
    return (jnp.square(z) * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def expert_capacity(seq_len: int, num_experts: int, k: int, factor: float) -> int:
    """Slots per expert per sequence: ceil(K T factor / E), at least 1 and at most T."""
    return max(1, min(seq_len, math.ceil(k * seq_len * factor / num_experts)))


def capacity_dispatch(experts: jax.Array, weights: jax.Array, mask: jax.Array, num_experts: int,
                      capacity: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One-hot dispatch and combine tensors for per-sequence expert capacity.

    experts, weights (B, T, K); mask (B, T) (False = padding, takes no slot).
    Returns (dispatch (B, T, E, C) 0/1, combine (B, T, E, C) router weights, kept (B, T, K) bool).
    """
    b, t, k = experts.shape
    chosen = jax.nn.one_hot(experts, num_experts, dtype=jnp.int32) * mask[:, :, None, None]   # (B, T, K, E)
    # Priority: all first choices (in token order), then all second choices, ...: cumsum over K·T.
    by_choice = chosen.transpose(0, 2, 1, 3).reshape(b, k * t, num_experts)
    slot = (jnp.cumsum(by_choice, axis=1) - 1).reshape(b, k, t, num_experts).transpose(0, 2, 1, 3)
    slot = (slot * chosen).sum(-1)                                                          # (B, T, K)
    kept = (chosen.sum(-1) > 0) & (slot < capacity)
    expert_1h = chosen.astype(jnp.float32) * kept[..., None]                               # (B, T, K, E)
    slot_1h = jax.nn.one_hot(slot, capacity, dtype=jnp.float32)                             # (B, T, K, C)
    dispatch = jnp.einsum("BTKE,BTKC->BTEC", expert_1h, slot_1h)
    combine = jnp.einsum("BTKE,BTKC->BTEC", expert_1h * weights[..., None].astype(jnp.float32), slot_1h)
    return dispatch, combine, kept


def _activate(h: jax.Array, g: jax.Array | None, activation: str) -> jax.Array:
    """The dense MLP's nonlinearity (``layers.activate``): on the gate branch ``g`` for SwiGLU / GeGLU."""
    return activate(h, activation) if g is None else activate(g, activation) * h


def dropless_ffn(x: jax.Array, experts: jax.Array, weights: jax.Array, up: jax.Array, gate: jax.Array | None,
                 down: jax.Array, activation: str) -> jax.Array:
    """Sort-by-expert grouped-matmul FFN. x (B, T, D), experts / weights (B, T, K), up / gate (E, D, F),
    down (E, F, D) -> (B, T, D) = sum_k weights[k] * FFN_{experts[k]}(x)."""
    b, t, d = x.shape
    k, e = experts.shape[-1], up.shape[0]
    flat = experts.reshape(-1)                                          # (A,)
    order = jnp.argsort(flat, stable=True)                              # assignments grouped by expert
    xs = x.reshape(b * t, d)[order // k]                                # (A, D) sorted token copies
    sizes = jnp.bincount(flat, length=e).astype(jnp.int32)              # (E,) group sizes
    h = jax.lax.ragged_dot(xs, up, sizes)                               # (A, F)
    g = None if gate is None else jax.lax.ragged_dot(xs, gate, sizes)
    ys = jax.lax.ragged_dot(_activate(h, g, activation), down, sizes)   # (A, D)
    y = jnp.zeros_like(ys).at[order].set(ys, unique_indices=True)       # back to (token, choice) order
    return jnp.einsum("BTKD,BTK->BTD", y.reshape(b, t, k, d), weights.astype(y.dtype))


def _batch_shards(b: int):
    """(mesh, batch axes) to run the dropless FFN per batch shard, or None to run it directly."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh is None or mesh.empty:
        return None
    axes = logical_spec(("act_batch",), mesh=mesh)[0]
    flat = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
    n = math.prod(mesh.shape[a] for a in flat)
    # An uneven batch (the sampler's odd prompt counts) falls back to GSPMD's global version.
    return (mesh, axes) if n > 1 and b % n == 0 else None


class MoE(nnx.Module):
    """Top-k routed experts (+ optional shared experts). (B, T, D) -> ((B, T, D), aux scalars)."""

    def __init__(self, *, embed_dim: int, mlp_dim: int, num_experts: int, experts_per_token: int,
                 capacity_factor: float, num_shared: int, activation: str, init_std: float, out_std: float,
                 dtype, param_dtype, rngs: nnx.Rngs):
        self.k, self.capacity_factor, self.activation, self.dtype = (experts_per_token, capacity_factor,
                                                                     activation, dtype)
        e, d, f = num_experts, embed_dim, mlp_dim
        # The router's expert dimension stays whole: the softmax and top-k read all of it.
        self.router = param(rngs, normal(init_std), (d, e), ("embed", None), param_dtype)
        self.up = param(rngs, normal(init_std), (e, d, f), ("expert", "embed", "mlp"), param_dtype)
        self.gate = (param(rngs, normal(init_std), (e, d, f), ("expert", "embed", "mlp"), param_dtype)
                     if activation in GATED else None)
        self.down = param(rngs, normal(out_std), (e, f, d), ("expert", "mlp", "embed"), param_dtype)
        self.shared = (MLP(embed_dim=d, mlp_dim=f * num_shared, activation=activation, use_bias=False,
                           init_std=init_std, out_std=out_std, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
                       if num_shared else None)

    def __call__(self, x: jax.Array, segment_ids: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        """x (B, T, D), segment_ids (B, T) (0 = padding) -> y (B, T, D), {moe_aux_loss, moe_z_loss, moe_dropped}."""
        logits = jnp.matmul(x.astype(jnp.float32), self.router[...].astype(jnp.float32))   # (B, T, E)
        logits = constrain(logits, ("act_batch", "act_seq", None))
        weights, experts, probs = route(logits, self.k)
        mask = segment_ids != 0
        aux = {"moe_aux_loss": load_balancing_loss(probs, experts, mask), "moe_z_loss": router_z_loss(logits, mask)}
        w = [None if p is None else p[...].astype(self.dtype) for p in (self.up, self.gate, self.down)]
        if self.capacity_factor > 0:
            y, kept = self._capacity(x, experts, weights, mask, *w)
            aux["moe_dropped"] = 1.0 - kept.sum() / jnp.maximum(mask.sum() * self.k, 1)
        else:
            y = self._dropless(x, experts, weights, *w)
            aux["moe_dropped"] = jnp.zeros((), jnp.float32)
        if self.shared is not None:
            y = y + self.shared(x)
        return constrain(y, ("act_batch", "act_seq", "act_embed")), aux

    def _capacity(self, x, experts, weights, mask, up, gate, down):
        b, t, _ = x.shape
        e = up.shape[0]
        dispatch, combine, kept = capacity_dispatch(experts, weights, mask, e,
                                                    expert_capacity(t, e, self.k, self.capacity_factor))
        # Batch-sharded tokens -> expert-sharded slots: GSPMD makes this an all-to-all.
        xe = jnp.einsum("BTEC,BTD->EBCD", dispatch.astype(x.dtype), x)
        xe = constrain(xe, ("act_expert", "act_batch_no_expert", None, "act_embed"))
        names = ("act_expert", "act_batch_no_expert", None, "act_mlp")
        h = constrain(jnp.einsum("EBCD,EDF->EBCF", xe, up), names)
        g = None if gate is None else constrain(jnp.einsum("EBCD,EDF->EBCF", xe, gate), names)
        ye = jnp.einsum("EBCF,EFD->EBCD", _activate(h, g, self.activation), down)
        ye = constrain(ye, ("act_expert", "act_batch_no_expert", None, "act_embed"))
        return jnp.einsum("EBCD,BTEC->BTD", ye, combine.astype(x.dtype)), kept

    def _dropless(self, x, experts, weights, up, gate, down):
        shards = _batch_shards(x.shape[0])
        ffn = lambda x, ex, wt, w: dropless_ffn(x, ex, wt, w["up"], w.get("gate"), w["down"], self.activation)
        w = {"up": up, "down": down} | ({} if gate is None else {"gate": gate})
        if shards is None:
            return ffn(x, experts, weights, w)
        mesh, axes = shards
        tok, rep = jax.sharding.PartitionSpec(axes), jax.sharding.PartitionSpec()
        # Expert weights enter replicated (jit all-gathers them); each shard sorts its own tokens.
        return jax.shard_map(ffn, mesh=mesh, in_specs=(tok, tok, tok, rep), out_specs=tok,
                             check_vma=False)(x, experts, weights, w)
