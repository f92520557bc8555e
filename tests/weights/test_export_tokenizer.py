"""`lmforge convert` to transformers carries the tokenizer and the special ids (weights/hf_tokenizer.py):
transformers' AutoTokenizer encodes text to lmforge's ids, and model.generate (greedy) continues a
prompt with the tokens lmforge's sampler picks. A GPT-2 trained without biases exports exactly."""

import inspect
import json
import pathlib
import pydoc

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmforge.cli.main import main
from lmforge.data.tokenizer import TokenizerConfig, load_tokenizer, train_tokenizer
from lmforge.infer import Sampler, SamplingConfig
from lmforge.model import DEFAULT_RULES, ModelConfig, build_model, create_sharded
from lmforge.model.sharding import use_mesh
from lmforge.train.mesh import MeshConfig, make_mesh
from lmforge.weights import load_params, save_model_folder
from lmforge.weights.hf import merge_params, save_hf
from lmforge.weights.hf_tokenizer import save_hf_tokenizer

torch = pytest.importorskip("torch", reason="parity tests need CPU torch")
transformers = pytest.importorskip("transformers", reason="parity tests need transformers")
transformers.utils.logging.disable_progress_bar()

ONE_DEVICE = make_mesh(MeshConfig(data=1), devices=jax.devices()[:1])   # models are called under a mesh
TEXTS = [
    "The with statement", "Hello  world", "  two leading spaces\n\tand a tab, digits 12345\n\n",
    "x   y    z  ", " ", "", "special pieces as text: <s> </s> <pad> <unk>", "<|user|> hi<|end|>\n<|assistant|>",
    "unicode: é ß 中文 🙂", "def f(a, b=3):\n    return {'k': [a, b]}  # comment\n",
]


@pytest.fixture(scope="module")
def sp_tokenizer(tmp_path_factory):
    """A small byte-fallback BPE, as lmforge trains it, on two stdlib modules' source."""
    folder = tmp_path_factory.mktemp("tok")
    texts = [pathlib.Path(m.__file__).read_text() for m in (inspect, pydoc)]
    return train_tokenizer(TokenizerConfig(vocab_size=600), texts, folder), folder


def _check_same_ids(tok, hf_tok, texts, *, bos: bool):
    for text in texts:
        ids = tok.encode(text)
        assert hf_tok(text, add_special_tokens=False).input_ids == ids, text
        assert hf_tok(text).input_ids == ([tok.bos_id] if bos else []) + ids, text
        assert hf_tok.decode(ids, skip_special_tokens=True) == text


def test_sentencepiece_tokenizer_loads_in_transformers_with_the_same_ids(sp_tokenizer, tmp_path):
    tok, tok_dir = sp_tokenizer
    ids = save_hf_tokenizer(tmp_path, tok, tok_dir, max_length=64)
    assert ids == {"bos_token_id": 2, "eos_token_id": 3, "pad_token_id": 0}
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert len(hf_tok) == tok.vocab_size
    assert (hf_tok.bos_token_id, hf_tok.eos_token_id, hf_tok.pad_token_id) == (2, 3, 0)
    # and on 200 random slices of a third module's source (never seen in training)
    src = pathlib.Path(json.__file__).read_text()
    rng = np.random.RandomState(0)
    starts = rng.randint(0, len(src), 200)
    slices = [src[a:a + n] for a, n in zip(starts, rng.randint(1, 300, 200))]
    _check_same_ids(tok, hf_tok, TEXTS + slices, bos=True)


def test_char_tokenizer_loads_in_transformers_with_the_same_ids(tmp_path):
    text = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\t"
    tok = train_tokenizer(TokenizerConfig(kind="char"), [text], tmp_path / "tok")
    ids = save_hf_tokenizer(tmp_path / "hf", tok, tmp_path / "tok")
    assert ids == {"bos_token_id": None, "eos_token_id": None, "pad_token_id": None}
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    _check_same_ids(tok, hf_tok, [text, "  Speak\n\n", "a", ""], bos=False)
    with pytest.raises(Exception, match="Missing"):   # an unseen character is an error on both sides
        hf_tok("Q")


def _random_params(cfg, scale=0.05, seed=2):
    """The model's parameters plus noise (non-zero biases, non-unit scales: nothing hides behind them)."""
    with use_mesh(ONE_DEVICE):
        _, params, _ = create_sharded(lambda: build_model(cfg, rngs=nnx.Rngs(1)), ONE_DEVICE, DEFAULT_RULES)
    rng = np.random.RandomState(seed)
    return jax.tree.map(lambda x: np.asarray(x) + scale * rng.randn(*np.shape(x)).astype(np.float32), params)


def test_bias_free_gpt2_exports_with_zero_biases_and_the_same_logits(tmp_path):
    cfg = ModelConfig.gpt2_tiny(vocab_size=99, use_bias=False)   # nanoGPT's bias=False (shakespeare_char)
    pure = _random_params(cfg)
    save_hf(tmp_path, cfg, pure)
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    biases = {n: p for n, p in model.named_parameters() if n.endswith(".bias")}
    assert biases and all(not p.detach().abs().max() for p in biases.values())
    tokens = np.random.RandomState(0).randint(0, 99, (2, 12))
    with torch.no_grad():
        theirs = model(input_ids=torch.tensor(tokens)).logits.numpy()
    with use_mesh(ONE_DEVICE):
        ours = np.asarray(merge_params(cfg, pure)(jnp.asarray(tokens))[0])
    np.testing.assert_allclose(theirs, ours, atol=1e-4, rtol=0)


