"""Hugging Face ``config.json`` <-> :class:`ModelConfig`, with every field accounted for.

:data:`CONFIG_FIELDS` lists, per supported ``model_type``, every field the ``transformers`` config
class defines (plus ``PretrainedConfig``'s own fields, the generation defaults transformers still
accepts in a config, and the legacy names that older transformers wrote) as one of:

- ``honoured``: read into the ModelConfig (or folded into the weights, see ``GPT2_QUERY_SCALE``),
  so the imported model computes what transformers computes; values lmforge cannot express are
  refused by :func:`config_from_hf` with a one-line error naming the field;
- ``refused``: accepted only at the values in ``Field.accepts`` (the ones that leave the network as
  lmforge builds it), otherwise a one-line error naming the field;
- ``inert``: cannot change the logits, with the reason (dropout at eval, ids, names, precision).

A field in a ``config.json`` that the table does not list is refused too: lmforge cannot tell
whether it changes the network. tests/weights/test_hf_config_fields.py enumerates the installed
transformers' config classes, checks every field is in the table, and flips each one on a tiny
random model: honoured and inert flips must keep lmforge's logits equal to transformers', refused
ones must be refused naming the field. A field a future transformers adds fails that test until
someone classifies it here.

Choices:
- GPT-2's ``scale_attn_weights=False`` and ``scale_attn_by_inverse_layer_idx`` scale the
  attention logits by a per-layer constant; lmforge folds that constant into the query projection
  (kernel and bias) at import, so the model stays a plain GPT-2 (and exports as one) and computes
  the same function. Fine-tuning sees a query weight scaled by that factor.
- Llama's ``attention_bias`` and ``mlp_bias`` together are lmforge's ``use_bias=True`` (RMSNorm has
  no bias); one without the other has no ModelConfig counterpart and is refused.
- Mistral, Qwen2 and Qwen3 are Llamas: Mistral's ``model_type`` imports as ``family=llama`` (and
  exports as Llama, the same network); Qwen2's biases on the query, key and value projections alone
  are ``qkv_bias=True``, and a Llama with ``qkv_bias`` exports as ``Qwen2ForCausalLM``; Qwen3's
  per-head RMSNorm of queries and keys is ``qk_norm=True`` (``Qwen3ForCausalLM`` on export).
- Sliding-window attention (Mistral's, Mixtral's ``sliding_window``; Qwen2's ``sliding_attention``
  layers) is full causal attention over sequences no longer than the window: the window caps
  ``max_seq_len``, the context lmforge's training, sampling and evaluation keep to, so the imported
  model computes what transformers computes within it (Mistral 7B v0.1: 4,096 of its 32,768).
- Mixtral (``model_type`` ``mixtral``) is a Llama whose every FFN is a mixture of experts: it imports
  as ``family=llama`` with ``num_experts`` / ``experts_per_token`` and dropless routing (top-k of the
  float32 softmax, renormalised: ``model/moe.py``), and a Llama with experts exports as
  ``MixtralForCausalLM``. ``num_experts_per_tok=1`` is refused: Mixtral renormalises the single
  choice to weight 1, lmforge keeps its probability (Switch). Exporting a model trained with expert
  capacity (``moe_capacity_factor > 0``) is refused here, since transformers' Mixtral never drops a
  token; ``lmforge convert`` exports it as the dropless model, saying so.
- Mixtral's training loss weights travel with it: ``router_aux_loss_coef`` is ``moe_aux_loss / k``
  (transformers' load-balancing loss is k times lmforge's; it pools the layers' tokens where lmforge
  averages per-layer losses, so the two are close, not equal, when layers route differently), and
  an imported Mixtral has no router z-loss (``moe_z_loss = 0``), as transformers trains it.
- Exporting checks the reverse: :func:`config_to_hf` re-reads the config it wrote and refuses a
  ModelConfig whose network the transformers config cannot express (RMSNorm GPT-2, experts, ...).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

from lmforge.model import ModelConfig


class InteropError(ValueError):
    """A Hugging Face folder or tensor that does not fit the expected layout."""


HONOURED, REFUSED, INERT = "honoured", "refused", "inert"


class Field(NamedTuple):
    status: str          # HONOURED | REFUSED | INERT
    note: str            # what lmforge does with it, or why it cannot change the logits
    accepts: tuple = ()  # REFUSED: the values that are accepted (those that leave the network unchanged)


def _inert(why: str, *names: str) -> dict[str, Field]:
    return {n: Field(INERT, why) for n in names}


# transformers' GenerationConfig defaults: PretrainedConfig pops them from a config.json.
_GENERATION = (
    "assistant_confidence_threshold", "assistant_lookbehind", "bad_words_ids", "begin_suppress_tokens",
    "diversity_penalty", "do_sample", "early_stopping", "encoder_no_repeat_ngram_size", "encoder_repetition_penalty",
    "epsilon_cutoff", "eta_cutoff", "exponential_decay_length_penalty", "forced_bos_token_id", "forced_eos_token_id",
    "length_penalty", "max_length", "min_length", "no_repeat_ngram_size", "num_assistant_tokens",
    "num_assistant_tokens_schedule", "num_beam_groups", "num_beams", "num_return_sequences", "output_scores",
    "remove_invalid_values", "repetition_penalty", "return_dict_in_generate", "suppress_tokens",
    "target_lookbehind", "temperature", "top_k", "top_p", "typical_p")

_COMMON = {
    "model_type": Field(HONOURED, "selects the family (and this table)"),
    "architectures": Field(HONOURED, "the head: an LM class, the bare trunk (BERT: any class; the MLM head "
                                     "only for *ForMaskedLM / *ForPreTraining) or a decoder's "
                                     "*ForSequenceClassification (a score head); other heads are refused"),
    **_inert("where the folder came from, or which code version wrote it", "_name_or_path", "name_or_path",
             "transformers_version", "_commit_hash"),
    **_inert("the precision the weights are stored in, not the function; lmforge imports float32 "
             "(load_params' dtype casts)", "dtype", "torch_dtype", "use_bfloat16"),
    **{n: Field(HONOURED, "a *ForSequenceClassification score head's outputs (num_labels = len(id2label)); "
                          "not read by an LM class") for n in ("id2label", "num_labels")},
    **_inert("labels and loss of classification heads", "label2id", "problem_type", "finetuning_task"),
    **_inert("extra outputs beside the logits", "output_attentions", "output_hidden_states", "return_dict",
             "torchscript", "tf_legacy_loss"),
    **_inert("the key/value cache: the same logits, computed incrementally", "use_cache", "output_past"),
    **_inert("token ids for generation and tokenizers, not read by the forward pass (a sequence classifier "
             "reads pad_token_id to find each row's last token; lmforge takes the rows' real tokens instead: "
             "weights/hf.py)", "bos_token_id", "eos_token_id", "pad_token_id", "sep_token_id",
             "decoder_start_token_id", "tokenizer_class", "prefix", "task_specific_params"),
    **_inert("a generate() default, not the network", *_GENERATION),
    **_inert("the feed-forward evaluated in sequence chunks: the same values", "chunk_size_feed_forward"),
    **_inert("read by generate() and EncoderDecoderModel, not by this model's forward pass", "is_encoder_decoder",
             "tie_encoder_decoder", "cross_attention_hidden_size"),
    **_inert("activation checkpointing (training memory), the same function", "gradient_checkpointing"),
    **_inert("the attention kernel (eager, sdpa, flash): the same function", "attn_implementation",
             "_attn_implementation", "_attn_implementation_autoset"),
    "pruned_heads": Field(REFUSED, "removes attention heads", ({}, None)),
}
_DROPOUT = "dropout: off at inference"
_INIT = "initialisation only: the weights come from the file"

_GPT2 = {
    **{n: Field(HONOURED, "the shape") for n in ("vocab_size", "n_embd", "n_layer", "n_head")},
    "n_positions": Field(HONOURED, "max_seq_len (the learned position table)"),
    "n_inner": Field(HONOURED, "mlp_dim (None: 4 * n_embd)"),
    "activation_function": Field(HONOURED, "gelu_new / gelu_pytorch_tanh / gelu_fast -> gelu, gelu / gelu_python "
                                           "-> gelu_exact, relu; others refused"),
    "layer_norm_epsilon": Field(HONOURED, "norm_eps"),
    "scale_attn_weights": Field(HONOURED, "False: folded into the query projection"),
    "scale_attn_by_inverse_layer_idx": Field(HONOURED, "folded into each layer's query projection"),
    "tie_word_embeddings": Field(HONOURED, "tie_embeddings (False: a separate lm_head)"),
    **_inert(_DROPOUT, "resid_pdrop", "embd_pdrop", "attn_pdrop"),
    **_inert(_INIT, "initializer_range"),
    **_inert("GPT2DoubleHeadsModel's multiple-choice head", "summary_type", "summary_use_proj",
             "summary_activation", "summary_proj_to_labels", "summary_first_dropout", "summary_last_dropout"),
    **_inert("float32 attention scores under half-precision autocast: the same function", "reorder_and_upcast_attn"),
    **_inert("an older name of n_positions that transformers does not read", "n_ctx"),
    "add_cross_attention": Field(REFUSED, "cross-attention over an encoder's states (EncoderDecoderModel's "
                                          "decoder)", (False, None)),
}
_LLAMA = {
    **{n: Field(HONOURED, "the shape") for n in ("vocab_size", "hidden_size", "intermediate_size",
                                                 "num_hidden_layers", "num_attention_heads")},
    "num_key_value_heads": Field(HONOURED, "num_kv_heads (grouped-query attention)"),
    "head_dim": Field(HONOURED, "head_dim"),
    "hidden_act": Field(HONOURED, "silu / swish -> swiglu, gelu_new / gelu_pytorch_tanh / gelu_fast -> geglu; "
                                  "others refused"),
    "max_position_embeddings": Field(HONOURED, "max_seq_len"),
    "rms_norm_eps": Field(HONOURED, "norm_eps"),
    "tie_word_embeddings": Field(HONOURED, "tie_embeddings"),
    "rope_parameters": Field(HONOURED, "rope_theta; rope_type other than 'default' and partial_rotary_factor "
                                       "other than 1 are refused"),
    "rope_theta": Field(HONOURED, "rope_theta (transformers 4's name)"),
    "rope_scaling": Field(HONOURED, "as rope_parameters (transformers 4's name)"),
    "partial_rotary_factor": Field(REFUSED, "rotates only part of each head", (None, 1, 1.0)),
    "attention_bias": Field(HONOURED, "with mlp_bias: use_bias=True; one without the other is refused"),
    "mlp_bias": Field(HONOURED, "with attention_bias: use_bias=True; one without the other is refused"),
    **_inert(_DROPOUT, "attention_dropout"),
    **_inert(_INIT, "initializer_range"),
    **_inert("transformers 4 split the same matmuls into slices; transformers 5 does not read it", "pretraining_tp"),
}
# Llama's fields that its descendants' config classes do not have (refused there, as unknown fields).
_LLAMA_CORE = {k: v for k, v in _LLAMA.items() if k not in ("attention_bias", "mlp_bias", "pretraining_tp",
                                                            "partial_rotary_factor")}
_SLIDING = "caps max_seq_len: within the window, sliding-window attention is full causal attention"
_MISTRAL = {**_LLAMA_CORE, "sliding_window": Field(HONOURED, _SLIDING)}
_QWEN2 = {
    **_LLAMA_CORE,   # head_dim too: not a Qwen2Config field, but its attention and RoPE read it when present
    "sliding_window": Field(HONOURED, f"with a sliding_attention layer, {_SLIDING}; otherwise not read"),
    "layer_types": Field(HONOURED, "full_attention, or sliding_attention (see sliding_window); others refused"),
    **{n: Field(HONOURED, "layer_types when the file has none: sliding_attention from layer max_window_layers on, "
                          "when use_sliding_window") for n in ("use_sliding_window", "max_window_layers")},
}
_QWEN3 = {
    **_QWEN2,
    "head_dim": Field(HONOURED, "head_dim (Qwen3Config's default: 128)"),
    "attention_bias": Field(REFUSED, "biases on q, k, v and o but not the MLP, which lmforge does not build",
                            (False, None)),
}
_MIXTRAL = {
    **_LLAMA_CORE,
    "num_local_experts": Field(HONOURED, "num_experts"),
    "num_experts_per_tok": Field(HONOURED, "experts_per_token (top-k, renormalised); 1 is refused: Mixtral "
                                           "renormalises a single choice to weight 1, lmforge keeps its probability"),
    "sliding_window": Field(HONOURED, _SLIDING),
    **_inert("the router's logits as an extra output, and its load-balancing loss in transformers' training loss",
             "output_router_logits"),
    "router_aux_loss_coef": Field(HONOURED, "moe_aux_loss = router_aux_loss_coef * num_experts_per_tok (transformers' "
                                            "load-balancing loss is k times lmforge's); training only, with "
                                            "moe_z_loss = 0 (Mixtral has no router z-loss)"),
    **_inert("noise on the router's input in training only", "router_jitter_noise"),
}
_BERT = {
    **{n: Field(HONOURED, "the shape") for n in ("vocab_size", "hidden_size", "num_hidden_layers",
                                                 "num_attention_heads", "intermediate_size")},
    "hidden_act": Field(HONOURED, "gelu / gelu_python -> gelu_exact, gelu_new / gelu_pytorch_tanh / gelu_fast -> "
                                  "gelu, relu (without the MLM head: lmforge's head transform is GELU); others "
                                  "refused"),
    "max_position_embeddings": Field(HONOURED, "max_seq_len (the learned position table)"),
    "type_vocab_size": Field(HONOURED, "type_vocab_size"),
    "layer_norm_eps": Field(HONOURED, "norm_eps"),
    "tie_word_embeddings": Field(HONOURED, "tie_embeddings (False: the MLM decoder has its own weight)"),
    **_inert(_DROPOUT, "hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout"),
    **_inert(_INIT, "initializer_range"),
    "pad_token_id": Field(INERT, "the embedding's padding_idx: zero gradient for that row, same forward"),
    "is_decoder": Field(REFUSED, "causal self-attention (BertLMHeadModel)", (False, None)),
    "add_cross_attention": Field(REFUSED, "cross-attention over an encoder's states", (False, None)),
    "position_embedding_type": Field(REFUSED, "transformers 4's relative-position variants", ("absolute", None)),
}
_T5 = {
    **{n: Field(HONOURED, "the shape") for n in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers",
                                                 "num_heads")},
    "num_decoder_layers": Field(HONOURED, "num_decoder_layers (None: num_layers)"),
    "relative_attention_num_buckets": Field(HONOURED, "relative_buckets"),
    "relative_attention_max_distance": Field(HONOURED, "relative_max_distance"),
    "layer_norm_epsilon": Field(HONOURED, "norm_eps"),
    "feed_forward_proj": Field(HONOURED, "relu, gelu -> gelu_exact, gelu_new -> gelu, gated-gelu -> geglu, "
                                         "gated-silu -> swiglu; others refused (when is_gated_act / dense_act_fn "
                                         "are absent)"),
    "is_gated_act": Field(HONOURED, "with dense_act_fn, overrides feed_forward_proj (transformers reads both)"),
    "dense_act_fn": Field(HONOURED, "with is_gated_act, overrides feed_forward_proj (transformers reads both)"),
    "scale_decoder_outputs": Field(HONOURED, "output_scale"),
    "tie_word_embeddings": Field(HONOURED, "output_scale when scale_decoder_outputs is absent (transformers 4's "
                                           "meaning); the output layer is tied unless the file has lm_head.weight"),
    **_inert(_DROPOUT, "dropout_rate", "classifier_dropout"),
    **_inert(_INIT, "initializer_factor"),
    "pad_token_id": Field(INERT, "the decoder start and label shifting: the logits take decoder ids as given"),
    "is_decoder": Field(INERT, "T5ForConditionalGeneration sets it for each of its stacks"),
    "is_encoder_decoder": Field(REFUSED, "False changes T5ForConditionalGeneration's logits in transformers 5 "
                                         "whenever it uses its cache (the default): the decoder's cache then has "
                                         "no cross-attention half", (True, None)),
    "n_positions": Field(INERT, "an old field: T5 has relative positions only"),
}

CONFIG_FIELDS: dict[str, dict[str, Field]] = {
    kind: {**_COMMON, **fields} for kind, fields in (
        ("gpt2", _GPT2), ("llama", _LLAMA), ("mistral", _MISTRAL), ("qwen2", _QWEN2), ("qwen3", _QWEN3),
        ("mixtral", _MIXTRAL), ("bert", _BERT), ("t5", _T5))}
# The language-model class of each supported model_type (hf_model_type: a ModelConfig's).
HF_ARCHITECTURES = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
                    "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM", "mixtral": "MixtralForCausalLM",
                    "bert": "BertForMaskedLM", "t5": "T5ForConditionalGeneration"}
FAMILIES = ("gpt2", "llama", "bert", "t5")   # the ModelConfig families with a transformers counterpart
# Classes whose folder holds the trunk the LM class reads (the bare model: lmforge adds the tied head), and
# a decoder's sequence classifier (a reward model: lmforge's score head, ModelConfig.num_labels).
_CLASSIFIERS = {"gpt2": "GPT2ForSequenceClassification", "llama": "LlamaForSequenceClassification",
                "qwen2": "Qwen2ForSequenceClassification", "qwen3": "Qwen3ForSequenceClassification"}
_ARCHITECTURES = {"gpt2": {"GPT2LMHeadModel", "GPT2Model", "GPT2DoubleHeadsModel", "GPT2ForSequenceClassification"},
                  "llama": {"LlamaForCausalLM", "LlamaModel", "LlamaForSequenceClassification"},
                  "mistral": {"MistralForCausalLM", "MistralModel"},
                  "qwen2": {"Qwen2ForCausalLM", "Qwen2Model", "Qwen2ForSequenceClassification"},
                  "qwen3": {"Qwen3ForCausalLM", "Qwen3Model", "Qwen3ForSequenceClassification"},
                  "mixtral": {"MixtralForCausalLM", "MixtralModel"},
                  "t5": {"T5ForConditionalGeneration", "T5Model"}}
_EXACT_GELU, _TANH_GELU = ("gelu", "gelu_python"), ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")
_ACT = {**dict.fromkeys(_EXACT_GELU, "gelu_exact"), **dict.fromkeys(_TANH_GELU, "gelu"), "relu": "relu"}
_GATED_ACT = {"silu": "swiglu", "swish": "swiglu", **dict.fromkeys(_TANH_GELU, "geglu")}


def check_fields(hf: dict) -> None:
    """Raises InteropError unless every field of ``hf`` is in CONFIG_FIELDS and refused ones are at an
    accepted value."""
    kind = hf.get("model_type")
    if kind not in CONFIG_FIELDS:
        raise InteropError(f"config.json: model_type={kind!r} is not supported; expected one of "
                           f"{sorted(CONFIG_FIELDS)}")
    table = CONFIG_FIELDS[kind]
    for key, value in hf.items():
        field = table.get(key)
        if field is None:
            raise InteropError(f"config.json: field {key!r} is not known for model_type {kind!r}, so lmforge cannot "
                               f"tell whether it changes the network; remove it from config.json if it does not")
        if field.status == REFUSED and value not in field.accepts:
            raise InteropError(f"config.json: {key}={value!r} is not supported for {kind} ({field.note}); expected "
                               f"{' or '.join(map(repr, field.accepts))}")


def config_from_hf(hf: dict) -> ModelConfig:
    """A ``transformers`` config dict -> ModelConfig (float32, no dropout: for inference and fine-tuning).

    Raises InteropError, naming the field, for anything the ModelConfig cannot express."""
    check_fields(hf)
    kind = hf["model_type"]
    archs = hf.get("architectures") or [HF_ARCHITECTURES[kind]]
    if kind in _ARCHITECTURES and not set(archs) <= _ARCHITECTURES[kind]:
        raise InteropError(f"config.json: architectures={archs} is not supported for {kind}; expected one of "
                           f"{sorted(_ARCHITECTURES[kind])} (lmforge imports the language model, or a decoder's "
                           f"sequence classifier as a reward model)")
    cfg = {"gpt2": _gpt2, "llama": _llama, "mistral": _mistral, "qwen2": _qwen2, "qwen3": _qwen3, "mixtral": _mixtral,
           "bert": _bert, "t5": _t5}[kind](_Reader(hf, kind))
    classifier = {a for a in archs if a.endswith("ForSequenceClassification")} if kind in _CLASSIFIERS else set()
    if classifier and classifier != set(archs):
        raise InteropError(f"config.json: architectures={archs} mixes a sequence classifier with other heads; "
                           f"expected one")
    return dataclasses.replace(cfg, num_labels=_num_labels(hf)) if classifier else cfg


def _num_labels(hf: dict) -> int:
    """A sequence classifier's outputs, as transformers reads them: ``len(id2label)`` when the config has
    it, else ``num_labels``, else 2 (PretrainedConfig's default)."""
    n = len(hf["id2label"]) if hf.get("id2label") else hf.get("num_labels") or 2
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InteropError(f"config.json: num_labels={n!r}; expected a sequence classifier's outputs (an int >= 1)")
    return n


class _Reader:
    """Reads config.json fields (None counts as absent, as transformers' defaults do)."""

    def __init__(self, hf: dict, kind: str):
        self.hf, self.kind = hf, kind

    def __call__(self, key, default=None):
        value = self.hf.get(key)
        return default if value is None else value

    def need(self, key):
        if self.hf.get(key) is None:
            raise InteropError(f"config.json of a {self.kind} model has no field {key!r}")
        return self.hf[key]

    def choice(self, key, table: dict, default: str, what: str = ""):
        value = self(key, default)
        if value not in table:
            raise InteropError(f"config.json: {key}={value!r} is not supported for {self.kind}{what}; expected one "
                               f"of {sorted(table)}")
        return table[value]


def _gpt2(get: _Reader) -> ModelConfig:
    d = get.need("n_embd")
    return ModelConfig.gpt2(vocab_size=get.need("vocab_size"), num_layers=get.need("n_layer"),
                            num_heads=get.need("n_head"), embed_dim=d, mlp_dim=get("n_inner") or 4 * d,
                            max_seq_len=get.need("n_positions"), norm_eps=get("layer_norm_epsilon", 1e-5),
                            activation=get.choice("activation_function", _ACT, "gelu_new"),
                            tie_embeddings=bool(get("tie_word_embeddings", True)))


def gpt2_query_scale(hf: dict, layer: int, head_dim: int) -> float:
    """The factor GPT-2's attention-scaling fields put on layer ``layer``'s attention logits, relative
    to lmforge's 1/sqrt(head_dim): it is folded into that layer's query projection at import."""
    scale = 1.0 if hf.get("scale_attn_weights", True) in (True, None) else head_dim ** 0.5
    return scale / (layer + 1) if hf.get("scale_attn_by_inverse_layer_idx") else scale


def _llama(get: _Reader, *, theta: float = 10_000.0, eps: float = 1e-6, max_len: int = 2048,
           head_dim: int | None = None, window: int | None = None, **fields) -> ModelConfig:
    """``theta``, ``eps``, ``max_len``, ``head_dim``: the config class's defaults of rope_theta,
    rms_norm_eps, max_position_embeddings and head_dim (None: hidden_size // num_attention_heads)
    (LlamaConfig's here; the descendants' from their readers, with their own ModelConfig ``fields``);
    ``window``: a sliding window, which caps max_seq_len."""
    # transformers reads rope_scaling (its 4.x name) before rope_parameters, and rope_theta inside either
    # before the top-level one.
    rope_key = "rope_scaling" if get("rope_scaling") else "rope_parameters"
    rope = dict(get(rope_key, {}))
    rope_type = rope.pop("rope_type", rope.pop("type", "default"))
    if rope_type != "default":
        raise InteropError(f"config.json: {rope_key} has rope_type={rope_type!r} (RoPE scaling), which is not "
                           f"supported; expected 'default'")
    theta = rope.pop("rope_theta", None) or get("rope_theta", theta)
    extra = sorted(k for k, v in rope.items() if not (k == "partial_rotary_factor" and v in (None, 1, 1.0)))
    if extra:
        raise InteropError(f"config.json: {rope_key} sets {extra} besides rope_theta, which lmforge does not "
                           f"read (partial_rotary_factor rotates part of each head); expected only rope_type "
                           f"'default' and rope_theta")
    if bool(get("attention_bias", False)) != bool(get("mlp_bias", False)):
        raise InteropError(f"config.json: attention_bias={get('attention_bias', False)} with mlp_bias="
                           f"{get('mlp_bias', False)} is not supported for llama; lmforge has biases everywhere or "
                           f"nowhere (expected both true or both false)")
    d, n = get.need("hidden_size"), get.need("num_attention_heads")
    length = get("max_position_embeddings", max_len)
    length = length if window is None else min(length, window)
    return ModelConfig.llama(vocab_size=get.need("vocab_size"), num_layers=get.need("num_hidden_layers"), num_heads=n,
                             num_kv_heads=get("num_key_value_heads", n), embed_dim=d,
                             head_dim=get("head_dim", head_dim or d // n),
                             mlp_dim=get.need("intermediate_size"), max_seq_len=length,
                             norm_eps=get("rms_norm_eps", eps), rope_theta=float(theta),
                             activation=get.choice("hidden_act", _GATED_ACT, "silu"),
                             use_bias=bool(get("attention_bias", False)),
                             tie_embeddings=bool(get("tie_word_embeddings", False)), **fields)


def _window(get: _Reader, sliding: bool = True) -> int | None:
    """``sliding_window`` when a layer attends through one (``sliding``), else None."""
    window = get("sliding_window") if sliding else None
    if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 1):
        raise InteropError(f"config.json: sliding_window={window!r}; expected a number of tokens (an int >= 1) or null")
    return window


def _mistral(get: _Reader) -> ModelConfig:
    """Mistral 7B (Jiang et al. 2023): a Llama with GQA whose attention may slide (``_window``)."""
    return _llama(get, max_len=4096 * 32, window=_window(get))


def _qwen2(get: _Reader) -> ModelConfig:
    """Qwen2 / Qwen2.5: a Llama with biases on q, k and v (``qkv_bias``), sliding layers as ``layer_types`` say."""
    return _llama(get, max_len=32768, window=_layer_window(get), qkv_bias=True)


def _qwen3(get: _Reader) -> ModelConfig:
    """Qwen3 (dense): a Llama with QK-norm (``qk_norm``) and no biases, sliding layers as Qwen2's."""
    return _llama(get, max_len=32768, window=_layer_window(get), head_dim=128, qk_norm=True)


def _layer_window(get: _Reader) -> int | None:
    """Qwen's sliding window when a layer of ``layer_types`` (or of transformers' rule without it) slides."""
    n = get.need("num_hidden_layers")
    types = get("layer_types")
    if types is None:   # transformers' rule when the file has none
        first = get("max_window_layers", 28)
        types = ["sliding_attention" if get("use_sliding_window", False) and i >= first else "full_attention"
                 for i in range(n)]
    bad = [t for t in types if t not in ("full_attention", "sliding_attention")]
    if not isinstance(types, list) or len(types) != n or bad:
        raise InteropError(f"config.json: layer_types={types!r} is not supported for {get.kind}; expected "
                           f"num_hidden_layers={n} entries, each full_attention or sliding_attention")
    return _window(get, "sliding_attention" in types)


def _mixtral(get: _Reader) -> ModelConfig:
    """Mixtral (Jiang et al. 2024): a Llama whose FFNs are top-k routed SwiGLU experts, dropless."""
    e, k = get.need("num_local_experts"), get("num_experts_per_tok", 2)
    if isinstance(e, bool) or not isinstance(e, int) or e < 1:
        raise InteropError(f"config.json: num_local_experts={e!r}; expected the number of experts (an int >= 1)")
    if isinstance(k, bool) or not isinstance(k, int) or not 2 <= k <= e:
        raise InteropError(f"config.json: num_experts_per_tok={k!r} is not supported for mixtral; expected an int in "
                           f"[2, num_local_experts={e}] (with 1, Mixtral gives the one expert weight 1, lmforge "
                           f"its router probability)")
    coef = get("router_aux_loss_coef", 0.001)
    if isinstance(coef, bool) or not isinstance(coef, (int, float)) or not coef >= 0:
        raise InteropError(f"config.json: router_aux_loss_coef={coef!r}; expected a loss weight (a number >= 0)")
    return _llama(get, theta=1_000_000.0, eps=1e-5, max_len=4096 * 32, window=_window(get), num_experts=e,
                  experts_per_token=k, moe_capacity_factor=0.0, moe_aux_loss=float(coef) * k, moe_z_loss=0.0)


def _bert(get: _Reader) -> ModelConfig:
    archs = get("architectures", ["BertForMaskedLM"])
    lm_head = bool({"BertForMaskedLM", "BertForPreTraining"} & set(archs))
    # lmforge's MLM head transform is GELU (model/encoder.py); transformers' uses hidden_act
    acts = {k: v for k, v in _ACT.items() if not (lm_head and v == "relu")}
    return ModelConfig.bert(vocab_size=get.need("vocab_size"), num_layers=get.need("num_hidden_layers"),
                            num_heads=get.need("num_attention_heads"), embed_dim=get.need("hidden_size"),
                            mlp_dim=get.need("intermediate_size"), max_seq_len=get.need("max_position_embeddings"),
                            type_vocab_size=get("type_vocab_size", 2), norm_eps=get("layer_norm_eps", 1e-12),
                            activation=get.choice("hidden_act", acts, "gelu", " with the masked-LM head" if lm_head else ""),
                            dropout=0.0, lm_head=lm_head, tie_embeddings=bool(get("tie_word_embeddings", True)))


def _t5(get: _Reader) -> ModelConfig:
    # transformers derives is_gated_act / dense_act_fn from feed_forward_proj, then lets the config's own
    # values of those two override it; read them the same way.
    proj = get("feed_forward_proj", "relu")
    parts = proj.split("-")
    gated = bool(get("is_gated_act", parts[0] == "gated" and len(parts) == 2))
    act = get("dense_act_fn", "gelu_new" if proj == "gated-gelu" else parts[-1])
    table = _GATED_ACT if gated else _ACT
    if act not in table:
        raise InteropError(f"config.json: feed_forward_proj={proj!r} (is_gated_act={gated}, dense_act_fn={act!r}) is "
                           f"not supported for t5; expected relu, gelu, gelu_new, gated-gelu or gated-silu")
    return ModelConfig.t5(vocab_size=get.need("vocab_size"), num_layers=get.need("num_layers"),
                          num_decoder_layers=get("num_decoder_layers") or get.need("num_layers"),
                          num_heads=get.need("num_heads"), head_dim=get.need("d_kv"), embed_dim=get.need("d_model"),
                          mlp_dim=get.need("d_ff"), norm_eps=get("layer_norm_epsilon", 1e-6),
                          relative_buckets=get("relative_attention_num_buckets", 32),
                          relative_max_distance=get("relative_attention_max_distance", 128),
                          activation=table[act], max_seq_len=512,
                          # transformers >= 5 always ties T5's lm_head unless the file has its own
                          # (see load_hf) and keeps the legacy tie flag's meaning as the output scale.
                          tie_embeddings=True,
                          output_scale=bool(get("scale_decoder_outputs", get("tie_word_embeddings", True))))


# --- export ---------------------------------------------------------------------------------------
# ModelConfig fields that do not change the function (or that save_hf handles itself).
_NOT_NETWORK = {"vocab_multiple", "dropout", "init_std", "attention", "scan_layers", "remat", "dtype", "param_dtype",
                "lora", "moe_aux_loss", "moe_z_loss",
                # compared through kv_heads, dims_per_head, decoder_layers (0 means "the default")
                "num_kv_heads", "head_dim", "num_decoder_layers"}
_ACT_TO_HF = {"gelu": "gelu_new", "gelu_exact": "gelu", "relu": "relu"}
_GATED_TO_HF = {"swiglu": "silu", "geglu": "gelu_pytorch_tanh"}
_T5_TO_HF = {"relu": "relu", "gelu_exact": "gelu", "gelu": "gelu_new", "geglu": "gated-gelu", "swiglu": "gated-silu"}


def config_to_hf(cfg: ModelConfig) -> dict:
    """ModelConfig -> a ``transformers`` config dict (the fields that define the same network).

    Raises InteropError naming the ModelConfig fields the transformers config cannot express."""
    kind = hf_model_type(cfg)
    if cfg.lora.rank:
        raise InteropError("a model with LoRA adapters exports merged: merge them first (lmforge.model.lora.merge)")
    base = {"architectures": [HF_ARCHITECTURES[kind]], "model_type": kind,
            "vocab_size": cfg.vocab_size, "dtype": "float32",   # save_hf writes the tensors' dtype
            # no tokenizer known here: none rather than transformers' defaults (GPT-2's 50256); save_hf
            # writes the tokenizer's
            "bos_token_id": None, "eos_token_id": None, "pad_token_id": None}
    act = cfg.activation
    if cfg.family == "gpt2":
        hf = {**base, "n_embd": cfg.embed_dim, "n_layer": cfg.num_layers, "n_head": cfg.num_heads,
              "n_inner": cfg.mlp_dim, "n_positions": cfg.max_seq_len, "n_ctx": cfg.max_seq_len,
              "layer_norm_epsilon": cfg.norm_eps, "tie_word_embeddings": cfg.tie_embeddings,
              "activation_function": _ACT_TO_HF.get(act, act), "resid_pdrop": 0.0, "embd_pdrop": 0.0,
              "attn_pdrop": 0.0}
    elif cfg.family == "llama":
        hf = {**base, "hidden_size": cfg.embed_dim, "intermediate_size": cfg.mlp_dim,
              "num_hidden_layers": cfg.num_layers, "num_attention_heads": cfg.num_heads,
              "num_key_value_heads": cfg.kv_heads, "head_dim": cfg.dims_per_head, "rms_norm_eps": cfg.norm_eps,
              "rope_theta": cfg.rope_theta, "max_position_embeddings": cfg.max_seq_len,
              "hidden_act": _GATED_TO_HF.get(act, act), "tie_word_embeddings": cfg.tie_embeddings,
              "attention_bias": cfg.use_bias, "mlp_bias": cfg.use_bias}
        if kind in ("qwen2", "qwen3"):   # qwen2: q, k, v biases are the architecture's, not a field
            del hf["mlp_bias"]
            if kind == "qwen2":
                del hf["attention_bias"]
            hf.update(use_sliding_window=False, sliding_window=None, max_window_layers=cfg.num_layers,
                      layer_types=["full_attention"] * cfg.num_layers)
        if kind == "mixtral":   # no bias fields (its projections have none); the experts
            del hf["attention_bias"], hf["mlp_bias"]
            hf.update(num_local_experts=cfg.num_experts, num_experts_per_tok=cfg.experts_per_token,
                      sliding_window=None, output_router_logits=False,
                      # transformers' load-balancing loss is k times lmforge's (model/moe.py)
                      router_aux_loss_coef=cfg.moe_aux_loss / cfg.experts_per_token)
    elif cfg.family == "bert":
        hf = {**base, "architectures": ["BertForMaskedLM" if cfg.lm_head else "BertModel"],
              "hidden_size": cfg.embed_dim, "num_hidden_layers": cfg.num_layers,
              "num_attention_heads": cfg.num_heads, "intermediate_size": cfg.mlp_dim,
              "max_position_embeddings": cfg.max_seq_len, "type_vocab_size": cfg.type_vocab_size,
              "layer_norm_eps": cfg.norm_eps, "hidden_act": _ACT_TO_HF.get(act, act),
              "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
              "tie_word_embeddings": cfg.tie_embeddings}
    else:
        if not cfg.tie_embeddings and cfg.output_scale:
            raise InteropError("a t5 model with an untied output layer and output_scale=True has no transformers "
                               "config")
        hf = {**base, "d_model": cfg.embed_dim, "d_kv": cfg.dims_per_head, "d_ff": cfg.mlp_dim,
              "num_layers": cfg.num_layers, "num_decoder_layers": cfg.decoder_layers, "num_heads": cfg.num_heads,
              "relative_attention_num_buckets": cfg.relative_buckets,
              "relative_attention_max_distance": cfg.relative_max_distance, "layer_norm_epsilon": cfg.norm_eps,
              "feed_forward_proj": _T5_TO_HF.get(act, act),
              # transformers 4 reads this flag as "tied lm_head and scaled output", 5 as "scaled output" (and
              # ties unless the file has lm_head.weight, which params_to_hf writes whenever the two differ).
              "tie_word_embeddings": cfg.output_scale, "dropout_rate": 0.0, "decoder_start_token_id": 0,
              "pad_token_id": 0, "eos_token_id": 1, "is_encoder_decoder": True}
    if cfg.num_labels:   # a reward model: the decoder with a score head (weights/hf.py, _decoder_head)
        if kind not in _CLASSIFIERS:
            raise InteropError(f"a {kind} model with a score head (model.num_labels={cfg.num_labels}) has no "
                               f"transformers class lmforge exports; expected one of {sorted(_CLASSIFIERS)}")
        hf.update(architectures=[_CLASSIFIERS[kind]],
                  id2label={str(i): f"LABEL_{i}" for i in range(cfg.num_labels)},
                  label2id={f"LABEL_{i}": i for i in range(cfg.num_labels)})
    _check_round_trip(cfg, hf)
    return hf


def hf_model_type(cfg: ModelConfig) -> str:
    """The transformers ``model_type`` of ``cfg``'s network: its family, or for a Llama ``mixtral`` (with
    experts), ``qwen3`` (``qk_norm``) or ``qwen2`` (``qkv_bias``). Raises InteropError for a family
    transformers has no counterpart of."""
    if cfg.family not in FAMILIES:
        raise InteropError(f"model.family={cfg.family!r} has no transformers counterpart; expected one of "
                           f"{list(FAMILIES)}")
    if cfg.family != "llama":
        return cfg.family
    if cfg.num_experts:
        return "mixtral"
    if cfg.qk_norm:
        return "qwen3"
    return "qwen2" if cfg.qkv_bias and not cfg.use_bias else "llama"


def _check_round_trip(cfg: ModelConfig, hf: dict) -> None:
    """Refuses an export whose config.json would read back as another network."""
    try:
        back = config_from_hf(hf)
    except InteropError as e:
        arch = HF_ARCHITECTURES[hf["model_type"]]
        act_key = {"gpt2": "activation_function", "llama": "hidden_act"}.get(cfg.family)
        if act_key and f"{act_key}=" in str(e):   # said in lmforge's key and values, not transformers'
            takes = sorted(set((_ACT if cfg.family == "gpt2" else _GATED_ACT).values()))
            raise InteropError(f"model.family={cfg.family!r}: model.activation={cfg.activation!r} has no "
                               f"{arch} counterpart in transformers; expected one of {takes}") from None
        raise InteropError(f"model.family={cfg.family!r}: {e}".replace("config.json: ", "")) from None
    skip = (_NOT_NETWORK | ({"tie_embeddings", "max_seq_len"} if cfg.family == "t5" else set())
            | (set() if cfg.num_experts else {"experts_per_token", "moe_capacity_factor"})
            | ({"use_bias"} if back.use_bias and not cfg.use_bias else set())   # zero biases are exact
            | ({"qkv_bias"} if cfg.use_bias or back.use_bias else set()))       # within biases everywhere
    differ = [f.name for f in dataclasses.fields(ModelConfig) if f.name not in skip
              and getattr(cfg, f.name) != getattr(back, f.name)]
    differ += [n for n in ("kv_heads", "dims_per_head", "decoder_layers") if getattr(cfg, n) != getattr(back, n)]
    if differ:
        got = ", ".join(f"{n}={getattr(cfg, n)!r}" for n in differ)
        hint = ("; lmforge convert exports it dropless (model.moe_capacity_factor=0), saying so"
                if differ == ["moe_capacity_factor"] else "")
        loads = ", ".join(f"{n}={getattr(back, n)!r}" for n in differ)
        raise InteropError(f"a {cfg.family} model with {got} has no {HF_ARCHITECTURES[hf['model_type']]} counterpart "
                           f"in transformers (it would load as {loads}){hint}")
