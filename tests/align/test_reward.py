"""Reward modelling: the Bradley-Terry loss against TRL's ``RewardTrainer.compute_loss``, whole
conversations into pair rows, the loss on a mesh against numpy, and the runner end to end (full,
resumed, LoRA, exported to transformers) on a tiny model through the CLI."""

import json
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmforge.data import load_tokenizer
from lmforge.data.chat import ChatFormat
from lmforge.data.preference import conversation_rows, read_preferences, reward_examples
from lmforge.model import axis_rules
from lmforge.train import reward_loss
from lmforge.train.mesh import MeshConfig, make_mesh
from lmforge.weights import load_params, source_model_config

EXPERIMENT = pathlib.Path(__file__).resolve().parents[2] / "experiments" / "align" / "reward_hh.py"
LOG2 = math.log(2.0)


# ------------------------------------------------------------------------------------------ the loss
def trl_reward_loss(chosen, rejected, margin=None, center=None):
    """TRL's RewardTrainer.compute_loss (trl/trainer/reward_trainer.py), in torch: the mean over pairs of
    -logsigmoid(r_c - r_r [- margin]), plus center * mean((r_c + r_r)^2)."""
    torch = pytest.importorskip("torch")
    c, r = torch.tensor(chosen, dtype=torch.float64), torch.tensor(rejected, dtype=torch.float64)
    if margin is not None:
        loss = -torch.nn.functional.logsigmoid(c - r - torch.tensor(margin, dtype=torch.float64)).mean()
    else:
        loss = -torch.nn.functional.logsigmoid(c - r).mean()
    if center is not None:
        loss += center * torch.mean((c + r) ** 2)
    return float(loss)


@pytest.mark.parametrize("margin,center", [(None, None), (0.5, None), (None, 0.01), (np.arange(5) / 4, 0.1)])
def test_reward_loss_equals_trl(margin, center):
    rng = np.random.default_rng(0)
    rewards = rng.normal(0, 2, (6, 2))
    weights = np.array([1, 1, 1, 1, 1, 0.0])                            # the last pair is padding
    m_arg = 0.0 if margin is None else (np.append(margin, 9.0) if np.ndim(margin) else margin)
    loss, m = reward_loss(jnp.asarray(rewards), jnp.asarray(weights), margin=jnp.asarray(m_arg),
                          center_rewards_coefficient=center or 0.0)
    np.testing.assert_allclose(float(loss), trl_reward_loss(rewards[:5, 0], rewards[:5, 1], margin, center), rtol=1e-5)
    c, r = rewards[:5, 0], rewards[:5, 1]
    np.testing.assert_allclose([float(m[k]) for k in ("accuracy", "margin", "rewards/chosen", "rewards/rejected",
                                                      "mean_reward", "weight_sum")],
                               [(c > r).mean(), (c - r).mean(), c.mean(), r.mean(), (c + r).mean() / 2, 5.0],
                               rtol=1e-5)


def test_reward_loss_at_a_tie_and_its_errors():
    loss, m = reward_loss(jnp.zeros((3, 2)), jnp.ones(3))
    assert abs(float(loss) - LOG2) < 1e-7 and float(m["accuracy"]) == 0.0     # a tie is not accurate
    with pytest.raises(ValueError, match=r"shape \(3,\); expected \(B, 2\)"):
        reward_loss(jnp.zeros(3), jnp.ones(3))
    with pytest.raises(ValueError, match="center_rewards_coefficient=-1"):
        reward_loss(jnp.zeros((3, 2)), jnp.ones(3), center_rewards_coefficient=-1)


# ------------------------------------------------------------------------------------------- data
PAIR = {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}],
        "chosen": [{"role": "assistant", "content": "Blue."}],
        "rejected": [{"role": "assistant", "content": "I cannot say which colour is the nicest one."}]}


