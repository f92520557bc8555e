"""SFT: the masked loss, packed = unpacked, and the runner end to end (full and LoRA) on a tiny model."""

import json
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmforge.data import load_tokenizer
from lmforge.data.chat import ChatFormat, sft_dataset, sft_eval_batches, sft_examples
from lmforge.model import ModelConfig, axis_rules, build_model, create_sharded
from lmforge.train.mesh import MeshConfig, make_mesh
from lmforge.train.pretrain import lm_loss
from lmforge.weights import save_model_folder

MODEL = ModelConfig.gpt2_tiny(vocab_size=512, max_seq_len=128)
RULES = MeshConfig().rules
EXPERIMENTS = pathlib.Path(__file__).resolve().parents[2] / "experiments" / "sft"


@pytest.fixture(scope="module")
def base(tmp_path_factory, tok_dir):
    """A tiny GPT-2 with random weights and the conftest's chat-capable tokenizer, as an lmforge model
    folder; context 128 (the conftest's base has 64)."""
    directory = tmp_path_factory.mktemp("sft") / "base"
    mesh = make_mesh(MeshConfig(data=1), devices=jax.devices()[:1])
    _, params, _ = create_sharded(lambda: build_model(MODEL, rngs=nnx.Rngs(0)), mesh, RULES)
    save_model_folder(directory, MODEL, params)
    load_tokenizer(tok_dir).save(directory / "tokenizer")
    return directory


