"""Reward functions of one's own in GRPO (and PPO, which shares them: lmforge.align.rollouts): named in
the config, given a record's columns and prompt, several with weights, and the TRL-style data files
whose answer columns the grader reads."""

import dataclasses
import json

import pytest
from test_grpo import _cfg, _e_share

from lmforge.align.grpo import PromptDataConfig, run_grpo


def test_a_reward_fn_named_in_the_config_trains_on_prompts_without_answers(base, tmp_path, write_jsonl):
    """``reward_fn="file.py:name"`` (config.json-able, sweepable) scores rollouts over a chat file whose
    conversations end in a user turn and carry no answer; an exception in it is one line naming the
    completion; a spec that does not load is refused by check_runnable, before anything is written."""
    from lmforge.align.rollouts import load_reward_fn

    rewards = tmp_path / "rewards.py"
    rewards.write_text("def brevity(task, completion, answer):\n    assert answer is None and task == 'chat'\n"
                       "    return -len(completion) / 16\n\n"
                       "def boom(task, completion, answer):\n    raise KeyError('no such column')\n\nNOT_A_FN = 3\n")
    prompts = write_jsonl(tmp_path / "prompts.jsonl",
                          [{"messages": [{"role": "user", "content": f"Say {i} once."}]} for i in range(20)])
    data = PromptDataConfig(path=str(prompts), batch_size=4, max_prompt_len=40, val_fraction=0.2)
    cfg = dataclasses.replace(_cfg(base, steps=2, eval_generate=0, reward_fn=f"{rewards}:brevity"), data=data)
    cfg.check_runnable()
    run_grpo(cfg, tmp_path / "run")
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "train/reward" in r] == [1, 2] and all(
        r["train/reward"] < 0 for r in rows if "train/reward" in r)
    recorded = json.loads((tmp_path / "run" / "reward_sources.json").read_text())["history"]
    assert list(recorded[0]["digests"]) == [cfg.reward_fn]   # the source's digest, for a later resume
    with pytest.raises(ValueError, match=r"^reward_fn raised KeyError: 'no such column' on completion 0 of rollout 0 "
                                         r"\(task 'chat', ") as e:
        run_grpo(dataclasses.replace(cfg, reward_fn=f"{rewards}:boom"), tmp_path / "boom")
    assert "\n" not in str(e.value)
    assert load_reward_fn("os.path:join")("a", "b", "c") == "a/b/c"   # a module's function
    with pytest.raises(ValueError, match=r"dumps\(obj, .*cannot be called as dumps\(task, completion, answer\)"):
        load_reward_fn("json:dumps")
    for spec, match in (("rewards.py", "expected 'path/to/file.py:function'"), (f"{tmp_path}/none.py:f", "no such file"),
                        (f"{rewards}:missing", "has no function 'missing'"), (f"{rewards}:NOT_A_FN", "is a int"),
                        ("no_such_module_xyz:f", "does not load: ModuleNotFoundError")):
        with pytest.raises(ValueError, match=match):
            dataclasses.replace(cfg, reward_fn=spec).check_runnable()


def test_reward_functions_get_the_columns_they_ask_for():
    """TRL's reward functions get a data set's other columns as keywords, and the prompt: ``**kwargs``
    gets them all, declared names get theirs, ``task``/``completion``/``answer`` never twice; a required
    column a record lacks is refused naming its ``file:line`` before anything is sampled."""
    from lmforge.align.rollouts import check_reward_columns, reward_columns, score_completions

    asked = [{"role": "user", "content": "2+2?"}]
    items = [{"task": "chat", "answer": "4", "where": "p.jsonl:1", "columns": {"answer": 4, "tests": [1, 2], "id": 9},
              "messages": asked + [{"role": "assistant", "content": "4"}]},
             {"task": "chat", "answer": None, "where": "p.jsonl:2", "columns": {"id": 10}}]
    seen = []

    def everything(task, completion, answer, **kw):
        seen.append(kw)
        return len(completion)

    def named(task, completion, answer, tests=(), *, id):   # noqa: A002  (a column's name)
        return len(tests) + id

    assert score_completions(everything, ["ab", "c"], items).tolist() == [2.0, 1.0]
    assert seen == [{"tests": [1, 2], "id": 9, "prompt": asked}, {"id": 10}]
    assert score_completions(lambda task, completion, answer, prompt: len(prompt), ["", ""],
                             [items[0], {**items[1], "messages": asked * 3}]).tolist() == [1.0, 3.0]
    assert score_completions(named, ["", ""], items).tolist() == [11.0, 10.0]
    assert reward_columns(named) == (False, frozenset({"tests", "id"}), frozenset({"id"}))
    assert reward_columns(_e_share) == (False, frozenset(), frozenset())
    check_reward_columns(named, items)

    def needs_tests(task, completion, answer, tests):
        return 0.0
    with pytest.raises(ValueError, match=r"^p.jsonl:2: reward_fn needs_tests needs the column tests; the record "
                                         r"has id$"):
        check_reward_columns(needs_tests, items)
    with pytest.raises(ValueError, match=r"^reward_fn raised TypeError: .*on completion 1 of rollout 3 \(task 'chat'"):
        score_completions(needs_tests, ["a", "b"], items, where="of rollout 3")
    got = []
    score_completions(lambda task, completion, answer: got.append(answer) or 0.0, ["", ""], items)
    assert got == [4, None]   # the answer column as the file holds it, not the grader's string '4'

    def trl_style(completions, **kwargs):
        return [0.0 for _ in completions]
    with pytest.raises(ValueError, match=r"^reward_fn: trl_style\(completions, \*\*kwargs\) cannot be called as "
                                         r"trl_style\(task, completion, answer\); expected def trl_style\(task, "
                                         r"completion, answer, \*\*columns\) -> float, called once per completion"):
        check_reward_columns(trl_style, items)


