"""lm-evaluation-harness parity: lm-eval's own evaluator, given the adapter, scores a local task file
exactly as lmforge's harness does on the same items (tier b); loglikelihood_rolling is the
perplexity task's sum; generate_until is the sampler's greedy completion."""

import os
import tempfile

# The harness loads the local task file with `datasets`: no network, and a cache of our own.
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_CACHE", tempfile.mkdtemp(prefix="lmforge-hf-datasets-"))

import json  # noqa: E402

import pytest  # noqa: E402

lm_eval = pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install -e '.[eval]')")

from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

from lmforge.eval import Scorer, load_multiple_choice, multiple_choice, perplexity  # noqa: E402
from lmforge.eval.lm_eval_adapter import LmforgeLM  # noqa: E402
from lmforge.infer import SamplingConfig  # noqa: E402

ITEMS = [
    # The harness's target_delimiter is "" here, so it counts a choice's leading space in acc_norm's length and
    # lmforge does not (its choices carry the separator; the harness's default " " leaves it out): the
    # separating space ends the context instead, where both read it alike.
    {"context": "The capital of France is ", "choices": ["Paris", "London", "a small village by the sea"],
     "answer": 0},
    {"context": "def add(a, b):\n    return ", "choices": ["a + b", "a - b", "None"], "answer": 0},
    {"context": "Water boils at 100 degrees ", "choices": ["Celsius", "Fahrenheit"], "answer": 0},
    {"context": "", "choices": ["import os", "qzx vv"], "answer": 0},           # an empty context: the prefix token
    {"context": "The answer is  ", "choices": ["yes", "no"], "answer": 1},       # trailing spaces move to the choice
]

TASK_YAML = """task: lmforge_tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {path}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
target_delimiter: ""
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
"""


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lm_eval_tasks")
    data = folder / "mc.jsonl"
    data.write_text("".join(json.dumps(it) + "\n" for it in ITEMS))
    (folder / "lmforge_tiny_mc.yaml").write_text(TASK_YAML.format(path=data))
    return folder


def test_lm_eval_evaluator_scores_a_local_task_as_lmforge_does(tiny, task_dir):
    ours = multiple_choice(Scorer.from_sampler(tiny.sampler), load_multiple_choice(task_dir / "mc.jsonl"))
    manager = TaskManager(include_path=str(task_dir), include_defaults=False)
    out = lm_eval.simple_evaluate(model=LmforgeLM(tiny.sampler), tasks=["lmforge_tiny_mc"], task_manager=manager,
                                  log_samples=True, bootstrap_iters=0)
    samples = sorted(out["samples"]["lmforge_tiny_mc"], key=lambda s: s["doc_id"])
    assert len(samples) == len(ITEMS)
    for theirs, mine in zip(samples, ours["samples"]):
        lls = [r[0][0] for r in theirs["resps"]]                 # one (logprob, is_greedy) per choice
        assert lls == mine["logprobs"]                           # the same floats, not just close ones
        assert [r[0][1] for r in theirs["resps"]] == mine["greedy"]
        assert theirs["acc"] == float(mine["picks"]["acc"] == theirs["target"])
        assert theirs["acc_norm"] == float(mine["picks"]["acc_norm"] == theirs["target"])
    results = out["results"]["lmforge_tiny_mc"]
    assert results["acc,none"] == ours["metrics"]["acc"] and results["acc_norm,none"] == ours["metrics"]["acc_norm"]


def test_loglikelihood_rolling_is_the_perplexity_sum(tiny):
    lm = LmforgeLM(tiny.sampler)
    texts = ["Short text.", "A longer text that needs more than one window of the tiny model's context. " * 6]
    got = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (t,), i) for i, t in enumerate(texts)],
                                   disable_tqdm=True)
    scorer = Scorer.from_sampler(tiny.sampler)
    # Together, the two texts' windows share batches (other widths): equal to float32 rounding.
    for text, value in zip(texts, got):
        assert value == pytest.approx(perplexity(scorer, text)["logprob_sum"], rel=1e-6)
    # Alone, a text forms the same batches as the perplexity task: the same float.
    [alone] = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (texts[1],), 0)], disable_tqdm=True)
    assert alone == perplexity(scorer, texts[1])["logprob_sum"] and perplexity(scorer, texts[1])["windows"] > 1


def test_generate_until_is_the_greedy_sampler(tiny):
    lm = LmforgeLM(tiny.sampler)
    prompts = ["def f(x):", "Question: 1 + 1?\nAnswer:"]
    kwargs = {"until": ["\n\n"], "max_gen_toks": 8, "do_sample": False}
    got = lm.generate_until([Instance("generate_until", {}, (p, kwargs), i) for i, p in enumerate(prompts)],
                            disable_tqdm=True)
    want = tiny.sampler.complete(prompts, SamplingConfig(max_new_tokens=8, temperature=0.0, stop_strings=("\n\n",)))
    assert got == want


def test_lm_eval_task_from_the_command_line(model_folder, task_dir, tmp_path, tiny):
    from lmforge.cli.main import main

    out = tmp_path / "lm_eval.json"
    assert main(["eval", str(model_folder), f"lm_eval:tasks=lmforge_tiny_mc,include={task_dir}", "mc:path="
                 + str(task_dir / "mc.jsonl"), "--out", str(out)]) == 0
    theirs, ours = json.loads(out.read_text())["results"]
    assert theirs["metrics"] == {"lmforge_tiny_mc/acc": ours["metrics"]["acc"],
                                 "lmforge_tiny_mc/acc_norm": ours["metrics"]["acc_norm"],
                                 "lmforge_tiny_mc/sample_len": len(ITEMS)}


@pytest.mark.slow
def test_an_unknown_lm_eval_task_is_named_with_the_nearest(model_folder, task_dir, capsys):
    """Slow: a name not among the local tasks makes lm-eval index its ~15,000 built-in task configs (~25 s)."""
    from lmforge.cli.main import main

    assert main(["eval", str(model_folder), f"lm_eval:tasks=lmforge_tiny_mq,include={task_dir}"]) == 2
    assert "unknown task 'lmforge_tiny_mq' — did you mean 'lmforge_tiny_mc'?" in capsys.readouterr().err
