"""Building blocks shared by every model family: parameters with logical axes, the one projection
module, norms, MLPs.

Every parameter is created through :func:`param`, which records its logical axis names in the
variable's ``out_sharding`` metadata (read by ``lmforge.model.sharding.create_sharded``). Weights
are stored in ``param_dtype`` (float32 master weights) and cast to the compute ``dtype`` at use,
so bf16 training keeps fp32 parameters and optimizer state.

Every linear map of every family (attention q/k/v/o, MLP up/gate/down, BERT's head transform) is a
:class:`Dense`: ``kernel`` (*IN, *OUT) and an optional ``bias`` (*OUT), each with logical axes. One
module means one place where an adapter can wrap a projection (``lora.py`` attaches LoRA to the
``Dense`` modules whose path matches a pattern) and one parameter layout (``<path>.kernel``,
``<path>.bias``) for checkpoints and the Hugging Face maps. Embedding tables, the unembedding (a
head, read by ``token_logprobs`` in vocabulary chunks) and MoE experts stay plain parameters.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name
from jax.custom_derivatives import SymbolicZero

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
    ``preferred_element_type=float32`` with 16-bit operands (the logits): :func:`einsum_f32`.
    """
    lead, ins, outs = x.shape[:x.ndim - n_in], w.shape[:n_in], w.shape[n_in:]
    k = math.prod(ins)
    x2, w2 = x.reshape(-1, k), w.reshape(k, -1)
    if preferred_element_type is not None and jnp.dtype(preferred_element_type) == jnp.float32:
        y = einsum_f32("mk,kn->mn", x2, w2)
    else:
        y = jnp.matmul(x2, w2, preferred_element_type=preferred_element_type)
    return y.reshape(*lead, *outs)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def einsum_f32(equation: str, a: jax.Array, b: jax.Array) -> jax.Array:
    """``jnp.einsum(equation, a, b)`` with a float32 result (float32 accumulation), whose derivatives are
    computed in bfloat16 when both operands are: the backward matmuls run bf16 x bf16 (float32
    accumulation) on the float32 cotangent rounded to bf16, as PyTorch's autocast and MaxText's bf16
    logits do. Plain autodiff of a float32 result would multiply the float32 cotangent by the bf16
    operands: mixed-dtype dots that XLA runs as float32 (TF32) matmuls, half the bf16 rate or less on
    a GPU, for the logits' backward (2 x 2 B T D V FLOPs) and attention scores'. Other dtypes get
    autodiff's float32 derivatives (float16 has no exponent range for the small cotangents of a mean
    loss over many tokens: they would flush to zero). A ``custom_jvp`` (its transpose gives the
    backward matmuls): forward mode and higher derivatives still work, and the scores stay a
    ``dot_general`` that remat policies recognise.
    """
    return jnp.einsum(equation, a, b, preferred_element_type=jnp.float32)


def _einsum_f32_jvp(equation, primals, tangents):
    a, b = primals
    ta, tb = tangents
    low = jnp.bfloat16 if jnp.promote_types(a.dtype, b.dtype) == jnp.bfloat16 else jnp.float32
    out = jnp.einsum(equation, a, b, preferred_element_type=jnp.float32)   # a dot_general remat policies see
    terms = [jnp.einsum(equation, *operands, preferred_element_type=low).astype(jnp.float32)
             for operands, zero in (((ta, b), type(ta) is SymbolicZero), ((a, tb), type(tb) is SymbolicZero))
             if not zero]
    tangent = sum(terms[1:], terms[0]) if terms else jnp.zeros_like(out)
    return out, tangent


einsum_f32.defjvp(_einsum_f32_jvp, symbolic_zeros=True)


def dropout(x: jax.Array, rate: float, rng: jax.Array | None) -> jax.Array:
    """Inverted dropout; a no-op when ``rng`` is None (evaluation) or ``rate`` is 0."""
    if rng is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