def test_grpo_on_a_trl_prompt_file_with_answers_graded_and_a_column_reward(base, tmp_path, write_jsonl):
    """A TRL-style ``{"prompt", "answer"}`` file trains with no reward function of one's own (the answers
    graded by ``data.match``, held-out accuracy over them), and a ``reward_fn`` with ``**kwargs`` reads a
    record's other columns; a task no grader knows is refused naming its ``file:line``."""
    path = write_jsonl(tmp_path / "qa.jsonl", [{"prompt": f"What is {i} + {i}?", "answer": 2 * i, "target_len": i % 5}
                                              for i in range(20)])
    data = PromptDataConfig(path=str(path), batch_size=4, max_prompt_len=40, val_fraction=0.2, match="numeric")
    cfg = dataclasses.replace(_cfg(base, steps=2, eval_generate=4, eval_every=2), data=data)
    final = run_grpo(cfg, tmp_path / "graded")
    assert final["final/n"] == 4 and 0.0 <= final["final/accuracy"] <= 1.0
    rows = [json.loads(x) for x in (tmp_path / "graded" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "train/reward" in r] == [1, 2]

    rewards = tmp_path / "rewards.py"
    rewards.write_text("def length(task, completion, answer, **columns):\n"
                       "    assert task == 'chat' and isinstance(answer, int) and set(columns) >= {'target_len', 'prompt'}\n"
                       "    return -abs(len(completion) - columns['target_len'])\n")
    final = run_grpo(dataclasses.replace(cfg, reward_fn=f"{rewards}:length"), tmp_path / "columns")
    rows = [json.loads(x) for x in (tmp_path / "columns" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["train/reward"] <= 0 for r in rows if "train/reward" in r)
    # Held out: the reward function scores the greedy replies too (TRL's eval reward), beside the grader's accuracy.
    assert final["final/reward_n"] == 4 and final["final/reward"] <= 0 and final["final/n"] == 4
    samples = [json.loads(x) for x in (tmp_path / "columns" / "eval_samples.jsonl").read_text().splitlines()]
    assert len(samples) == 4 and all({"prompt", "reply", "reward", "correct"} <= set(x) for x in samples)
    assert samples[0]["prompt"][-1]["content"].startswith("What is ")

    odd = write_jsonl(tmp_path / "odd.jsonl", [{"prompt": "Write f.", "answer": "def f(): pass", "task": "code"}] * 5)
    with pytest.raises(ValueError, match=rf"^{odd}:\d: task 'code' has no grader; .*or score it with a reward function "
                                         rf"of your own \(reward_fn="):
        run_grpo(dataclasses.replace(cfg, data=dataclasses.replace(data, path=str(odd))), tmp_path / "odd")


def test_several_reward_functions_with_weights(base, tmp_path, write_jsonl):
    """TRL's reward_funcs + reward_weights: ``reward_funcs=(("rewards.py:a", 1.0), ("rewards.py:b", 0.5))``
    sums the weighted rewards, each function given its own columns, and logs each one's mean as
    ``rewards/<name>/mean``; bad pairs and reward_fn beside reward_funcs are one-line errors before a run."""
    from lmforge.align.rollouts import configured_reward, load_reward_funcs, score_completions

    rewards = tmp_path / "rewards.py"
    rewards.write_text("def one(task, completion, answer):\n    return 1.0\n\n"
                       "def length(task, completion, answer, target_len=0):\n    return float(len(completion) + target_len)\n")
    both = load_reward_funcs(((f"{rewards}:one", 1.0), (f"{rewards}:length", 0.5)))
    items = [{"task": "chat", "answer": None, "columns": {"target_len": 2}}, {"task": "chat", "answer": None}]
    assert score_completions(both, ["abcd", ""], items).tolist() == [1.0 + 0.5 * 6, 1.0 + 0.5 * 0]
    assert both.last == {"rewards/one/mean": 1.0, "rewards/length/mean": 3.0}
    for pairs, match in (((), r"reward_funcs=\(\): expected"), (((f"{rewards}:one",),), "item 0 is"),
                         (((f"{rewards}:one", float("nan")),), "finite weight"),
                         (((f"{rewards}:none", 1.0),), r"reward_funcs\[0\]=.*has no function 'none'")):
        with pytest.raises(ValueError, match=match):
            load_reward_funcs(pairs)

    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"Say {i}.", "target_len": i % 3} for i in range(20)])
    cfg = dataclasses.replace(_cfg(base, steps=2, eval_generate=0,
                                   reward_funcs=((f"{rewards}:one", 1.0), (f"{rewards}:length", 0.5))),
                              data=PromptDataConfig(path=str(path), batch_size=4, max_prompt_len=40, val_fraction=0.2))
    cfg.check_runnable()
    run_grpo(cfg, tmp_path / "run")
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in rows if "train/reward" in r]
    assert logged and all(r["train/rewards/one/mean"] == 1.0 and r["train/reward"] == pytest.approx(
        1.0 + 0.5 * r["train/rewards/length/mean"], rel=1e-5) for r in logged)
    with pytest.raises(ValueError, match="reward_fn=.* and reward_funcs=.* are both set"):
        configured_reward(dataclasses.replace(cfg, reward_fn=f"{rewards}:one"))


