"""``lmforge convert SRC DST``: Hugging Face checkpoints in and out.

- SRC a ``transformers`` folder (``config.json`` with a ``model_type`` + ``*.safetensors``) → DST
  an lmforge model folder: ``model.json`` (the ModelConfig) + ``params.safetensors`` (lmforge's
  parameter names, e.g. ``blocks.0.attn.q.kernel``).
- SRC an lmforge run folder (the latest checkpoint of a ``lmforge run`` workdir: pretraining, SFT,
  or LoRA, whose adapters are merged into its base's weights) or model folder →
  DST a ``transformers`` folder that ``from_pretrained`` loads with the same logits, with the run's
  tokenizer (``RUN/tokenizer``, or a model folder's ``tokenizer/``) as ``tokenizer.json`` that
  ``AutoTokenizer`` loads, its bos/eos/pad ids in ``config.json`` and ``generation_config.json``.

DST must not exist or be empty: nothing already written is overwritten.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib

from .errors import ConfigError



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
    if dst.exists() and not dst.is_dir():
        raise ConfigError(f"{dst} is a file; expected a new or empty folder for the converted model")
    if dst.exists() and any(dst.iterdir()):
        raise ConfigError(f"{dst} exists and is not empty; choose a new folder (nothing is overwritten)")
    blocking = next((d for d in dst.absolute().parents if d.exists()), None)
    if blocking is not None and not blocking.is_dir():
        raise ConfigError(f"{dst}: {blocking} is a file, not a folder")
    kind = source_kind(src)
    if kind == "hf":
        cfg, tensors = from_hf(src, dst)
        print(f"imported {cfg.family} ({sum(t.size for t in tensors.values()) / 1e6:.2f}M parameters) -> {dst}")
    else:
        cfg = to_hf(src, dst, kind)
        print(f"exported {cfg.family} -> {dst} (transformers: {json.loads((dst / 'config.json').read_text())['architectures'][0]})")
    return 0


def source_kind(src: pathlib.Path) -> str:
    from lmforge.weights import WeightsError, source_kind as kind_of

    try:
        return kind_of(src)
    except WeightsError as e:
        raise ConfigError(str(e)) from None


def from_hf(src: pathlib.Path, dst: pathlib.Path):
    import numpy as np

    from lmforge.model.paths import flatten
    from lmforge.weights import save_model_folder
    from lmforge.weights.hf import load_hf

    cfg, pure, unused = load_hf(src)
    if unused:
        print(f"not used: {len(unused)} tensors ({', '.join(sorted(unused)[:4])}{' ...' if len(unused) > 4 else ''})")
    save_model_folder(dst, cfg, pure)
    if (src / "tokenizer.json").is_file():   # the model's own tokenizer (and chat template) travels with it
        from lmforge.data import load_tokenizer
        load_tokenizer(src).save(dst / "tokenizer")
    else:
        print(f"no tokenizer.json in {src}: {dst} has the weights only")
    return cfg, {k: np.asarray(v) for k, v in flatten(pure)}


def to_hf(src: pathlib.Path, dst: pathlib.Path, kind: str):
    import jax

    from lmforge.weights import read_model_folder
    from lmforge.weights.hf import save_hf

    if kind == "model":
        cfg, pure = read_model_folder(src)
    else:   # a run (pretraining, SFT, LoRA over its base.json): read as `lmforge sample` and `eval` read it
        from .eval_cmd import check_source, load_sampler

        sampler = load_sampler(src, *check_source(src, command="convert"), generates=False)
        cfg, pure = sampler.model_cfg, jax.device_get(sampler.params)
    if cfg.lora.rank:   # a model with adapters exports merged (transformers has no such module)
        from lmforge.model import lora

        cfg, pure = dataclasses.replace(cfg, lora=dataclasses.replace(cfg.lora, rank=0)), lora.merge(pure, cfg.lora)
    tok_dir = src / "tokenizer"
    save_hf(dst, cfg, pure, tokenizer_dir=tok_dir if tok_dir.is_dir() else None)
    if not tok_dir.is_dir():
        print(f"no tokenizer in {src} ({tok_dir} is absent): {dst} has the weights only")
    return cfg
