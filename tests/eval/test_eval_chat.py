"""``lmforge eval RUN chat:``: a chat file's items graded by ``match`` or their own task, the synthetic
tasks drawn with the run's ``synthetic_options``, the tool-call loop for items answered through a
tool, and their mistakes refused before the model loads."""

import json
import pathlib

import pytest
from test_eval_cli import errors, no_model, strict_json

from lmforge.cli.eval_cmd import parse_task
from lmforge.cli.main import main


def test_chat_file_items_without_a_task_are_graded_by_match(model_folder, tiny, tmp_path, capsys):
    """A chat file as --help describes it: items without a task (which the synthetic grader refused after
    every reply was generated) are graded by match; a conversation without a reference assistant turn is
    asked as it is; an item with a synthetic task keeps that task's grader."""
    from lmforge.data import chat_template_for
    from lmforge.eval.chat import chat_replies
    from lmforge.infer import SamplingConfig

    asked = [{"role": "user", "content": "Say hi"}]
    template = chat_template_for(tiny.sampler.tok)
    reply = chat_replies(tiny.sampler, template, [asked], SamplingConfig(max_new_tokens=4, temperature=0.0))[0]
    chat = tmp_path / "chat.jsonl"
    chat.write_text("".join(json.dumps(x) + "\n" for x in [
        {"messages": [*asked, {"role": "assistant", "content": "hi"}], "answer": reply},    # the reference turn
        {"messages": asked, "answer": reply + " and more"},                                  # no reference turn
        {"messages": [{"role": "user", "content": "What is 2 + 3?"}], "answer": "5", "task": "arithmetic"},
    ]))
    out = tmp_path / "chat.json"
    assert main(["eval", str(model_folder), f"chat:path={chat},max_new_tokens=4", "--out", str(out)]) == 0
    result = strict_json(out)["results"][0]
    assert result["metrics"]["n"] == 3 and [s["task"] for s in result["samples"]] == ["chat", "chat", "arithmetic"]
    assert [s["reply"] for s in result["samples"][:2]] == [reply, reply]   # the same prompt either way
    assert [s["correct"] for s in result["samples"][:2]] == [True, False]  # exact: the reply equals the answer
    assert result["metrics"]["accuracy/chat"] == 0.5
    assert result["samples"][0]["prompt"] == asked   # a wrong reply can be traced to its question

    # The same items in TRL's prompt / completion format (what SFT, GRPO and PPO read) evaluate the same.
    trl = tmp_path / "trl.jsonl"
    trl.write_text("".join(json.dumps(x) + "\n" for x in [
        {"prompt": asked, "completion": "hi", "answer": reply},
        {"prompt": "Say hi", "answer": reply + " and more"},
        {"prompt": "What is 2 + 3?", "answer": 5, "task": "arithmetic"},
    ]))
    out = tmp_path / "trl.json"
    assert main(["eval", str(model_folder), f"chat:path={trl},max_new_tokens=4", "--out", str(out)]) == 0
    again = strict_json(out)["results"][0]
    assert again["metrics"] == result["metrics"]
    assert [(s["reply"], s["correct"]) for s in again["samples"]] == [(s["reply"], s["correct"]) for s in result["samples"]]


def test_chat_file_mistakes_are_refused_before_the_model_loads(run_folder, tmp_path, capsys, monkeypatch):
    from lmforge.cli import eval_cmd

    def no_model(*_):
        raise AssertionError("the model was loaded before the task file was checked")
    monkeypatch.setattr(eval_cmd, "load_sampler", no_model)
    chat = tmp_path / "chat.jsonl"

    def error(*lines, spec="chat:path={}") -> str:
        chat.write_text("".join(json.dumps(x) + "\n" for x in lines))
        assert main(["eval", str(run_folder), spec.format(chat)]) == 2
        err = errors(capsys)
        assert len(err) == 1 and err[0].startswith("lmforge: error: "), err
        return err[0]

    hi = {"messages": [{"role": "user", "content": "Say hi"}], "answer": "hi"}
    assert (f"{chat}:2: task 'greet' has no grader; expected one of gsm8k, arithmetic," in
            error(hi, {**hi, "task": "greet"}))
    assert f"{chat}:1: answer 'hi' of task 'arithmetic': expected a number" in error({**hi, "task": "arithmetic"})
    assert f"{chat}:1: the conversation is only an assistant turn" in error(
        {"messages": [{"role": "assistant", "content": "hi"}], "answer": "hi"})
    assert f"{chat}:1: no 'answer'; expected each item to carry" in error({"messages": hi["messages"]})
    assert "chat: match='fuzzy': expected one of auto, exact, numeric, regex" in error(hi, spec="chat:path={},match=fuzzy")
    assert "chat: tasks=identity and path= are both given; a file's items name their own task" in error(
        hi, spec="chat:path={},tasks=identity")
    assert f"{chat}:1: answer 'hi' holds no number; a gsm8k item is graded by the reply's number" in error(
        {**hi, "task": "gsm8k"})
    assert f"{chat}:1: answer 'hi' holds no number; a chat item" in error(hi, spec="chat:path={},match=numeric")


