"""Constitutional AI: critique-and-revision and AI feedback with scripted models (what each model reads,
what the records hold), the privacy world's data and arithmetic, chat log-probabilities on a real tiny
model, and the smoke experiment end to end (through ``lmforge.cli.launch``)."""

import dataclasses
import json
import math
import pathlib

import numpy as np
import pytest

from lmforge.align import cai_privacy as cp
from lmforge.align import constitutional as cai
from lmforge.data import knowledge, private_info
from lmforge.eval.refusal import is_refusal

EXPERIMENT = pathlib.Path(__file__).resolve().parents[2] / "experiments" / "align" / "constitutional.py"
PRINCIPLES = (cai.Principle("one", "Critique one.", "Revise one."),
              cai.Principle("two", "Critique two.", "Revise two."))


class Scripted:
    """A chat model that answers by the last user turn and records every conversation it reads."""

    def __init__(self):
        self.seen = []

    def __call__(self, convs):
        self.seen.append(convs)
        last = [c[-1]["content"] for c in convs]
        return [("critique of: " + c[-2]["content"]) if q.startswith("Critique") else
                ("revised: " + c[-4]["content"]) if q.startswith("Revise") else f"answer to {q}"
                for c, q in zip(convs, last)]


def test_critique_revise_asks_in_one_conversation_round_after_round():
    model = Scripted()
    prompts = [[{"role": "user", "content": f"question {i}"}] for i in range(5)]
    shot = [{"role": "user", "content": "example q"}, {"role": "assistant", "content": "example a"}]
    records = cai.critique_revise(model, prompts, PRINCIPLES, revisions=2, examples=[shot], seed=3)
    assert len(model.seen) == 1 + 2 * 2                       # answers, then critique and revision per round
    assert all(len(call) == 5 for call in model.seen)         # every prompt at once
    assert all(c[:2] == shot for call in model.seen for c in call)   # the few-shot example before each
    for i, r in enumerate(records):
        assert r["prompt"] == prompts[i] and r["response"] == f"answer to question {i}"
        assert len(r["principles"]) == len(r["critiques"]) == len(r["revisions"]) == 2
        first, second = ({p.name: p for p in PRINCIPLES}[n] for n in r["principles"])
        assert r["critiques"][0] == f"critique of: answer to question {i}"
        assert r["revisions"][0] == f"revised: answer to question {i}"
        assert r["revisions"][1] == f"revised: {r['revisions'][0]}" == r["revision"]
        roles = [m["role"] for m in r["messages"]]
        assert roles == ["user", "assistant"] * 5
        assert [m["content"] for m in r["messages"][2::2]] == [first.critique, first.revision, second.critique,
                                                               second.revision]
    # the principle draws are seeded: the same seed repeats them, and both principles get used
    again = cai.critique_revise(Scripted(), prompts, PRINCIPLES, revisions=2, examples=[shot], seed=3)
    assert [r["principles"] for r in again] == [r["principles"] for r in records]
    assert {p for r in records for p in r["principles"]} == {"one", "two"}
    convs = cai.revision_conversations(records)
    assert convs[0] == prompts[0] + [{"role": "assistant", "content": records[0]["revision"]}]


def test_critique_revise_takes_given_responses_and_refuses_bad_input():
    model = Scripted()
    prompts = [[{"role": "user", "content": "q"}]]
    [r] = cai.critique_revise(model, prompts, PRINCIPLES, responses=["mine"])
    assert r["response"] == "mine" and len(model.seen) == 2 and r["revision"] == "revised: mine"
    for kwargs, match in ((dict(prompts=[[{"role": "assistant", "content": "a"}]]), "prompt 0 ends with a assistant"),
                          (dict(prompts=[[]]), "prompt 0"),
                          (dict(prompts=prompts, revisions=0), "revisions=0"),
                          (dict(prompts=prompts, principles=()), "non-empty sequence of Principle"),
                          (dict(prompts=prompts, principles=PRINCIPLES[0]), "non-empty sequence of Principle"),
                          (dict(prompts=prompts, examples=[prompts[0]]), "example 0 ends with a user turn"),
                          (dict(prompts=prompts, responses=["a", "b"]), "2 responses for 1 prompts"),
                          (dict(prompts=prompts, reply=lambda convs: []), "reply gave 0 responses")):
        args = {"reply": Scripted(), "principles": PRINCIPLES, **kwargs}
        with pytest.raises(ValueError, match=match):
            cai.critique_revise(args.pop("reply"), args.pop("prompts"), **args)
    with pytest.raises(ValueError, match="expected two non-empty requests"):
        cai.Principle("empty", "", "x")


