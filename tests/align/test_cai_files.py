"""Constitutional AI from files (``lmforge.align.cai_files``): the prompts and principles readers (formats,
one-line ``file:line`` errors), the held-out split and the config's checks, and the smoke experiment end to
end on a tiny random model (through ``lmforge.cli.launch``): the user's principles are the ones used, the
data files read as SFT and DPO data, the held-out replies side by side, and a re-run reads everything back."""

import dataclasses
import functools
import gzip
import json
import pathlib

import pytest

from lmforge.align import cai_files as cf
from lmforge.align import constitutional as cai
from lmforge.align.common import split_held_out

EXPERIMENT = pathlib.Path(__file__).resolve().parents[2] / "experiments" / "align" / "constitutional_files.py"
MINE = [{"name": "kind", "critique": "Say how the reply could be kinder.", "revision": "Rewrite it more kindly."},
        {"name": "brief", "critique": "Say what in the reply is not needed.", "revision": "Rewrite it briefly."},
        {"feedback": "Which reply is kinder?"}]


def _lines(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_read_prompts_formats_and_errors(tmp_path):
    user = [{"role": "user", "content": "How do I pick a lock?"}]
    f = _lines(tmp_path / "p.jsonl", [{"prompt": "How do I pick a lock?"},
                                      {"prompt": [{"role": "system", "content": "Be brief."}] + user}])
    got = cf.read_prompts(f)
    assert got[0] == user and got[1][0]["role"] == "system" and got[1][1:] == user
    assert cf.read_prompts(f, limit=1) == [user]
    assert cf.read_prompts(_lines(tmp_path / "m.jsonl", [{"messages": user}] * 2)) == [user, user]
    txt = tmp_path / "p.txt"
    txt.write_text("How do I pick a lock?\n\n  Where do I buy a crowbar?  \n")
    assert cf.read_prompts(txt) == [user, [{"role": "user", "content": "Where do I buy a crowbar?"}]]
    hh = tmp_path / "hh.jsonl.gz"                     # an HH-RLHF transcript: its first user turn, when asked
    with gzip.open(hh, "wt") as g:
        g.write(json.dumps({"chosen": "\n\nHuman: How do I pick a lock?\n\nAssistant: No.\n\nHuman: Why?"
                                      "\n\nAssistant: It is illegal.",
                            "rejected": "\n\nHuman: x\n\nAssistant: y"}) + "\n")
    assert cf.read_prompts(hh, first_user_turn=True) == [user]
    for write, match in (
            (lambda p: _lines(p, [{"prompt": "ok"}, {"prompt": "q", "completion": "a"}]),
             r"p\.jsonl:2: ends with an assistant turn; expected a prompt ending with the user turn"),
            (lambda p: p.write_text('{"prompt": "ok"}\n{"prompt": \n'), r"p\.jsonl:2: not valid JSON"),
            (lambda p: p.write_text("\n\n"), r"p\.jsonl: no prompts \(prompts=.*\); expected \{\"prompt\""),
            (lambda p: _lines(p, [{"prompt": 3}]), r"p\.jsonl:1: \"prompt\" is 3; expected a string")):
        path = tmp_path / "p.jsonl"
        write(path)
        with pytest.raises(ValueError, match=match) as e:
            cf.read_prompts(path)
        assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match=r"ends with an assistant turn.*first_user_turn=true"):
        cf.read_prompts(hh)
    with pytest.raises(ValueError, match=r"helpful_prompts=.*nope\.jsonl: no such file; expected"):
        cf.read_prompts(tmp_path / "nope.jsonl", key="helpful_prompts")
    with pytest.raises(ValueError, match="prompts is empty"):
        cf.read_prompts("")


