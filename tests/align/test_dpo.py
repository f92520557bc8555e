"""DPO: the loss against TRL's formulas, preference data (HH-RLHF and TRL's formats) into pair rows, and
the runner end to end (full and LoRA) on a tiny model through the CLI."""

import json
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmforge.data import SourceConfig, TokenizerConfig, load_tokenizer, read_documents, train_tokenizer
from lmforge.data.chat import ChatFormat
from lmforge.data.preference import (preference_dataset, preference_eval_batches, preference_examples,
                                     read_preferences, split_prompt)
from lmforge.model import ModelConfig, axis_rules, build_model, create_sharded
from lmforge.train import dpo_loss
from lmforge.train.mesh import MeshConfig, make_mesh
from lmforge.weights import load_params, save_model_folder, source_model_config

MODEL = ModelConfig.gpt2_tiny(vocab_size=512, max_seq_len=64)   # the conftest's base
RULES = MeshConfig().rules
EXPERIMENT = pathlib.Path(__file__).resolve().parents[2] / "experiments" / "align" / "dpo_hh.py"
LOG2 = math.log(2.0)


# ------------------------------------------------------------------------------------------ the loss
def trl_losses(pol, ref, lengths, beta, loss_type, eps=0.0):
    """TRL 1.16.0's DPOTrainer._compute_loss per-pair losses (trl/trainer/dpo_trainer.py, the
    ``loss_type ==`` branches), transcribed to numpy float64: reverse-KL scores, batch [chosen; rejected]."""
    delta = (pol[:, 0] - ref[:, 0]) - (pol[:, 1] - ref[:, 1])
    logsig = lambda x: -np.log1p(np.exp(-x))                          # noqa: E731
    if loss_type == "sigmoid":
        return -logsig(beta * delta)
    if loss_type == "hinge":
        return np.maximum(0.0, 1 - beta * delta)
    if loss_type == "ipo":
        c = (pol[:, 0] - ref[:, 0]) / np.maximum(lengths[:, 0], 1.0)
        r = (pol[:, 1] - ref[:, 1]) / np.maximum(lengths[:, 1], 1.0)
        return (c - r - 1 / (2 * beta)) ** 2
    clean, flipped = -(1 - eps) * logsig(beta * delta), -eps * logsig(-beta * delta)   # robust
    return (clean - flipped) / (1 - 2 * eps)


@pytest.mark.parametrize("loss_type,eps", [("sigmoid", 0.0), ("hinge", 0.0), ("ipo", 0.0), ("robust", 0.2)])
def test_dpo_loss_equals_trl_formulas(loss_type, eps):
    rng = np.random.default_rng(0)
    pol, ref = rng.normal(-20, 5, (6, 2)), rng.normal(-20, 5, (6, 2))
    lengths = rng.integers(1, 30, (6, 2)).astype(np.float64)
    weights = np.array([1, 1, 1, 1, 1, 0.0])                           # the last pair is padding
    loss, m = dpo_loss(jnp.asarray(pol), jnp.asarray(ref), jnp.asarray(weights), beta=0.3, loss_type=loss_type,
                       label_smoothing=eps, lengths=jnp.asarray(lengths))
    want = trl_losses(pol[:5], ref[:5], lengths[:5], 0.3, loss_type, eps).mean()
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)
    chosen, rejected = 0.3 * (pol[:5, 0] - ref[:5, 0]), 0.3 * (pol[:5, 1] - ref[:5, 1])
    np.testing.assert_allclose([float(m[k]) for k in ("rewards/chosen", "rewards/rejected", "rewards/margins",
                                                      "rewards/accuracies", "logps/chosen", "weight_sum")],
                               [chosen.mean(), rejected.mean(), (chosen - rejected).mean(),
                                (chosen > rejected).mean(), pol[:5, 0].mean(), 5.0], rtol=1e-5)


def test_dpo_loss_at_the_reference_and_its_errors():
    pol = jnp.array([[-3.0, -4.0], [-2.0, -1.0]])
    loss, m = dpo_loss(pol, pol, jnp.ones(2), beta=0.1)                 # policy == reference: log 2, no margin
    assert abs(float(loss) - LOG2) < 1e-7 and float(m["rewards/margins"]) == 0.0
    with pytest.raises(ValueError, match="loss_type='kto'"):
        dpo_loss(pol, pol, jnp.ones(2), beta=0.1, loss_type="kto")
    with pytest.raises(ValueError, match="beta=0"):
        dpo_loss(pol, pol, jnp.ones(2), beta=0)
    with pytest.raises(ValueError, match="needs lengths"):
        dpo_loss(pol, pol, jnp.ones(2), beta=0.1, loss_type="ipo")


