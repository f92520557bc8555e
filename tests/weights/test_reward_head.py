"""The reward model's score head: a decoder with ``num_labels > 0`` scores each row at its last real
token, as transformers' ``GPT2ForSequenceClassification`` / ``LlamaForSequenceClassification`` (and Qwen2's, Qwen3's) do
(same weights -> same scores, both directions of conversion); ``load_params(num_labels=)`` puts a
fresh head on a language model; a reward model refuses to generate or give token log-probs."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmforge.model import LoRAConfig, ModelConfig, build_model, create_sharded
from lmforge.model.sharding import use_mesh
from lmforge.train.mesh import DEFAULT_RULES, MeshConfig, make_mesh
from lmforge.weights import load_params
from lmforge.weights.folder import WeightsError
from lmforge.weights.hf import load_hf, merge_params, save_hf

ONE_DEVICE = make_mesh(MeshConfig(data=1), devices=jax.devices()[:1])
PAD = 0
# Right-padded rows of ids 1..98 (0 is the padding id transformers looks for): lengths 9, 5, 12.
LENGTHS = (9, 5, 12)
TOKENS = np.random.RandomState(0).randint(1, 99, (3, 12))
for _row, _n in enumerate(LENGTHS):
    TOKENS[_row, _n:] = PAD
SEGMENTS = (TOKENS != PAD).astype(np.int32)


def our_scores(cfg, pure, tokens=TOKENS, segments=SEGMENTS, **kw) -> np.ndarray:
    with use_mesh(ONE_DEVICE):
        graphdef, params = nnx.split(merge_params(cfg, pure))
        return np.asarray(jax.jit(lambda p, t, s: nnx.merge(graphdef, p).scores(t, segment_ids=s, **kw)[0])(
            params, tokens, segments))


def test_scores_read_the_last_real_token_whatever_the_padding():
    cfg = ModelConfig.llama_tiny(vocab_size=99, num_labels=2)
    with use_mesh(ONE_DEVICE):
        _, pure, _ = create_sharded(lambda: build_model(cfg, rngs=nnx.Rngs(0)), ONE_DEVICE, DEFAULT_RULES)
    padded = our_scores(cfg, pure)
    assert padded.shape == (3, 2)
    np.testing.assert_allclose(our_scores(cfg, pure, one_segment=True), padded, atol=1e-6)
    for row, n in enumerate(LENGTHS):    # each row alone, unpadded
        alone = our_scores(cfg, pure, TOKENS[row:row + 1, :n], SEGMENTS[row:row + 1, :n])
        np.testing.assert_allclose(alone[0], padded[row], atol=1e-5)
    assert not np.allclose(padded[0], padded[1])
    # left-padded rows (the sampler's layout) with positions counted from each row's first real token
    left, left_seg = np.zeros_like(TOKENS), np.zeros_like(SEGMENTS)
    for row, n in enumerate(LENGTHS):
        left[row, 12 - n:], left_seg[row, 12 - n:] = TOKENS[row, :n], 1
    positions = np.maximum(np.cumsum(left_seg, axis=1) - 1, 0).astype(np.int32)
    with use_mesh(ONE_DEVICE):
        graphdef, params = nnx.split(merge_params(cfg, pure))
        shifted = jax.jit(lambda p, t, s, q: nnx.merge(graphdef, p).scores(t, segment_ids=s, positions=q)[0])(
            params, left, left_seg, positions)
    np.testing.assert_allclose(np.asarray(shifted), padded, atol=1e-5)
    # the per-position head (DecoderLM.logits) at the last real token is the score
    with use_mesh(ONE_DEVICE):
        logits, _ = merge_params(cfg, pure)(jnp.asarray(TOKENS[:1, :9]))
    np.testing.assert_allclose(np.asarray(logits)[0, -1], padded[0], atol=1e-5)


def test_param_count_and_config_checks():
    for cfg in (ModelConfig.gpt2_tiny(num_labels=1), ModelConfig.llama_tiny(num_labels=3, scan_layers=True)):
        with use_mesh(ONE_DEVICE):
            _, pure, _ = create_sharded(lambda: build_model(cfg, rngs=nnx.Rngs(0)),
                                        ONE_DEVICE, DEFAULT_RULES)
        assert "unembed" not in pure and pure["score"].shape == (cfg.embed_dim, cfg.num_labels)
        assert sum(x.size for x in jax.tree.leaves(pure)) == cfg.num_params()
    with pytest.raises(ValueError, match="num_labels=1 .*decoder-only"):
        ModelConfig.bert_tiny(num_labels=1)
    with pytest.raises(ValueError, match="num_labels=-1"):
        ModelConfig.gpt2_tiny(num_labels=-1)


torch = pytest.importorskip("torch", reason="parity tests need CPU torch (pip install torch==2.13.0)")
transformers = pytest.importorskip("transformers", reason="parity tests need transformers")
transformers.utils.logging.set_verbosity_error()


def hf_rewards(model) -> np.ndarray:
    with torch.no_grad():
        return model(input_ids=torch.tensor(TOKENS)).logits.numpy()


HF_CLASSIFIERS = {
    "gpt2": lambda: transformers.GPT2ForSequenceClassification(transformers.GPT2Config(
        vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=64, num_labels=1, pad_token_id=PAD)),
    "llama_gqa_2_labels": lambda: transformers.LlamaForSequenceClassification(transformers.LlamaConfig(
        vocab_size=99, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, num_labels=2, pad_token_id=PAD)),
    "qwen2": lambda: transformers.Qwen2ForSequenceClassification(transformers.Qwen2Config(
        vocab_size=99, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, num_labels=1, pad_token_id=PAD)),
}


@pytest.mark.parametrize("name", list(HF_CLASSIFIERS))
def test_import_from_transformers_gives_same_rewards(name, tmp_path):
    torch.manual_seed(0)
    model = HF_CLASSIFIERS[name]().eval()
    model.save_pretrained(tmp_path)
    cfg, pure, unused = load_hf(tmp_path)
    assert not unused and cfg.num_labels == model.config.num_labels
    np.testing.assert_allclose(our_scores(cfg, pure), hf_rewards(model), atol=1e-4, rtol=0)


def test_a_pad_id_that_is_eos_is_said_on_import(tmp_path, capfd):
    """transformers reads the score before a trailing eos when pad == eos (TRL's default): said in one line."""
    model = transformers.GPT2ForSequenceClassification(transformers.GPT2Config(
        vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=64, num_labels=1, pad_token_id=5,
        eos_token_id=5, bos_token_id=5))
    model.save_pretrained(tmp_path)
    capfd.readouterr()
    load_hf(tmp_path)
    err = capfd.readouterr().err
    assert "pad_token_id=5 is also eos: transformers reads the score at the last token that is not 5" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("cfg", [ModelConfig.gpt2_tiny(vocab_size=99, num_labels=1),
                                 ModelConfig.llama_tiny(vocab_size=99, num_labels=1, scan_layers=True,
                                                        tie_embeddings=True),
                                 ModelConfig.llama_tiny(vocab_size=99, num_labels=1, qkv_bias=True),
                                 ModelConfig.llama_tiny(vocab_size=99, num_labels=1, qk_norm=True)],
                         ids=["gpt2", "llama_scan_tied", "qwen2", "qwen3"])
def test_export_to_transformers_gives_same_rewards(cfg, tmp_path):
    with use_mesh(ONE_DEVICE):
        _, pure, _ = create_sharded(lambda: build_model(cfg, rngs=nnx.Rngs(1)),
                                    ONE_DEVICE, DEFAULT_RULES)
    pure = jax.tree.map(np.asarray, pure)
    save_hf(tmp_path, cfg, pure)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert type(model).__name__.endswith("ForSequenceClassification")
    model.config.pad_token_id = PAD   # save_hf writes the tokenizer's pad id when given one
    np.testing.assert_allclose(hf_rewards(model), our_scores(cfg, pure), atol=1e-4, rtol=0)
    back, pure_back, unused = load_hf(tmp_path)
    assert back.num_labels == 1 and not unused


def test_load_params_puts_a_fresh_score_head_on_a_language_model(tmp_path):
    from lmforge.weights.folder import save_model_folder

    lm_cfg = ModelConfig.llama_tiny(vocab_size=99)
    with use_mesh(ONE_DEVICE):
        _, pure, _ = create_sharded(lambda: build_model(lm_cfg, rngs=nnx.Rngs(0)),
                                    ONE_DEVICE, DEFAULT_RULES)
    save_model_folder(tmp_path / "lm", lm_cfg, jax.tree.map(np.asarray, pure))
    rm = load_params(tmp_path / "lm", ONE_DEVICE, num_labels=1, seed=3)
    assert rm.cfg.num_labels == 1 and "unembed" not in rm.params and rm.params["score"].shape == (64, 1)
    np.testing.assert_array_equal(np.asarray(rm.params["blocks"][0]["attn"]["q"]["kernel"]),
                                  np.asarray(pure["blocks"][0]["attn"]["q"]["kernel"]))
    again = load_params(tmp_path / "lm", ONE_DEVICE, num_labels=1, seed=3)
    np.testing.assert_array_equal(np.asarray(again.params["score"]), np.asarray(rm.params["score"]))
    assert 0.005 < float(np.std(np.asarray(rm.params["score"]))) < 0.04     # normal(init_std = 0.02)
    with use_mesh(ONE_DEVICE):
        model = nnx.merge(rm.graphdef, rm.params)
        assert model.scores(jnp.asarray(TOKENS), segment_ids=jnp.asarray(SEGMENTS))[0].shape == (3, 1)
        with pytest.raises(ValueError, match="score head .*does not generate"):
            model.init_cache(1, 8)
        with pytest.raises(ValueError, match="score head .*cannot give token log-probs"):
            model.output_head()
        lm = load_params(tmp_path / "lm", ONE_DEVICE)
        with pytest.raises(ValueError, match=r"language-model head, not a score head.*load_params\(\.\.\., num_labels=1\)"):
            nnx.merge(lm.graphdef, lm.params).scores(jnp.asarray(TOKENS))
    with_lora = load_params(tmp_path / "lm", ONE_DEVICE, num_labels=1, lora=LoRAConfig(rank=2))
    assert with_lora.cfg.lora.rank == 2 and "score" in with_lora.params
    # a reward model's folder loads as it is with the same num_labels; another count is refused
    save_model_folder(tmp_path / "rm", rm.cfg, jax.tree.map(np.asarray, rm.params))
    same = load_params(tmp_path / "rm", ONE_DEVICE, num_labels=1)
    np.testing.assert_array_equal(np.asarray(same.params["score"]), np.asarray(rm.params["score"]))
    with pytest.raises(WeightsError, match="score head of 1 output already"):
        load_params(tmp_path / "rm", ONE_DEVICE, num_labels=2)
    assert dataclasses.replace(rm.cfg, num_labels=0) == lm_cfg