def test_reward_rows_hold_whole_conversations(tok_dir):
    tok = load_tokenizer(tok_dir)
    template = ChatFormat(tok)
    (ex,), stats = reward_examples([PAIR], template, seq_len=80)
    assert {k: v.shape for k, v in ex.items()} == {"tokens": (2, 80), "segment_ids": (2, 80)}
    for row, side in enumerate(("chosen", "rejected")):
        ids, _ = template.encode(PAIR["prompt"] + PAIR[side])
        n = len(ids)
        np.testing.assert_array_equal(ex["tokens"][row, :n], ids)
        assert ids[-1] == tok.eos_id and not ex["tokens"][row, n:].any()     # read at eos; right-padded with 0
        assert ex["segment_ids"][row].sum() == n and ex["segment_ids"][row, :n].all()
    assert stats.kept == 1
    # The same cut as preference_examples with one token less of inputs: at most seq_len ids per side.
    (cut,), start = reward_examples([PAIR], template, seq_len=12, overflow="truncate_start")
    full, _ = template.encode(PAIR["prompt"] + PAIR["rejected"])
    np.testing.assert_array_equal(cut["tokens"][1], full[-12:])
    assert start.truncated == 1 and cut["tokens"][0, cut["segment_ids"][0].sum() - 1] == tok.eos_id
    # one conversation at a time (best-of-n, a rollout's score): the same rows
    rows = conversation_rows([PAIR["prompt"] + PAIR[side] for side in ("chosen", "rejected")], template, seq_len=80)
    np.testing.assert_array_equal(rows["tokens"], ex["tokens"])
    np.testing.assert_array_equal(rows["segment_ids"], ex["segment_ids"])
    np.testing.assert_array_equal(conversation_rows([PAIR["prompt"] + PAIR["rejected"]], template, 12)["tokens"][0],
                                  cut["tokens"][1])
    with pytest.raises(ValueError, match="conversation 0"):
        conversation_rows([[{"role": "robot", "content": "x"}]], template, 12)
    with pytest.raises(ValueError, match="seq_len=1: expected >= 2"):
        reward_examples([PAIR], template, seq_len=1)


# ----------------------------------------------------------------------------------------- runner
@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory, write_jsonl):
    """TRL-format pairs where the chosen reply is always a polite yes and the rejected one a curt no."""
    rng = np.random.default_rng(0)
    records = []
    for _ in range(96):
        a, b = (int(x) for x in rng.integers(1, 50, 2))
        records.append({"prompt": f"Could you add {a} and {b}?",
                        "chosen": f"Yes, gladly: the sum is {a + b}.", "rejected": "No."})
    return write_jsonl(tmp_path_factory.mktemp("pairs") / "polite.jsonl", records)


def _metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_reward_experiment_end_to_end_full_resume_lora_export(base, pairs_file, tmp_path, capsys):
    """The smoke variant on the polite pairs: the held-out accuracy rises above chance, the run folder loads
    back as a reward model and resumes; LoRA trains adapters and the score head; the run exports to a
    transformers GPT2ForSequenceClassification that scores as lmforge does."""
    from lmforge.cli.main import main
    run = tmp_path / "full"
    common = [f"init_from={base}", f"data.path={pairs_file}", "data.seq_len=40", "data.train_size=0",
              "data.test_size=16", "optim.lr=3e-3", "optim.warmup_steps=0", "eval_every=6"]
    assert main(["run", f"{EXPERIMENT}:smoke", *common, "steps=12", "checkpoint_every=6", "--workdir", str(run)]) == 0
    lines = _metrics(run)
    evals = [m for m in lines if "eval/loss" in m]
    assert [m["step"] for m in evals] == [6, 12] and evals[-1]["eval/weight_sum"] == 10
    assert evals[-1]["eval/loss"] < 0.5 and evals[-1]["eval/accuracy"] == 1.0, evals
    assert "reward model from" in capsys.readouterr().out
    mesh = make_mesh(MeshConfig(data=1), devices=jax.devices()[:1])
    loaded = load_params(run, mesh)
    assert loaded.step == 12 and loaded.cfg.num_labels == 1 and "unembed" not in loaded.params
    assert source_model_config(run) == loaded.cfg

    assert main(["run", f"{EXPERIMENT}:smoke", *common, "steps=14", "checkpoint_every=6", "--workdir", str(run)]) == 0
    assert [m["step"] for m in _metrics(run) if "train/loss" in m][-1] == 14

    lora = tmp_path / "lora"
    assert main(["run", f"{EXPERIMENT}:smoke", *common, "lora.rank=4", "lora.alpha=8", "steps=6",
                 "--workdir", str(lora)]) == 0
    assert "(LoRA rank 4 and the score head)" in capsys.readouterr().out
    adapters = load_params(lora, mesh)
    assert adapters.cfg.num_labels == 1 and adapters.cfg.lora.rank == 4 and (lora / "base.json").is_file()
    train = [m for m in _metrics(lora) if "train/loss" in m]
    assert train[-1]["train/loss"] < train[0]["train/loss"]

    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    hf = tmp_path / "hf"
    assert main(["convert", str(lora), str(hf)]) == 0
    assert json.loads((hf / "config.json").read_text())["architectures"] == ["GPT2ForSequenceClassification"]
    assert not (hf / "generation_config.json").exists()
    model = transformers.AutoModelForSequenceClassification.from_pretrained(hf).eval()
    pairs, _ = read_preferences(pairs_file)
    (ex,), _ = reward_examples(pairs[:1], ChatFormat(load_tokenizer(base / "tokenizer")), seq_len=40)
    n = ex["segment_ids"].sum(-1)
    with torch.no_grad():
        theirs = [float(model(input_ids=torch.tensor(ex["tokens"][i:i + 1, :n[i]])).logits[0, 0]) for i in (0, 1)]
    from lmforge.align.reward import pair_rewards
    with jax.set_mesh(mesh), axis_rules(MeshConfig().rules):
        ours = jax.jit(lambda p, b: pair_rewards(adapters.graphdef, p, b)[0])(
            adapters.params, {k: jnp.asarray(v[None]) for k, v in ex.items()})
    np.testing.assert_allclose(np.asarray(ours)[0], theirs, atol=1e-4)


