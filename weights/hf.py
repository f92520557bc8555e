"""Hugging Face interop: GPT-2, Llama (and Mistral, Qwen2, Qwen3, Mixtral), BERT and T5 weights in and out
through safetensors.

A Hugging Face model folder is ``config.json`` + ``model.safetensors`` (or sharded
``model-0000x-of-0000y.safetensors`` with an index), in the ``transformers`` tensor layout. This
module maps that layout to lmforge's parameter tree and back, without torch:

- :func:`config_from_hf` / :func:`config_to_hf`: ``config.json`` <-> :class:`ModelConfig`
  (weights/hf_config.py: every config field is honoured, refused or inert, in ``CONFIG_FIELDS``);
- :func:`params_from_hf` / :func:`params_to_hf`: tensor dict <-> lmforge's pure parameter dict
  (the nested dict of ``nnx.to_pure_dict``, lists keyed by int);
- :func:`load_hf` / :func:`save_hf`: folders; ``save_hf(..., tokenizer=)`` adds the tokenizer
  (weights/hf_tokenizer.py), its special ids and a ``generation_config.json``.

Choices:
- Hugging Face ``nn.Linear`` weights are (out, in); lmforge's are (in, out) with the head
  dimensions split out (``q``: (D, N, H), ``o``: (N, H, D)), so a tensor is transposed and reshaped;
  GPT-2's ``Conv1D`` is already (in, out), and its fused ``c_attn`` is split into q, k, v.
- Strict by default: a missing tensor, a tensor of the wrong shape, an unsupported architecture or
  config field is an error naming the tensor or field. Extra tensors (BERT's pooler, tied copies,
  rotary buffers) are listed in the returned ``unused`` set, never silently used; on export, an
  lmforge parameter with no place in the transformers model is an error, never dropped.
- GPT-2's attention-scale fields are folded into the query projection at import (hf_config.py).
- A model without biases (nanoGPT's ``bias=False``) exports with zero biases: exact.
- BERT checkpoints without the masked-LM head (``BertModel``, e.g. sentence encoders) import as
  ``lm_head=False`` models.
- Exported configs name the ``transformers`` class in ``architectures``; tied embeddings are not
  written twice (``transformers`` re-ties them on load).
- Mixtral's experts are stored one tensor per expert (``block_sparse_moe.experts.{j}.w1`` / ``w3`` /
  ``w2``: gate, up, down, (out, in) each), as transformers writes and the hub holds them; lmforge
  stacks them into (E, in, out) arrays. The fused layout transformers 5 keeps in memory
  (``mlp.experts.gate_up_proj`` (E, 2F, D), ``mlp.experts.down_proj`` (E, D, F), ``mlp.gate``) is
  read too. The router (``gate.weight``, (E, D)) is lmforge's ``moe.router`` (D, E).
- A decoder with a score head (``num_labels > 0``, a reward model) is ``GPT2ForSequenceClassification``
  / ``LlamaForSequenceClassification``: the trunk under the same prefix, ``score.weight`` in place of
  the LM head. transformers reads its score at the last token that is not ``pad_token_id``, lmforge at
  each row's last real token (``DecoderLM.scores``): the same token unless the pad id is also a token
  the rows end with (TRL sets pad = eos when a tokenizer has no pad); import and export say so on
  stderr when ``pad_token_id`` is eos or bos, or absent.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import pathlib
import types
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lmforge.model import ModelConfig, build_model
from lmforge.model.paths import flatten, unflatten
from lmforge.weights.folder import cast_tensors, not_json
from lmforge.weights.hf_config import (  # noqa: F401  (re-exported: the config half of the interop)
    CONFIG_FIELDS,
    FAMILIES,
    HF_ARCHITECTURES,
    INERT,
    HONOURED,
    REFUSED,
    Field,
    InteropError,
    check_fields,
    config_from_hf,
    config_to_hf,
    gpt2_query_scale,
    hf_model_type,
)


# --- the tensor map -------------------------------------------------------------------------------
# One entry: (Hugging Face name, lmforge path, transpose, n_in). lmforge's array is viewed as 2-D
# (prod(shape[:n_in]), rest) and, when `transpose`, is the transpose of the Hugging Face matrix;
# n_in=0 is a vector (bias, norm scale), n_in=None a table kept as is (embeddings).
Entry = tuple[str, str, bool, int | None]


def _linear(hf: str, ours: str, *, transpose: bool = True, n_in: int = 1, bias: bool = False) -> list[Entry]:
    """A projection: ``hf.weight`` -> ``ours.kernel`` (and ``hf.bias`` -> ``ours.bias``), a Dense module."""
    out = [(f"{hf}.weight", f"{ours}.kernel", transpose, n_in)]
    if bias:
        out.append((f"{hf}.bias", f"{ours}.bias", False, 0))
    return out


def _norm(hf: str, ours: str, *, bias: bool = True, weight: str = "weight") -> list[Entry]:
    return [(f"{hf}.{weight}", f"{ours}.scale", False, 0)] + ([(f"{hf}.bias", f"{ours}.bias", False, 0)] if bias else [])


def tensor_map(cfg: ModelConfig, *, hf_prefix: str = "") -> list[Entry]:
    """Every tensor of ``cfg``'s model, as (Hugging Face name, lmforge path, transpose, n_in)."""
    p, m = hf_prefix, []
    if cfg.family == "gpt2":
        m += [(f"{p}wte.weight", "embed", False, None), (f"{p}wpe.weight", "pos_embed", False, None)]
        for i in range(cfg.num_layers):
            h, o = f"{p}h.{i}", f"blocks.{i}"
            m += _norm(f"{h}.ln_1", f"{o}.attn_norm") + _norm(f"{h}.ln_2", f"{o}.mlp_norm")
            for x in "qkv":   # the three thirds of the fused c_attn (split in _gpt2_split)
                m += _linear(f"{h}.attn.c_attn_{x}", f"{o}.attn.{x}", transpose=False, bias=True)
            m += _linear(f"{h}.attn.c_proj", f"{o}.attn.o", transpose=False, n_in=2, bias=True)
            m += _linear(f"{h}.mlp.c_fc", f"{o}.mlp.up", transpose=False, bias=True)
            m += _linear(f"{h}.mlp.c_proj", f"{o}.mlp.down", transpose=False, bias=True)
        m += _norm(f"{p}ln_f", "final_norm")
        return m + _decoder_head(cfg)
    if cfg.family == "llama":
        m += [(f"{p}embed_tokens.weight", "embed", False, None)]
        for i in range(cfg.num_layers):
            h, o = f"{p}layers.{i}", f"blocks.{i}"
            m += _norm(f"{h}.input_layernorm", f"{o}.attn_norm", bias=False)
            m += _norm(f"{h}.post_attention_layernorm", f"{o}.mlp_norm", bias=False)
            b = cfg.use_bias   # attention_bias and mlp_bias (config_from_hf takes both or neither)
            for x in "qkv":   # (Qwen2: biases on these three alone, qkv_bias)
                m += _linear(f"{h}.self_attn.{x}_proj", f"{o}.attn.{x}", bias=b or cfg.qkv_bias)
            if cfg.qk_norm:   # Qwen3
                m += _norm(f"{h}.self_attn.q_norm", f"{o}.attn.q_norm", bias=False)
                m += _norm(f"{h}.self_attn.k_norm", f"{o}.attn.k_norm", bias=False)
            m += _linear(f"{h}.self_attn.o_proj", f"{o}.attn.o", n_in=2, bias=b)
            if cfg.num_experts:   # Mixtral: the router, and each expert kind stacked (see _mixtral_stack)
                m += [(f"{h}.block_sparse_moe.gate.weight", f"{o}.moe.router", True, 1)]
                m += [(f"{h}.block_sparse_moe.experts.{w}", f"{o}.moe.{ours}", False, None) for w, ours in _EXPERTS]
                continue
            for hf, ours in (("gate_proj", "gate"), ("up_proj", "up"), ("down_proj", "down")):
                m += _linear(f"{h}.mlp.{hf}", f"{o}.mlp.{ours}", bias=b)
        m += _norm(f"{p}norm", "final_norm", bias=False)
        return m + _decoder_head(cfg)
    if cfg.family == "bert":
        e = f"{p}embeddings"
        m += [(f"{e}.word_embeddings.weight", "embed.tokens", False, None),
              (f"{e}.position_embeddings.weight", "embed.positions", False, None),
              (f"{e}.token_type_embeddings.weight", "embed.types", False, None)] + _norm(f"{e}.LayerNorm", "embed_norm")
        for i in range(cfg.num_layers):
            h, o = f"{p}encoder.layer.{i}", f"layers.{i}"
            for hf, x in (("query", "q"), ("key", "k"), ("value", "v")):
                m += _linear(f"{h}.attention.self.{hf}", f"{o}.attn.{x}", bias=True)
            m += _linear(f"{h}.attention.output.dense", f"{o}.attn.o", n_in=2, bias=True)
            m += _norm(f"{h}.attention.output.LayerNorm", f"{o}.attn_norm")
            m += _linear(f"{h}.intermediate.dense", f"{o}.mlp.up", bias=True)
            m += _linear(f"{h}.output.dense", f"{o}.mlp.down", bias=True)
            m += _norm(f"{h}.output.LayerNorm", f"{o}.mlp_norm")
        if cfg.lm_head:
            m += _linear("cls.predictions.transform.dense", "head.dense", bias=True)
            m += _norm("cls.predictions.transform.LayerNorm", "head.norm")
            if cfg.tie_embeddings:
                m += [("cls.predictions.bias", "head.bias", False, 0)]
            else:   # transformers 5 unties the decoder's bias too, and reads that one
                m += [("cls.predictions.decoder.weight", "head.unembed", True, 1),
                      ("cls.predictions.decoder.bias", "head.bias", False, 0)]
        return m
    if cfg.family == "t5":
        m += [("shared.weight", "embed.tokens", False, None),
              ("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", "encoder_bias.table", False, None),
              ("decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", "decoder_bias.table", False, None)]
        gated = cfg.activation in ("geglu", "swiglu")
        ffn = ([("wi_0", "gate"), ("wi_1", "up")] if gated else [("wi", "up")]) + [("wo", "down")]
        for stack, layers, ours in (("encoder", cfg.num_layers, "encoder_layers"),
                                    ("decoder", cfg.decoder_layers, "decoder_layers")):
            for i in range(layers):
                h, o = f"{stack}.block.{i}.layer", f"{ours}.{i}"
                parts = [("SelfAttention", "attn", "attn_norm")]
                if stack == "decoder":
                    parts.append(("EncDecAttention", "cross_attn", "cross_norm"))
                for j, (hf, attn, norm) in enumerate(parts):
                    for x in "qkv":
                        m += _linear(f"{h}.{j}.{hf}.{x}", f"{o}.{attn}.{x}")
                    m += _linear(f"{h}.{j}.{hf}.o", f"{o}.{attn}.o", n_in=2)
                    m += _norm(f"{h}.{j}.layer_norm", f"{o}.{norm}", bias=False)
                j = len(parts)
                for hf, x in ffn:
                    m += _linear(f"{h}.{j}.DenseReluDense.{hf}", f"{o}.mlp.{x}")
                m += _norm(f"{h}.{j}.layer_norm", f"{o}.mlp_norm", bias=False)
            m += _norm(f"{stack}.final_layer_norm", f"{ours[:7]}_norm", bias=False)
        return m + ([] if cfg.tie_embeddings else [("lm_head.weight", "unembed", True, 1)])
    raise InteropError(f"model.family={cfg.family!r} has no transformers counterpart; expected one of "
                       f"{list(FAMILIES)}")