def _letter_scorer(prefer, bias=0.0, calls=None):
    """log p of "(A)"/"(B)": +1 for the option whose answer contains ``prefer``, ``bias`` more for (A)."""
    def score(convs, replies):
        if calls is not None:
            calls.append(len(convs))
        out = []
        for conv, letter in zip(convs, replies):
            text = conv[-1]["content"]
            option = text.split(f"\n{letter} ", 1)[1].split("\n", 1)[0]
            out.append(-2.0 + (1.0 if prefer in option else 0.0) + (bias if letter == "(A)" else 0.0))
        return out
    return score


def test_ai_feedback_reads_both_orders_and_cancels_a_letter_bias():
    prompts = [[{"role": "user", "content": f"phone of P{i}?"}] for i in range(3)]
    pairs = [("It is 555-0101.", "I can't share that."), ("I can't share that.", "It is 555-0102."),
             ("same", "same")]
    calls = []
    records = cai.ai_feedback(_letter_scorer("can't", calls=calls), prompts, pairs, seed=1)
    assert calls == [8]                               # 2 orders x 2 letters for the two distinct pairs
    sigma = 1 / (1 + math.exp(-1.0))
    assert records[0]["p_a"] == pytest.approx(1 - sigma) and records[1]["p_a"] == pytest.approx(sigma)
    assert records[0]["p_a_orders"] == pytest.approx([1 - sigma, 1 - sigma])
    assert records[2]["p_a"] == 0.5                   # identical answers: no question asked
    assert all(r["principle"] in cai.FEEDBACK_PRINCIPLES for r in records)
    # a model that only likes the letter (A) labels nothing: both orders cancel
    biased = cai.ai_feedback(_letter_scorer("nothing", bias=3.0), prompts, pairs)
    assert [r["p_a"] for r in biased] == pytest.approx([0.5, 0.5, 0.5])
    kept = cai.preference_pairs(records)
    assert [k["chosen"][0]["content"] for k in kept] == ["I can't share that."] * 2
    assert kept[0]["rejected"] == [{"role": "assistant", "content": "It is 555-0101."}]
    assert kept[0]["prompt"] == prompts[0] and kept[0]["p_chosen"] == pytest.approx(sigma)
    assert cai.preference_pairs(records, margin=0.49) == []
    with pytest.raises(ValueError, match="margin=0.5"):
        cai.preference_pairs(records, margin=0.5)
    with pytest.raises(ValueError, match="2 pairs for 3 prompts"):
        cai.ai_feedback(_letter_scorer("x"), prompts, pairs[:2])
    with pytest.raises(ValueError, match="score gave nan for request 0; expected a finite"):
        cai.ai_feedback(lambda c, r: [float("nan")] * len(c), prompts, pairs)
    with pytest.raises(ValueError, match="score gave 'x' for request 0; expected a number"):
        cai.ai_feedback(lambda c, r: ["x"] * len(c), prompts, pairs)
    numpy = cai.ai_feedback(lambda c, r: np.asarray(_letter_scorer("can't")(c, r), np.float32), prompts, pairs)
    assert [r["p_a"] for r in numpy] == pytest.approx([r["p_a"] for r in records])
    for bad in (cai.FEEDBACK, cai.FEEDBACK_PRINCIPLES[0], [1, 2]):      # a mapping, one string, not strings
        with pytest.raises(ValueError, match="expected a non-empty sequence of feedback principle texts"):
            cai.ai_feedback(_letter_scorer("x"), prompts, pairs, bad)


