"""``lmforge convert``'s checks on what it reads (tier d, tiny folders): a model folder's tensors against
its ``model.json``, a sharded transformers folder's index, a SentencePiece-only tokenizer carried over,
an export refusal said in lmforge's keys, a capacity MoE exported as the dropless Mixtral, and ``--dtype``."""

import dataclasses
import json
import pathlib
import shutil

import jax
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file, save_file

from lmforge.cli.main import main
from lmforge.data import TokenizerConfig, load_tokenizer, train_tokenizer
from lmforge.model import ModelConfig, build_model, create_sharded
from lmforge.model.paths import flatten, unflatten
from lmforge.train.mesh import DEFAULT_RULES, MeshConfig, make_mesh
from lmforge.weights import read_model_folder, save_model_folder
from lmforge.weights.hf import InteropError, save_hf
from lmforge.weights.hf_config import config_to_hf

ONE_DEVICE = make_mesh(MeshConfig(data=1), devices=jax.devices()[:1])
CFG = ModelConfig.llama_tiny(vocab_size=512, embed_dim=32, mlp_dim=64, max_seq_len=64)


@pytest.fixture(scope="module")
def params():
    _, p, _ = create_sharded(lambda: build_model(CFG, rngs=nnx.Rngs(0)), ONE_DEVICE, DEFAULT_RULES)
    return jax.device_get(p)


@pytest.fixture(scope="module")
def model_folder(params, tmp_path_factory) -> pathlib.Path:
    folder = tmp_path_factory.mktemp("model")
    save_model_folder(folder, CFG, params)
    return folder


def error(capsys, *argv) -> str:
    assert main(["convert", *map(str, argv)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lmforge: error: ") and "\n" not in err, err
    return err


@pytest.mark.parametrize("change, message", [
    ({"mlp_dim": 128}, "the model expects"),                               # a shape: it exported a broken folder
    ({"num_layers": 3}, "does not fit the model: missing ['blocks.2."),     # a name: it raised a KeyError
])
def test_a_model_folder_whose_tensors_do_not_fit_its_model_json_is_refused(model_folder, tmp_path, capsys, change,
                                                                          message):
    folder = tmp_path / "edited"
    shutil.copytree(model_folder, folder)
    fields = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**fields, **change}))
    err = error(capsys, folder, tmp_path / "hf")
    assert f"lmforge: error: {folder}" in err and message in err
    assert not (tmp_path / "hf").exists()                                  # nothing written


def test_a_sharded_folder_reads_the_files_its_index_names(params, tmp_path, capsys):
    """A missing shard is named (it said 'checkpoint has no tensor ...'); a stray *.safetensors file beside
    the shards is not merged in (it overrode tensors of the same name)."""
    hf = tmp_path / "hf"
    save_hf(hf, CFG, params)
    tensors = load_file(str(hf / "model.safetensors"))
    (hf / "model.safetensors").unlink()
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[:len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    for shard, part in shards.items():
        save_file({k: tensors[k] for k in part}, str(hf / shard), metadata={"format": "pt"})
    index = {"metadata": {}, "weight_map": {k: shard for shard, part in shards.items() for k in part}}
    (hf / "model.safetensors.index.json").write_text(json.dumps(index))
    stray = names[0]
    save_file({stray: np.zeros_like(tensors[stray])}, str(hf / "old-copy.safetensors"))

    assert main(["convert", str(hf), str(tmp_path / "lf")]) == 0
    _, pure = read_model_folder(tmp_path / "lf")
    jax.tree.map(np.testing.assert_array_equal, pure, params)             # the stray file's zeros not read

    missing = hf / "model-00002-of-00002.safetensors"
    missing.unlink()
    err = error(capsys, hf, tmp_path / "lf2")
    assert err == (f"lmforge: error: {hf / 'model.safetensors.index.json'} maps {shards[missing.name][0]} (and others) "
                   f"to {missing.name}, which is missing from {hf}")


def test_a_sentencepiece_tokenizer_model_travels_with_an_import(params, tmp_path, capsys):
    """A transformers folder with only ``tokenizer.model`` (no tokenizer.json): eval and sample read it, so
    the converted model folder gets it (it said 'has the weights only')."""
    tok = train_tokenizer(TokenizerConfig(vocab_size=400, num_reserved=0, max_train_chars=50_000),
                          [pathlib.Path(m.__file__).read_text() for m in (json, dataclasses)], tmp_path / "tok")
    hf = tmp_path / "hf"
    save_hf(hf, CFG, params)
    shutil.copy(tmp_path / "tok" / "tokenizer.model", hf / "tokenizer.model")
    assert main(["convert", str(hf), str(tmp_path / "lf")]) == 0
    assert "weights only" not in capsys.readouterr().out
    carried = load_tokenizer(tmp_path / "lf" / "tokenizer")
    text = "JSON (JavaScript Object Notation) is a lightweight data interchange format."
    assert carried.encode(text) == tok.encode(text) and carried.vocab_size == tok.vocab_size


def test_an_export_refusal_names_lmforge_s_key():
    """A Llama with GELU (``model.family=llama`` over a GPT-2 experiment) was refused in transformers' terms
    (hidden_act='gelu', and its values)."""
    with pytest.raises(InteropError) as e:
        config_to_hf(dataclasses.replace(CFG, activation="gelu"))
    assert str(e.value) == ("model.family='llama': model.activation='gelu' has no LlamaForCausalLM counterpart in "
                            "transformers; expected one of ['geglu', 'swiglu']")


def test_a_capacity_moe_exports_as_the_dropless_mixtral_saying_so(tmp_path, capsys):
    """transformers' Mixtral never drops a token: a model trained with expert capacity exports as the same
    weights routed dropless, and the export says so."""
    torch = pytest.importorskip("torch", reason="needs CPU torch")
    transformers = pytest.importorskip("transformers")
    cfg = ModelConfig.llama_moe_tiny(vocab_size=64, max_seq_len=32, moe_capacity_factor=1.25)
    _, p, _ = create_sharded(lambda: build_model(cfg, rngs=nnx.Rngs(0)), ONE_DEVICE, DEFAULT_RULES)
    save_model_folder(tmp_path / "moe", cfg, jax.device_get(p))
    assert main(["convert", str(tmp_path / "moe"), str(tmp_path / "hf")]) == 0
    out = capsys.readouterr().out
    assert "moe_capacity_factor=1.25" in out and "routed dropless" in out and "MixtralForCausalLM" in out
    tokens = np.random.RandomState(0).randint(0, 64, (2, 10))
    with torch.no_grad():
        theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()(
            input_ids=torch.tensor(tokens)).logits.numpy()
    dropless = dataclasses.replace(cfg, moe_capacity_factor=0.0)
    from lmforge.model.sharding import use_mesh
    from lmforge.weights.hf import merge_params
    with use_mesh(ONE_DEVICE):
        ours = np.asarray(merge_params(dropless, jax.device_get(p))(jax.numpy.asarray(tokens))[0])
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)