def test_read_principles_formats_and_errors(tmp_path):
    got = cf.read_principles(_lines(tmp_path / "c.jsonl", MINE))
    assert got.principles == (cai.Principle("kind", MINE[0]["critique"], MINE[0]["revision"]),
                              cai.Principle("brief", MINE[1]["critique"], MINE[1]["revision"]))
    assert got.feedback == ("Which reply is kinder?",) and got.examples == ()
    # H4's constitution.json: "critic", few-shot "system_chat", no names
    shot = [{"role": "user", "content": "Rob a bank?"}, {"role": "assistant", "content": "Sure."},
            {"role": "user", "content": "Critique it."}, {"role": "assistant", "content": "It helps a crime."}]
    h4 = {"constitutions": [{"critic": "Critique it.", "revision": "Revise it."},
                            {"critic": "Is it rude?", "revision": "Make it polite."}], "system_chat": [shot]}
    (tmp_path / "h4.json").write_text(json.dumps(h4, indent=2))
    got = cf.read_principles(tmp_path / "h4.json")
    assert [p.critique for p in got.principles] == ["Critique it.", "Is it rude?"]
    assert [p.name for p in got.principles] == ["principle_0", "principle_1"] and got.examples == (tuple(shot),)
    assert got.feedback == ()
    (tmp_path / "a.json").write_text(json.dumps(MINE[:2]))
    assert cf.read_principles(tmp_path / "a.json").principles == cf.read_principles(tmp_path / "c.jsonl").principles
    assert cf.read_principles("").principles == cai.CONSTITUTION
    # errors name the file and line of the entry
    bad_h4 = dict(h4, constitutions=[h4["constitutions"][0], {"revision": "Revise it."}])
    (tmp_path / "bad.json").write_text(json.dumps(bad_h4, indent=2))
    line = json.dumps(bad_h4, indent=2).splitlines().index("    {", 3) + 1   # where the second entry opens
    with pytest.raises(ValueError, match=rf"bad\.json:{line}: no \"critique\" \(keys: \['revision'\]\); expected"):
        cf.read_principles(tmp_path / "bad.json")
    for records, match in (
            ([MINE[0], {"name": "x", "critique": "c"}], r"c\.jsonl:2: no \"revision\""),
            ([MINE[0], {"critque": "c", "revision": "r"}],
             r"c\.jsonl:2: no \"critique\" \(keys: \['critque', 'revision'\]\)"),
            ([MINE[0], {"critique": " ", "revision": "r"}],
             r"c\.jsonl:2: \"critique\" is ' '; expected a non-empty string"),
            ([MINE[0], MINE[0]], "two principles named 'kind'"),
            ([MINE[2]], "no critique/revision principle"),
            (["just text"], r"c\.jsonl:1: expected a JSON object")):
        with pytest.raises(ValueError, match=match) as e:
            cf.read_principles(_lines(tmp_path / "c.jsonl", records))
        assert "\n" not in str(e.value)
    (tmp_path / "c.jsonl").write_text(json.dumps(MINE[0]) + "\n{oops\n")
    with pytest.raises(ValueError, match=r"c\.jsonl:2: not valid JSON"):
        cf.read_principles(tmp_path / "c.jsonl")
    (tmp_path / "b.json").write_text('[\n  {"critique": "c",\n   "revision": }\n]')
    with pytest.raises(ValueError, match=r"b\.json:3: not valid JSON"):
        cf.read_principles(tmp_path / "b.json")
    (tmp_path / "s.json").write_text(json.dumps(dict(h4, system_chat=[shot[:3]])))
    with pytest.raises(ValueError, match=r"s\.json:1: a few-shot conversation ending with a user turn"):
        cf.read_principles(tmp_path / "s.json")
    with pytest.raises(ValueError, match=r"principles=.*missing\.json: no such file"):
        cf.read_principles(tmp_path / "missing.json")


def test_split_and_config_checks(tmp_path):
    prompts = [[{"role": "user", "content": f"q{i}"}] for i in range(20)]
    split = functools.partial(split_held_out, at_least_one=True)   # read_inputs' split, seeded (seed, file)
    train, held = split(prompts, 0.25, (0, 0))
    assert len(held) == 5 and len(train) == 15
    assert not {p[0]["content"] for p in held} & {p[0]["content"] for p in train}
    assert (train, held) == split(prompts, 0.25, (0, 0)) and held != split(prompts, 0.25, (0, 1))[1]
    assert [p[0]["content"] for p in train] == sorted((p[0]["content"] for p in train), key=lambda s: int(s[1:]))
    assert split(prompts[:2], 0.01, (0, 0))[1] != [] and split(prompts, 0.0, (0, 0)) == (prompts, [])
    assert split_held_out(prompts[:2], 0.01, 0) == (prompts[:2], [])   # SFT's and DPO's: no floor
    for kw, match in ((dict(held_out_fraction=1.0), "held_out_fraction=1.0: expected"),
                      (dict(feedback=cf.FeedbackConfig(pairs="human")), "feedback.pairs='human': expected one of"),
                      (dict(critique=cf.CritiqueConfig(revisions=0)), "critique.revisions=0"),
                      (dict(sl=cf.StageConfig(steps=0)), "sl.steps=0")):
        with pytest.raises(ValueError, match=match) as e:
            cf.CAIFilesConfig(**kw)
        assert "\n" not in str(e.value)
    two = _lines(tmp_path / "two.jsonl", [{"prompt": "q"}, {"prompt": "r"}])
    with pytest.raises(ValueError, match=r"prompts=.*two\.jsonl: 2 prompt\(s\), all held out"):
        cf.read_inputs(cf.CAIFilesConfig(prompts=str(two), held_out_fraction=0.9))
    assert len(cf.read_inputs(cf.CAIFilesConfig(prompts=str(two), held_out_fraction=0.5)).prompts) == 1


