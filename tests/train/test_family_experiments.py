"""The BERT, T5 and original-Transformer experiments end to end (their smoke variants, shortened),
and `lmforge convert` between their run folders and `transformers`."""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmforge.cli.main import main
from lmforge.model import ModelConfig, axis_rules
from lmforge.train.metrics import read_metrics
from lmforge.train.pretrain import PretrainConfig, run_pretrain

EXPERIMENTS = pathlib.Path(__file__).resolve().parents[2] / "experiments" / "pretrain"
SHORT = ["steps=16", "eval_every=8", "checkpoint_every=8", "log_every=4"]


def run(name, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp(name) / "run"
    assert main(["run", f"{EXPERIMENTS / name}.py:smoke", *SHORT, "--workdir", str(run_dir)]) == 0
    return run_dir


@pytest.fixture(scope="module")
def bert_run(tmp_path_factory):
    return run("bert_mlm", tmp_path_factory)


# The encoder-decoder runs (33 s and 43 s on the 2-core machine) are slow-marked: the default run keeps
# their families' sharded training and cached sampling (tests/model/test_encoder_families.py).
@pytest.mark.parametrize("name", ["bert_mlm", pytest.param("t5_span_corruption", marks=pytest.mark.slow),
                                  pytest.param("transformer_base", marks=pytest.mark.slow)])
def test_smoke_experiment_learns(name, tmp_path_factory, request):
    run_dir = request.getfixturevalue("bert_run") if name == "bert_mlm" else run(name, tmp_path_factory)
    evals = [m["eval/loss"] for m in read_metrics(run_dir / "metrics.jsonl") if "eval/loss" in m]
    assert len(evals) == 2 and evals[1] < evals[0] < 10
    if name != "bert_mlm":   # encoder-decoders sample through the shared KV-cache sampler
        assert (run_dir / "samples.txt").read_text().startswith("--- sample 0")
    # bits/byte only where every token is scored: the masked 15% (or span targets) over all the text's bytes
    # read as an impossible 0.67 bits/byte for BERT
    final = json.loads((run_dir / "final.json").read_text())
    has_bpb = any("eval/bits_per_byte" in m for m in read_metrics(run_dir / "metrics.jsonl"))
    assert has_bpb == (name == "transformer_base") and ("final/val_bits_per_byte" in final) == has_bpb
    # span corruption: the dropped text's loss and accuracy apart from the sentinels and EOS read off the layout
    last = [m for m in read_metrics(run_dir / "metrics.jsonl") if "eval/loss" in m][-1]
    assert ("eval/span_accuracy" in last) == (name == "t5_span_corruption")
    if name == "t5_span_corruption":
        assert last["eval/span_accuracy"] < last["eval/token_accuracy"] and last["eval/span_loss"] > last["eval/loss"]


def test_convert_bert_run_to_transformers_and_back(bert_run, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from lmforge.cli.config_io import load_config
    from lmforge.train.pretrain import load_for_sampling

    hf_dir, back = tmp_path / "hf", tmp_path / "lmforge"
    assert main(["convert", str(bert_run), str(hf_dir)]) == 0
    assert "BertForMaskedLM" in capsys.readouterr().out
    config = load_config(bert_run / "config.json")
    loaded = load_for_sampling(bert_run, config)    # lmforge.weights.load_params: parameters only, sharded
    tokens = np.random.RandomState(0).randint(5, loaded.model_cfg.vocab_size, (8, 16))   # 8 rows: the 8-way data mesh
    with jax.set_mesh(loaded.mesh), axis_rules(config.mesh.rules):
        ours = np.asarray(nnx.merge(loaded.graphdef, loaded.params)(jnp.asarray(tokens))[0])
    hf = transformers.AutoModelForMaskedLM.from_pretrained(hf_dir).eval()
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(tokens)).logits.numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)
    # transformers' fill-mask pipeline runs on the export (it had no mask_token): the mask typed in the text
    fill = transformers.pipeline("fill-mask", model=str(hf_dir))
    assert fill.tokenizer.mask_token == "<|mask|>" and len(fill("import numpy as <|mask|>", top_k=3)) == 3
    # transformers folder -> lmforge model folder -> transformers folder: the same tensors
    assert main(["convert", str(hf_dir), str(back)]) == 0
    assert json.loads((back / "model.json").read_text())["family"] == "bert"
    again = tmp_path / "hf_again"
    assert main(["convert", str(back), str(again)]) == 0
    from safetensors.numpy import load_file
    a, b = load_file(str(hf_dir / "model.safetensors")), load_file(str(again / "model.safetensors"))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_convert_errors(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["convert", str(tmp_path / "empty"), str(tmp_path / "out")]) == 2
    assert "is neither a run folder" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep me")
    assert main(["convert", str(tmp_path / "empty"), str(tmp_path / "full")]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert (tmp_path / "full" / "x").read_text() == "keep me"


def test_objective_must_fit_the_family(tmp_path):
    cfg = PretrainConfig(model=ModelConfig.bert_tiny(vocab_size=0))   # objective defaults to causal
    with pytest.raises(ValueError, match=r"objective.kind='causal' does not train model.family='bert' \(encoder\)"):
        run_pretrain(cfg, tmp_path)


def test_sample_refuses_an_encoder_only_run_in_one_line(bert_run, capsys):
    """`lmforge sample` on a BERT run says an encoder-only model does not continue text (it raised an
    AttributeError from deep in the sampler)."""
    assert main(["sample", str(bert_run), "--prompt", "The with statement", "--max-new-tokens", "4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"lmforge: error: lmforge sample {bert_run}: an encoder-only model (bert: it fills in masked "
                       f"tokens) does not continue text; sample from a decoder (gpt2, llama) or an encoder-decoder "
                       f"(t5, transformer)")


def test_a_batch_that_does_not_split_is_refused_before_the_run_folder_exists(tmp_path, capsys):
    """data.batch_size against optim.grad_accum (and the mesh's batch axes) is checked with the config,
    before config.json, data.json and the tokenizer are written (it was checked after them)."""
    workdir = tmp_path / "run"
    assert main(["run", str(EXPERIMENTS.parent / "shakespeare_char.py") + ":smoke", "optim.grad_accum=3",
                 "--workdir", str(workdir)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "lmforge: error: data.batch_size=8 must be divisible by the batch mesh axes (8), the process count and "
        "optim.grad_accum (=3)")
    assert not workdir.exists()