def test_the_ready_reward_functions_by_name(base, tmp_path):
    """``lmforge.align.rewards``' functions are named by spec like one's own: grpo_arithmetic.py:shaped's
    pair loads, and a run with them logs each one's mean (the step reward is 0 on letter counting, which
    writes no equations)."""
    import importlib.util
    import pathlib

    from lmforge.align.rollouts import configured_reward

    path = pathlib.Path(__file__).resolve().parents[2] / "experiments" / "align" / "grpo_arithmetic.py"
    spec = importlib.util.spec_from_file_location("grpo_arithmetic", path)
    exp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(exp)
    shaped = exp.get_config("shaped")
    assert configured_reward(shaped).__name__ == "1 * accuracy + 0.5 * equation_accuracy"
    cfg = _cfg(base, steps=1, eval_generate=4, eval_on_start=True, reward_funcs=shaped.reward_funcs)
    run_grpo(cfg, tmp_path / "run")
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    trained = next(r for r in rows if "train/reward" in r)
    assert trained["train/rewards/equation_accuracy/mean"] == 0.0
    assert trained["train/reward"] == pytest.approx(trained["train/rewards/accuracy/mean"])
    assert {"eval/reward", "eval/accuracy", "eval/rewards/accuracy/mean", "eval/rewards/equation_accuracy/mean"
            } <= set(rows[0])


def test_a_reward_file_changed_between_runs_of_one_workdir_is_said_and_recorded(tmp_path):
    """reward_sources.json keeps the reward functions' source digests; a resume over a changed file says
    so in one line, naming the file and the step the new code scores from, and records it."""
    import types

    from lmforge.align.rollouts import REWARD_SOURCES, check_reward_sources, reward_source_digests

    rewards = tmp_path / "rewards.py"
    rewards.write_text("def brevity(task, completion, answer):\n    return -len(completion)\n")
    cfg = types.SimpleNamespace(reward_fn=f"{rewards}:brevity", reward_funcs=())
    said = []
    check_reward_sources(cfg, tmp_path, said.append)
    check_reward_sources(cfg, tmp_path, said.append)   # the same code: nothing to say or add
    first = json.loads((tmp_path / REWARD_SOURCES).read_text())["history"]
    assert said == [] and len(first) == 1 and first[0]["step"] == 0
    (tmp_path / "checkpoints" / "7").mkdir(parents=True)
    rewards.write_text("def brevity(task, completion, answer):\n    return -2 * len(completion)\n")
    check_reward_sources(cfg, tmp_path, said.append)
    history = json.loads((tmp_path / REWARD_SOURCES).read_text())["history"]
    old, new = first[0]["digests"][cfg.reward_fn], history[1]["digests"][cfg.reward_fn]
    assert said == [f"reward: {rewards} changed since this run last ran (sha256 {old} -> {new}): the rewards from "
                    f"step 7 on come from the new code"]
    assert [h["step"] for h in history] == [0, 7]
    pairs = types.SimpleNamespace(reward_fn="", reward_funcs=((f"{rewards}:brevity", 1.0), ("json:loads", 0.5)))
    assert set(reward_source_digests(pairs)) == {f"{rewards}:brevity", "json:loads"}
    assert reward_source_digests(types.SimpleNamespace(reward_fn="", reward_funcs=())) == {}