# ------------------------------------------------------------------------------------------- data
def test_read_preferences_hh_transcripts_part_at_the_last_shared_turn(tmp_path, write_jsonl):
    hh = write_jsonl(tmp_path / "hh.jsonl", [
        {"chosen": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: a joke?\n\nAssistant: Sure: knock knock.",
         "rejected": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: a joke?\n\nAssistant: No."},
        {"chosen": "\n\nHuman: same\n\nAssistant: same", "rejected": "\n\nHuman: same\n\nAssistant: same"},
        {"chosen": "\n\nHuman: x\n\nAssistant: ", "rejected": "\n\nHuman: x\n\nAssistant: y"},
    ])
    pairs, stats = read_preferences(hh)
    assert stats.format == "hh" and len(pairs) == 2 and "hh.jsonl (hh): 2 pairs from 3 records" in stats.summary()
    assert pairs[0]["prompt"] == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                                  {"role": "user", "content": "a joke?"}]
    assert pairs[0]["chosen"] == [{"role": "assistant", "content": "Sure: knock knock."}]
    assert pairs[0]["rejected"] == [{"role": "assistant", "content": "No."}]
    assert stats.skipped["pairs with identical chosen and rejected"] == 1
    assert stats.irregular["with an empty reply"] == 1


def test_read_preferences_trl_formats(tmp_path, write_jsonl):
    conv = [{"role": "user", "content": "2+2?"}]
    path = write_jsonl(tmp_path / "trl.jsonl", [
        {"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Rome."},                      # standard
        {"prompt": conv, "chosen": [{"role": "assistant", "content": "4"}],                             # conversational
         "rejected": [{"role": "assistant", "content": "5"}]},
    ])
    pairs, stats = read_preferences(path)
    assert stats.format == "trl" and len(pairs) == 2
    assert pairs[0] == {"prompt": [{"role": "user", "content": "Capital of France?"}],
                        "chosen": [{"role": "assistant", "content": "Paris."}],
                        "rejected": [{"role": "assistant", "content": "Rome."}]}
    assert pairs[1]["prompt"] == conv and pairs[1]["rejected"][0]["content"] == "5"
    implicit = write_jsonl(tmp_path / "implicit.jsonl", [
        {"chosen": conv + [{"role": "assistant", "content": "4"}], "rejected": conv + [{"role": "assistant",
                                                                                        "content": "5"}]}])
    (pair,), _ = read_preferences(implicit, "trl")
    assert pair["prompt"] == conv and pair["chosen"] == [{"role": "assistant", "content": "4"}]
    assert split_prompt([{"role": "assistant", "content": "a"}], [{"role": "assistant", "content": "b"}]) == \
        "pairs with no shared prompt before the replies part"


@pytest.mark.parametrize("record,expected", [
    ({"prompt": "q", "chosen": "a"}, r"bad.jsonl:2: expected a JSON object with \"chosen\" and \"rejected\""),
    ({"prompt": "q", "chosen": 3, "rejected": "b"}, r"bad.jsonl:2: \"chosen\" is 3; expected a string or a list"),
    ({"prompt": "q", "chosen": [{"role": "user", "content": "a"}], "rejected": "b"},
     r"bad.jsonl:2: \"chosen\" starts with a user message; expected the assistant's reply"),
    ({"prompt": "q", "chosen": [{"role": "robot", "content": "a"}], "rejected": "b"}, r"bad.jsonl:2.*role 'robot'"),
])
def test_malformed_preference_records_name_file_and_line(tmp_path, record, expected, write_jsonl):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b"}, record])
    with pytest.raises(ValueError, match=expected):
        read_preferences(path)
    with pytest.raises(ValueError, match="format='ultra'"):
        read_preferences(path, "ultra")