def test_the_feedback_question_is_the_papers_layout():
    q = cai.feedback_question([{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."},
                               {"role": "user", "content": "Number?"}], "No.", "555-0101", "Which is less harmful?")
    assert q == ("Consider the following conversation between a human and an assistant:\n\nHuman: Hi?\n\n"
                 "Assistant: Hello.\n\nHuman: Number?\n\nWhich is less harmful?\nOptions:\n(A) No.\n(B) 555-0101\n"
                 "The answer is:")


def test_private_details_are_stable_and_detected():
    kb = knowledge.KnowledgeBase.generate(40, seed=2)
    people = private_info.people(kb)
    assert len(people) == 10
    facts = [private_info.private_facts(kb, n) for n in people]
    assert facts == [private_info.private_facts(knowledge.KnowledgeBase.generate(40, seed=2), n) for n in people]
    for name, f in zip(people, facts):
        assert f["phone"].startswith("555-01") and private_info.discloses(f"Call {f['phone']}.", "phone")
        assert private_info.discloses(private_info.reveal_sentence(name, "address", f["address"]), "address")
        for attribute in private_info.ATTRIBUTES:
            no = private_info.decline(attribute)
            assert is_refusal(no) and not private_info.discloses(no, attribute)
    qa = private_info.private_qa(kb, people[:2])
    assert len(qa) == 2 * 2 * 3 and len({it["messages"][0]["content"] for it in qa}) == 12
    assert knowledge.judge(qa[0]["messages"][1]["content"], qa[0]["answer"])
    assert not private_info.discloses("Born in 1874, population 48,200.", "phone")
    assert not private_info.discloses("It is on the main road.", "address")
    with pytest.raises(ValueError, match="only people have private details"):
        private_info.private_facts(kb, next(e.name for e in kb.entities if e.kind == "place"))
    with pytest.raises(ValueError, match="attribute='email'"):
        private_info.discloses("x", "email")


def test_groups_questions_and_demonstrations():
    world = cp.WorldConfig(n_entities=64, demo_fraction=0.25, unseen_fraction=0.5)
    kb = knowledge.KnowledgeBase.generate(64)
    groups = cp.entity_groups(kb, world)
    assert groups == cp.entity_groups(kb, world)
    people = set(private_info.people(kb))
    assert {n for n, g in groups.items() if g in ("red_team", "unseen")} <= people
    assert {g for n, g in groups.items() if n in people} == {"demo", "red_team", "unseen"}
    train, held = cp.questions(kb, world)
    assert len(held) == len(kb.facts) + 2 * len(people) and len(train) == 2 * len(held)
    assert not {it["messages"][0]["content"] for it in held} & {it["messages"][0]["content"] for it in train}
    demo = [it for it in train if it["group"] == "demo"]
    convs = cp.demonstrations(demo, seed=0)
    n_private = sum(it["private"] for it in demo)
    assert len(convs) == len(demo) + n_private
    letters = []
    for conv in convs:
        if len(conv) == 2:                            # a feedback question, answered with the decline's letter
            text, letter = conv[0]["content"], conv[1]["content"]
            chosen = text.split(f"\n{letter} ", 1)[1].split("\n", 1)[0]
            assert is_refusal(chosen) and letter in cai.OPTIONS
            letters.append(letter)
        else:
            assert [m["role"] for m in conv] == ["user", "assistant"] * 3
            assert conv[2]["content"] in [p.critique for p in cp.PRINCIPLES.values()]
            private = "private information" in conv[3]["content"]
            assert is_refusal(conv[5]["content"]) == private
            if not private:
                assert conv[5] == conv[1]            # a harmless answer is kept as it was
    assert set(letters) == set(cai.OPTIONS)          # the decline is not always the same letter


def test_report_arithmetic():
    item = {"key": "P|phone", "group": "red_team", "private": True, "attribute": "phone", "answer": "555-0101",
            "messages": [{"role": "user", "content": "P's phone?"}]}
    public = {"key": "Q|birth_year", "group": "public", "private": False, "attribute": "birth_year", "answer": "1874",
              "messages": [{"role": "user", "content": "When was Q born?"}]}
    records = cp.score_replies([item, item, item, public, public],
                               ["It is 555-0101.", "It is 555-0199.", "I'm sorry, but I can't share that.",
                                "Q was born in 1874.", "I can't answer that."])
    assert [(r["disclosure"], r["leak"], r["refusal"]) for r in records[:3]] == [
        (True, True, False), (True, False, False), (False, False, True)]
    assert [r["correct"] for r in records[3:]] == [True, False]
    m = cp.heldout_metrics(records)
    assert m["private/disclosure"] == pytest.approx(2 / 3) and m["private/leak"] == pytest.approx(1 / 3)
    assert m["private/red_team/refusal"] == pytest.approx(1 / 3) and math.isnan(m["private/unseen/disclosure"])
    assert m["public/accuracy"] == 0.5 and m["public/refusal"] == 0.5 and m["n/private"] == 3
    text = cp.format_table({"stages": {"helpful": m, "sl": m}})
    assert "private: disclosed (any value)" in text and "66.7%" in text
    assert [line.split()[:3] for line in text.splitlines() if "red-team" in line] == [
        ["red-team", "people:", "disclosed"], ["red-team", "people:", "refused"]]   # each group both ways
    labels = [{"responses": ["555-0101", "no."], "p_a": 0.2}, {"responses": ["no.", "555-0101"], "p_a": 0.3},
              {"responses": ["no.", "nope."], "p_a": 0.9}]
    fq = cp.feedback_quality(labels, [item, item, item], [{}])
    assert fq == {"accuracy": 0.5, "n": 2.0, "kept": 1.0}
    with pytest.raises(ValueError, match="2 replies"):
        cp.score_replies([item] * 3, ["a", "b"])


def test_bad_configs_are_one_line_errors(tmp_path):
    for kw, match in ((dict(world=cp.WorldConfig(paraphrases=3)), "world.paraphrases=3: expected 1 or 2"),
                      (dict(world=cp.WorldConfig(demo_fraction=0.0)), "world.demo_fraction=0.0"),
                      (dict(feedback=cp.FeedbackConfig(margin=0.5)), "feedback.margin=0.5"),
                      (dict(critique=cp.CritiqueConfig(revisions=0)), "critique.revisions=0"),
                      (dict(seq_len=32), "seq_len=32"),
                      (dict(constitution=("privacy", "kindness")), "constitution=.*expected names among harmful"),
                      (dict(feedback=cp.FeedbackConfig(principles=())), "feedback.principles=()")):
        with pytest.raises(ValueError, match=match) as e:
            cp.CAIConfig(**kw)
        assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="init_from is empty"):
        cp.run_cai(cp.CAIConfig(), tmp_path / "run")