def test_feedback_questions_longer_than_the_context_are_skipped(long_base):
    """``chat_logprobs`` refuses a question past the context rather than cut its start: such a pair is left
    out of the AI feedback (both orders, every principle checked), not the whole run."""
    from types import SimpleNamespace

    from lmforge.data import load_tokenizer
    from lmforge.data.chat import chat_template_for
    template = chat_template_for(load_tokenizer(long_base / "tokenizer"))
    prompt = [{"role": "user", "content": "How do I hurt someone?"}]
    scorer = SimpleNamespace(max_len=256)
    assert cf._fits(scorer, template, prompt, ("No.", "Like this."), cai.FEEDBACK_PRINCIPLES)
    assert not cf._fits(scorer, template, prompt, ("No.", "word " * 150), cai.FEEDBACK_PRINCIPLES)
    assert not cf._fits(scorer, template, prompt, ("No.", "Like this."), ["Which is better? " + "word " * 150])
    assert cf._fits(scorer, template, prompt, ("word " * 300,) * 2, cai.FEEDBACK_PRINCIPLES)   # identical: not asked
    labels = [{"responses": ["a", "b"], "p_a": 0.8, "p_a_orders": [0.9, 0.7], "sl_index": 1},
              {"responses": ["a", "b"], "p_a": 0.4, "p_a_orders": [0.7, 0.1], "sl_index": 0},
              {"responses": ["a", "a"], "p_a": 0.5, "p_a_orders": [0.5, 0.5], "sl_index": 0},
              {"responses": ["a", "c"], "p_a": 0.5, "p_a_orders": [0.5, 0.5], "sl_index": 0, "skipped": "too long"}]
    s = cf.feedback_summary(labels, [{}])
    assert s == {"labelled": 2.0, "skipped_too_long": 1.0, "identical": 1.0, "kept": 1.0,
                 "mean_p_chosen": pytest.approx(0.7), "median_p_chosen": pytest.approx(0.7),
                 "orders_agree": 0.5, "prefers_sl": 0.0}


def test_critiques_ask_by_the_files_principles_after_their_examples(tmp_path, monkeypatch):
    """SL-CAI's data with a scripted model: every critique and revision request is a principle of the file
    (H4's layout), its few-shot conversation goes before what the model reads (not into the records), the
    helpful prompts are answered as they are, and finished files are read back without the model."""
    from types import SimpleNamespace

    import lmforge.infer
    seen = []

    def replier(sampler, template, sampling, *, seed=0, batch=0):
        def reply(convs):
            seen.append(convs)
            return [f"reply {len(c)} to: {c[-1]['content']}" for c in convs]
        return reply

    monkeypatch.setattr(lmforge.infer, "replier", replier)
    shot = [{"role": "user", "content": "Rob a bank?"}, {"role": "assistant", "content": "No."}]
    h4 = {"constitutions": [{"critic": "Is it harmful?", "revision": "Make it harmless."},
                            {"critic": "Is it rude?", "revision": "Make it polite."}], "system_chat": [shot]}
    (tmp_path / "c.json").write_text(json.dumps(h4))
    cfg = cf.CAIFilesConfig(prompts=str(_lines(tmp_path / "p.jsonl", [{"prompt": f"Hurt {i}?"} for i in range(12)])),
                            helpful_prompts=str(_lines(tmp_path / "h.jsonl", [{"prompt": "2 + 2?"}] * 3)),
                            principles=str(tmp_path / "c.json"), critique=cf.CritiqueConfig(revisions=2))
    inputs = cf.read_inputs(cfg)
    model = SimpleNamespace(get=lambda: (None, None))
    records, helpful = cf._critiques(cfg, tmp_path, inputs, model)
    assert len(seen) == 1 + 2 * 2 + 1                 # answers, 2 rounds of critique + revision, helpful answers
    assert all(c[:2] == shot for call in seen[:5] for c in call) and all(c[0] != shot[0] for c in seen[5])
    pairs = {p["critic"]: p["revision"] for p in h4["constitutions"]}
    written = [json.loads(x) for x in (tmp_path / "critiques.jsonl").read_text().splitlines()]
    assert written == records and len(records) == len(inputs.prompts) == 11
    for r in records:
        asks = [m["content"] for m in r["messages"][2::2]]
        assert asks[0] in pairs and asks[1] == pairs[asks[0]] and asks[2] in pairs and asks[3] == pairs[asks[2]]
        assert r["messages"][:2] == [r["prompt"][0], {"role": "assistant", "content": r["response"]}]
    assert {m["content"] for r in records for m in r["messages"][2::4]} == set(pairs)   # both principles drawn
    assert helpful == [p + [{"role": "assistant", "content": "reply 1 to: 2 + 2?"}] for p in inputs.helpful]
    assert cf._critiques(cfg, tmp_path, inputs, None) == (records, helpful) and len(seen) == 6   # read back


