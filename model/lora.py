"""LoRA: low-rank adapters on the projection module (Hu et al. 2021, "LoRA: Low-Rank Adaptation of
Large Language Models").

A wrapped projection computes ``x W + b + scale * dropout(x) A B`` with A (IN, r), B (r, OUT) and
``scale = alpha / r`` (or ``alpha / sqrt(r)`` with ``rslora``: Kalajdzievski 2023, "A Rank
Stabilization Scaling Factor for Fine-Tuning with LoRA").

Choices:
- Adapters attach to :class:`lmforge.model.layers.Dense` modules whose dotted path fully matches a
  pattern of ``LoRAConfig.targets`` (``blocks.0.attn.q``; ``blocks.attn.q`` when layers are stacked),
  as PEFT's ``target_modules`` does by name. Every family's projections are ``Dense``, so one
  mechanism covers GPT-2, Llama, BERT and T5, and a pattern that matches nothing is an error.
- B starts at zero and A as PEFT's default (Kaiming-uniform, bound 1/sqrt(fan_in)), so a freshly
  wrapped model computes exactly the base model. The adapter's parameters are drawn after every
  base parameter, so adding adapters does not change the base's initialisation.
- Stacked layers (``scan_layers``): A and B get the kernel's leading ``layers`` axis, so the scan
  slices them with the rest of the block.
- Logical axes: A is (IN axes..., None), B (None, OUT axes...): the rank is never sharded, and the
  adapter shards like its projection.
- Adapters are separate parameters named ``<projection>.lora.a`` / ``.lora.b``; :func:`adapter_params`
  takes them out of a parameter tree (an adapter checkpoint holds only them), :func:`merge` folds them
  into the kernels (for export or faster inference) and :func:`unmerge` takes them out again.
  Merging in float32 then unmerging gives the kernel back up to float32 rounding (tested to 1e-6);
  keep the base tree for a bit-exact base — in this functional design ``merge`` never modifies it.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lmforge.model.config import LoRAConfig
from lmforge.model.layers import Dense, dropout, matmul
from lmforge.model.moe import MoE
from lmforge.model.paths import combine, compile_patterns, flatten, matches, select, unflatten

ADAPTER_PATTERN = r".*\.lora\.(a|b)"


class LoRA(nnx.Module):
    """The low-rank update of one projection: ``scale * dropout(x) A B``.

    ``kernel_shape`` is the wrapped kernel's (*LEAD, *IN, *OUT) with ``lead`` stacked-layer axes and
    ``n_in`` input axes; ``names`` its logical axes.
    """

    def __init__(self, kernel_shape, names, *, lead: int, n_in: int, cfg: LoRAConfig, dtype, param_dtype,
                 rngs: nnx.Rngs):
        shape, names = tuple(kernel_shape), tuple(names)
        lead_shape, in_shape, out_shape = shape[:lead], shape[lead:lead + n_in], shape[lead + n_in:]
        r = cfg.rank
        bound = 1.0 / math.sqrt(math.prod(in_shape))    # PEFT: kaiming_uniform_(a=sqrt(5)) on (r, fan_in)
        a = jax.random.uniform(rngs.params(), lead_shape + in_shape + (r,), param_dtype, -bound, bound)
        self.a = nnx.Param(a, out_sharding=names[:lead + n_in] + (None,))
        self.b = nnx.Param(jnp.zeros(lead_shape + (r,) + out_shape, param_dtype),
                           out_sharding=names[:lead] + (None,) + names[lead + n_in:])
        self.n_in, self.scale, self.rate, self.dtype = n_in, cfg.scale, cfg.dropout, dtype

    def __call__(self, x: jax.Array, rng: jax.Array | None = None) -> jax.Array:
        """x (..., *IN) -> (..., *OUT)."""
        h = matmul(dropout(x, self.rate, rng), self.a[...].astype(self.dtype), n_in=self.n_in)    # (..., r)
        return matmul(h, self.b[...].astype(self.dtype)) * jnp.asarray(self.scale, self.dtype)


def apply_lora(model: nnx.Module, cfg: LoRAConfig, rngs: nnx.Rngs) -> list[str]:
    """Attaches a :class:`LoRA` to every :class:`Dense` of ``model`` whose path matches ``cfg.targets``.

    Returns the wrapped paths. Raises ValueError when a target pattern matches no projection.
    """
    patterns = compile_patterns(cfg.targets, "model.lora.targets")
    dense = [(".".join(str(p) for p in path), m) for path, m in nnx.iter_modules(model) if isinstance(m, Dense)]
    wrapped = []
    for pattern in patterns:
        if not any(pattern.fullmatch(path) for path, _ in dense):
            moe = any(isinstance(m, MoE) for _, m in nnx.iter_modules(model)) and "mlp" in pattern.pattern
            raise ValueError(f"LoRA target {pattern.pattern!r} matches no projection; projections are "
                             f"{', '.join(p for p, _ in dense[:6])}{' ...' if len(dense) > 6 else ''}"
                             + ("; a mixture of experts' FFNs are experts, which LoRA does not adapt: target the "
                                "attention's projections, e.g. lora.targets=('.*attn\\.(q|k|v|o)',)" if moe else ""))
    for path, module in dense:
        if not matches(path, patterns):
            continue
        kernel = module.kernel
        shape = kernel[...].shape
        lead = len(shape) - module.n_in - module.n_out           # stacked-layer axes (scan_layers)
        names = tuple(kernel.get_metadata().get("out_sharding") or ())
        names = (None,) * (len(shape) - len(names)) + names
        module.lora = LoRA(shape, names, lead=lead, n_in=module.n_in, cfg=cfg, dtype=module.dtype,
                           param_dtype=kernel[...].dtype, rngs=rngs)
        wrapped.append(path)
    return wrapped


# ------------------------------------------------------------------------------------------- trees
def adapter_params(params: dict) -> tuple[dict, dict]:
    """Splits a parameter tree into (adapters: every ``...lora.a|b``, base: the rest)."""
    if not any(matches(p, compile_patterns([ADAPTER_PATTERN], "adapters")) for p, _ in flatten(params)):
        return {}, dict(params)
    return select(params, [ADAPTER_PATTERN], what="adapters")


def merge(params: dict, cfg: LoRAConfig) -> dict:
    """Folds each adapter into its kernel: ``W + scale * A B`` (float32), adapters removed.

    ``params`` holds base and adapters (a tree of a model built with ``cfg``); the result is the tree
    of the same model built without adapters (``lora.rank=0``). Arrays may be numpy or jax.
    """
    return _fold(params, cfg, +1.0)


def unmerge(merged: dict, adapters: dict, cfg: LoRAConfig) -> dict:
    """The inverse of :func:`merge`: ``W - scale * A B`` per adapted kernel, adapters put back."""
    return _fold(combine(merged, adapters), cfg, -1.0, keep_adapters=True)


def _fold(params: dict, cfg: LoRAConfig, sign: float, *, keep_adapters: bool = False) -> dict:
    adapters, base = adapter_params(params)
    flat_base = dict(flatten(base))
    flat_adapters = dict(flatten(adapters))
    owners = sorted({p.rsplit(".lora.", 1)[0] for p in flat_adapters})
    for owner in owners:
        a, b = flat_adapters[f"{owner}.lora.a"], flat_adapters[f"{owner}.lora.b"]
        kernel = flat_base[f"{owner}.kernel"]
        flat_base[f"{owner}.kernel"] = _add_delta(kernel, a, b, sign * cfg.scale)
    out = unflatten(flat_base)
    return combine(out, adapters) if keep_adapters else out


def _add_delta(kernel, a, b, scale: float):
    """kernel (*L, *IN, *OUT) + scale * A (*L, *IN, r) @ B (*L, r, *OUT), in float32, kernel's dtype."""
    xp = jnp if isinstance(kernel, jax.Array) else np
    r = a.shape[-1]
    lead = a.ndim + b.ndim - 2 - kernel.ndim              # stacked axes in front
    lead_shape = kernel.shape[:lead]
    a2 = xp.asarray(a, xp.float32).reshape(*lead_shape, -1, r)
    b2 = xp.asarray(b, xp.float32).reshape(*lead_shape, r, -1)
    delta = (a2 @ b2).reshape(kernel.shape)
    return (xp.asarray(kernel, xp.float32) + scale * delta).astype(kernel.dtype)
