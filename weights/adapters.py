"""Adapter checkpoints: LoRA adapters saved on their own, loaded over a base, several per base.

An adapter folder is ``adapter.json`` (the LoRA config, the base model's config and a fingerprint of
the base's parameters) + ``adapter.safetensors`` (the ``...lora.a`` / ``...lora.b`` tensors, by
lmforge path). It is a few MB where the base is GB, as PEFT's ``adapter_model.safetensors`` is.

    save_adapter("adapters/sql", params, model_cfg)             # the adapters of a tree, base fingerprinted
    sql = load_adapter("adapters/sql", base.cfg, base.params, mesh)  # checked against this base, sharded
    model = nnx.merge(graphdef, combine(base.params, sql))      # graphdef of the model with model_cfg.lora

Several named adapters over one base: load each folder once (``load_adapters``) and combine the
one you want with the same base tree — the base is held once, the adapters are swapped.

Choices:
- The base fingerprint is a digest of every base parameter's bits (the checkpoint digest of
  ``weights.checkpoint``), so an adapter applied to a different base of the same shapes (another
  run of the same architecture, the same model at another step) is refused with one line, not
  silently merged. ``allow_other_base=True`` overrides it for deliberate transfers.
- The adapters are placed straight into the shardings their logical axes give (``weights.place``).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

import jax
import numpy as np
from flax import nnx

from lmforge.model import DEFAULT_RULES, LoRAConfig, ModelConfig, abstract_sharded, build_model
from lmforge.model.lora import adapter_params
from lmforge.model.paths import flatten, unflatten
from lmforge.model.sharding import run_init, tree_nbytes
from lmforge.weights.checkpoint import tree_digest
from lmforge.weights.folder import WeightsError, model_config_from_dict
from lmforge.weights.load import place

ADAPTER_CONFIG, ADAPTER_TENSORS = "adapter.json", "adapter.safetensors"


def base_fingerprint(base: dict) -> str:
    """A hex digest (16 digits) of every parameter of ``base`` (adapters excluded), independent of
    sharding and process: sha256 over the per-leaf checkpoint digests."""
    return tree_digest(adapter_params(base)[1])


def save_adapter(directory: str | pathlib.Path, params: dict, model_cfg: ModelConfig) -> pathlib.Path:
    """Writes the adapters of ``params`` (a tree of ``model_cfg``'s model, with ``lora.rank > 0``).

    Raises WeightsError when the tree holds no adapters or the folder exists and is not empty.
    """
    from safetensors.numpy import save_file

    directory = pathlib.Path(directory)
    if not model_cfg.lora.rank:
        raise WeightsError("save_adapter: model.lora.rank is 0: this model has no adapters")
    adapters, base = adapter_params(params)
    if not adapters:
        raise WeightsError("save_adapter: the parameter tree holds no '...lora.a' / '...lora.b' leaves")
    if directory.exists() and any(directory.iterdir()):
        raise WeightsError(f"{directory} exists and is not empty; choose a new folder (nothing is overwritten)")
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: np.ascontiguousarray(np.asarray(jax.device_get(v))) for k, v in flatten(adapters)},
              str(directory / ADAPTER_TENSORS))
    base_cfg = dataclasses.replace(model_cfg, lora=LoRAConfig())
    meta = {"lora": dataclasses.asdict(model_cfg.lora), "base_model": dataclasses.asdict(base_cfg),
            "base_fingerprint": base_fingerprint(base)}
    (directory / ADAPTER_CONFIG).write_text(json.dumps(meta, indent=2) + "\n")
    return directory


def read_adapter_config(directory: str | pathlib.Path) -> tuple[LoRAConfig, ModelConfig, str]:
    """(the LoRA config, the base model's config, the base fingerprint) of an adapter folder."""
    directory = pathlib.Path(directory)
    path = directory / ADAPTER_CONFIG
    if not path.is_file() or not (directory / ADAPTER_TENSORS).is_file():
        raise WeightsError(f"{directory} is not an adapter folder (expected {ADAPTER_CONFIG} + {ADAPTER_TENSORS})")
    try:
        meta = json.loads(path.read_text())
        lora = dict(meta["lora"])
        lora["targets"] = tuple(lora["targets"])
        return (LoRAConfig(**lora), model_config_from_dict(meta["base_model"], source=str(path)),
                str(meta["base_fingerprint"]))
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise WeightsError(f"{path}: not an adapter config written by save_adapter ({e})") from None


def load_adapter(directory: str | pathlib.Path, base_cfg: ModelConfig, base_params: dict,
                 mesh: jax.sharding.Mesh, *, rules=DEFAULT_RULES, allow_other_base: bool = False
                 ) -> tuple[ModelConfig, dict]:
    """Loads an adapter folder for ``base_params`` (a model of ``base_cfg``, without adapters).

    Returns ``(model config with the adapter's LoRA settings, adapter tree on the mesh)``; combine it
    with the base (``lmforge.model.paths.combine``) and merge with that config's graphdef.

    Raises:
      WeightsError: not an adapter folder; an adapter for another architecture (the base configs
        differ: the field is named); for another base (fingerprints differ, unless allow_other_base).
    """
    from safetensors.numpy import load_file

    directory = pathlib.Path(directory)
    lora, saved_base, fingerprint = read_adapter_config(directory)
    plain = dataclasses.replace(base_cfg, lora=LoRAConfig())
    if saved_base != plain:
        diff = [f.name for f in dataclasses.fields(plain) if getattr(saved_base, f.name) != getattr(plain, f.name)]
        raise WeightsError(f"{directory} is an adapter for another architecture: the base differs in "
                           f"{', '.join(diff[:4])} ({diff[0]}: {getattr(saved_base, diff[0])!r} in the adapter, "
                           f"{getattr(plain, diff[0])!r} in this base)")
    if not allow_other_base and (got := base_fingerprint(base_params)) != fingerprint:
        raise WeightsError(f"{directory} was trained over another base (fingerprint {fingerprint}, this base "
                           f"{got}); pass allow_other_base=True to apply it anyway")
    cfg = dataclasses.replace(plain, lora=lora)
    _, abstract, _ = abstract_sharded(lambda: build_model(cfg, rngs=nnx.Rngs(0)), mesh, rules)
    wanted, _ = adapter_params(abstract)
    try:
        host = unflatten(load_file(str(directory / ADAPTER_TENSORS)))
    except Exception as e:  # safetensors raises its own error types for truncated/corrupt files
        raise WeightsError(f"{directory / ADAPTER_TENSORS}: not a readable safetensors file "
                           f"({str(e).splitlines()[0][:120]})") from None
    return cfg, place(host, wanted, what=str(directory))


def init_adapters(cfg: ModelConfig, mesh: jax.sharding.Mesh, *, rules=DEFAULT_RULES, seed: int = 0
                  ) -> tuple[dict, dict]:
    """Fresh adapters (A random, B zero) of ``cfg`` (``cfg.lora.rank > 0``), born sharded, without
    materialising a base: the jitted init returns the adapters only, so XLA drops the base's random
    init as dead code (a small model on CPU is drawn whole, op by op: ``model.sharding.eager_init``).
    Their values equal those of ``build_model(cfg, rngs=nnx.Rngs(seed))``'s adapters.

    Returns (adapter tree, its shardings).
    """
    if not cfg.lora.rank:
        raise WeightsError("init_adapters: model.lora.rank is 0")
    _, abstract, shardings = abstract_sharded(lambda: build_model(cfg, rngs=nnx.Rngs(seed)), mesh, rules)
    adapter_sh, _ = adapter_params(shardings)

    def init():
        with nnx.use_eager_sharding(False):
            return adapter_params(nnx.to_pure_dict(nnx.state(build_model(cfg, rngs=nnx.Rngs(seed)))))[0]
    # Op by op (a small model on CPU) the whole model is drawn: nbytes is the base's and the adapters'.
    return run_init(init, adapter_sh, mesh, nbytes=tree_nbytes(abstract)), adapter_sh


def load_adapters(directories: dict[str, str | pathlib.Path], base_cfg: ModelConfig, base_params: dict,
                  mesh: jax.sharding.Mesh, *, rules=DEFAULT_RULES) -> dict[str, tuple[ModelConfig, dict]]:
    """Several named adapters over one base: ``{name: (model config, adapter tree)}``."""
    return {name: load_adapter(d, base_cfg, base_params, mesh, rules=rules) for name, d in directories.items()}