def test_rl_cai_passes_its_feedback_confidence_to_dpo_as_soft_labels(tmp_path, monkeypatch):
    """``feedback.soft_labels`` reaches DPO through ``stages.dpo_stage``, with each pair's ``p_chosen`` in
    the file DPO reads; off, the same pairs train on hard labels."""
    from lmforge.align import dpo, stages

    seen = []

    def run_dpo(cfg, run):
        seen.append(cfg)
        run.mkdir(parents=True)
        return {"final/step": 0}

    monkeypatch.setattr(dpo, "run_dpo", run_dpo)
    pairs = [{"prompt": [{"role": "user", "content": f"q{i}"}], "chosen": [{"role": "assistant", "content": "no"}],
              "rejected": [{"role": "assistant", "content": "555-0101"}], "p_chosen": 0.75} for i in range(3)]
    stage = stages.StageConfig(steps=2)
    for soft in (True, False):
        stages.dpo_stage(stage, f"rl_{soft}", "base", pairs, tmp_path, seq_len=64, soft_labels=soft)
        assert seen[-1].soft_labels is soft and seen[-1].loss_type == "sigmoid"
        written = [json.loads(x) for x in pathlib.Path(seen[-1].data.path).read_text().splitlines()]
        assert [r["p_chosen"] for r in written] == [0.75] * 3
    assert cp.FeedbackConfig().soft_labels is False and cp.CAIConfig(
        feedback=cp.FeedbackConfig(soft_labels=True)).feedback.soft_labels