@pytest.fixture
def zed_run(sft_folder, tmp_path) -> pathlib.Path:
    """An SFT run trained as "Zed" by "Acme Labs" (``synthetic_options``), with the tiny model's checkpoint."""
    import shutil

    from lmforge.align.sft import ChatDataConfig, SFTConfig
    from lmforge.cli.launch import write_config

    run = tmp_path / "zed"
    run.mkdir()
    write_config(SFTConfig(init_from=str(sft_folder), data=ChatDataConfig(synthetic=(("identity", 1.0),)),
                           synthetic_options=(("name", "Zed"), ("maker", "Acme Labs")), steps=5), run)
    shutil.copy(sft_folder / "model.json", run)
    for folder in ("tokenizer", "checkpoints"):
        shutil.copytree(sft_folder / folder, run / folder)
    return run


def test_chat_draws_synthetic_tasks_with_the_runs_options(zed_run, tiny, tmp_path, capsys, monkeypatch):
    """A run trained as Zed was asked and graded as the default "Forge" (accuracy 0 where its own SFT
    evaluation gave 0.93): its synthetic_options are read from config.json, said in a note, and task
    arguments set or override them."""
    import types

    import lmforge.eval.chat
    from lmforge.cli import eval_cmd

    monkeypatch.setattr(eval_cmd, "load_sampler", lambda *_: types.SimpleNamespace(tok=tiny.sampler.tok, step=5))
    learnt = "I'm Zed, an AI assistant made by Acme Labs."   # the reply of a model that learnt its identity
    monkeypatch.setattr(lmforge.eval.chat, "chat_replies", lambda _s, _t, prompts, *_, **__: [learnt] * len(prompts))

    def result(spec: str) -> tuple[dict, list[str]]:
        out = tmp_path / f"{len(list(tmp_path.glob('*.json')))}.json"
        assert main(["eval", str(zed_run), spec, "--out", str(out)]) == 0
        return strict_json(out)["results"][0], errors(capsys)

    zed, notes = result("chat:tasks=identity,n=20")
    assert notes == [f"eval: note: chat: synthetic options from {zed_run / 'config.json'}: name='Zed', "
                     f"maker='Acme Labs'"]
    assert zed["metrics"]["accuracy"] == 1.0 and {s["answer"] for s in zed["samples"]} == {"Zed"}
    assert zed["synthetic_options"] == {"name": "Zed", "maker": "Acme Labs"}
    systems = [m["content"] for s in zed["samples"] for m in s["prompt"] if m["role"] == "system"]
    assert any("Zed" in c for c in systems) and not any("Forge" in c for c in systems)   # asked as itself

    bob, notes = result("chat:tasks=identity,n=8,name=Bob")   # a task argument wins over the run's option
    assert notes == [f"eval: note: chat: synthetic options from {zed_run / 'config.json'}: maker='Acme Labs', "
                     f"name='Bob' given over its 'Zed'"]
    assert {s["answer"] for s in bob["samples"]} == {"Bob"} and bob["metrics"]["accuracy"] == 0.0
    assert bob["synthetic_options"] == {"maker": "Acme Labs", "name": "Bob"}

    calc, notes = result("chat:tasks=arithmetic,n=2,max_ops=2")   # options of other tasks are not taken
    assert notes == [] and calc["synthetic_options"] == {"max_ops": 2}


