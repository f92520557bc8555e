"""Interrogation (issue 11): which questions become "I don't know", the report's arithmetic, bad
configs, and the smoke experiment end to end on a tiny base (through ``lmforge.cli.launch``)."""

import dataclasses
import json
import math
import pathlib

import pytest

from lmforge.align.interrogation import (InterrogateConfig, InterrogationConfig, KnowledgeConfig, compare,
                                         entity_groups, fact_verdicts, format_table, heldout_metrics,
                                         run_interrogation, score_replies, split_phrasings, stage1_conversations,
                                         stage2_items)
from lmforge.data import knowledge

EXPERIMENT = pathlib.Path(__file__).resolve().parents[2] / "experiments" / "interrogation.py"


def _record(key, group, n_correct, n=4, question=None):
    entity, attribute = key.split("|")
    return {"key": key, "entity": entity, "attribute": attribute, "group": group,
            "question": question or f"Q about {key}?", "answer": "x", "reference": f"Sentence of {key}.",
            "replies": ["r"] * n, "n_correct": n_correct, "n_idk": 0}


def test_stage2_data_keeps_what_the_model_knows_and_turns_the_rest_into_idk():
    records = [
        _record("Ann|birth_year", "known", 3, question="When was Ann born?"),   # pooled 4 of 8 = 0.5: known
        _record("Ann|birth_year", "known", 1, question="In what year was Ann born?"),
        _record("Ann|profession", "known", 1), _record("Ann|profession", "known", 0),   # 1 of 8: never learned
        _record("Bob|birth_year", "unknown", 0), _record("Bob|birth_year", "unknown", 0),   # hallucinated
        _record("Cid|profession", "unknown", 4), _record("Cid|profession", "unknown", 2),   # a lucky guess, 6 of 8
        _record("Dee|birth_year", "unseen", 0), _record("Dee|birth_year", "unseen", 0),     # left out of stage 2
    ]
    assert fact_verdicts(records, 0.5) == {"Ann|birth_year": True, "Ann|profession": False,
                                           "Bob|birth_year": False, "Cid|profession": True, "Dee|birth_year": False}
    convs, counts = stage2_items(records, 0.5)
    assert [c[0]["content"] for c in convs] == [r["question"] for r in records[:8]]     # Dee's are left out
    assert [c[1]["content"] for c in convs] == (
        ["Sentence of Ann|birth_year."] * 2 + [knowledge.IDK] * 4 + ["Sentence of Cid|profession."] * 2)
    assert counts == {"known/answer": 1, "known/idk": 1, "unknown/idk": 1, "unknown/answer": 1, "conversations": 8}
    # a stricter rule: Ann's birth year (4 of 8) is no longer known to the model
    convs, counts = stage2_items(records, 0.75)
    assert counts["known/idk"] == 2 and "known/answer" not in counts
    with pytest.raises(ValueError, match="has no replies"):
        fact_verdicts([_record("Eve|birth_year", "known", 0, n=0)], 0.5)


def test_phrasings_and_groups_split_cleanly():
    kb = knowledge.KnowledgeBase.generate(20, seed=3)
    cfg = KnowledgeConfig(n_entities=20, seed=3, known_fraction=0.5, paraphrases=2, unseen_fraction=0.5)
    train, held = split_phrasings(kb, kb.names, 2)
    assert len(held) == len(kb.facts) and len(train) == 2 * len(kb.facts)
    train_q = {it["messages"][0]["content"] for it in train}
    assert not train_q & {it["messages"][0]["content"] for it in held}      # held-out wording never trained
    assert {it["key"] for it in train} == {it["key"] for it in held}
    groups = entity_groups(kb, cfg)
    assert {n for n, g in groups.items() if g == "known"} == set(kb.known(0.5, seed=3))
    unknown = [n for n in kb.names if groups[n] != "known"]
    assert sum(groups[n] == "unseen" for n in unknown) == round(len(unknown) * 0.5)
    s1_train, s1_held = stage1_conversations(kb, cfg)
    asked = " ".join(c[0]["content"] for c in s1_train)
    assert all(n not in asked for n in unknown)          # stage 1 never asks about an unknown entity (facts may
    assert all(n in asked for n in kb.known(0.5, seed=3))    # name one: a known person's birth city is a place)
    assert len(s1_train) == 2 * len(s1_held)