def test_reward_loss_fn_on_a_mesh_equals_numpy_from_per_position_scores(base, pairs_file, tok_dir):
    """The runner's loss on a (data 2, fsdp 2, tensor 2) mesh == numpy Bradley-Terry over the model's
    per-position scores (``DecoderLM.__call__``) read at each side's last token."""
    from lmforge.align.reward import reward_loss_fn
    mesh_cfg = MeshConfig(data=2, fsdp=2, tensor=2)
    mesh = make_mesh(mesh_cfg)
    model = load_params(base, mesh, rules=mesh_cfg.rules, num_labels=1, seed=5)
    pairs, _ = read_preferences(pairs_file)
    examples, _ = reward_examples(pairs[:8], ChatFormat(load_tokenizer(tok_dir)), seq_len=40)
    batch = {k: np.stack([e[k] for e in examples]) for k in examples[0]}
    batch["tokens"][7] = batch["segment_ids"][7] = 0                              # a padding pair
    fn = reward_loss_fn(model.graphdef, model.cfg, center_rewards_coefficient=0.05)
    with jax.set_mesh(mesh), axis_rules(mesh_cfg.rules):
        loss, m = jax.jit(fn)(model.params, {}, {k: jnp.asarray(v) for k, v in batch.items()}, None)
        per_position = jax.jit(lambda p, x: nnx.merge(model.graphdef, p)(x)[0])(
            model.params, jnp.asarray(batch["tokens"].reshape(16, 40)))
    last = batch["segment_ids"].reshape(16, 40).sum(-1) - 1
    rewards = np.asarray(per_position, np.float64)[np.arange(16), last, 0].reshape(8, 2)
    want = trl_reward_loss(rewards[:7, 0], rewards[:7, 1], center=0.05)
    np.testing.assert_allclose(float(loss), want, rtol=1e-4)
    assert float(m["weight_sum"]) == 7


def test_reward_hh_smoke_reads_the_real_pairs(base, tmp_path, shared_data):
    from lmforge.cli.main import main
    run = tmp_path / "hh"
    assert main(["run", f"{EXPERIMENT}:smoke", f"init_from={base}", "--workdir", str(run)]) == 0
    report = json.loads((run / "data_report.json").read_text())
    assert report["train"]["pairs"] == 32 and report["train"]["kept"] == 32 and report["train"]["truncated"] > 0
    out = json.loads((run / "final.json").read_text())
    assert out["final/step"] == 3 and out["final/weight_sum"] == 16


@pytest.mark.parametrize("binding,expected", [
    ("center_rewards_coefficient=-0.1", "center_rewards_coefficient=-0.1: expected >= 0"),
    ("data.path=", "data.path is empty"),
    ("data.path=/nonexistent/pairs.jsonl", "data.path=/nonexistent/pairs.jsonl: no such file"),
    ("data.seq_len=4096", "data.seq_len=4096 exceeds the max_seq_len=64"),
    ("init_from=", "init_from is empty"),
    ("beta=0.1", "beta"),
    ("data.overflow=truncate", "data.overflow='truncate' cuts a long side's end, where the reward is read"),
])
def test_reward_bad_configs_are_one_line_errors_before_the_workdir(binding, expected, base, pairs_file, tmp_path,
                                                                   capsys):
    from lmforge.cli.main import main
    run = tmp_path / "bad"
    defaults = [b for b in (f"init_from={base}", f"data.path={pairs_file}")   # the case's own value, not both
                if b.split("=")[0] not in {x.split("=")[0] for x in binding.split()}]
    assert main(["run", f"{EXPERIMENT}:smoke", *defaults, *binding.split(), "--workdir", str(run)]) == 2
    err = capsys.readouterr().err
    assert expected in err and len(err.strip().splitlines()) == 1, err
    assert not run.exists()


def test_a_reward_model_of_two_scores_is_refused_before_the_workdir(base, pairs_file, tmp_path, capsys):
    from lmforge.cli.main import main
    from lmforge.weights import save_model_folder
    two = tmp_path / "two"
    mesh = make_mesh(MeshConfig(data=1), devices=jax.devices()[:1])
    loaded = load_params(base, mesh, num_labels=2)
    save_model_folder(two, loaded.cfg, jax.device_get(loaded.params))
    run = tmp_path / "run"
    assert main(["run", f"{EXPERIMENT}:smoke", f"init_from={two}", f"data.path={pairs_file}",
                 "--workdir", str(run)]) == 2
    assert "has a score head of 2 outputs; expected a language model or a reward model of one score" in \
        capsys.readouterr().err
    assert not run.exists()


