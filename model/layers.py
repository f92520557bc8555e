"""Building blocks shared by every model family: parameters with logical axes, norms, MLPs.

Every parameter is created through :func:`param`, which records its logical axis names in the
variable's ``out_sharding`` metadata (read by ``lmforge.model.sharding.create_sharded``). Weights
are stored in ``param_dtype`` (float32 master weights) and cast to the compute ``dtype`` at use,
so bf16 training keeps fp32 parameters and optimizer state.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from lmforge.model.sharding import constrain

Initializer = Callable[[jax.Array, Sequence[int], jnp.dtype], jax.Array]


def dtype_of(name: str) -> jnp.dtype:
    return jnp.dtype(name)


def param(rngs: nnx.Rngs, init: Initializer, shape: Sequence[int], names: Sequence[str | None],
          dtype: jnp.dtype) -> nnx.Param:
    if len(shape) != len(names):
        raise ValueError(f"parameter of shape {tuple(shape)} given {len(names)} axis names {tuple(names)}")
    return nnx.Param(init(rngs.params(), tuple(shape), dtype), out_sharding=tuple(names))


def normal(std: float) -> Initializer:
    return nnx.initializers.normal(stddev=std)


zeros: Initializer = nnx.initializers.zeros
ones: Initializer = nnx.initializers.ones


def matmul(x: jax.Array, w: jax.Array, n_in: int = 1, preferred_element_type=None) -> jax.Array:
    """``x (..., *IN) @ w (*IN, *OUT) -> (..., *OUT)`` as one 2-D matmul.

    Same math as ``einsum('BTD,DNH->BTNH')``, but XLA:CPU fuses the elementwise neighbours of a
    3-D einsum badly: the GELU MLP's backward pass ran 2x slower than with flattened operands
    (measured on the 2-core CPU machine: 8.0 ms vs 4.05 ms for B12 T64 D128 F512). Flattening
    is free on GPU/TPU and keeps the shardings (the merged batch dimension stays the major one).
    """
    lead, ins, outs = x.shape[:x.ndim - n_in], w.shape[:n_in], w.shape[n_in:]
    k = math.prod(ins)
    y = jnp.matmul(x.reshape(-1, k), w.reshape(k, -1), preferred_element_type=preferred_element_type)
    return y.reshape(*lead, *outs)


def dropout(x: jax.Array, rate: float, rng: jax.Array | None) -> jax.Array:
    """Inverted dropout; a no-op when ``rng`` is None (evaluation) or ``rate`` is 0."""
    if rng is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


class Norm(nnx.Module):
    """LayerNorm (GPT-2; with bias when ``use_bias``) or RMSNorm (Llama), computed in float32."""

    def __init__(self, dim: int, *, kind: str, eps: float, use_bias: bool, param_dtype, rngs: nnx.Rngs):
        self.kind, self.eps = kind, eps
        self.scale = param(rngs, ones, (dim,), ("norm",), param_dtype)
        self.bias = param(rngs, zeros, (dim,), ("norm",), param_dtype) if (use_bias and kind == "layernorm") else None

    def __call__(self, x: jax.Array) -> jax.Array:
        dtype = x.dtype
        x = x.astype(jnp.float32)
        if self.kind == "layernorm":
            mean = x.mean(-1, keepdims=True)
            var = jnp.square(x - mean).mean(-1, keepdims=True)
            y = (x - mean) * jax.lax.rsqrt(var + self.eps)
        else:
            y = x * jax.lax.rsqrt(jnp.square(x).mean(-1, keepdims=True) + self.eps)
        y = y * self.scale[...].astype(jnp.float32)
        if self.bias is not None:
            y = y + self.bias[...].astype(jnp.float32)
        return y.astype(dtype)


GATED = ("swiglu", "geglu")


def activate(h: jax.Array, activation: str) -> jax.Array:
    """The nonlinearity of an MLP; for gated kinds it is applied to the gate branch."""
    if activation in ("gelu", "geglu"):
        return jax.nn.gelu(h, approximate=True)
    if activation == "gelu_exact":
        return jax.nn.gelu(h, approximate=False)
    if activation == "relu":
        return jax.nn.relu(h)
    return jax.nn.silu(h)  # swiglu


class MLP(nnx.Module):
    """Plain MLP ``down(act(up(x)))`` (GPT-2, BERT, original Transformer) or gated
    ``down(act(gate(x)) * up(x))`` (SwiGLU: Llama; GeGLU: T5 v1.1, Shazeer 2020).

    ``gelu`` is the tanh approximation (GPT-2, Hugging Face ``gelu_new``); ``gelu_exact`` the erf
    form (PyTorch ``nn.GELU()``, which nanoGPT and BERT use); ``relu`` the original Transformer's.
    """

    def __init__(self, *, embed_dim: int, mlp_dim: int, activation: str, use_bias: bool, init_std: float,
                 out_std: float, dtype, param_dtype, rngs: nnx.Rngs):
        self.activation, self.dtype = activation, dtype
        self.up = param(rngs, normal(init_std), (embed_dim, mlp_dim), ("embed", "mlp"), param_dtype)
        self.gate = (param(rngs, normal(init_std), (embed_dim, mlp_dim), ("embed", "mlp"), param_dtype)
                     if activation in GATED else None)
        self.down = param(rngs, normal(out_std), (mlp_dim, embed_dim), ("mlp", "embed"), param_dtype)
        self.up_bias = param(rngs, zeros, (mlp_dim,), ("mlp",), param_dtype) if use_bias else None
        self.gate_bias = (param(rngs, zeros, (mlp_dim,), ("mlp",), param_dtype)
                          if use_bias and activation in GATED else None)
        self.down_bias = param(rngs, zeros, (embed_dim,), ("embed",), param_dtype) if use_bias else None

    def __call__(self, x: jax.Array) -> jax.Array:  # (B, T, D) -> (B, T, D)
        h = matmul(x, self.up[...].astype(self.dtype))                     # (B, T, F)
        if self.up_bias is not None:
            h = h + self.up_bias[...].astype(self.dtype)
        if self.gate is not None:
            g = matmul(x, self.gate[...].astype(self.dtype))
            if self.gate_bias is not None:
                g = g + self.gate_bias[...].astype(self.dtype)
            h = activate(g, self.activation) * h
        else:
            h = activate(h, self.activation)
        h = constrain(h, ("act_batch", "act_seq", "act_mlp"))
        y = matmul(h, self.down[...].astype(self.dtype))                   # (B, T, D)
        if self.down_bias is not None:
            y = y + self.down_bias[...].astype(self.dtype)
        return y


def residual_std(init_std: float, num_layers: int) -> float:
    """GPT-2's scaled init of the projections into the residual stream: std / sqrt(2 L)."""
    return init_std / math.sqrt(2 * num_layers)
