"""``lmforge convert SRC DST``: Hugging Face checkpoints in and out.

- SRC a ``transformers`` folder (``config.json`` with a ``model_type`` + ``*.safetensors``) → DST
  an lmforge model folder: ``model.json`` (the ModelConfig) + ``params.safetensors`` (lmforge's
  parameter names, e.g. ``blocks.0.attn.q``).
- SRC an lmforge run folder (the latest checkpoint of a ``lmforge run`` workdir) or model folder →
  DST a ``transformers`` folder that ``from_pretrained`` loads with the same logits.

DST must not exist or be empty: nothing already written is overwritten.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib

from .errors import ConfigError

MODEL_FILE, PARAMS_FILE = "model.json", "params.safetensors"


def add_convert_parser(sub) -> None:
    convert = sub.add_parser("convert", help="convert checkpoints to / from Hugging Face safetensors",
                             description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    convert.add_argument("src", metavar="SRC", help="a transformers folder, an lmforge run folder or model folder")
    convert.add_argument("dst", metavar="DST", help="the folder to write (must not exist, or be empty)")
    convert.set_defaults(handler=convert_cmd)


def convert_cmd(args: argparse.Namespace) -> int:
    src, dst = pathlib.Path(args.src), pathlib.Path(args.dst)
    if not src.is_dir():
        raise ConfigError(f"{src} is not a folder (expected a transformers folder, a run folder or a model folder)")
    if dst.exists() and any(dst.iterdir()):
        raise ConfigError(f"{dst} exists and is not empty; choose a new folder (nothing is overwritten)")
    kind = source_kind(src)
    if kind == "hf":
        cfg, tensors = from_hf(src, dst)
        print(f"imported {cfg.family} ({sum(t.size for t in tensors.values()) / 1e6:.2f}M parameters) -> {dst}")
    else:
        cfg = to_hf(src, dst, kind)
        print(f"exported {cfg.family} -> {dst} (transformers: {json.loads((dst / 'config.json').read_text())['architectures'][0]})")
    return 0


def source_kind(src: pathlib.Path) -> str:
    from .launch import CONFIG_FILE

    if (src / MODEL_FILE).is_file() and (src / PARAMS_FILE).is_file():
        return "model"
    if (src / CONFIG_FILE).is_file():
        try:
            config = json.loads((src / CONFIG_FILE).read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{src / CONFIG_FILE}: not valid JSON ({e.msg} at line {e.lineno})") from None
        if isinstance(config, dict) and "model_type" in config:
            return "hf"
        if (src / "checkpoints").is_dir():
            return "run"
    raise ConfigError(f"{src} is neither a transformers folder (config.json with model_type), an lmforge run folder "
                      f"(config.json + checkpoints/) nor a model folder ({MODEL_FILE} + {PARAMS_FILE})")


def from_hf(src: pathlib.Path, dst: pathlib.Path):
    import numpy as np
    from safetensors.numpy import save_file

    from lmforge.train.hf_interop import flatten, load_hf

    cfg, pure, unused = load_hf(src)
    if unused:
        print(f"not used: {len(unused)} tensors ({', '.join(sorted(unused)[:4])}{' ...' if len(unused) > 4 else ''})")
    tensors = {k: np.ascontiguousarray(v) for k, v in flatten(pure)}
    dst.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(dst / PARAMS_FILE))
    (dst / MODEL_FILE).write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
    return cfg, tensors


def load_model_folder(folder: pathlib.Path):
    """An lmforge model folder -> (ModelConfig, nested pure params of numpy arrays)."""
    from safetensors.numpy import load_file

    from lmforge.model import ModelConfig
    from lmforge.train.hf_interop import unflatten

    fields = json.loads((folder / MODEL_FILE).read_text())
    try:
        cfg = ModelConfig(**fields)
    except TypeError as e:
        raise ConfigError(f"{folder / MODEL_FILE}: {e}") from None
    return cfg, unflatten(load_file(str(folder / PARAMS_FILE)))


def to_hf(src: pathlib.Path, dst: pathlib.Path, kind: str):
    import jax

    from lmforge.train.hf_interop import save_hf

    if kind == "model":
        cfg, pure = load_model_folder(src)
    else:
        from .config_io import load_config
        from .launch import CONFIG_FILE
        from lmforge.train.pretrain import PretrainConfig, restore_params

        config = load_config(src / CONFIG_FILE)
        if not isinstance(config, PretrainConfig):
            raise ConfigError(f"{src} is a {type(config).__name__} run; only pretraining runs hold a model to export")
        cfg, _, params, _ = restore_params(src, config)
        pure = jax.device_get(params)
    save_hf(dst, cfg, pure)
    return cfg