def conversations(n):
    return [[{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": f"What is {i} + {i}?"},
             {"role": "assistant", "content": f"{i} + {i} = {2 * i}."}][(i % 2):] for i in range(n)]


def _loss(params_model, batches):
    """The exact weighted mean of the SFT loss over ``batches`` (what the evaluator reports)."""
    graphdef, params, mesh = params_model
    fn = jax.jit(lm_loss(graphdef, MODEL))
    total = weight = 0.0
    for b in batches:
        with jax.set_mesh(mesh), axis_rules(RULES):
            loss, m = fn(params, {}, {k: jnp.asarray(v) for k, v in b.items()}, jax.random.key(0))
        total += float(loss) * float(m["weight_sum"])
        weight += float(m["weight_sum"])
    return total / weight, weight


@pytest.fixture(scope="module")
def model():
    mesh = make_mesh(MeshConfig(data=1), devices=jax.devices()[:1])
    graphdef, params, _ = create_sharded(lambda: build_model(MODEL, rngs=nnx.Rngs(1)), mesh, RULES)
    return graphdef, params, mesh


def test_packed_and_unpacked_sft_give_the_same_loss(tok_dir, model):
    tok = load_tokenizer(tok_dir)
    ex, stats = sft_examples(conversations(12), ChatFormat(tok), seq_len=64)
    packed = next(iter(sft_dataset(ex, seq_len=64, batch_size=2, shuffle=False)))
    assert packed["segment_ids"].max() >= 2      # really packed: several conversations in a row
    # the conversations in the packed batch, one per row
    rows = []
    for r in range(2):
        for s in range(1, packed["segment_ids"][r].max() + 1):
            at = packed["segment_ids"][r] == s
            rows.append({k: packed[k][r][at] for k in ("inputs", "targets", "weights")})
    unpacked = sft_eval_batches(rows, seq_len=64, batch_size=len(rows))
    lp, wp = _loss(model, [packed])
    lu, wu = _loss(model, unpacked)
    assert wp == wu > 0
    np.testing.assert_allclose(lp, lu, rtol=2e-5)


def test_sft_loss_is_the_mean_nll_of_the_assistant_tokens(tok_dir, model):
    tok = load_tokenizer(tok_dir)
    ids, w = ChatFormat(tok).encode(conversations(1)[0])
    batch = sft_eval_batches([{"inputs": ids[:-1], "targets": ids[1:], "weights": w[1:]}], seq_len=64, batch_size=1)
    loss, weight = _loss(model, batch)
    graphdef, params, mesh = model
    with jax.set_mesh(mesh), axis_rules(RULES):
        logits, _ = nnx.merge(graphdef, params)(jnp.asarray(ids[None, :-1]))   # (1, T, V), aux
    logits = logits[0]
    nll = -jax.nn.log_softmax(logits.astype(jnp.float32))[np.arange(len(ids) - 1), ids[1:]]
    assistant = w[1:] == 1
    np.testing.assert_allclose(loss, float(nll[assistant].mean()), rtol=1e-5)
    assert weight == assistant.sum() < len(assistant)   # only the assistant's tokens carry weight


def sft_config(base, **over):
    from lmforge.align.sft import ChatDataConfig, SFTConfig
    from lmforge.train.optim import OptimConfig
    data = ChatDataConfig(synthetic=(("arithmetic", 1.0), ("identity", 1.0)), train_size=64, test_size=16,
                          seq_len=128, batch_size=8)
    kw = dict(init_from=str(base), data=data, optim=OptimConfig(lr=1e-3, warmup_steps=1, weight_decay=0.0),
              steps=4, log_every=2, eval_every=4, eval_generate=8, eval_max_new_tokens=8)
    return SFTConfig(**{**kw, **over})


def test_sft_experiments_end_to_end_full_then_lora(base, tmp_path, capsys):
    """The smoke variants of experiments/sft/sft_chat.py (full) and sft_lora.py (LoRA) through the CLI on
    the same tiny base: metrics, files, what trained, the graded replies' progress bar, and the run
    folders load back through load_params (LoRA: adapters from the run, the rest from its base)."""
    from lmforge.cli.main import main
    from lmforge.weights import load_params

    outs = {}
    for name in ("sft_chat", "sft_lora"):
        run = tmp_path / name
        assert main(["run", f"{EXPERIMENTS}/{name}.py:smoke", f"init_from={base}", "--workdir", str(run)]) == 0
        printed = capsys.readouterr()
        assert "replies:" in printed.err and "0/8" in printed.err        # the base's and the final evaluation's
        assert "\nbase model: held-out loss" in printed.out                # lines stay whole around the bars
        out = outs[name] = json.loads((run / "final.json").read_text())
        assert out["final/step"] == 6 and math.isfinite(out["final/loss"]) and 0 <= out["final/reply/accuracy"] <= 1
        assert out["base/loss"] > out["final/loss"]       # fine-tuning lowers the held-out loss
        assert {"reply/accuracy/arithmetic", "reply/accuracy/identity"} <= {k[len("final/"):] for k in out}
        assert 0 <= out["final/token_accuracy"] <= 1      # the loss's next-token accuracy, a separate metric
        report = json.loads((run / "data_report.json").read_text())
        assert report["train"]["kept"] + report["train"]["dropped_no_weight"] + \
            report["train"]["dropped_too_long"] == report["train"]["conversations"] == 64
        assert len((run / "eval_samples.jsonl").read_text().splitlines()) == 8
    # rank 16 on this 64-wide model: adapters are a quarter of the weights (0.5% of a 1.1M-parameter base at width 128)
    # the evaluation harness reads the fine-tuned run (its model.json, checkpoint and tokenizer)
    assert main(["eval", str(tmp_path / "sft_chat"), "chat:tasks=arithmetic+identity,n=4,max_new_tokens=8"]) == 0
    scores = json.loads((tmp_path / "sft_chat" / "eval" / "chat.json").read_text())
    assert scores["metrics"]["n"] == 4 and len(scores["samples"]) == 4
    assert outs["sft_lora"]["final/trainable_params"] < outs["sft_chat"]["final/trainable_params"] / 3
    mesh = make_mesh(MeshConfig(data=1), devices=jax.devices()[:1])
    loaded = load_params(tmp_path / "sft_lora", mesh, rules=RULES)
    assert loaded.cfg.lora.rank == 16 and loaded.step == 6
    base_params = load_params(base, mesh, rules=RULES).params
    from lmforge.model.paths import flatten
    flat, flat_base = dict(flatten(loaded.params)), dict(flatten(base_params))
    assert all(np.array_equal(flat[p], flat_base[p]) for p in flat_base)     # the base is untouched
    assert any(np.abs(np.asarray(v)).sum() > 0 for p, v in flat.items() if p.endswith("lora.b"))   # B moved off 0


def test_sft_tools_smoke_replies_through_the_tool_loop(base, tmp_path, capsys):
    """experiments/sft/sft_tools.py:smoke: calculator conversations trained, held-out problems replied to
    through the tool-call loop (the random base writes no call: 0 calls per problem, but the metrics and
    the samples' call lists are there)."""
    from lmforge.cli.main import main

    run = tmp_path / "tools"
    assert main(["run", f"{EXPERIMENTS}/sft_tools.py:smoke", f"init_from={base}", "--workdir", str(run)]) == 0
    capsys.readouterr()
    out = json.loads((run / "final.json").read_text())
    assert out["final/reply/n"] == 4 and out["final/reply/tool_calls"] >= 0 and "final/reply/tool_errors" in out
    samples = [json.loads(line) for line in (run / "eval_samples.jsonl").read_text().splitlines()]
    assert len(samples) == 4 and all(s["task"] == "calculator" and isinstance(s["calls"], list) for s in samples)


def test_a_full_fine_tune_resumes_without_its_moved_init_from(base, tmp_path, capsys):
    """A full fine-tune's checkpoints hold every weight: continuing it for more steps after its init_from
    folder moved reads nothing of it (said on stderr). A LoRA run's frozen weights are its base's: it is
    still refused, naming the base."""
    import shutil

    from lmforge.cli.main import main

    moving = tmp_path / "base"
    shutil.copytree(base, moving)
    runs = {name: tmp_path / name for name in ("sft_chat", "sft_lora")}
    for name, run in runs.items():
        assert main(["run", f"{EXPERIMENTS}/{name}.py:smoke", f"init_from={moving}", "steps=2", "eval_every=0",
                     "eval_base=false", "--workdir", str(run)]) == 0
    shutil.move(moving, tmp_path / "moved")
    capsys.readouterr()
    assert main(["run", f"{EXPERIMENTS}/sft_chat.py:smoke", f"init_from={moving}", "steps=4", "eval_every=0",
                 "eval_base=false", "--workdir", str(runs["sft_chat"])]) == 0
    printed = capsys.readouterr()
    assert f"init_from={moving} is not read" in printed.err and "resumed from step 2" in printed.out
    assert json.loads((runs["sft_chat"] / "final.json").read_text())["final/step"] == 4
    # the replies graded at step 2 are kept beside those at step 4
    (earlier,) = runs["sft_chat"].glob("eval_samples.*.jsonl")
    assert f"the earlier eval_samples.jsonl is kept as {earlier.name}" in printed.out
    for path, step in ((earlier, 2), (runs["sft_chat"] / "eval_samples.jsonl", 4)):
        assert {json.loads(line)["step"] for line in path.read_text().splitlines()} == {step}
    assert main(["run", f"{EXPERIMENTS}/sft_lora.py:smoke", f"init_from={moving}", "steps=4", "eval_every=0",
                 "eval_base=false", "--workdir", str(runs["sft_lora"])]) == 2
    assert capsys.readouterr().err.strip() == (f"lmforge: error: init_from: {moving} is not a folder (expected a run "
                                               f"folder, a transformers folder or an lmforge model folder)")


def test_sft_gsm8k_smoke_reads_the_real_data(base, tmp_path, shared_data):
    from lmforge.cli.main import main
    run = tmp_path / "gsm8k"
    assert main(["run", f"{EXPERIMENTS}/sft_gsm8k.py:smoke", f"init_from={base}", "--workdir", str(run)]) == 0
    report = json.loads((run / "data_report.json").read_text())
    assert report["train"]["conversations"] == 7473 and report["held_out"]["conversations"] == 8
    assert report["train"]["truncated"] > 0          # long problems are cut at seq_len + 1, and counted
    out = json.loads((run / "final.json").read_text())
    assert out["final/reply/n"] == 4 and 0 <= out["final/reply/accuracy"] <= 1


def test_sft_bad_configs_are_one_line_errors(base, tmp_path):
    from lmforge.align.sft import ChatDataConfig, run_sft
    with pytest.raises(ValueError, match="init_from is empty"):
        run_sft(sft_config(base, init_from=""), tmp_path / "a")
    with pytest.raises(ValueError, match="no data"):
        ChatDataConfig()
    with pytest.raises(ValueError, match="data.train_on='user'"):
        ChatDataConfig(synthetic=(("arithmetic", 1.0),), train_on="user")
    import dataclasses
    cfg = sft_config(base)
    with pytest.raises(ValueError, match="unknown task 'poetry'"):
        run_sft(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, synthetic=(("poetry", 1.0),))),
                tmp_path / "b")
    with pytest.raises(ValueError, match=r"data.seq_len=256 exceeds the max_seq_len=128 of init_from=.*base's model"):
        run_sft(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, seq_len=256)), tmp_path / "c")