def _decoder_head(cfg: ModelConfig) -> list[Entry]:
    """A decoder's output layer: the score head of ``*ForSequenceClassification`` (``score.weight``
    (num_labels, D), no bias), an untied ``lm_head``, or nothing (tied to the token table)."""
    if cfg.num_labels:
        return [("score.weight", "score", True, 1)]
    return [] if cfg.tie_embeddings else [("lm_head.weight", "unembed", True, 1)]


def _hf_prefix(cfg: ModelConfig, names) -> str:
    """The base-model prefix the checkpoint uses ('transformer.' / 'model.' / 'bert.' or none)."""
    names = set(names)
    first = tensor_map(cfg)[0][0]
    for prefix in {"gpt2": ("transformer.", ""), "llama": ("model.", ""), "bert": ("bert.", "")}.get(cfg.family, ("",)):
        if prefix + first in names:
            return prefix
    return {"gpt2": "transformer.", "llama": "model.", "bert": "bert."}.get(cfg.family, "")


# Mixtral's expert weights: (file name, lmforge's MoE parameter). w1 is the gate (activated), w3 the up
# projection, w2 the down projection; each expert's is an nn.Linear weight, (out, in).
_EXPERTS = (("w1", "gate"), ("w3", "up"), ("w2", "down"))


def _mixtral_stack(tensors: dict, cfg: ModelConfig, prefix: str) -> dict:
    """Per-expert Mixtral tensors (or transformers 5's fused ones) -> one ``...experts.w1`` / ``w3`` / ``w2``
    array per layer in lmforge's layout: (E, D, F) for w1 / w3, (E, F, D) for w2. Raises InteropError
    naming the first missing or misshapen tensor."""
    out, (e, d, f) = dict(tensors), (cfg.num_experts, cfg.embed_dim, cfg.mlp_dim)
    for i in range(cfg.num_layers):
        h = f"{prefix}layers.{i}"
        fused = f"{h}.mlp.experts.gate_up_proj"
        if fused in out and f"{h}.block_sparse_moe.experts.0.w1.weight" not in out:   # transformers 5's layout
            gate_up, down = _shaped(out, fused, (e, 2 * f, d)), _shaped(out, f"{h}.mlp.experts.down_proj", (e, d, f))
            out[f"{h}.block_sparse_moe.experts.w1"] = gate_up[:, :f].transpose(0, 2, 1)
            out[f"{h}.block_sparse_moe.experts.w3"] = gate_up[:, f:].transpose(0, 2, 1)
            out[f"{h}.block_sparse_moe.experts.w2"] = down.transpose(0, 2, 1)
            if f"{h}.mlp.gate.weight" in out:
                out[f"{h}.block_sparse_moe.gate.weight"] = out.pop(f"{h}.mlp.gate.weight")
            continue
        for w, _ in _EXPERTS:
            shape = (d, f) if w == "w2" else (f, d)
            out[f"{h}.block_sparse_moe.experts.{w}"] = np.stack(
                [_shaped(out, f"{h}.block_sparse_moe.experts.{j}.{w}.weight", shape).T for j in range(e)])
    return out


