"""Hugging Face interop: GPT-2, Llama, BERT and T5 weights in and out through safetensors.

A Hugging Face model folder is ``config.json`` + ``model.safetensors`` (or sharded
``model-0000x-of-0000y.safetensors`` with an index), in the ``transformers`` tensor layout. This
module maps that layout to lmforge's parameter tree and back, without torch:

- :func:`config_from_hf` / :func:`config_to_hf`: ``config.json`` <-> :class:`ModelConfig`;
- :func:`params_from_hf` / :func:`params_to_hf`: tensor dict <-> lmforge's pure parameter dict
  (the nested dict of ``nnx.to_pure_dict``, lists keyed by int);
- :func:`load_hf` / :func:`save_hf`: folders.

Choices:
- Hugging Face ``nn.Linear`` weights are (out, in); lmforge's are (in, out) with the head
  dimensions split out (``q``: (D, N, H), ``o``: (N, H, D)), so a tensor is transposed and reshaped;
  GPT-2's ``Conv1D`` is already (in, out), and its fused ``c_attn`` is split into q, k, v.
- Strict by default: a missing tensor, a tensor of the wrong shape or an unsupported architecture is
  an error naming the tensor or field. Extra tensors (BERT's pooler, tied copies, rotary buffers)
  are listed in the returned ``unused`` set, never silently used.
- BERT checkpoints without the masked-LM head (``BertModel``, e.g. sentence encoders) import as
  ``lm_head=False`` models.
- Exported configs name the ``transformers`` class in ``architectures``; tied embeddings are not
  written twice (``transformers`` re-ties them on load).
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lmforge.model import ModelConfig, build_model

HF_ARCHITECTURES = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM", "bert": "BertForMaskedLM",
                    "t5": "T5ForConditionalGeneration"}
_MODEL_TYPES = {"gpt2": "gpt2", "llama": "llama", "bert": "bert", "t5": "t5"}
_BERT_ACT = {"gelu": "gelu_exact", "gelu_new": "gelu", "gelu_pytorch_tanh": "gelu", "relu": "relu"}


class InteropError(ValueError):
    """A Hugging Face folder or tensor that does not fit the expected layout."""


# --- configs ------------------------------------------------------------------------------------
def config_from_hf(hf: dict) -> ModelConfig:
    """A ``transformers`` config dict -> ModelConfig (float32, no dropout: for inference and fine-tuning)."""
    kind = hf.get("model_type")
    get = lambda key, default=None: hf.get(key, default)  # noqa: E731

    def need(key):
        if key not in hf:
            raise InteropError(f"config.json of a {kind} model has no field {key!r}")
        return hf[key]
    if kind == "gpt2":
        act = get("activation_function", "gelu_new")
        if act not in ("gelu_new", "gelu_pytorch_tanh", "gelu"):
            raise InteropError(f"config.json: activation_function={act!r} is not supported for gpt2")
        d = need("n_embd")
        return ModelConfig.gpt2(vocab_size=need("vocab_size"), num_layers=need("n_layer"), num_heads=need("n_head"),
                                embed_dim=d, mlp_dim=get("n_inner") or 4 * d, max_seq_len=need("n_positions"),
                                norm_eps=get("layer_norm_epsilon", 1e-5),
                                activation="gelu" if act != "gelu" else "gelu_exact")
    if kind == "llama":
        theta = get("rope_theta") or (get("rope_parameters") or {}).get("rope_theta", 10_000.0)
        rope_type = (get("rope_scaling") or get("rope_parameters") or {}).get("rope_type", "default")
        if rope_type != "default":
            raise InteropError(f"config.json: rope_type={rope_type!r} (RoPE scaling) is not supported; expected 'default'")
        if get("attention_bias") or get("mlp_bias"):
            raise InteropError("config.json: attention_bias / mlp_bias = true is not supported for llama")
        d, n = need("hidden_size"), need("num_attention_heads")
        return ModelConfig.llama(vocab_size=need("vocab_size"), num_layers=need("num_hidden_layers"), num_heads=n,
                                 num_kv_heads=get("num_key_value_heads") or n, embed_dim=d,
                                 head_dim=get("head_dim") or d // n, mlp_dim=need("intermediate_size"),
                                 max_seq_len=get("max_position_embeddings", 2048), norm_eps=get("rms_norm_eps", 1e-6),
                                 rope_theta=float(theta), tie_embeddings=bool(get("tie_word_embeddings", False)))
    if kind == "bert":
        act = get("hidden_act", "gelu")
        if act not in _BERT_ACT:
            raise InteropError(f"config.json: hidden_act={act!r} is not supported for bert; expected one of {list(_BERT_ACT)}")
        if get("position_embedding_type", "absolute") != "absolute":
            raise InteropError("config.json: only position_embedding_type='absolute' is supported for bert")
        heads_archs = {"BertForMaskedLM", "BertForPreTraining"}
        lm_head = bool(heads_archs & set(get("architectures") or ["BertForMaskedLM"]))
        return ModelConfig.bert(vocab_size=need("vocab_size"), num_layers=need("num_hidden_layers"),
                                num_heads=need("num_attention_heads"), embed_dim=need("hidden_size"),
                                mlp_dim=need("intermediate_size"), max_seq_len=need("max_position_embeddings"),
                                type_vocab_size=get("type_vocab_size", 2), norm_eps=get("layer_norm_eps", 1e-12),
                                activation=_BERT_ACT[act], dropout=0.0, lm_head=lm_head)
    if kind == "t5":
        proj = get("feed_forward_proj", "relu")
        if proj not in ("relu", "gated-gelu"):
            raise InteropError(f"config.json: feed_forward_proj={proj!r} is not supported; expected 'relu' or 'gated-gelu'")
        return ModelConfig.t5(vocab_size=need("vocab_size"), num_layers=need("num_layers"),
                              num_decoder_layers=get("num_decoder_layers") or need("num_layers"),
                              num_heads=need("num_heads"), head_dim=need("d_kv"), embed_dim=need("d_model"),
                              mlp_dim=need("d_ff"), norm_eps=get("layer_norm_epsilon", 1e-6),
                              relative_buckets=get("relative_attention_num_buckets", 32),
                              relative_max_distance=get("relative_attention_max_distance", 128),
                              activation="relu" if proj == "relu" else "geglu", max_seq_len=512,
                              # transformers >= 5 always ties T5's lm_head unless the file has its own
                              # (see load_hf) and keeps the legacy tie flag's meaning as the output scale.
                              tie_embeddings=True,
                              output_scale=bool(get("scale_decoder_outputs", get("tie_word_embeddings", True))))
    raise InteropError(f"config.json: model_type={kind!r} is not supported; expected one of {sorted(_MODEL_TYPES)}")


def config_to_hf(cfg: ModelConfig) -> dict:
    """ModelConfig -> a ``transformers`` config dict (the fields that define the same network)."""
    if cfg.family not in HF_ARCHITECTURES:
        raise InteropError(f"model.family={cfg.family!r} has no transformers counterpart; expected one of "
                           f"{sorted(HF_ARCHITECTURES)}")
    base = {"architectures": [HF_ARCHITECTURES[cfg.family]], "model_type": _MODEL_TYPES[cfg.family],
            "vocab_size": cfg.vocab_size, "torch_dtype": "float32"}
    if cfg.family == "gpt2":
        if cfg.activation not in ("gelu", "gelu_exact") or cfg.position != "learned" or not cfg.tie_embeddings:
            raise InteropError("a gpt2 model exports to transformers only with learned positions, tied embeddings "
                               "and gelu / gelu_exact")
        return {**base, "n_embd": cfg.embed_dim, "n_layer": cfg.num_layers, "n_head": cfg.num_heads,
                "n_inner": cfg.mlp_dim, "n_positions": cfg.max_seq_len, "n_ctx": cfg.max_seq_len,
                "layer_norm_epsilon": cfg.norm_eps, "tie_word_embeddings": True,
                "activation_function": "gelu_new" if cfg.activation == "gelu" else "gelu",
                "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
    if cfg.family == "llama":
        return {**base, "hidden_size": cfg.embed_dim, "intermediate_size": cfg.mlp_dim,
                "num_hidden_layers": cfg.num_layers, "num_attention_heads": cfg.num_heads,
                "num_key_value_heads": cfg.kv_heads, "head_dim": cfg.dims_per_head, "rms_norm_eps": cfg.norm_eps,
                "rope_theta": cfg.rope_theta, "max_position_embeddings": cfg.max_seq_len, "hidden_act": "silu",
                "tie_word_embeddings": cfg.tie_embeddings, "attention_bias": False, "mlp_bias": False}
    if cfg.family == "bert":
        if not cfg.tie_embeddings or cfg.position != "learned" or cfg.norm_position != "post":
            raise InteropError("a bert model exports to transformers only with tied MLM embeddings, learned "
                               "positions and post-LN")
        acts = {v: k for k, v in _BERT_ACT.items() if k != "gelu_pytorch_tanh"}
        return {**base, "architectures": ["BertForMaskedLM" if cfg.lm_head else "BertModel"],
                "hidden_size": cfg.embed_dim, "num_hidden_layers": cfg.num_layers,
                "num_attention_heads": cfg.num_heads, "intermediate_size": cfg.mlp_dim,
                "max_position_embeddings": cfg.max_seq_len, "type_vocab_size": cfg.type_vocab_size,
                "layer_norm_eps": cfg.norm_eps, "hidden_act": acts[cfg.activation],
                "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "tie_word_embeddings": True}
    if not cfg.tie_embeddings and cfg.output_scale:
        raise InteropError("a t5 model with an untied output layer and output_scale=True has no transformers config")
    return {**base, "d_model": cfg.embed_dim, "d_kv": cfg.dims_per_head, "d_ff": cfg.mlp_dim,
            "num_layers": cfg.num_layers, "num_decoder_layers": cfg.decoder_layers, "num_heads": cfg.num_heads,
            "relative_attention_num_buckets": cfg.relative_buckets,
            "relative_attention_max_distance": cfg.relative_max_distance, "layer_norm_epsilon": cfg.norm_eps,
            "feed_forward_proj": "relu" if cfg.activation == "relu" else "gated-gelu",
            "is_gated_act": cfg.activation == "geglu", "dense_act_fn": "relu" if cfg.activation == "relu" else "gelu_new",
            # transformers 4 reads this flag as "tied lm_head and scaled output", 5 as "scaled output" (and
            # ties unless the file has lm_head.weight, which params_to_hf writes whenever the two differ).
            "tie_word_embeddings": cfg.output_scale, "dropout_rate": 0.0, "decoder_start_token_id": 0,
            "pad_token_id": 0, "eos_token_id": 1, "is_encoder_decoder": True}


# --- the tensor map -------------------------------------------------------------------------------
# One entry: (Hugging Face name, lmforge path, transpose, n_in). lmforge's array is viewed as 2-D
# (prod(shape[:n_in]), rest) and, when `transpose`, is the transpose of the Hugging Face matrix;
# n_in=0 is a vector (bias, norm scale), n_in=None a table kept as is (embeddings).
Entry = tuple[str, str, bool, int | None]


def _linear(hf: str, ours: str, *, transpose: bool = True, n_in: int = 1, bias: str | None = None) -> list[Entry]:
    out = [(f"{hf}.weight", ours, transpose, n_in)]
    if bias is not None:
        out.append((f"{hf}.bias", bias, False, 0))
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
                m += _linear(f"{h}.attn.c_attn_{x}", f"{o}.attn.{x}", transpose=False, bias=f"{o}.attn.{x}_bias")
            m += _linear(f"{h}.attn.c_proj", f"{o}.attn.o", transpose=False, n_in=2, bias=f"{o}.attn.o_bias")
            m += _linear(f"{h}.mlp.c_fc", f"{o}.mlp.up", transpose=False, bias=f"{o}.mlp.up_bias")
            m += _linear(f"{h}.mlp.c_proj", f"{o}.mlp.down", transpose=False, bias=f"{o}.mlp.down_bias")
        return m + _norm(f"{p}ln_f", "final_norm")
    if cfg.family == "llama":
        m += [(f"{p}embed_tokens.weight", "embed", False, None)]
        for i in range(cfg.num_layers):
            h, o = f"{p}layers.{i}", f"blocks.{i}"
            m += _norm(f"{h}.input_layernorm", f"{o}.attn_norm", bias=False)
            m += _norm(f"{h}.post_attention_layernorm", f"{o}.mlp_norm", bias=False)
            for x in "qkv":
                m += _linear(f"{h}.self_attn.{x}_proj", f"{o}.attn.{x}")
            m += _linear(f"{h}.self_attn.o_proj", f"{o}.attn.o", n_in=2)
            for hf, ours in (("gate_proj", "gate"), ("up_proj", "up"), ("down_proj", "down")):
                m += _linear(f"{h}.mlp.{hf}", f"{o}.mlp.{ours}")
        m += _norm(f"{p}norm", "final_norm", bias=False)
        return m + ([] if cfg.tie_embeddings else _linear("lm_head", "unembed"))
    if cfg.family == "bert":
        e = f"{p}embeddings"
        m += [(f"{e}.word_embeddings.weight", "embed.tokens", False, None),
              (f"{e}.position_embeddings.weight", "embed.positions", False, None),
              (f"{e}.token_type_embeddings.weight", "embed.types", False, None)] + _norm(f"{e}.LayerNorm", "embed_norm")
        for i in range(cfg.num_layers):
            h, o = f"{p}encoder.layer.{i}", f"layers.{i}"
            for hf, x in (("query", "q"), ("key", "k"), ("value", "v")):
                m += _linear(f"{h}.attention.self.{hf}", f"{o}.attn.{x}", bias=f"{o}.attn.{x}_bias")
            m += _linear(f"{h}.attention.output.dense", f"{o}.attn.o", n_in=2, bias=f"{o}.attn.o_bias")
            m += _norm(f"{h}.attention.output.LayerNorm", f"{o}.attn_norm")
            m += _linear(f"{h}.intermediate.dense", f"{o}.mlp.up", bias=f"{o}.mlp.up_bias")
            m += _linear(f"{h}.output.dense", f"{o}.mlp.down", bias=f"{o}.mlp.down_bias")
            m += _norm(f"{h}.output.LayerNorm", f"{o}.mlp_norm")
        if cfg.lm_head:
            m += _linear("cls.predictions.transform.dense", "head.dense", bias="head.dense_bias")
            m += _norm("cls.predictions.transform.LayerNorm", "head.norm") + [("cls.predictions.bias", "head.bias", False, 0)]
        return m
    if cfg.family == "t5":
        m += [("shared.weight", "embed.tokens", False, None),
              ("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", "encoder_bias.table", False, None),
              ("decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", "decoder_bias.table", False, None)]
        ffn = ([("wi_0", "gate"), ("wi_1", "up")] if cfg.activation == "geglu" else [("wi", "up")]) + [("wo", "down")]
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
        return m + ([] if cfg.tie_embeddings else _linear("lm_head", "unembed"))
    raise InteropError(f"model.family={cfg.family!r} has no transformers counterpart; expected one of "
                       f"{sorted(HF_ARCHITECTURES)}")


def _hf_prefix(cfg: ModelConfig, names) -> str:
    """The base-model prefix the checkpoint uses ('transformer.' / 'model.' / 'bert.' or none)."""
    names = set(names)
    first = tensor_map(cfg)[0][0]
    for prefix in {"gpt2": ("transformer.", ""), "llama": ("model.", ""), "bert": ("bert.", "")}.get(cfg.family, ("",)):
        if prefix + first in names:
            return prefix
    return {"gpt2": "transformer.", "llama": "model.", "bert": "bert."}.get(cfg.family, "")


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
    out = {}
    for hf, ours, transpose, n_in in tensor_map(cfg, hf_prefix=prefix):
        x = np.asarray(flat[ours], np.float32)
        x = x.reshape(_hf_shape(x.shape, False, n_in))
        out[hf] = np.ascontiguousarray(x.T if transpose else x)
    if cfg.family == "gpt2":
        out = _gpt2_fuse(out, cfg)
    if cfg.family == "t5" and cfg.tie_embeddings and not cfg.output_scale:
        out["lm_head.weight"] = out["shared.weight"]   # transformers 4 would untie; 5 reads it back tied
    return out


# --- folders --------------------------------------------------------------------------------------
def flatten(tree: dict, prefix: str = "") -> Iterator[tuple[str, object]]:
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from flatten(value, path + ".")
        else:
            yield path, value


def unflatten(flat: dict[str, object]) -> dict:
    tree: dict = {}
    for path, value in flat.items():
        node = tree
        keys = [int(k) if k.isdigit() else k for k in path.split(".")]
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return tree


def read_safetensors(folder: pathlib.Path) -> dict[str, np.ndarray]:
    """All tensors of a HF folder (single file or an index of shards) as numpy arrays."""
    from safetensors.numpy import load_file

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


def read_hf_config(folder: pathlib.Path) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise InteropError(f"{folder} has no config.json (expected a transformers model folder)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise InteropError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None


def load_hf(folder, *, model_cfg: ModelConfig | None = None) -> tuple[ModelConfig, dict, set]:
    """A transformers folder -> (ModelConfig, nested pure param dict of numpy float32, unused tensor names)."""
    folder = pathlib.Path(folder)
    cfg = model_cfg or config_from_hf(read_hf_config(folder))
    tensors = read_safetensors(folder)
    if model_cfg is None and cfg.family == "t5" and "lm_head.weight" in tensors:
        cfg = dataclasses.replace(cfg, tie_embeddings=False)
    plain = dataclasses.replace(cfg, scan_layers=False, remat="none")
    _, state = abstract_model(plain)
    shapes = {k: tuple(v.shape) for k, v in flatten(nnx.to_pure_dict(state))}
    flat, unused = params_from_hf(plain, tensors, shapes)
    if cfg.scan_layers:
        flat = _stack_layers(flat, cfg.num_layers)
    return cfg, unflatten(flat), unused


def save_hf(folder, cfg: ModelConfig, pure: dict) -> pathlib.Path:
    """Writes ``config.json`` + ``model.safetensors`` that ``transformers`` loads with ``from_pretrained``.

    ``pure``: the nested parameter dict (``nnx.to_pure_dict``; the train state's ``params``)."""
    from safetensors.numpy import save_file

    folder = pathlib.Path(folder)
    flat = {k: np.asarray(v) for k, v in flatten(pure)}
    if cfg.scan_layers:   # stacked (L, ...) block parameters -> one entry per layer
        flat = _unstack_layers(flat, cfg.num_layers)
    tensors = params_to_hf(cfg, flat)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config_to_hf(cfg), indent=2) + "\n")
    return folder


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


def abstract_model(cfg: ModelConfig):
    """(graphdef, abstract parameter state) of ``cfg``'s model: shapes only, no memory, no mesh needed."""
    with nnx.use_eager_sharding(False):
        return nnx.split(nnx.eval_shape(lambda: build_model(cfg, rngs=nnx.Rngs(0))))


def merge_params(cfg: ModelConfig, pure: dict):
    """The NNX model of ``cfg`` holding the parameters ``pure`` (e.g. from :func:`load_hf`), unsharded."""
    graphdef, state = abstract_model(cfg)
    nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, pure))
    return nnx.merge(graphdef, state)
