"""Every field of a transformers config is honoured, refused or inert (weights/hf_config.py's table).

For each supported model_type the fields are enumerated from the installed transformers: the config
class's dataclass fields, ``ConfigClass().to_dict()`` (fields set in ``__post_init__``, such as T5's
``dense_act_fn``) and ``PretrainedConfig().to_dict()``. Every one must be in ``CONFIG_FIELDS``, so a
field a future transformers adds fails here until someone classifies it. Then each field is flipped
to a non-default value on a tiny random model (honoured fields: passed to the config class and the
model saved with ``save_pretrained``, new random weights; inert, refused and legacy fields: written
into the ``config.json`` of the unflipped folder, as a checkpoint on the hub would carry them), and:

- honoured / inert: ``load_hf`` reads the folder and lmforge's logits equal those of the model
  transformers loads from the same folder (float32, atol 1e-4). When lmforge's config and tensors
  are those of the unflipped model, its logits are the unflipped ones (checked against transformers
  once) and only transformers' side is recomputed;
- refused (and the listed unsupported values of honoured fields): ``load_hf`` raises one line that
  names the field.
"""

import dataclasses
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmforge.model.paths import flatten
from lmforge.model.sharding import use_mesh
from lmforge.train.mesh import MeshConfig, make_mesh
from lmforge.weights.hf import CONFIG_FIELDS, HONOURED, INERT, REFUSED, InteropError, load_hf, merge_params

torch = pytest.importorskip("torch", reason="parity tests need CPU torch")
transformers = pytest.importorskip("transformers", reason="parity tests need transformers")
transformers.utils.logging.set_verbosity_error()   # flipped ids outside the tiny vocabulary warn
transformers.utils.logging.disable_progress_bar()

ONE_DEVICE = make_mesh(MeshConfig(data=1), devices=jax.devices()[:1])   # models are called under a mesh
TOKENS = np.random.RandomState(0).randint(0, 99, (2, 12))
DEC = TOKENS[:, :7]

TINY = {
    "gpt2": ("GPT2Config", "GPT2LMHeadModel", dict(vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=64)),
    "llama": ("LlamaConfig", "LlamaForCausalLM", dict(
        vocab_size=99, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64)),
    "mistral": ("MistralConfig", "MistralForCausalLM", dict(
        vocab_size=99, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, sliding_window=None)),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(
        vocab_size=99, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64)),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(
        vocab_size=99, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, head_dim=8)),
    "mixtral": ("MixtralConfig", "MixtralForCausalLM", dict(
        vocab_size=99, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, num_local_experts=4, num_experts_per_tok=2)),
    "bert": ("BertConfig", "BertForMaskedLM", dict(
        vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64)),
    "t5": ("T5Config", "T5ForConditionalGeneration", dict(
        vocab_size=99, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, relative_attention_num_buckets=8,
        relative_attention_max_distance=20)),
}