def _shaped(tensors: dict, name: str, shape: tuple) -> np.ndarray:
    """``tensors[name]`` popped, checked to be ``shape``; InteropError naming it otherwise."""
    if name not in tensors:
        raise InteropError(f"checkpoint has no tensor {name!r} (a Mixtral expert weight, {shape})")
    x = np.asarray(tensors.pop(name), np.float32)
    if x.shape != shape:
        raise InteropError(f"tensor {name!r} has shape {x.shape}; expected {shape}")
    return x


def _mixtral_unstack(tensors: dict, cfg: ModelConfig) -> dict:
    """The inverse of :func:`_mixtral_stack`: one (out, in) tensor per expert, as transformers saves them."""
    out = dict(tensors)
    for i in range(cfg.num_layers):
        for w, _ in _EXPERTS:
            stacked = out.pop(f"model.layers.{i}.block_sparse_moe.experts.{w}")
            for j in range(cfg.num_experts):
                out[f"model.layers.{i}.block_sparse_moe.experts.{j}.{w}.weight"] = np.ascontiguousarray(stacked[j].T)
    return out


def _gpt2_split(tensors: dict, cfg: ModelConfig, prefix: str) -> dict:
    out = dict(tensors)
    for i in range(cfg.num_layers):
        for kind in ("weight", "bias"):
            name = f"{prefix}h.{i}.attn.c_attn.{kind}"
            if name in out:
                for x, part in zip("qkv", np.split(out.pop(name), 3, axis=-1)):
                    out[f"{prefix}h.{i}.attn.c_attn_{x}.{kind}"] = part
    return out


