"""``lmforge convert SRC DST``: Hugging Face checkpoints in and out.

- SRC a ``transformers`` folder (``config.json`` with a ``model_type`` + ``*.safetensors``) → DST
  an lmforge model folder: ``model.json`` (the ModelConfig) + ``params.safetensors`` (lmforge's
  parameter names, e.g. ``blocks.0.attn.q.kernel``).
- SRC an lmforge run folder (the latest checkpoint of a ``lmforge run`` workdir: pretraining, SFT,
  or LoRA, whose adapters are merged into its base's weights) or model folder →
  DST a ``transformers`` folder that ``from_pretrained`` loads with the same logits, with the run's
  tokenizer (``RUN/tokenizer``, or a model folder's ``tokenizer/``) as ``tokenizer.json`` that
  ``AutoTokenizer`` loads, its bos/eos/pad ids in ``config.json`` and ``generation_config.json``.
  The weights are read as ``lmforge eval`` reads them (``load_params``): tensors that do not fit
  ``model.json`` (a name or shape) are refused in one line before anything is written.
- Either way the tokenizer that eval and sample read (``tokenizer/``, or a transformers folder's
  ``tokenizer.json`` or SentencePiece ``tokenizer.model``) travels with the weights; without one,
  DST has the weights only (said on stdout).

- ``--dtype`` the written tensors' dtype: float32 (default, lossless for any source), bfloat16 (half
  the bytes; lossless for a bf16 source, which most hub checkpoints are) or float16 (refused for
  weights past its range). An exported ``config.json`` names it (``dtype``), so ``from_pretrained``
  loads it so; an imported model folder is cast back to the model's ``param_dtype`` when read.

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
    convert.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                         help="the written tensors' dtype (default float32; bfloat16 halves the folder)")
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
    from lmforge.weights.folder import DtypeRangeError

    kind = source_kind(src)
    try:
        if kind == "hf":
            cfg, tensors = from_hf(src, dst, args.dtype)
        else:
            cfg = to_hf(src, dst, kind, args.dtype)
    except DtypeRangeError as e:   # said before anything is written
        raise ConfigError(f"--dtype {args.dtype}: {e}") from None
    if kind == "hf":
        model_type = json.loads((src / "config.json").read_text()).get("model_type")
        as_family = "" if model_type == cfg.family else f" as an lmforge {cfg.family}"
        print(f"imported {model_type}{as_family} ({sum(t.size for t in tensors.values()) / 1e6:.2f}M parameters) "
              f"-> {dst}")
    else:
        print(f"exported {cfg.family} -> {dst} (transformers: {json.loads((dst / 'config.json').read_text())['architectures'][0]})")
    return 0


def source_kind(src: pathlib.Path) -> str:
    from lmforge.weights import WeightsError, source_kind as kind_of

    try:
        return kind_of(src)
    except WeightsError as e:
        raise ConfigError(str(e)) from None


def from_hf(src: pathlib.Path, dst: pathlib.Path, dtype: str = "float32"):
    import numpy as np

    from lmforge.data import load_tokenizer
    from lmforge.model.paths import flatten
    from lmforge.weights import save_model_folder
    from lmforge.weights.hf import load_hf

    cfg, pure, unused = load_hf(src)
    if unused:
        print(f"not used: {len(unused)} tensors ({', '.join(sorted(unused)[:4])}{' ...' if len(unused) > 4 else ''})")
    tok_dir = _tokenizer_dir(src)   # the model's own tokenizer (and chat template) travels with it
    tok = None if tok_dir is None else load_tokenizer(tok_dir)   # read before anything is written
    save_model_folder(dst, cfg, pure, dtype=dtype)
    if tok is not None:
        tok.save(dst / "tokenizer")
    else:
        print(f"no tokenizer in {src} (tokenizer.json or tokenizer.model): {dst} has the weights only")
    return cfg, {k: np.asarray(v) for k, v in flatten(pure)}


def _tokenizer_dir(src: pathlib.Path) -> pathlib.Path | None:
    """Where ``src`` keeps its tokenizer (``lmforge.data.tokenizer.tokenizer_dir``: ``src/tokenizer/``, else
    ``src`` with a ``tokenizer.json`` or SentencePiece ``tokenizer.model``), as eval and sample read it; None
    without one."""
    from lmforge.data.tokenizer import tokenizer_dir

    try:
        return tokenizer_dir(src)
    except ValueError:
        return None


def to_hf(src: pathlib.Path, dst: pathlib.Path, kind: str, dtype: str = "float32"):
    from lmforge.weights.hf import save_hf

    cfg, pure = _read_weights(src, kind)
    if cfg.lora.rank:   # a model with adapters exports merged (transformers has no such module)
        from lmforge.model import lora

        cfg, pure = dataclasses.replace(cfg, lora=dataclasses.replace(cfg.lora, rank=0)), lora.merge(pure, cfg.lora)
    if cfg.num_experts and cfg.moe_capacity_factor:   # transformers' Mixtral never drops a token
        print(f"{src}: trained with expert capacity (model.moe_capacity_factor={cfg.moe_capacity_factor}); exported "
              f"as the same weights routed dropless, as transformers' Mixtral runs them (no token passes on the "
              f"residual alone; one-token decoding was never dropped)")
        cfg = dataclasses.replace(cfg, moe_capacity_factor=0.0)
    tok_dir = _tokenizer_dir(src)
    save_hf(dst, cfg, pure, tokenizer_dir=tok_dir, dtype=dtype)
    if tok_dir is None:
        print(f"no tokenizer in {src} (expected {src / 'tokenizer'}/): {dst} has the weights only")
    return cfg


def _read_weights(src: pathlib.Path, kind: str):
    """(ModelConfig, host parameters) of a run or model folder, read by ``lmforge.weights.load_params`` as
    ``lmforge eval`` and ``sample`` read them: every tensor is checked against the model's config (names and
    shapes; a one-line WeightsError), so an export never writes weights its config.json does not describe.
    A run's tokenizer is not needed, except by a run from before ``model.json`` (its vocabulary size)."""
    import jax

    from lmforge.train.mesh import MeshConfig, make_mesh
    from lmforge.weights import load_params

    mesh_cfg = MeshConfig()
    if kind == "run":   # a run (pretraining, SFT, LoRA over its base.json)
        from .eval_cmd import check_source, load_sampler

        run_kind, config = check_source(src, command="convert", tokenizer=False)
        if run_kind == "run" and not (src / "model.json").is_file():   # the model from config.json + the tokenizer
            sampler = load_sampler(src, run_kind, config, generates=False)
            return sampler.model_cfg, jax.device_get(sampler.params)
        if run_kind == "run":   # a pretraining run's own mesh: an FSDP run exports with FSDP
            mesh_cfg = config.mesh
    loaded = load_params(src, make_mesh(mesh_cfg), rules=mesh_cfg.rules)
    return loaded.cfg, jax.device_get(loaded.params)