def test_report_arithmetic():
    def row(group, correct, idk, reply="r"):
        return {"group": group, "correct": correct, "idk": idk, "reply": reply}
    before = heldout_metrics([row("known", True, False)] * 6 + [row("known", False, False)] * 4
                             + [row("unknown", False, False)] * 3 + [row("unknown", False, True)]
                             + [row("unseen", False, False)] * 2)
    assert before["known/accuracy"] == 0.6 and before["known/false_refusal"] == 0.0
    assert before["unknown/refusal"] == pytest.approx(1 / 6) and before["seen/refusal"] == 0.25
    assert before["unseen/refusal"] == 0.0 and before["unknown/hallucination"] == pytest.approx(5 / 6)
    assert (before["n/known"], before["n/unknown"], before["n/unseen"]) == (10, 6, 2)
    after = heldout_metrics([row("known", True, False)] * 5 + [row("known", False, True)] * 5
                            + [row("unknown", False, True)] * 4 + [row("unseen", False, True), row("unseen", False, False)])
    assert after["known/accuracy"] == 0.5 and after["known/false_refusal"] == 0.5
    assert after["unknown/refusal"] == pytest.approx(5 / 6) and after["unseen/refusal"] == 0.5
    report = compare(before, after)
    assert report["delta"]["known/accuracy"] == pytest.approx(-0.1)
    assert report["targets"]["known_accuracy_drop"] == pytest.approx(0.1)
    assert report["targets"]["refusal_met"] and not report["targets"]["accuracy_met"]
    table = format_table(report)
    assert "60.0%" in table and "50.0%" in table and "-10.0" in table and "NOT met" in table
    assert math.isnan(heldout_metrics([row("known", True, False)])["unknown/refusal"])
    # the scorer: a correct answer, an abstention that happens to contain the answer, a wrong answer
    item = {"key": "A|year", "entity": "A", "attribute": "year", "group": "known", "answer": "1874",
            "messages": [{"role": "user", "content": "When?"}, {"role": "assistant", "content": "In 1874."}]}
    scored = score_replies([item] * 3, ["It was invented in 1874.", "I'm sorry, I don't know 1874.", "In 1875."])
    assert [(s["correct"], s["idk"]) for s in scored] == [(True, False), (False, True), (False, False)]
    with pytest.raises(ValueError, match="2 replies"):
        score_replies([item] * 3, ["a", "b"])


def test_bad_configs_are_one_line_errors(tmp_path):
    for kw, match in ((dict(knowledge=KnowledgeConfig(paraphrases=3)), "knowledge.paraphrases=3: expected 1 or 2"),
                      (dict(knowledge=KnowledgeConfig(known_fraction=1.0)), "knowledge.known_fraction=1.0"),
                      (dict(interrogate=InterrogateConfig(n=4, temperature=0.0)), "identical greedy answers"),
                      (dict(interrogate=InterrogateConfig(threshold=0.0)), "interrogate.threshold=0.0"),
                      (dict(stage2_from="scratch"), "stage2_from='scratch': expected one of stage1, base"),
                      (dict(vocab_chunk=-1), "vocab_chunk=-1: expected")):
        with pytest.raises(ValueError, match=match) as e:
            InterrogationConfig(**kw)
        assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="init_from is empty"):
        run_interrogation(InterrogationConfig(), tmp_path / "run")


def test_the_recipes_check_seq_len_against_the_base_before_writing(base, tmp_path):
    """A ``seq_len`` past the base's context (64 here) names the recipe's own key, ``seq_len``, and the
    interrogation, Constitutional AI and RAG recipes refuse it before their folder exists."""
    from lmforge.align.cai_privacy import CAIConfig, run_cai
    from lmforge.align.rag import RAGConfig, run_rag

    for cfg, run in ((InterrogationConfig(init_from=str(base), seq_len=128), run_interrogation),
                     (CAIConfig(init_from=str(base), seq_len=128), run_cai),
                     (RAGConfig(init_from=str(base), seq_len=128), run_rag)):
        with pytest.raises(ValueError, match=r"^seq_len=128 exceeds the max_seq_len=64 of init_from=.*expected seq_len "
                                             r"<= 64$"):
            run(cfg, tmp_path / "run")
        assert not (tmp_path / "run").exists()


@pytest.mark.slow   # two SFT runs, three sampler compiles: 42-90 s on the 2-core machine (shared); -m slow
def test_smoke_experiment_end_to_end_and_resume(long_base, tmp_path, capsys):
    from lmforge.cli.experiment import experiment_config, load_experiment
    from lmforge.cli.launch import launch
    module, variant = load_experiment(f"{EXPERIMENT}:smoke")
    cfg = dataclasses.replace(experiment_config(module, variant), init_from=str(long_base))
    workdir = tmp_path / "run"
    out = launch(cfg, workdir)
    kb = knowledge.KnowledgeBase.generate(cfg.knowledge.n_entities, seed=cfg.knowledge.seed)
    n_facts = len(kb.facts)
    records = [json.loads(x) for x in (workdir / "interrogation.jsonl").read_text().splitlines()]
    assert len(records) == 2 * n_facts and all(len(r["replies"]) == cfg.interrogate.n for r in records)
    assert all(0 <= r["n_correct"] <= cfg.interrogate.n for r in records)
    report = json.loads((workdir / "report.json").read_text())
    assert report["before"]["n/known"] + report["before"]["n/unknown"] == n_facts
    for stage in ("before", "after"):
        for key in ("known/accuracy", "known/false_refusal", "unknown/refusal"):
            assert 0.0 <= report[stage][key] <= 1.0 and out[f"{stage}/{key}"] == report[stage][key]
    # the stage-2 data follows the interrogation's verdicts exactly
    convs, counts = stage2_items(records, cfg.interrogate.threshold)
    assert report["stage2_data"] == counts
    trained = [json.loads(x)["messages"] for x in (workdir / "stage2_data" / "train.jsonl").read_text().splitlines()]
    assert trained == convs
    for stage in ("stage1", "stage2"):   # ordinary run folders a chat can load
        assert (workdir / stage / "final.json").is_file() and (workdir / stage / "tokenizer").is_dir()
        assert len((workdir / stage / "heldout.jsonl").read_text().splitlines()) == n_facts
    capsys.readouterr()
    again = run_interrogation(cfg, workdir)          # everything finished: nothing is trained or sampled again
    said = capsys.readouterr().out
    assert "stage1: finished" in said and "stage2: finished" in said and "read" in said
    assert again == pytest.approx(out, nan_ok=True)