@pytest.mark.parametrize("over, expected", [
    (dict(eval_generate=-5), "eval_generate=-5: expected a whole number >= 0"),   # not held-out items[:-5]
    (dict(eval_max_new_tokens=0), "eval_max_new_tokens=0: expected a whole number >= 1"),
    (dict(eval_on_start=True), "eval_on_start=True scores the starting model again: SFT's eval_base=True"),
    (dict(eval_batch_size=-1), "eval_batch_size=-1: expected a whole number >= 0"),
    (dict(synthetic_options=(("min_ops", 2.5),)), "synthetic_options: option min_ops=2.5 of task 'arithmetic': "
                                                   "expected a whole number"),   # not int(2.5) == 2
    (dict(synthetic_options=(("min_op", 2),)), "synthetic_options: synthetic option 'min_op': expected one of"),
    (dict(synthetic_options=(("max_value", 20), ("max_value", 30))), "synthetic_options: option 'max_value' is "
                                                                       "given twice"),
    (dict(synthetic_options=(("max_value", 5),)), "synthetic_options: option max_value=5: expected a whole number"),
    (dict(eval_tools=("abacus",)), "eval_tools: tool 'abacus': expected one of calculator, python"),
])
def test_sft_config_refuses_bad_eval_and_synthetic_values(over, expected):
    from lmforge.align.sft import SFTConfig
    with pytest.raises(ValueError) as e:
        SFTConfig(**over)
    assert expected in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("key", ["train_size", "test_size"])