class Dense(nnx.Module):
    """The projection ``x (..., *IN) @ kernel (*IN, *OUT) (+ bias (*OUT)) -> (..., *OUT)``.

    ``in_shape``/``out_shape`` may have several dimensions (attention's q is (D) -> (N, H), its o
    (N, H) -> (D)); ``in_names``/``out_names`` are their logical axes. The bias is zero-initialised.
    ``lora`` is None until :func:`lmforge.model.lora.apply_lora` attaches an adapter; the adapter's
    output (the low-rank update) is added to the projection's.
    """

    def __init__(self, in_shape: Sequence[int], out_shape: Sequence[int], in_names: Sequence[str | None],
                 out_names: Sequence[str | None], *, use_bias: bool, init_std: float, dtype, param_dtype,
                 rngs: nnx.Rngs):
        in_shape, out_shape = tuple(in_shape), tuple(out_shape)
        self.n_in, self.n_out, self.dtype = len(in_shape), len(out_shape), dtype
        self.kernel = param(rngs, normal(init_std), in_shape + out_shape, (*in_names, *out_names), param_dtype)
        self.bias = param(rngs, zeros, out_shape, tuple(out_names), param_dtype) if use_bias else None
        self.lora = nnx.data(None)   # a data slot: apply_lora puts a LoRA module here

    def __call__(self, x: jax.Array, rng: jax.Array | None = None, *, preferred_element_type=None) -> jax.Array:
        """x (..., *IN) -> (..., *OUT); ``rng`` drives the adapter's dropout (None: no dropout)."""
        y = matmul(x, self.kernel[...].astype(self.dtype), n_in=self.n_in,
                   preferred_element_type=preferred_element_type)
        if self.bias is not None:
            y = y + self.bias[...].astype(y.dtype)
        if self.lora is not None:
            y = y + self.lora(x, rng).astype(y.dtype)
        return y


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

    Remat names (MaxText's): ``mlpwi`` the up (and gate) projections' outputs, ``mlpwo`` the down
    projection's.

    ``gelu`` is the tanh approximation (GPT-2, Hugging Face ``gelu_new``); ``gelu_exact`` the erf
    form (PyTorch ``nn.GELU()``, which nanoGPT and BERT use); ``relu`` the original Transformer's.
    """

    def __init__(self, *, embed_dim: int, mlp_dim: int, activation: str, use_bias: bool, init_std: float,
                 out_std: float, dtype, param_dtype, rngs: nnx.Rngs):
        self.activation = activation
        proj = dict(use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.up = Dense((embed_dim,), (mlp_dim,), ("embed",), ("mlp",), init_std=init_std, **proj)
        self.gate = (Dense((embed_dim,), (mlp_dim,), ("embed",), ("mlp",), init_std=init_std, **proj)
                     if activation in GATED else None)
        self.down = Dense((mlp_dim,), (embed_dim,), ("mlp",), ("embed",), init_std=out_std, **proj)

    def __call__(self, x: jax.Array, rng: jax.Array | None = None) -> jax.Array:
        """(B, T, D) -> (B, T, D); ``rng`` only feeds adapter dropout (see :class:`Dense`)."""
        rngs = (None,) * 3 if rng is None else tuple(jax.random.split(rng, 3))
        h = checkpoint_name(self.up(x, rngs[0]), "mlpwi")                 # (B, T, F)
        if self.gate is not None:
            h = activate(checkpoint_name(self.gate(x, rngs[1]), "mlpwi"), self.activation) * h
        else:
            h = activate(h, self.activation)
        h = constrain(h, ("act_batch", "act_seq", "act_mlp"))
        return checkpoint_name(self.down(h, rngs[2]), "mlpwo")              # (B, T, D)


def residual_std(init_std: float, num_layers: int) -> float:
    """GPT-2's scaled init of the projections into the residual stream: std / sqrt(2 L)."""
    return init_std / math.sqrt(2 * num_layers)