def _gpt2_fuse(tensors: dict, cfg: ModelConfig) -> dict:
    out = dict(tensors)
    for i in range(cfg.num_layers):
        for kind in ("weight", "bias"):
            parts = [out.pop(f"transformer.h.{i}.attn.c_attn_{x}.{kind}") for x in "qkv"]
            out[f"transformer.h.{i}.attn.c_attn.{kind}"] = np.concatenate(parts, axis=-1)
    return out


def params_from_hf(cfg: ModelConfig, tensors: dict[str, np.ndarray], shapes: dict[str, tuple]) -> tuple[dict, set]:
    """HF tensors -> (flat {lmforge path: float32 array}, unused HF names). ``shapes`` are lmforge's."""
    prefix = _hf_prefix(cfg, tensors)
    if cfg.family == "gpt2":
        tensors = _gpt2_split(tensors, cfg, prefix)
    if cfg.num_experts:
        tensors = _mixtral_stack(tensors, cfg, prefix)
    if (cfg.family == "bert" and not cfg.tie_embeddings and "cls.predictions.decoder.bias" not in tensors
            and "cls.predictions.bias" in tensors):   # transformers 4 kept one bias for both
        tensors = {**tensors, "cls.predictions.decoder.bias": tensors.pop("cls.predictions.bias")}
    if cfg.family == "t5" and "shared.weight" not in tensors and "encoder.embed_tokens.weight" in tensors:
        tensors = {**tensors, "shared.weight": tensors["encoder.embed_tokens.weight"]}
    flat, used = {}, set()
    for name, ours, transpose, n_in in tensor_map(cfg, hf_prefix=prefix):
        if name not in tensors:
            raise InteropError(f"checkpoint has no tensor {name!r} (needed for lmforge parameter {ours!r})")
        x = np.asarray(tensors[name], np.float32)
        want = shapes[ours]
        if transpose:
            x = x.T
        if x.size != math.prod(want) or (x.ndim == 2 and n_in and x.shape[0] != math.prod(want[:n_in])):
            raise InteropError(f"tensor {name!r} has shape {tuple(tensors[name].shape)}; lmforge parameter {ours!r} "
                               f"of shape {tuple(want)} expects {_hf_shape(want, transpose, n_in)}")
        flat[ours] = x.reshape(want)
        used.add(name)
    missing = sorted(set(shapes) - set(flat))
    if missing:
        raise InteropError(f"the tensor map leaves lmforge parameters {missing[:4]} unset")
    return flat, set(tensors) - used