def test_pair_rows_weigh_only_the_reply(tok_dir):
    template = ChatFormat(load_tokenizer(tok_dir))
    prompt = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]
    pair = {"prompt": prompt, "chosen": [{"role": "assistant", "content": "Blue."}],
            "rejected": [{"role": "assistant", "content": "I cannot say which colour is the nicest one."}]}
    (ex,), stats = preference_examples([pair], template, seq_len=80)
    assert {k: v.shape for k, v in ex.items()} == dict.fromkeys(("inputs", "targets", "weights", "segment_ids"),
                                                                (2, 80))
    head = len(template.prompt(prompt))
    for row, side in enumerate(("chosen", "rejected")):
        ids, weights = template.encode(prompt + pair[side])
        n = len(ids) - 1
        np.testing.assert_array_equal(ex["inputs"][row, :n], ids[:-1])
        np.testing.assert_array_equal(ex["targets"][row, :n], ids[1:])
        want = weights[1:].copy()
        want[:head - 1] = 0                                               # the prompt and its <|assistant|>
        np.testing.assert_array_equal(ex["weights"][row, :n], want)
        assert ex["weights"][row, :head - 1].sum() == 0 and ex["weights"][row, head - 1:n].sum() == weights.sum()
        assert ex["segment_ids"][row].sum() == n and not ex["weights"][row, n:].any()
    assert stats.kept == 1 and stats.reply_tokens["chosen"] < stats.reply_tokens["rejected"]

    # Longer than seq_len + 1: cut at the end (counted), or dropped; a prompt that fills the context leaves no reply.
    (cut,), short = preference_examples([pair], template, seq_len=head + 2)
    assert short.truncated == 1 and cut["weights"][1].sum() == 3
    assert preference_examples([pair], template, seq_len=head + 2, overflow="drop")[1].dropped_too_long == 1
    (kept,), start = preference_examples([pair], template, seq_len=12, overflow="truncate_start")   # TRL's keep_end
    full_ids, full_weights = template.encode(prompt + pair["rejected"])
    np.testing.assert_array_equal(kept["targets"][1], full_ids[-12:])
    assert start.truncated == 1 and kept["weights"][1].sum() == min(full_weights[-12:].sum(), 12)
    no_reply = preference_examples([pair], template, seq_len=head - 2)[1]
    assert no_reply.dropped_no_reply == 1 and "data.overflow=truncate_start" in no_reply.summary()
    # chosen == rejected (or equal once cut): no preference to learn, left out and counted
    same = {**pair, "rejected": [{"role": "assistant", "content": "Blue."}]}
    kept_pairs, stats = preference_examples([same, pair], template, seq_len=80)
    assert len(kept_pairs) == 1 and stats.dropped_identical == 1 and "1 with chosen identical to rejected" in stats.summary()
    alike = {**pair, "chosen": [{"role": "assistant", "content": "I cannot say which colour is the best."}]}
    assert preference_examples([alike], template, seq_len=head + 2)[1].dropped_identical == 1
    with pytest.raises(ValueError, match="overflow='cut': expected one of truncate, truncate_start, drop"):
        preference_examples([pair], template, seq_len=12, overflow="cut")
    with pytest.raises(ValueError, match="pair 0 chosen: the conversation has no assistant turn"):
        preference_examples([{**pair, "chosen": [{"role": "user", "content": "x"}]}], template, seq_len=80)


def test_preference_batches_keep_pairs_whole(tok_dir):
    template = ChatFormat(load_tokenizer(tok_dir))
    pairs = [{"prompt": [{"role": "user", "content": f"{i} + {i}?"}],
              "chosen": [{"role": "assistant", "content": str(2 * i)}],
              "rejected": [{"role": "assistant", "content": str(2 * i + 1)}]} for i in range(10)]
    examples, _ = preference_examples(pairs, template, seq_len=24)
    it = iter(preference_dataset(examples, batch_size=4, seed=0))
    batch = next(it)
    assert batch["inputs"].shape == (4, 2, 24)
    first = {tuple(e["targets"][0]) for e in examples}
    assert all(tuple(row) in first for row in batch["targets"][:, 0])   # row 0 of a pair is always a chosen side
    evals = preference_eval_batches(examples, 4)
    assert [len(b["inputs"]) for b in evals] == [4, 4, 2]            # every pair once; BatchEvaluator pads
    halves = [next(iter(preference_dataset(examples, 4, shuffle=False, process_index=p, process_count=2)))
              for p in (0, 1)]
    assert all(h["inputs"].shape == (2, 2, 24) for h in halves)
    np.testing.assert_array_equal(halves[0]["targets"], np.stack([examples[i]["targets"] for i in (0, 2)]))
    np.testing.assert_array_equal(halves[1]["targets"], np.stack([examples[i]["targets"] for i in (1, 3)]))