# A non-default value for every field, the same for all model types unless FLIPS overrides it.
COMMON = {
    "_name_or_path": "somewhere/else", "name_or_path": "somewhere/else", "transformers_version": "4.0.0",
    "_commit_hash": "0" * 40, "chunk_size_feed_forward": 4, "dtype": "bfloat16", "torch_dtype": "bfloat16",
    "use_bfloat16": True, "id2label": {0: "a", 1: "b", 2: "c"}, "label2id": {"a": 0, "b": 1, "c": 2},
    "num_labels": 3, "problem_type": "regression", "finetuning_task": "sst2", "output_attentions": True,
    "output_hidden_states": True, "return_dict": False, "torchscript": True, "tf_legacy_loss": True,
    "use_cache": False, "output_past": False, "bos_token_id": 5, "eos_token_id": 6, "pad_token_id": 7,
    "sep_token_id": 8, "decoder_start_token_id": 9, "tokenizer_class": "GPT2Tokenizer", "prefix": "summarize: ",
    "task_specific_params": {"summarization": {"max_length": 20}}, "tie_encoder_decoder": True,
    "cross_attention_hidden_size": 16, "gradient_checkpointing": True, "attn_implementation": "eager",
    "_attn_implementation": "eager", "_attn_implementation_autoset": True, "pruned_heads": {"0": [1]},
    "max_length": 7, "min_length": 2, "do_sample": True, "early_stopping": True, "num_beams": 3,
    "num_beam_groups": 3, "diversity_penalty": 0.5, "temperature": 0.7, "top_k": 5, "top_p": 0.9, "typical_p": 0.9,
    "epsilon_cutoff": 0.1, "eta_cutoff": 0.1, "repetition_penalty": 1.2, "encoder_repetition_penalty": 1.2,
    "length_penalty": 2.0, "no_repeat_ngram_size": 3, "encoder_no_repeat_ngram_size": 3, "bad_words_ids": [[5]],
    "num_return_sequences": 2, "output_scores": True, "return_dict_in_generate": True, "forced_bos_token_id": 5,
    "forced_eos_token_id": 6, "remove_invalid_values": True, "exponential_decay_length_penalty": [5, 1.1],
    "suppress_tokens": [5], "begin_suppress_tokens": [6], "num_assistant_tokens": 3,
    "num_assistant_tokens_schedule": "constant", "assistant_confidence_threshold": 0.5, "assistant_lookbehind": 3,
    "target_lookbehind": 3,
}
DROP = 0.3
# Llama's flips that its descendants (Mistral, Qwen2, Qwen3, Mixtral) share.
LLAMA_CORE = {
    "is_encoder_decoder": True, "vocab_size": 101, "hidden_size": 48, "intermediate_size": 40,
    "num_hidden_layers": 3, "num_attention_heads": 2, "num_key_value_heads": 4, "hidden_act": "gelu_pytorch_tanh",
    "max_position_embeddings": 48, "initializer_range": 0.5, "rms_norm_eps": 1e-2, "tie_word_embeddings": True,
    "rope_parameters": {"rope_type": "default", "rope_theta": 500.0}, "rope_theta": 500.0,
    "rope_scaling": {"rope_type": "default", "rope_theta": 500.0}, "attention_dropout": DROP, "head_dim": 16,
}
FLIPS = {
    "gpt2": {
        "architectures": ["GPT2Model"], "is_encoder_decoder": True, "vocab_size": 101, "n_positions": 48,
        "n_ctx": 48, "n_embd": 48, "n_layer": 3, "n_head": 2, "n_inner": 40, "activation_function": "relu",
        "resid_pdrop": DROP, "embd_pdrop": DROP, "attn_pdrop": DROP, "layer_norm_epsilon": 1e-2,
        "initializer_range": 0.5, "summary_type": "last", "summary_use_proj": False, "summary_activation": "tanh",
        "summary_proj_to_labels": False, "summary_first_dropout": DROP, "summary_last_dropout": DROP,
        "scale_attn_weights": False, "scale_attn_by_inverse_layer_idx": True, "reorder_and_upcast_attn": True,
        "add_cross_attention": True, "tie_word_embeddings": False,
    },
    "llama": {**LLAMA_CORE, "architectures": ["LlamaModel"], "pretraining_tp": 2, "partial_rotary_factor": 0.5},
    "mistral": {**LLAMA_CORE, "architectures": ["MistralModel"], "sliding_window": 16},
    "qwen2": {
        **LLAMA_CORE, "architectures": ["Qwen2Model"],
        "head_dim": 8,   # hidden_size // num_attention_heads: Qwen2Config has no such field, its modules read it
        "sliding_window": 16, "use_sliding_window": True, "max_window_layers": 1,
        "layer_types": ["full_attention", "full_attention"],
    },
    "qwen3": {
        **LLAMA_CORE, "architectures": ["Qwen3Model"], "attention_bias": True, "sliding_window": 16,
        "use_sliding_window": True, "max_window_layers": 1, "layer_types": ["full_attention", "full_attention"],
    },
    "mixtral": {
        **LLAMA_CORE, "architectures": ["MixtralModel"], "num_local_experts": 3, "num_experts_per_tok": 3,
        "sliding_window": 16, "output_router_logits": True, "router_aux_loss_coef": 0.5, "router_jitter_noise": 0.5,
    },
    "bert": {
        "architectures": ["BertModel"], "is_encoder_decoder": True, "vocab_size": 101, "hidden_size": 48,
        "num_hidden_layers": 3, "num_attention_heads": 2, "intermediate_size": 40, "hidden_act": "gelu_new",
        "hidden_dropout_prob": DROP, "attention_probs_dropout_prob": DROP, "classifier_dropout": DROP,
        "max_position_embeddings": 48, "type_vocab_size": 3, "initializer_range": 0.5, "layer_norm_eps": 1e-2,
        "is_decoder": True, "add_cross_attention": True, "tie_word_embeddings": False,
        "position_embedding_type": "relative_key",
    },
    "t5": {
        "architectures": ["T5Model"], "is_encoder_decoder": False, "pad_token_id": 5, "eos_token_id": 6,
        "vocab_size": 101, "d_model": 48, "d_kv": 16, "d_ff": 40, "num_layers": 3, "num_decoder_layers": 1,
        "num_heads": 2, "relative_attention_num_buckets": 16, "relative_attention_max_distance": 40,
        "dropout_rate": DROP, "classifier_dropout": DROP, "layer_norm_epsilon": 1e-2, "initializer_factor": 3.0,
        "feed_forward_proj": "gated-gelu", "is_decoder": True, "dense_act_fn": "gelu_new",
        "scale_decoder_outputs": False, "tie_word_embeddings": False, "n_positions": 1024,
    },
}
# More loading flips: other supported values, and fields honoured only together.
MORE = {
    "gpt2": [{"activation_function": "gelu"}, {"activation_function": "gelu_pytorch_tanh"},
             {"scale_attn_weights": False, "scale_attn_by_inverse_layer_idx": True}],
    "llama": [{"attention_bias": True, "mlp_bias": True}, {"hidden_act": "silu", "tie_word_embeddings": True}],
    "mistral": [{"hidden_act": "silu", "tie_word_embeddings": True}, {"sliding_window": 4096}],
    "qwen2": [{"hidden_act": "silu", "tie_word_embeddings": True},
              {"layer_types": ["full_attention", "sliding_attention"], "use_sliding_window": True,
               "sliding_window": 16},
              {"use_sliding_window": True, "max_window_layers": 1, "sliding_window": 16}],
    "qwen3": [{"hidden_act": "silu", "tie_word_embeddings": True},
              {"layer_types": ["sliding_attention", "full_attention"], "use_sliding_window": True,
               "sliding_window": 16}],
    "mixtral": [{"hidden_act": "silu", "tie_word_embeddings": True},
                {"num_local_experts": 8, "num_experts_per_tok": 2}],
    "bert": [{"hidden_act": "relu", "architectures": ["BertModel"]}, {"architectures": ["BertForPreTraining"]}],
    "t5": [{"feed_forward_proj": "gelu"}, {"feed_forward_proj": "gated-silu"},
           {"is_gated_act": True, "dense_act_fn": "gelu_new"},
           {"feed_forward_proj": "relu", "tie_word_embeddings": True}],
}
# Values of honoured fields lmforge cannot express: refused, naming the field.
UNSUPPORTED = {
    "gpt2": [{"activation_function": "silu"}, {"architectures": ["GPT2ForTokenClassification"]},
             {"model_type": "mamba"}, {"a_field_nobody_listed": 1}],
    "llama": [{"hidden_act": "gelu"}, {"attention_bias": True}, {"mlp_bias": True},
              {"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}},
              {"rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5}},
              {"architectures": ["LlamaForTokenClassification"]}, {"model_type": "mamba"}],
    "mistral": [{"hidden_act": "gelu"}, {"sliding_window": 0}, {"attention_bias": True},
                {"architectures": ["MistralForTokenClassification"]}],
    "qwen2": [{"hidden_act": "gelu"}, {"layer_types": ["full_attention", "chunked_attention"]},
              {"mlp_bias": True}, {"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}}],
    "qwen3": [{"hidden_act": "gelu"}, {"mlp_bias": True}, {"layer_types": ["full_attention", "chunked_attention"]}],
    "mixtral": [{"num_experts_per_tok": 1}, {"hidden_act": "gelu"}, {"attention_bias": True},
                {"architectures": ["MixtralForSequenceClassification"]},
                {"rope_parameters": {"rope_type": "yarn", "factor": 2.0, "rope_theta": 10000.0}}],
    "bert": [{"hidden_act": "relu"}, {"hidden_act": "silu"}, {"model_type": "mamba"}],
    "t5": [{"feed_forward_proj": "gated-relu"}, {"dense_act_fn": "tanh"}, {"is_gated_act": True},
           {"architectures": ["T5ForSequenceClassification"]}, {"model_type": "mamba"}],
}


def defined_fields(kind: str) -> set[str]:
    """The fields the installed transformers defines for ``kind``."""
    config_cls = getattr(transformers, TINY[kind][0])
    fields = set(config_cls().to_dict()) | set(transformers.PretrainedConfig().to_dict())
    if dataclasses.is_dataclass(config_cls):
        fields |= {f.name for f in dataclasses.fields(config_cls)}
    return fields


@pytest.mark.parametrize("kind", list(TINY))
def test_every_field_transformers_defines_is_classified(kind):
    table = CONFIG_FIELDS[kind]
    missing = sorted(defined_fields(kind) - set(table))
    assert not missing, (f"transformers {transformers.__version__} defines {kind} config fields that "
                         f"weights/hf_config.py does not classify: {missing}")
    assert all(f.status in (HONOURED, REFUSED, INERT) and f.note for f in table.values())
    assert all(f.accepts for f in table.values() if f.status == REFUSED)


def _save(kind, folder: pathlib.Path, flip: dict, *, base_folder: pathlib.Path | None) -> bool:
    """A tiny model with ``flip`` applied, saved into ``folder``; True when it has new weights.

    Flips of honoured fields build a new random model from the flipped config (they may change the
    shapes); inert and refused ones, legacy fields, and flips transformers would not write back
    (``architectures``, ``model_type``) go into ``config.json`` beside the unflipped weights."""
    config_name, model_name, tiny = TINY[kind]
    honoured = any(CONFIG_FIELDS[kind].get(k, (None,))[0] == HONOURED for k in flip)
    if base_folder is None or (honoured and set(flip) <= defined_fields(kind)):
        torch.manual_seed(0)
        try:
            model = getattr(transformers, model_name)(getattr(transformers, config_name)(**{**tiny, **flip}))
            model.save_pretrained(folder)
        except Exception:  # noqa: BLE001  e.g. BERT's add_cross_attention without is_decoder
            pass
        else:
            written = json.loads((folder / "config.json").read_text())
            if all(k in written and written[k] == json.loads(json.dumps(v)) for k, v in flip.items()):
                _perturb(folder / "model.safetensors")
                return True
    folder.mkdir(parents=True, exist_ok=True)
    for f in base_folder.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    config = json.loads((base_folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **flip}))
    return False


def _hf_config(kind, folder: pathlib.Path) -> dict:
    """The config transformers reads from ``folder``, as a dict (without the folder's own path)."""
    config = getattr(transformers, TINY[kind][0]).from_pretrained(folder).to_dict()
    config.pop("_name_or_path", None)
    return config


def _perturb(path: pathlib.Path) -> None:
    """Noise on every tensor, so that zero biases and unit norm scales cannot hide a mis-mapping."""
    from safetensors.numpy import load_file, save_file

    rng = np.random.RandomState(1)
    tensors = {k: v + 0.05 * rng.randn(*v.shape).astype(v.dtype) for k, v in load_file(str(path)).items()}
    save_file(tensors, str(path), metadata={"format": "pt"})


def _hf_output(kind, folder: pathlib.Path, lm_head: bool) -> tuple[np.ndarray, set]:
    """transformers' logits (hidden states for a head-less BERT) of the model it loads from ``folder``,
    and the tensors of the folder it does not load."""
    model_name = TINY[kind][1] if lm_head else "BertModel"
    # float32: `dtype` is the storage precision, not the function; eager attention: output_attentions
    # needs it (sdpa computes the same function).
    model, info = getattr(transformers, model_name).from_pretrained(
        folder, dtype=torch.float32, attn_implementation="eager", output_loading_info=True)
    # transformers 5's own forward fails with return_dict=False in the config (the LM head reads an
    # attribute of the tuple its trunk returns); the flag only picks tuple vs. dataclass outputs.
    for module in model.modules():   # T5's stacks hold their own copies of the config
        if getattr(module, "config", None) is not None:
            module.config.return_dict = True
    kw = {"token_type_ids": torch.tensor(TOKENS % 2)} if kind == "bert" else {}
    if kind == "t5":
        kw = {"decoder_input_ids": torch.tensor(DEC)}
    with torch.no_grad():
        out = model.eval()(input_ids=torch.tensor(TOKENS), **kw)
    return (out.logits if lm_head else out.last_hidden_state).numpy(), set(info["unexpected_keys"])


def _our_output(cfg, pure) -> np.ndarray:
    with use_mesh(ONE_DEVICE):
        model = merge_params(cfg, pure)
        if cfg.family == "t5":
            return np.asarray(model(jnp.asarray(DEC), encoder_tokens=jnp.asarray(TOKENS))[0])
        if cfg.family == "bert":
            tt = jnp.asarray(TOKENS % 2)
            if not cfg.lm_head:
                return np.asarray(model.encode(jnp.asarray(TOKENS), token_types=tt))
            return np.asarray(model(jnp.asarray(TOKENS), token_types=tt)[0])
        return np.asarray(model(jnp.asarray(TOKENS))[0])


def _flips(kind):
    """(flip, expected) pairs, expected "load" or "refuse"; every field of the table is in one."""
    table = CONFIG_FIELDS[kind]
    values = {**COMMON, **FLIPS[kind]}
    out = [({name: values[name]}, "refuse" if field.status == REFUSED else "load")
           for name, field in table.items() if name in values]
    out += [(flip, "load") for flip in MORE[kind]] + [(flip, "refuse") for flip in UNSUPPORTED[kind]]
    for name, field in table.items():
        want = "refuse" if field.status == REFUSED else "load"
        assert name == "model_type" or any(name in flip and e == want for flip, e in out), (
            f"{kind}: this test has no {want} flip for the {field.status} field {name!r}")
    return out


@pytest.mark.parametrize("kind", list(TINY))
def test_flipping_each_field_is_honoured_refused_or_inert(kind, tmp_path):
    base_folder = tmp_path / "base"
    _save(kind, base_folder, {}, base_folder=None)
    base_cfg, base_pure, _ = load_hf(base_folder)
    base_hf_config = _hf_config(kind, base_folder)
    base_ours = _our_output(base_cfg, base_pure)
    np.testing.assert_allclose(base_ours, _hf_output(kind, base_folder, True)[0], atol=1e-4, rtol=0)
    base_flat = dict(flatten(base_pure))
    failures, forwards = [], 0
    for i, (flip, expected) in enumerate(_flips(kind)):
        folder = tmp_path / f"flip{i}"
        fresh = _save(kind, folder, flip, base_folder=base_folder)
        try:
            cfg, pure, unused = load_hf(folder)
        except InteropError as e:
            msg = str(e)
            if expected == "load":
                failures.append(f"{flip}: refused ({msg})")
            elif not any(name in msg for name in flip) or "\n" in msg:
                failures.append(f"{flip}: the error does not name the field in one line: {msg!r}")
            continue
        if expected == "refuse":
            failures.append(f"{flip}: loaded, expected a refusal")
            continue
        flat = dict(flatten(pure))
        same = cfg == base_cfg and flat.keys() == base_flat.keys() and all(
            np.array_equal(flat[k], base_flat[k]) for k in flat)
        if not same:
            forwards += 1
        ours = base_ours if same else _our_output(cfg, pure)
        if same and not fresh and _hf_config(kind, folder) == base_hf_config:
            continue   # both sides read the unflipped model (transformers drops generation defaults, ...)
        try:
            theirs, unexpected = _hf_output(kind, folder, cfg.lm_head)
        except Exception as e:  # noqa: BLE001  (reported with the others)
            failures.append(f"{flip}: transformers cannot load it ({type(e).__name__}: {str(e).splitlines()[0]})")
            continue
        # Unused by lmforge must be unused by transformers too; transformers 5 loads an untied BERT's
        # cls.predictions.bias but its forward reads the decoder's own bias.
        ignored = unexpected | ({"cls.predictions.bias"} if kind == "bert" and not cfg.tie_embeddings else set())
        if unused - ignored:
            failures.append(f"{flip}: tensors transformers reads are unused by lmforge: {sorted(unused - ignored)[:3]}")
        elif ours.shape != theirs.shape or not np.allclose(ours, theirs, atol=1e-4, rtol=0):
            err = np.abs(ours - theirs).max() if ours.shape == theirs.shape else f"shapes {ours.shape} {theirs.shape}"
            failures.append(f"{flip}: logits differ from transformers' by {err}")
    assert not failures, f"{kind}: {len(failures)} flips misbehave:\n" + "\n".join(failures)
    assert forwards >= len(MORE[kind])   # the honoured flips did run lmforge's model