def _hf_shape(shape, transpose, n_in):
    if n_in is None:      # embedding tables: the same (rows, D) layout on both sides
        return tuple(shape)
    if not n_in:
        return (math.prod(shape),)
    rows, cols = math.prod(shape[:n_in]), math.prod(shape[n_in:])
    return (cols, rows) if transpose else (rows, cols)


def params_to_hf(cfg: ModelConfig, flat: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Flat {lmforge path: array} -> HF tensors (float32, contiguous), in the LM-head layout."""
    prefix = {"gpt2": "transformer.", "llama": "model.", "bert": "bert." if cfg.lm_head else ""}.get(cfg.family, "")
    out, entries = {}, tensor_map(cfg, hf_prefix=prefix)
    left = sorted(set(flat) - {ours for _, ours, _, _ in entries})
    if left:   # a parameter transformers' model has no place for would be dropped without a word
        raise InteropError(f"lmforge parameters {left[:4]}{' ...' if len(left) > 4 else ''} have no tensor in "
                           f"{HF_ARCHITECTURES[hf_model_type(cfg)]}")
    for hf, ours, transpose, n_in in entries:
        if ours not in flat and ours.endswith(".bias") and not cfg.use_bias:
            x = _zero_bias(flat, ours)   # GPT-2 without biases (nanoGPT's bias=False): zeros are exact
        else:
            x = np.asarray(flat[ours], np.float32)
        x = x.reshape(_hf_shape(x.shape, False, n_in))
        out[hf] = np.ascontiguousarray(x.T if transpose else x)
    if cfg.family == "gpt2":
        out = _gpt2_fuse(out, cfg)
    if cfg.num_experts:
        out = _mixtral_unstack(out, cfg)
    if cfg.family == "t5" and cfg.tie_embeddings and not cfg.output_scale:
        out["lm_head.weight"] = out["shared.weight"]   # transformers 4 would untie; 5 reads it back tied
    if cfg.family == "bert" and cfg.lm_head and not cfg.tie_embeddings:   # 4 reads this one, 5 the decoder's
        out["cls.predictions.bias"] = out["cls.predictions.decoder.bias"]
    return out


def _zero_bias(flat: dict, path: str) -> np.ndarray:
    """Zeros shaped like the bias ``path`` would have: a norm's scale, or a projection's output axes."""
    owner = path[:-len(".bias")]
    if f"{owner}.scale" in flat:
        return np.zeros(np.shape(flat[f"{owner}.scale"]), np.float32)
    kernel = np.shape(flat[f"{owner}.kernel"])
    n_in = 2 if owner.endswith("attn.o") else 1
    return np.zeros(kernel[n_in:], np.float32)


# --- folders --------------------------------------------------------------------------------------
INDEX_FILE = "model.safetensors.index.json"


def read_safetensors(folder: pathlib.Path) -> dict[str, np.ndarray]:
    """All tensors of a HF folder as numpy arrays: with ``model.safetensors.index.json``, exactly the shard
    files its ``weight_map`` names (a missing shard is an error naming it and a tensor it holds; stray
    ``*.safetensors`` beside them are not read); without one, every ``*.safetensors`` file."""
    from safetensors.numpy import load_file

    index = folder / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            shards = sorted(set(weight_map.values()))
        except json.JSONDecodeError as e:
            raise InteropError(not_json(index, e, 'a JSON object with a "weight_map" of tensor -> shard file')) from None
        except (KeyError, TypeError, AttributeError):
            raise InteropError(f'{index}: expected a JSON object with a "weight_map" of tensor -> shard file') from None
        missing = [f for f in shards if not (folder / f).is_file()]
        if missing:
            tensor = next(t for t, f in weight_map.items() if f == missing[0])
            raise InteropError(f"{index} maps {tensor} (and others) to {missing[0]}, which is missing from {folder}"
                               + (f" (and {len(missing) - 1} more shard(s))" if len(missing) > 1 else ""))
        files = [folder / f for f in shards]
    else:
        files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise InteropError(f"{folder} holds no *.safetensors file (a transformers model folder has model.safetensors)")
    tensors = {}
    for f in files:
        try:
            tensors.update(load_file(str(f)))
        except Exception as e:  # safetensors raises its own error types for truncated/corrupt files
            raise InteropError(f"{f}: not a readable safetensors file ({str(e).splitlines()[0][:120]})") from None
    return tensors


def is_transformers_config(path: pathlib.Path) -> bool:
    """Whether ``path`` is a transformers ``config.json`` (a JSON object with ``model_type``), not a
    run's resolved config; False for a missing or unreadable file."""
    try:
        fields = json.loads(pathlib.Path(path).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(fields, dict) and "model_type" in fields


def read_hf_config(folder: pathlib.Path) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise InteropError(f"{folder} has no config.json (expected a transformers model folder)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise InteropError(not_json(path, e, "a JSON object: the transformers model's config")) from None


def load_hf(folder, *, model_cfg: ModelConfig | None = None) -> tuple[ModelConfig, dict, set]:
    """A transformers folder -> (ModelConfig, nested pure param dict of numpy float32, unused tensor names).

    ``model_cfg``: the model to read the tensors into, instead of the one ``config.json`` describes
    (the config is then not read at all)."""
    folder = pathlib.Path(folder)
    hf = read_hf_config(folder) if model_cfg is None else {}
    cfg = model_cfg or config_from_hf(hf)
    tensors = read_safetensors(folder)
    if model_cfg is None and cfg.family == "t5" and "lm_head.weight" in tensors:
        cfg = dataclasses.replace(cfg, tie_embeddings=False)
    plain = dataclasses.replace(cfg, scan_layers=False, remat="none")
    flat, unused = params_from_hf(plain, tensors, param_shapes(plain))
    if cfg.family == "gpt2" and hf:
        _fold_query_scale(flat, hf, cfg)
    if cfg.num_labels:
        _note_classifier_pad(folder, hf)
    if hf and cfg.max_seq_len < (hf.get("max_position_embeddings") or cfg.max_seq_len):   # a sliding window
        import sys
        print(f"lmforge: {folder}: sliding_window={hf.get('sliding_window')} caps the context at max_seq_len="
              f"{cfg.max_seq_len} (max_position_embeddings={hf['max_position_embeddings']}): within it, sliding "
              f"attention is full causal attention", file=sys.stderr, flush=True)
    if cfg.scan_layers:
        flat = _stack_layers(flat, cfg.num_layers)
    return cfg, unflatten(flat), unused


def _note_classifier_pad(folder: pathlib.Path, ids: Mapping) -> None:
    """Says on stderr where transformers will read a sequence classifier's score differently from lmforge:
    a ``pad_token_id`` that is also eos or bos (a row ending in eos is read one token earlier), or none
    (transformers then scores one sequence per call)."""
    import sys

    pad = ids.get("pad_token_id")
    same = [k for k in ("eos_token_id", "bos_token_id") if pad is not None and ids.get(k) == pad]
    if same or pad is None:
        why = (f"pad_token_id={pad} is also {same[0].removesuffix('_token_id')}: transformers reads the score at the "
               f"last token that is not {pad}, lmforge at each row's last real token, so rows that end with it are "
               f"read at different tokens" if same else
               "no pad_token_id: transformers scores one unpadded sequence per call (it finds the last token by it)")
        print(f"lmforge: {folder}: reward model: {why}", file=sys.stderr, flush=True)


def _fold_query_scale(flat: dict, hf: dict, cfg: ModelConfig) -> None:
    """GPT-2's attention-logit scale (scale_attn_weights, scale_attn_by_inverse_layer_idx) relative to
    lmforge's 1/sqrt(H), folded into each layer's query kernel and bias: q.k is linear in q."""
    for i in range(cfg.num_layers):
        factor = np.float32(gpt2_query_scale(hf, i, cfg.dims_per_head))
        if factor != 1:
            for kind in ("kernel", "bias"):
                if f"blocks.{i}.attn.q.{kind}" in flat:
                    flat[f"blocks.{i}.attn.q.{kind}"] = flat[f"blocks.{i}.attn.q.{kind}"] * factor


def save_hf(folder, cfg: ModelConfig, pure: dict, *, tokenizer_dir=None, dtype: str = "float32") -> pathlib.Path:
    """Writes ``config.json`` + ``model.safetensors`` that ``transformers`` loads with ``from_pretrained``.

    ``pure``: the nested parameter dict (``nnx.to_pure_dict``; the train state's ``params``).
    ``dtype``: the tensors' dtype, ``config.json``'s ``dtype`` too (float32, bfloat16 or float16;
    :func:`lmforge.weights.folder.cast_tensors`: a float16 export refuses weights past its range).
    ``tokenizer_dir``: the model's tokenizer folder (a run's ``RUN/tokenizer``); when given, the folder
    also gets ``tokenizer.json`` / ``tokenizer_config.json`` (weights/hf_tokenizer.py), the special ids
    in ``config.json``, and a ``generation_config.json`` that stops at eos and never picks the padded
    vocabulary rows (ids >= the tokenizer's size), as lmforge's sampler does."""
    from safetensors.numpy import save_file

    folder = pathlib.Path(folder)
    config = config_to_hf(cfg)
    flat = {k: np.asarray(v) for k, v in flatten(pure)}
    if cfg.scan_layers:   # stacked (L, ...) block parameters -> one entry per layer
        flat = _unstack_layers(flat, cfg.num_layers)
    tensors = cast_tensors(params_to_hf(cfg, flat), dtype)   # before anything is written: float16 may refuse
    config["dtype"] = dtype
    folder.mkdir(parents=True, exist_ok=True)
    if tokenizer_dir is not None:
        from lmforge.data.tokenizer import load_tokenizer
        from lmforge.weights.hf_tokenizer import save_hf_tokenizer

        tokenizer = load_tokenizer(tokenizer_dir)
        if tokenizer.vocab_size > cfg.vocab_size:
            raise InteropError(f"{tokenizer_dir}: the tokenizer has {tokenizer.vocab_size} ids but the model only "
                               f"{cfg.vocab_size} rows")
        ids = save_hf_tokenizer(folder, tokenizer, tokenizer_dir, architecture=cfg.architecture,
                                max_length=None if cfg.family == "t5" else cfg.max_seq_len)
        carried = getattr(tokenizer, "generation_config", None) or {}   # a transformers source's, kept by its tokenizer
        if ids["bos_token_id"] is None and isinstance(carried.get("bos_token_id"), int):
            ids["bos_token_id"] = carried["bos_token_id"]
        config.update(ids)
        generation = _generation_config(carried, ids)
        if cfg.architecture == "encoder_decoder":   # lmforge's sampler starts the decoder at bos
            config["decoder_start_token_id"] = generation["decoder_start_token_id"] = ids["bos_token_id"]
        if cfg.num_labels:
            _note_classifier_pad(folder, ids)
        if tokenizer.vocab_size < cfg.vocab_size:
            padded = range(tokenizer.vocab_size, cfg.vocab_size)
            generation["suppress_tokens"] = sorted({*generation.get("suppress_tokens", ()), *padded})
        if cfg.architecture != "encoder" and not cfg.num_labels:   # encoders and reward models do not generate
            (folder / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
        else:
            (folder / "generation_config.json").unlink(missing_ok=True)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return folder


def _generation_config(carried: Mapping, ids: Mapping) -> dict:
    """The exported ``generation_config.json``: the source model's (``carried``: its stop ids and sampling
    defaults, when it came from transformers) with the tokenizer's special ``ids`` over it, eos joined
    to the source's stop ids (Qwen2.5 stops at ``<|im_end|>`` and ``<|endoftext|>``)."""
    out = {k: v for k, v in carried.items() if k not in ("transformers_version", "_from_model_config")}
    stops = carried.get("eos_token_id")
    stops = [stops] if isinstance(stops, int) else list(stops or [])
    out.update({k: v for k, v in ids.items() if v is not None or k not in out})
    if ids["eos_token_id"] is not None and stops:
        joined = list(dict.fromkeys([ids["eos_token_id"], *stops]))
        out["eos_token_id"] = joined[0] if len(joined) == 1 else joined
    return out


def _stack_layers(flat: dict, num_layers: int) -> dict:
    out = {k: v for k, v in flat.items() if not k.startswith("blocks.")}
    for key in {k.split(".", 2)[2] for k in flat if k.startswith("blocks.")}:
        out[f"blocks.{key}"] = np.stack([flat[f"blocks.{i}.{key}"] for i in range(num_layers)])
    return out


def _unstack_layers(flat: dict, num_layers: int) -> dict:
    out = {k: v for k, v in flat.items() if not k.startswith("blocks.")}
    for key, value in flat.items():
        if key.startswith("blocks."):
            for i in range(num_layers):
                out[f"blocks.{i}.{key[7:]}"] = value[i]
    return out


@functools.lru_cache(maxsize=32)
def param_shapes(cfg: ModelConfig) -> Mapping[str, tuple]:
    """{lmforge parameter path: shape} of ``cfg``'s model (traced once per config: tracing a model costs
    about as much as reading a small checkpoint)."""
    _, state = abstract_model(cfg)
    return types.MappingProxyType({k: tuple(v.shape) for k, v in flatten(nnx.to_pure_dict(state))})


def abstract_model(cfg: ModelConfig):
    """(graphdef, abstract parameter state) of ``cfg``'s model: shapes only, no memory, no mesh needed."""
    with nnx.use_eager_sharding(False), jax.sharding.use_abstract_mesh(jax.sharding.AbstractMesh((), ())):
        return nnx.split(nnx.eval_shape(lambda: build_model(cfg, rngs=nnx.Rngs(0))))


def merge_params(cfg: ModelConfig, pure: dict):
    """The NNX model of ``cfg`` holding the parameters ``pure`` (e.g. from :func:`load_hf`), unsharded."""
    graphdef, state = abstract_model(cfg)
    nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, pure))
    return nnx.merge(graphdef, state)