# ----------------------------------------------------------------------------------------- runner
@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory, write_jsonl):
    """TRL-format pairs where the chosen reply is always the right sum and the rejected one is off by one."""
    rng = np.random.default_rng(0)
    records = []
    for _ in range(96):
        a, b = (int(x) for x in rng.integers(1, 50, 2))
        records.append({"prompt": f"What is {a} + {b}?", "chosen": f"{a + b}.", "rejected": f"{a + b + 1}."})
    return write_jsonl(tmp_path_factory.mktemp("pairs") / "sums.jsonl", records)


def _metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_dpo_experiment_end_to_end_full_then_lora(base, pairs_file, tmp_path, capsys):
    """The smoke variant on the sums file: the first update starts at log 2, the held-out reward accuracy
    rises, the run folder loads back; then LoRA over the same base, its reference the base itself."""
    from lmforge.cli.main import main
    run = tmp_path / "full"
    common = [f"init_from={base}", f"data.path={pairs_file}", "data.seq_len=32", "data.train_size=0",
              "data.test_size=16", "optim.lr=3e-3", "optim.warmup_steps=0", "beta=0.5", "eval_every=6"]
    assert main(["run", f"{EXPERIMENT}:smoke", *common, "steps=12", "checkpoint_every=6", "--workdir", str(run)]) == 0
    lines = _metrics(run)
    train = [m for m in lines if "train/loss" in m]
    assert train[0]["step"] == 1 and abs(train[0]["train/loss"] - LOG2) < 1e-5   # policy == reference at first
    evals = [m for m in lines if "eval/loss" in m]
    assert [m["step"] for m in evals] == [6, 12] and evals[-1]["eval/weight_sum"] == 10
    assert evals[-1]["eval/loss"] < LOG2 and evals[-1]["eval/rewards/accuracies"] > 0.6, evals
    out = json.loads((run / "final.json").read_text())
    assert out["final/rewards/accuracies"] == evals[-1]["eval/rewards/accuracies"]
    assert json.loads((run / "reference.json").read_text()) == {"source": str(base), "step": None}
    report = json.loads((run / "data_report.json").read_text())
    assert report["train"]["kept"] == 86 and report["held_out"]["kept"] == 10   # 96 pairs, a seeded 10% held out
    assert "reference " + str(base) in capsys.readouterr().out
    mesh = make_mesh(MeshConfig(data=1), devices=jax.devices()[:1])
    loaded = load_params(run, mesh, rules=RULES)
    assert loaded.step == 12 and loaded.cfg == source_model_config(base)

    # Resumed for more steps: the reference is still the starting model, the policy this run's.
    assert main(["run", f"{EXPERIMENT}:smoke", *common, "steps=14", "checkpoint_every=6", "--workdir", str(run)]) == 0
    assert [m["step"] for m in _metrics(run) if "train/loss" in m][-1] == 14

    lora = tmp_path / "lora"
    assert main(["run", f"{EXPERIMENT}:smoke", *common, "lora.rank=4", "lora.alpha=8", "steps=6",
                 "--workdir", str(lora)]) == 0
    train = [m for m in _metrics(lora) if "train/loss" in m]
    assert abs(train[0]["train/loss"] - LOG2) < 1e-5 and train[-1]["train/loss"] < LOG2
    assert not (lora / "reference.json").exists() and (lora / "base.json").is_file()
    assert "reference its own base (adapters off)" in capsys.readouterr().out
    adapters = load_params(lora, mesh, rules=RULES)
    assert any(".lora." in path for path in _paths(adapters.params))