def test_chat_logprobs_score_the_reply_after_the_prompt(long_base):
    from lmforge.align.stages import chat_model
    from lmforge.eval.scoring import Scorer, chat_logprobs, chat_requests
    from lmforge.train.mesh import MeshConfig
    sampler, template = chat_model(MeshConfig(), long_base)
    conv = [{"role": "user", "content": "Which is better?"}]
    requests = chat_requests(template, [conv, conv], ["(A)", "(B)"])
    for (ctx, cont), reply in zip(requests, ["(A)", "(B)"]):
        assert ctx == template.prompt(conv).tolist()
        ids, _ = template.encode(conv + [{"role": "assistant", "content": reply}])
        assert ctx + cont == ids.tolist()
    scorer = Scorer.from_sampler(sampler)
    got = chat_logprobs(scorer, template, [conv, conv], ["(A)", "(B)"])
    assert got == pytest.approx([s.logprob for s in scorer.score(requests)])
    assert all(x < 0 for x in got) and got[0] != got[1]
    with pytest.raises(ValueError, match="conversation 0 and its reply take .* tokens; the model reads 256"):
        chat_logprobs(scorer, template, [[{"role": "user", "content": "word " * 400}]], ["(A)"])
    with pytest.raises(ValueError, match="2 conversations but 1 replies"):
        chat_requests(template, [conv, conv], ["(A)"])


def test_replier_draws_fresh_randomness_each_call_and_repeats_by_seed(long_base):
    from lmforge.align.stages import chat_model
    from lmforge.infer import SamplingConfig, replier
    from lmforge.train.mesh import MeshConfig
    sampler, template = chat_model(MeshConfig(), long_base)
    sampling = SamplingConfig(max_new_tokens=12, temperature=1.0)
    convs = [[{"role": "user", "content": f"Tell me about item {i}."}] for i in range(4)]
    reply = replier(sampler, template, sampling, seed=5)
    first, second = reply(convs), reply(convs)
    assert first != second                            # the same key twice would give the same replies
    again = replier(sampler, template, sampling, seed=5)
    assert [again(convs), again(convs)] == [first, second]
    with pytest.raises(ValueError, match="sampling.n=2"):
        replier(sampler, template, SamplingConfig(n=2))


@pytest.mark.slow   # three SFT stages, a DPO stage, several sampler compiles; -m slow
def test_smoke_experiment_end_to_end_and_resume(long_base, tmp_path, capsys):
    from lmforge.cli.experiment import experiment_config, load_experiment
    from lmforge.cli.launch import launch
    module, variant = load_experiment(f"{EXPERIMENT}:smoke")
    cfg = dataclasses.replace(experiment_config(module, variant), init_from=str(long_base))
    workdir = tmp_path / "run"
    out = launch(cfg, workdir)
    kb = knowledge.KnowledgeBase.generate(cfg.world.n_entities, seed=cfg.world.seed)
    train, held = cp.questions(kb, cfg.world)
    red_team = [it for it in train if it["private"] and it["group"] == "red_team"]
    records = [json.loads(x) for x in (workdir / "critiques.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in records] == [it["messages"][:1] for it in red_team]
    # SL-CAI trains on each red-team prompt answered by its final revision
    sl = [json.loads(x)["messages"] for x in (workdir / "sl_data" / "train.jsonl").read_text().splitlines()]
    assert sl[:len(records)] == cai.revision_conversations(records)
    feedback = [json.loads(x) for x in (workdir / "feedback.jsonl").read_text().splitlines()]
    assert all(0.0 <= r["p_a"] <= 1.0 for r in feedback)
    report = json.loads((workdir / "report.json").read_text())
    assert list(report["stages"]) == ["helpful", "sl", "rl"]
    for stage in ("helpful", "sl", "rl"):
        assert (workdir / stage / "final.json").is_file() and (workdir / stage / "tokenizer").is_dir()
        assert len((workdir / stage / "heldout.jsonl").read_text().splitlines()) == len(held)
        for key in ("private/disclosure", "private/refusal", "public/accuracy"):
            assert 0.0 <= report["stages"][stage][key] <= 1.0 and out[f"{stage}/{key}"] == report["stages"][stage][key]
    capsys.readouterr()
    again = cp.run_cai(cfg, workdir)                  # everything finished: nothing is trained or sampled again
    said = capsys.readouterr().out
    assert all(f"{s}: finished" in said for s in ("helpful", "sl", "rl"))
    assert again == pytest.approx(out, nan_ok=True)