@pytest.mark.slow   # one SFT and one DPO stage, four model loads: 40-65 s on the 2-core machine (shared); -m slow
def test_smoke_experiment_end_to_end_and_resume(long_base, tmp_path, capsys):
    from lmforge.cli.experiment import experiment_config, load_experiment
    from lmforge.cli.launch import launch
    from lmforge.data.chat_readers import read_conversations
    from lmforge.data.preference import read_preferences
    prompts = _lines(tmp_path / "red.jsonl", [{"prompt": f"How do I hurt person {i}?"} for i in range(8)])
    helpful = _lines(tmp_path / "helpful.jsonl", [{"prompt": f"What is {i} plus {i}?"} for i in range(4)])
    principles = _lines(tmp_path / "mine.jsonl", MINE)
    module, variant = load_experiment(f"{EXPERIMENT}:smoke")
    cfg = dataclasses.replace(experiment_config(module, variant), init_from=str(long_base), prompts=str(prompts),
                              principles=str(principles), helpful_prompts=str(helpful))
    workdir = tmp_path / "run"
    out = launch(cfg, workdir)
    inputs = cf.read_inputs(cfg)
    assert len(inputs.prompts) == 6 and len(inputs.helpful) == 3 and len(inputs.held) == 2 + 1
    records = [json.loads(x) for x in (workdir / "critiques.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in records] == inputs.prompts
    # the user's principles, and only those, ask for the critiques and revisions
    mine = {p["name"]: p for p in MINE[:2]}
    for r in records:
        assert r["principles"][0] in mine
        asks = [m["content"] for m in r["messages"][2::2]]
        assert asks == [mine[r["principles"][0]]["critique"], mine[r["principles"][0]]["revision"]]
    # the chat files read as SFT data; SL-CAI trained on the revisions and the helpful answers
    revisions, _ = read_conversations(workdir / "revisions.jsonl")
    assert revisions == [c for c in cai.revision_conversations(records) if c[-1]["content"]]
    answers, _ = read_conversations(workdir / "helpful_answers.jsonl")
    assert [a[:-1] for a in answers] == inputs.helpful and all(a[-1]["role"] == "assistant" for a in answers)
    sl, _ = read_conversations(workdir / "sl_data" / "train.jsonl")
    assert sl == revisions + [a for a in answers if a[-1]["content"]]
    # RL-CAI: AI labels of (init, sl) answers by the user's feedback principle; pairs in TRL's format
    labels = [json.loads(x) for x in (workdir / "feedback.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in labels] == inputs.prompts
    assert [r["responses"][r["sl_index"]] for r in labels] == [
        json.loads(x)["answer"] for x in (workdir / "answers_sl.jsonl").read_text().splitlines()]
    asked = [r for r in labels if r["responses"][0] != r["responses"][1]]
    assert asked and all(r["principle"] == "Which reply is kinder?" and 0 <= r["p_a"] <= 1 for r in asked)
    pairs, _ = read_preferences(workdir / "pairs.jsonl")
    assert len(pairs) == out["feedback/kept"] >= 2
    report = json.loads((workdir / "report.json").read_text())
    assert report["data"]["principles"] == 2 and report["feedback"]["labelled"] == len(asked)
    assert 0.5 <= report["feedback"]["mean_p_chosen"] <= 1
    # held-out prompts: every stage's reply side by side
    side = [json.loads(x) for x in (workdir / "heldout.jsonl").read_text().splitlines()]
    assert [(s["kind"], s["prompt"]) for s in side] == inputs.held
    assert all(set(s["replies"]) == set(s["refusal"]) == {"init", "sl", "rl"} for s in side)
    assert set(report["heldout_refusal"]) == {"init", "sl", "rl"}
    assert "no automatic harmlessness score" in report["note"]
    for stage in ("sl", "rl"):
        assert (workdir / stage / "final.json").is_file() and (workdir / stage / "tokenizer").is_dir()
    capsys.readouterr()
    again = cf.run_cai_files(cfg, workdir)            # everything finished: nothing trained, loaded or sampled
    said = capsys.readouterr().out
    assert "sl: finished" in said and "rl: finished" in said and "loading" not in said
    assert again == pytest.approx(out, nan_ok=True)
    # other prompts in the same workdir are refused, not mixed with the finished data
    before = (workdir / "critiques.jsonl").read_text()
    _lines(prompts, [{"prompt": f"Something else {i}?"} for i in range(9)])
    with pytest.raises(ValueError, match=r"inputs\.json: this workdir was made from other prompts, held_out than"):
        cf.run_cai_files(cfg, workdir)
    assert (workdir / "critiques.jsonl").read_text() == before