def _paths(tree, prefix=""):
    for k, v in tree.items():
        yield from (_paths(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"])


def test_dpo_loss_fn_on_a_mesh_equals_numpy_from_full_logits(base, pairs_file, tok_dir):
    """The runner's loss on a (data 2, fsdp 2, tensor 2) mesh, reference a second model == numpy DPO over
    log-softmax of each model's full float32 logits."""
    from lmforge.align.dpo import dpo_loss_fn
    mesh_cfg = MeshConfig(data=2, fsdp=2, tensor=2)
    mesh = make_mesh(mesh_cfg)
    policy = load_params(base, mesh, rules=mesh_cfg.rules)
    gd, ref_params, _ = create_sharded(lambda: build_model(MODEL, rngs=nnx.Rngs(7)), mesh, mesh_cfg.rules)
    pairs, _ = read_preferences(pairs_file)
    examples, _ = preference_examples(pairs[:8], ChatFormat(load_tokenizer(tok_dir)), seq_len=32)
    batch = {k: np.stack([e[k] for e in examples]) for k in examples[0]}
    batch["weights"][7] = 0                                                       # a padding pair
    fn = dpo_loss_fn(policy.graphdef, gd, MODEL, beta=0.2, vocab_chunk=128)
    with jax.set_mesh(mesh), axis_rules(mesh_cfg.rules):
        loss, m = jax.jit(fn)(policy.params, {"reference": ref_params}, {k: jnp.asarray(v) for k, v in batch.items()},
                              jax.random.key(0))
        logits = jax.jit(lambda ps, x: [nnx.merge(policy.graphdef, p)(x)[0] for p in ps])(
            [policy.params, ref_params], jnp.asarray(batch["inputs"].reshape(16, 32)))
    sums = []
    for lg in logits:
        lg = np.asarray(lg, np.float64)
        logp = lg - lg.max(-1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
        tok = np.take_along_axis(logp, batch["targets"].reshape(16, 32, 1), -1)[..., 0]
        sums.append((tok * batch["weights"].reshape(16, 32)).sum(-1).reshape(8, 2))
    want = trl_losses(sums[0][:7], sums[1][:7], None, 0.2, "sigmoid").mean()
    np.testing.assert_allclose(float(loss), want, rtol=1e-4)
    assert float(m["weight_sum"]) == 7 and abs(float(loss) - LOG2) > 1e-3   # two different models: not log 2


def test_dpo_hh_smoke_reads_the_real_pairs(base, tmp_path, shared_data):
    from lmforge.cli.main import main
    run = tmp_path / "hh"
    assert main(["run", f"{EXPERIMENT}:smoke", f"init_from={base}", "--workdir", str(run)]) == 0
    report = json.loads((run / "data_report.json").read_text())
    assert report["train"]["pairs"] == 32 and report["held_out"]["pairs"] == 16
    assert report["train"]["kept"] == 32 and report["train"]["truncated"] > 0   # long prompts cut at their start
    out = json.loads((run / "final.json").read_text())
    assert out["final/step"] == 3 and 0 < out["final/weight_sum"] <= 16


@pytest.mark.parametrize("binding,expected", [
    ("loss_type=kto", "loss_type='kto': expected one of sigmoid, hinge, ipo, robust"),
    ("label_smoothing=0.1", "label_smoothing=0.1 is read by loss_type='robust' only"),
    ("beta=0", "beta=0.0: expected > 0"),
    ("data.path=", "data.path is empty"),
    ("data.path=/nonexistent/pairs.jsonl", "data.path=/nonexistent/pairs.jsonl: no such file"),
    ("data.seq_len=4096", "data.seq_len=4096 exceeds the max_seq_len=64"),
    ("init_from=", "init_from is empty"),
    ("data.format=ultra", "data.format='ultra': expected auto or one of hh, trl"),
    ("lora.rank=4 optim.trainable=(embed,)", "trains more than the LoRA adapters, but the reference is the "
                                                     "adapters' base"),
])
def test_dpo_bad_configs_are_one_line_errors_before_the_workdir(binding, expected, base, pairs_file, tmp_path,
                                                                capsys):
    from lmforge.cli.main import main
    run = tmp_path / "bad"
    defaults = [b for b in (f"init_from={base}", f"data.path={pairs_file}")   # the case's own value, not both
                if b.split("=")[0] not in {x.split("=")[0] for x in binding.split()}]
    assert main(["run", f"{EXPERIMENT}:smoke", *defaults, *binding.split(), "--workdir", str(run)]) == 2
    err = capsys.readouterr().err
    assert expected in err, err
    assert not run.exists()


def test_a_reference_with_another_tokenizer_is_refused_before_the_workdir(base, pairs_file, tmp_path, capsys):
    from lmforge.cli.main import main
    other = tmp_path / "other"
    mesh = make_mesh(MeshConfig(data=1), devices=jax.devices()[:1])
    _, params, _ = create_sharded(lambda: build_model(MODEL, rngs=nnx.Rngs(3)), mesh, RULES)
    save_model_folder(other, MODEL, params)
    docs = [d for d in read_documents(SourceConfig(kind="python_docs"))[1::16] if len(d) < 20_000][:30]
    train_tokenizer(TokenizerConfig(vocab_size=512), docs, other / "tokenizer")       # same size, other pieces
    run = tmp_path / "run"
    assert main(["run", f"{EXPERIMENT}:smoke", f"init_from={base}", f"reference_from={other}",
                 f"data.path={pairs_file}", "--workdir", str(run)]) == 2
    assert f"reference_from={other} has another tokenizer than init_from={base}" in capsys.readouterr().err
    assert not run.exists()


def test_soft_labels_are_conservative_dpo_and_come_from_p_chosen(tmp_path, write_jsonl, tok_dir):
    """Soft labels p: the cross-entropy against them, TRL's sigmoid loss with label_smoothing = 1 - p for
    each pair (its cDPO); p = 1 is plain DPO. ``p_chosen`` is read from a preference file (checked to be a
    probability) into ``labels`` [p, 1 - p], 1 when a pair has none; other losses refuse soft labels."""
    from lmforge.align.dpo import DPOConfig

    rng = np.random.default_rng(1)
    pol, ref = rng.normal(-20, 5, (4, 2)), rng.normal(-20, 5, (4, 2))
    p = np.array([1.0, 0.9, 0.6, 0.5])
    delta = (pol[:, 0] - ref[:, 0]) - (pol[:, 1] - ref[:, 1])
    logsig = lambda x: -np.log1p(np.exp(-x))                          # noqa: E731
    trl_cdpo = -(1 - (1 - p)) * logsig(0.2 * delta) - (1 - p) * logsig(-0.2 * delta)   # TRL, eps = 1 - p
    loss, _ = dpo_loss(jnp.asarray(pol), jnp.asarray(ref), jnp.ones(4), beta=0.2, labels=jnp.asarray(p))
    np.testing.assert_allclose(float(loss), trl_cdpo.mean(), rtol=1e-5)
    hard, _ = dpo_loss(jnp.asarray(pol), jnp.asarray(ref), jnp.ones(4), beta=0.2)
    ones, _ = dpo_loss(jnp.asarray(pol), jnp.asarray(ref), jnp.ones(4), beta=0.2, labels=jnp.ones(4))
    assert float(ones) == pytest.approx(float(hard), rel=1e-6)
    with pytest.raises(ValueError, match="soft labels are read by loss_type='sigmoid' only"):
        dpo_loss(jnp.asarray(pol), jnp.asarray(ref), jnp.ones(4), beta=0.2, loss_type="ipo",
                 lengths=jnp.ones((4, 2)), labels=jnp.asarray(p))
    with pytest.raises(ValueError, match="soft_labels=True is read by loss_type='sigmoid' only"):
        DPOConfig(soft_labels=True, loss_type="hinge")
    turn = lambda text: [{"role": "assistant", "content": text}]     # noqa: E731
    path = write_jsonl(tmp_path / "soft.jsonl", [
        {"prompt": "Hi", "chosen": turn("Hello."), "rejected": turn("Go away."), "p_chosen": 0.8},
        {"prompt": "Hey", "chosen": turn("Hi there."), "rejected": turn("No.")}])
    pairs, _ = read_preferences(path)
    assert pairs[0]["p_chosen"] == 0.8 and "p_chosen" not in pairs[1]
    template = ChatFormat(load_tokenizer(tok_dir))
    examples, _ = preference_examples(pairs, template, seq_len=32, soft_labels=True)
    assert [e["labels"].tolist() for e in examples] == [pytest.approx([0.8, 0.2]), [1.0, 0.0]]
    assert "labels" not in preference_examples(pairs, template, seq_len=32)[0][0]
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "Hi", "chosen": "a", "rejected": "b", "p_chosen": 1.5}])
    with pytest.raises(ValueError, match=r'bad.jsonl:1: "p_chosen" is 1.5; expected a probability in \[0, 1\]'):
        read_preferences(bad)