def test_chat_option_mistakes_are_refused_before_the_model_loads(zed_run, model_folder, tmp_path, capsys,
                                                                 monkeypatch):
    from lmforge.cli import eval_cmd

    monkeypatch.setattr(eval_cmd, "load_sampler", no_model)
    chat = tmp_path / "chat.jsonl"
    chat.write_text(json.dumps({"messages": [{"role": "user", "content": "Say hi"}], "answer": "hi"}) + "\n")
    for source, spec, message in [
        (model_folder, "chat:tasks=arithmetic,name=Zed", "chat: name='Zed' is an option of identity, smalltalk; no "
                                                         "task of tasks=arithmetic reads it"),
        (model_folder, "chat:tasks=calculator,max_digits=1,tools=calculator",
         "chat: option max_digits=1: expected a whole number in [2, 12]"),
        (model_folder, "chat:tasks=identity,system_prob=often", "chat: option system_prob='often' of task "
                                                                "'identity': expected a number"),
        (zed_run, f"chat:path={chat},name=Zed", "chat: name='Zed' set synthetic tasks' options, but path= items "
                                                "are read, not drawn"),
    ]:
        assert main(["eval", str(source), spec, "--out", str(tmp_path / "x.json")]) == 2
        err = errors(capsys)
        assert len(err) == 1 and err[0] == f"lmforge: error: {message}" + (" (drop them)" if "path=" in spec else ""), \
            (spec, err)


def test_chat_options_are_those_of_the_tasks_with_answers():
    """The chat task's option arguments (listed, so --help needs no JAX) are synthetic.OPTIONS of the tasks
    it draws."""
    from lmforge.cli.eval_tasks import SYNTHETIC_OPTIONS
    from lmforge.data import synthetic

    assert set(SYNTHETIC_OPTIONS) == {k for k, (tasks, _, _) in synthetic.OPTIONS.items()
                                      if set(tasks) & set(synthetic.VERIFIABLE)}
    _, args = parse_task("chat:tasks=identity,name=Zed,maker=Acme Labs,tools=calculator+python")
    assert (args["name"], args["maker"], args["tools"], args["max_digits"]) == ("Zed", "Acme Labs",
                                                                                 "calculator+python", "")


def test_chat_runs_the_tool_loop_for_items_answered_through_a_tool(model_folder, tiny, tmp_path, capsys,
                                                                   monkeypatch):
    """A calculator item was graded on the model's call itself (accuracy 0 for a model that scores 1 in
    SFT's own evaluation): tools= sends each reply through the tool-call loop SFT's eval_tools runs, and
    without it the task is refused before the model loads."""
    import types

    import lmforge.eval.chat
    from lmforge.cli import eval_cmd
    from lmforge.data import synthetic

    calls = {it["messages"][0]["content"]: it["messages"][1]["content"]
             for it in synthetic.mixture({"calculator": 1.0}, 6, split="test", seed=0, max_digits=3)}

    def replier(*_, **__):   # a model that learnt the format: the call, then the tool's result
        return lambda conversations: [calls[c[0]["content"]] if c[-1]["role"] == "user" else f"#### {c[-1]['content']}"
                                      for c in conversations]
    monkeypatch.setattr(eval_cmd, "load_sampler", no_model)
    for spec, message in [
        ("chat:tasks=arithmetic+calculator", "chat: task calculator is answered through the calculator tool; add "
                                             "tools=calculator"),
        ("chat:tasks=calculator,tools=python", "chat: task calculator is answered through the calculator tool; add "
                                               "tools=python+calculator"),
        ("chat:tasks=calculator,tools=abacus",
         "chat: tools='abacus': tool 'abacus': expected one of calculator, python"),
    ]:
        assert main(["eval", str(model_folder), spec]) == 2
        err = errors(capsys)
        assert err == [f"lmforge: error: {message}" + (" (joined with +)" if "abacus" in spec else "")], (spec, err)
    chat = tmp_path / "tools.jsonl"   # a file's tool-use items too, named by line
    item = synthetic.generate("calculator", 1, split="test")[0]
    chat.write_text(json.dumps({"messages": item["messages"], "answer": item["answer"]}) + "\n")
    assert main(["eval", str(model_folder), f"chat:path={chat}"]) == 2
    assert errors(capsys) == [f"lmforge: error: {chat}:1 is answered through the calculator tool; add tools=calculator"]

    monkeypatch.setattr(eval_cmd, "load_sampler", lambda *_: types.SimpleNamespace(tok=tiny.sampler.tok, step=None))
    monkeypatch.setattr(lmforge.eval.chat, "replier", replier)
    out = tmp_path / "calc.json"
    assert main(["eval", str(model_folder), "chat:tasks=calculator,n=6,max_digits=3,tools=calculator",
                 "--out", str(out)]) == 0
    result = strict_json(out)["results"][0]
    assert result["metrics"] == {"accuracy": 1.0, "n": 6, "tool_calls": 1.0, "tool_errors": 0.0}
    first = result["samples"][0]
    assert first["calls"][0]["name"] == "calculator" and first["calls"][0]["result"] == first["answer"]
    assert first["reply"] == f"#### {first['answer']}"