@pytest.fixture(scope="module")
def llama_base(random_model_folder):
    """A tiny Llama with an untied unembedding (which a reward model drops), as a model folder."""
    from lmforge.model import ModelConfig
    return random_model_folder("llama", ModelConfig.llama_tiny(vocab_size=512, max_seq_len=64))


def test_lora_over_an_untied_base_resumes_and_loads_from_its_base(llama_base, pairs_file, tmp_path):
    """The run holds the adapters and the score head; the rest comes from base.json's language model, whose
    unembedding the reward model lacks; resumed, the score head is the run's, not a fresh one."""
    from lmforge.cli.main import main
    run = tmp_path / "lora"
    common = [f"init_from={llama_base}", f"data.path={pairs_file}", "data.seq_len=40", "lora.rank=4",
              "optim.lr=3e-3", "optim.warmup_steps=0", "checkpoint_every=4"]
    assert main(["run", f"{EXPERIMENT}:smoke", *common, "steps=4", "--workdir", str(run)]) == 0
    mesh = make_mesh(MeshConfig(data=1), devices=jax.devices()[:1])
    first = load_params(run, mesh)
    assert first.cfg.num_labels == 1 and "unembed" not in first.params and first.cfg.lora.rank == 4
    assert json.loads((run / "base.json").read_text())["source"] == str(llama_base)
    assert main(["run", f"{EXPERIMENT}:smoke", *common, "steps=6", "--workdir", str(run)]) == 0
    resumed = load_params(run, mesh)
    assert resumed.step == 6 and not np.allclose(np.asarray(resumed.params["score"]), np.asarray(first.params["score"]))
    train = [m for m in _metrics(run) if "train/loss" in m]
    assert [m["step"] for m in train][-2:] == [5, 6]


def test_a_full_fine_tune_resumes_without_init_from(base, pairs_file, tmp_path):
    """Its checkpoints hold every weight: the starting model may be gone when it resumes."""
    import shutil
    from lmforge.cli.main import main
    start, run = tmp_path / "start", tmp_path / "full"
    shutil.copytree(base, start)
    common = [f"init_from={start}", f"data.path={pairs_file}", "data.seq_len=40", "checkpoint_every=2"]
    assert main(["run", f"{EXPERIMENT}:smoke", *common, "steps=2", "--workdir", str(run)]) == 0
    shutil.rmtree(start)
    assert main(["run", f"{EXPERIMENT}:smoke", *common, "steps=3", "--workdir", str(run)]) == 0
    assert load_params(run, make_mesh(MeshConfig(data=1), devices=jax.devices()[:1])).step == 3


def test_a_reward_model_is_refused_where_a_language_model_is_needed(base, tmp_path, capsys):
    """SFT, DPO, chat, sampling and pretraining say in one line that a reward model has no language-model head."""
    from lmforge.cli.main import main
    from lmforge.serve.chat import load_chat_model
    from lmforge.weights import WeightsError, save_model_folder
    rm = tmp_path / "rm"
    loaded = load_params(base, make_mesh(MeshConfig(data=1), devices=jax.devices()[:1]), num_labels=1)
    save_model_folder(rm, loaded.cfg, jax.device_get(loaded.params))
    load_tokenizer(base / "tokenizer").save(rm / "tokenizer")
    root = pathlib.Path(__file__).resolve().parents[2] / "experiments"
    for argv, use in (([f"{root / 'sft' / 'sft_chat.py'}:smoke", f"init_from={rm}"], "SFT"),
                      ([f"{root / 'align' / 'dpo_hh.py'}:smoke", f"init_from={rm}"], "DPO's policy")):
        assert main(["run", *argv, "--workdir", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert f"{rm} is a reward model (a score head of 1 output, no language-model head); {use} needs a " \
               f"language model" in err, err
        assert not (tmp_path / "x").exists()
    assert main(["sample", str(rm), "--prompt", "hi"]) == 2
    assert "sampling (lmforge eval, lmforge sample) needs a language model" in capsys.readouterr().err
    with pytest.raises(WeightsError, match="chat needs a language model"):
        load_chat_model(rm)
    assert main(["plan", str(EXPERIMENT), f"init_from={base}"]) == 2
    assert "a reward model (a score head, two rows per pair) is not planned yet" in capsys.readouterr().err
    from lmforge.model import ModelConfig
    from lmforge.train.pretrain import check_objective, PretrainConfig
    with pytest.raises(ValueError, match="model.num_labels=1 makes a reward model .* pretraining cannot train"):
        check_objective(PretrainConfig(), ModelConfig.gpt2_tiny(num_labels=1))