def _greedy_pair(sampler: Sampler, hf_folder: pathlib.Path, prompts, n: int):
    """(lmforge's greedy continuation ids, transformers' greedy continuation ids) per prompt, without eos."""
    ours = sampler.completions(prompts, SamplingConfig(max_new_tokens=n, temperature=0.0))
    hf_tok = transformers.AutoTokenizer.from_pretrained(hf_folder)
    model = transformers.AutoModelForCausalLM.from_pretrained(hf_folder).eval()
    eos = model.generation_config.eos_token_id
    pairs = []
    for prompt, completion in zip(prompts, ours):
        ids = hf_tok(prompt, return_tensors="pt").input_ids
        assert ids[0].tolist() == sampler.encode_prompt(prompt)
        out = model.generate(ids, max_new_tokens=n, do_sample=False)[0, ids.shape[1]:].tolist()
        pairs.append(([t for t in completion.tokens if t != eos], [t for t in out if t != eos]))
    return pairs


def test_exported_model_folder_generates_what_lmforge_samples(sp_tokenizer, tmp_path, capsys):
    tok, tok_dir = sp_tokenizer
    # vocab padded to 640 rows (as vocab_multiple=64 does): generation must never pick rows 600..639
    cfg = ModelConfig.gpt2_tiny(vocab_size=640, max_seq_len=64)
    model_dir = tmp_path / "model"
    save_model_folder(model_dir, cfg, _random_params(cfg, scale=0.5))
    tok.save(model_dir / "tokenizer")
    (tmp_path / "a_file").write_text("x")                    # a file as the destination: one line, untouched
    assert main(["convert", str(model_dir), str(tmp_path / "a_file")]) == 2
    err = capsys.readouterr().err.strip()
    assert "a_file is a file; expected a new or empty folder" in err and "\n" not in err
    assert (tmp_path / "a_file").read_text() == "x"
    assert main(["convert", str(model_dir), str(tmp_path / "hf")]) == 0
    hf_dir = tmp_path / "hf"
    config = json.loads((hf_dir / "config.json").read_text())
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (2, 3, 0)
    generation = json.loads((hf_dir / "generation_config.json").read_text())
    assert generation["suppress_tokens"] == list(range(600, 640))
    loaded = load_params(model_dir, ONE_DEVICE, rules=DEFAULT_RULES)
    sampler = Sampler(loaded.graphdef, loaded.params, load_tokenizer(model_dir / "tokenizer"), loaded.cfg,
                      ONE_DEVICE, DEFAULT_RULES)
    for ours, theirs in _greedy_pair(sampler, hf_dir, ["The with statement", "def f(x):\n"], 12):
        assert ours == theirs and len(ours) > 0


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One real run of the quickstart smoke variant (about a minute)."""
    exp = pathlib.Path(__file__).resolve().parents[2] / "experiments" / "quickstart.py"
    run_dir = tmp_path_factory.mktemp("quickstart") / "run"
    assert main(["run", f"{exp}:smoke", "--workdir", str(run_dir)]) == 0
    return run_dir


@pytest.mark.slow   # the smoke run (~1 min): run with -m slow
def test_exported_run_tokenizes_and_generates_as_lmforge(smoke_run, tmp_path):
    from lmforge.cli.config_io import load_config
    from lmforge.cli.launch import CONFIG_FILE
    from lmforge.train.pretrain import load_for_sampling

    hf_dir = tmp_path / "hf"
    assert main(["convert", str(smoke_run), str(hf_dir)]) == 0
    sampler = load_for_sampling(smoke_run, load_config(smoke_run / CONFIG_FILE))
    hf_tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
    assert len(hf_tok) == sampler.tok.vocab_size
    _check_same_ids(sampler.tok, hf_tok, TEXTS, bos=True)
    for ours, theirs in _greedy_pair(sampler, hf_dir, ["The with statement", "A list comprehension"], 16):
        assert ours == theirs and len(ours) > 0
    prompt = "The with statement"
    text = sampler.complete([prompt], SamplingConfig(max_new_tokens=16, temperature=0.0))[0]
    model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    ids = hf_tok(prompt, return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=16, do_sample=False)
    assert hf_tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True) == text
    # A 40-step model continues mostly with newlines; the logits on real text are the sharper check.
    ids = hf_tok(inspect.getdoc(json), return_tensors="pt").input_ids[:, :64]
    with torch.no_grad():
        theirs = model(input_ids=ids).logits.numpy()
    loaded = load_params(smoke_run, ONE_DEVICE, rules=DEFAULT_RULES)
    with use_mesh(ONE_DEVICE):
        ours = np.asarray(nnx.merge(loaded.graphdef, loaded.params)(jnp.asarray(ids.numpy()))[0])
    np.testing.assert_allclose(theirs, ours[..., :theirs.shape[-1]], atol=1e-4, rtol=0)