def test_dtype_writes_bfloat16_both_ways_and_float16_refuses_weights_past_its_range(params, model_folder, tmp_path,
                                                                                     capsys):
    """``--dtype bfloat16`` halves an export (its ``config.json`` says bfloat16, which ``from_pretrained`` loads
    as such) and an import (read back as the model's float32 ``param_dtype``, the same bf16 values); float16
    refuses a weight it cannot hold, naming it, before anything is written."""
    import ml_dtypes

    from lmforge.weights import load_params

    assert main(["convert", str(model_folder), str(tmp_path / "hf"), "--dtype", "bfloat16"]) == 0
    tensors = load_file(str(tmp_path / "hf" / "model.safetensors"))
    assert {t.dtype for t in tensors.values()} == {np.dtype(ml_dtypes.bfloat16)}
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["dtype"] == "bfloat16"
    assert main(["convert", str(tmp_path / "hf"), str(tmp_path / "back"), "--dtype", "bfloat16"]) == 0
    back = load_file(str(tmp_path / "back" / "params.safetensors"))
    assert {t.dtype for t in back.values()} == {np.dtype(ml_dtypes.bfloat16)}
    loaded = load_params(tmp_path / "back", ONE_DEVICE)
    kernel = np.asarray(dict(flatten(loaded.params))["blocks.0.attn.q.kernel"])
    assert kernel.dtype == np.float32
    want = np.asarray(dict(flatten(params))["blocks.0.attn.q.kernel"])
    np.testing.assert_array_equal(kernel, want.astype(ml_dtypes.bfloat16).astype(np.float32))
    assert not np.array_equal(kernel, want)   # rounded: the test can tell float32 from bfloat16

    big = dict(flatten(jax.tree.map(np.array, params)))
    big["blocks.0.attn.q.kernel"][3, 1] = 7e4
    save_model_folder(tmp_path / "big", CFG, unflatten(big))
    capsys.readouterr()
    err = error(capsys, tmp_path / "big", tmp_path / "f16", "--dtype", "float16")
    assert "--dtype float16: " in err and "values up to 7e+04 pass float16's largest, 65504" in err
    assert not (tmp_path / "f16").exists() or not any((tmp_path / "f16").iterdir())


def test_a_bfloat16_export_loads_in_transformers_as_bfloat16(model_folder, tmp_path):
    torch = pytest.importorskip("torch", reason="needs CPU torch")
    transformers = pytest.importorskip("transformers")
    assert main(["convert", str(model_folder), str(tmp_path / "hf"), "--dtype", "bfloat16"]) == 0
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    assert next(model.parameters()).dtype == torch.bfloat16