def test_chat_data_config_refuses_negative_sizes(key):
    from lmforge.align.sft import ChatDataConfig
    with pytest.raises(ValueError, match=f"^data.{key}=-3: expected a whole number >= 0$"):
        ChatDataConfig(synthetic=(("arithmetic", 1.0),), **{key: -3})


@pytest.mark.parametrize("binding, expected", [
    ("eval_generate=-5", "eval_generate=-5: expected a whole number >= 0"),
    ("data.train_size=-3", "data.train_size=-3: expected a whole number >= 0"),
    ("data.test_size=-1", "data.test_size=-1: expected a whole number >= 0"),
])
def test_sft_bad_counts_are_refused_before_the_workdir(binding, expected, base, tmp_path, capsys):
    from lmforge.cli.main import main
    run = tmp_path / "run"
    assert main(["run", f"{EXPERIMENTS}/sft_chat.py:smoke", f"init_from={base}", binding, "--workdir", str(run)]) == 2
    err = capsys.readouterr().err
    assert expected in err and len(err.strip().splitlines()) == 1
    assert not run.exists()


@pytest.mark.parametrize("family", ["bert", "t5"])
def test_sft_refuses_an_encoder_before_the_workdir(family, random_model_folder, tmp_path, capsys):
    """SFT's next-token loss on a bidirectional encoder would let each position see its target (an audit
    trained a BERT so to "accuracy 0.58"); a T5 failed at the first step with a model-internal message."""
    from lmforge.cli.main import main
    from lmforge.model import ModelConfig
    model = getattr(ModelConfig, f"{family}_tiny")(vocab_size=512)
    source = random_model_folder(f"sft_{family}", model)
    run = tmp_path / "run"
    assert main(["run", f"{EXPERIMENTS}/sft_chat.py:smoke", f"init_from={source}", "--workdir", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"lmforge: error: init_from={source} is a {family} ({model.architecture}) model; SFT's next-token "
                   f"loss trains decoder-only models (an encoder attends to the very token it would predict; an "
                   f"encoder-decoder needs input/target pairs, which SFT does not build)")
    assert not run.exists()


def test_small_arithmetic_options_reach_the_task_as_whole_numbers():
    """sft_chat.py:small_worked's ("min_ops", 2), ... read back from config.json and bound on the command line
    (text) both make two-operation problems with every number <= 20."""
    import dataclasses
    import re
    from lmforge.align.sft import SFTConfig, read_items
    from lmforge.cli import apply_bindings, experiment_config, from_json, load_experiment, to_json
    cfg = from_json(SFTConfig, to_json(experiment_config(*load_experiment(f"{EXPERIMENTS}/sft_chat.py:small_worked"))))
    assert cfg.synthetic_options == (("min_ops", 2), ("max_ops", 2), ("max_value", 20))
    assert all(type(v) is int for _, v in cfg.synthetic_options)
    texts = apply_bindings(cfg, ["synthetic_options=(('min_ops', '2'), ('max_ops', '2'), ('max_value', '20'))"])
    assert texts.synthetic_options == (("min_ops", "2"), ("max_ops", "2"), ("max_value", "20"))
    for c in (cfg, texts):
        train, test = read_items(dataclasses.replace(c, data=dataclasses.replace(c.data, train_size=60, test_size=20)))
        assert len(train) == 60 and len(test) == 20
        for it in train + test:
            assert it["messages"][-1]["content"].count(" = ") == 2   # two operations (a group: its product, its sum)
            assert max(int(n) for n in re.findall(r"\d+", it["key"] + " " + it["answer"])) <= 20


class _Template:
    """A chat template over integer ids: a conversation's prompt is its one message's number."""
    stop_ids = ()

    @staticmethod
    def prompt(conversation, tools=None):
        return np.array([int(conversation[0]["content"])])


class _Sampler:
    """Replies with each prompt's id doubled, recording each call's prompts and seed."""
    class tok:   # noqa: N801 - the Sampler attribute it stands for
        eos_id = -1
        decode = staticmethod(lambda ids: " ".join(map(str, ids)))

    def __init__(self):
        self.calls = []

    def generate_ids(self, prompts, cfg, *, seed=0):
        from types import SimpleNamespace
        self.calls.append(([p[0] for p in prompts], seed))
        return SimpleNamespace(tokens=np.array([[2 * p[0]] for p in prompts]), lengths=np.ones(len(prompts), int))


def test_chat_replies_in_equal_calls_with_a_progress_bar(capsys):
    """SFT's graded replies: batch prompts a call at most, every call the same number of rows (a short one
    padded with its last prompt, the padding's replies dropped: one program), seeded seed + k, in order;
    the bar (stderr) only when asked."""
    from lmforge.eval.chat import chat_replies
    from lmforge.infer import SamplingConfig
    conversations = [[{"role": "user", "content": str(i)}] for i in range(7)]
    sampler = _Sampler()
    replies = chat_replies(sampler, _Template(), conversations, SamplingConfig(max_new_tokens=4), seed=5, batch=3,
                           progress=True)
    assert replies == [str(2 * i) for i in range(7)]
    assert sampler.calls == [([0, 1, 1], 5), ([2, 3, 3], 6), ([4, 5, 6], 7)]
    assert "replies:" in capsys.readouterr().err
    sampler = _Sampler()
    assert chat_replies(sampler, _Template(), conversations, SamplingConfig(max_new_tokens=4), seed=5) == replies
    assert sampler.calls == [(list(range(7)), 5)]     # batch 0: one call, as before
    assert capsys.readouterr().err == ""


def test_a_gsm8k_file_is_known_by_its_keys_not_its_name(tmp_path, write_jsonl):
    """``format="auto"`` reads question/answer records as GSM8K (their ``#### n`` answers kept) whatever the
    file is called; a chat file stays a chat file."""
    from lmforge.align.sft import read_file
    path = write_jsonl(tmp_path / "myprompts.jsonl", [{"question": "What is 2 + 3?", "answer": "2 + 3 = 5\n#### 5"}])
    (item,) = read_file(str(path), "auto")
    assert item["task"] == "gsm8k" and item["answer"] == "5"
    chat = write_jsonl(tmp_path / "gsm8k_chat.jsonl", [{"messages": [{"role": "user", "content": "hi"},
                                                                     {"role": "assistant", "content": "hello"}]}])
    assert read_file(str(chat), "auto")[0]["task"] == "chat"


def test_a_chat_files_answers_and_columns_become_graded_items_named_by_file_and_line(tmp_path, write_jsonl, tok_dir):
    """A chat record's ``answer`` (a number made a string) and ``task`` columns make it a graded item, as
    ``lmforge eval chat:path=`` reads them; answers no grader could check are refused naming ``file:line``
    (or, for held-out accuracy beside a reward function of one's own, left out and counted); and a
    conversation SFT cannot train is named by its ``file:line``, not its index in the shuffled split."""
    from lmforge.align.sft import ChatDataConfig, check_graded, check_references, grader, held_out_graded, read_file
    from lmforge.data.chat import ChatFormat

    path = write_jsonl(tmp_path / "qa.jsonl", [
        {"prompt": "2+2?", "answer": 4},
        {"prompt": [{"role": "user", "content": "Spell cat."}], "answer": "c-a-t", "task": "spelling"},
        {"prompt": "Name?", "answer": "Ada", "task": "poetry"},
        {"prompt": "How many?", "answer": "many", "task": "gsm8k"},
        {"prompt": "Hi"},
    ])
    with pytest.raises(ValueError, match=f'^{path}:1: no "messages"'):
        read_file(str(path), "messages")
    items = read_file(str(path), "auto")
    assert [(it["task"], it["answer"], it["where"]) for it in items] == [
        ("chat", "4", f"{path}:1"), ("spelling", "c-a-t", f"{path}:2"), ("poetry", "Ada", f"{path}:3"),
        ("gsm8k", "many", f"{path}:4"), ("chat", None, f"{path}:5")]
    assert items[0]["columns"] == {"answer": 4}
    assert check_graded(items[0], "numeric") is None and check_graded(items[1], "exact") is None
    assert check_graded(items[2], "exact").startswith(f"{path}:3: task 'poetry' has no grader; expected one of gsm8k")
    assert check_graded(items[3], "exact") == (f"{path}:4: answer 'many' holds no number; a gsm8k item is graded by "
                                               f"the reply's number, so it could never be correct")
    with pytest.raises(ValueError, match=f"^{path}:3: task 'poetry'"):
        held_out_graded(items, "exact")
    assert held_out_graded(items, "exact", strict=False) == items[:2]
    grade = grader(ChatDataConfig(path=str(path), match="numeric"))
    assert grade("chat", "It is 4.", "4") and not grade("chat", "It is 5.", "4") and grade("spelling", "#### c-a-t", "cat")
    with pytest.raises(ValueError, match=r"data.match=.fuzzy.: expected one of auto, exact, numeric, regex"):
        ChatDataConfig(path=str(path), match="fuzzy")
    with pytest.raises(ValueError, match=r"data.match=regex needs a pattern"):
        ChatDataConfig(path=str(path), match="regex")

    # References the grader fails (exact text against a bare number) are warned about; auto compares numbers.
    refs = [{"task": "chat", "answer": "14", "where": f"qa.jsonl:{i}",
             "messages": [{"role": "user", "content": "8 + 6?"}, {"role": "assistant", "content": "8 + 6 = 14"}]}
            for i in range(3)]
    assert check_references(refs, grader(ChatDataConfig(path=str(path), match="exact")), "exact") == (
        "warning: the grader fails 3 of 3 reference replies (e.g. qa.jsonl:0: '8 + 6 = 14' against answer '14', "
        "task 'chat', data.match=exact), so a model that learns them would score low too; is data.match right for "
        "these answers?")
    assert check_references(refs, grader(ChatDataConfig(path=str(path))), "auto") is None   # the default: auto

    template = ChatFormat(load_tokenizer(tok_dir))
    with pytest.raises(ValueError, match=rf"^{path}:1: the conversation has no assistant turn"):
        sft_examples([it["messages"] for it in items], template, 32, names=[it["where"] for it in items])
