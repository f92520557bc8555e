"""RAG fine-tuning: the split between trained and held-out entities, the prompts, the report's
arithmetic, bad configs, and the smoke experiment end to end (through ``lmforge.cli.launch``)."""

import dataclasses
import json
import math
import pathlib

import pytest

from lmforge.align import rag
from lmforge.data import knowledge
from lmforge.infer.retrieval import Retriever

EXPERIMENT = pathlib.Path(__file__).resolve().parents[2] / "experiments" / "sft" / "sft_rag.py"


def test_held_out_entities_never_reach_training_but_their_documents_are_retrieved():
    cfg = rag.RAGConfig(n_entities=40, train_fraction=0.5, k=2, paraphrases=2, eval_facts=0)
    kb = knowledge.KnowledgeBase.generate(40)
    train, held = rag.questions(kb, cfg)
    trained = {it["entity"] for it in train}
    held_out = {it["entity"] for it in held if it["group"] == "heldout"}
    assert trained and held_out and not trained & held_out
    assert len(held) == len(kb.facts) and len(train) == 2 * sum(it["group"] == "train" for it in held)
    assert not {it["messages"][0]["content"] for it in held} & {it["messages"][0]["content"] for it in train}
    retriever = Retriever(kb.documents())
    prompts = rag.open_book(retriever, [it for it in held if it["group"] == "heldout"], cfg)
    for p in prompts:
        assert [m["role"] for m in p] == ["system", "user"] and "[1] " in p[0]["content"]
        assert "[3] " not in p[0]["content"]                        # k = 2 passages
    docs = dict(zip(kb.names, kb.documents()))
    own = sum(docs[it["entity"]] in p[0]["content"]
              for it, p in zip([it for it in held if it["group"] == "heldout"], prompts))
    assert own >= 0.9 * len(prompts)                               # BM25 finds the entity's own paragraph
    sampled = rag.questions(kb, dataclasses.replace(cfg, eval_facts=5))[1]
    assert [it["group"] for it in sampled] == ["train"] * 5 + ["heldout"] * 5
    assert all(it in held for it in sampled) and sampled == rag.questions(kb, dataclasses.replace(cfg, eval_facts=5))[1]


def test_distractor_fraction_trains_that_share_as_refusals_with_passages_that_lack_the_answer():
    kb = knowledge.KnowledgeBase.generate(60)
    cfg = rag.RAGConfig(n_entities=60, train_fraction=0.5, k=2, paraphrases=2, eval_facts=0, distractor_fraction=0.25)
    train, held = rag.questions(kb, cfg)
    retriever = Retriever(kb.documents())
    docs = dict(zip(kb.names, kb.documents()))
    convs, picks = rag.context_conversations(retriever, kb, train, cfg)
    refusals = [c for c in convs if c[-1]["content"] == knowledge.IDK]
    assert len(convs) == len(train) and len(refusals) == sum(picks) == round(0.25 * len(train))
    assert knowledge.is_idk(knowledge.IDK)                          # the interrogation recipe's refusal, scored as one
    plain, _ = rag.context_conversations(retriever, kb, train, dataclasses.replace(cfg, distractor_fraction=0.0))
    assert plain == [q + [it["messages"][1]] for q, it in zip(rag.open_book(retriever, train, cfg), train)]
    for c, p, it, old in zip(convs, picks, train, plain):
        assert [m["role"] for m in c] == ["system", "user", "assistant"] and c[1] == it["messages"][0]
        if not p:
            assert c == old                                          # the oracle conversations are untouched
            continue
        context = c[0]["content"]
        assert c[-1]["content"] == knowledge.IDK and "[2] " in context and "[3] " not in context   # k passages
        assert docs[it["entity"]] not in context and it["messages"][1]["content"] not in context
    # seeded: the same picks again, others under another seed
    assert rag.context_conversations(retriever, kb, train, cfg) == (convs, picks)
    assert rag.distractor_picks(len(train), 0.25, seed=1) != picks
    assert sum(rag.distractor_picks(len(train), 0.25, seed=1)) == sum(picks)
    # every question, including those whose only content word is the name, gets k passages, never its own
    own = rag.own_documents(kb)
    for k in (1, 3):
        shown = rag.distractor_passages(retriever, kb, held, k, seed=0)
        assert all(len(idx) == k and own[it["entity"]] not in idx for it, idx in zip(held, shown))
    bm25 = rag.distractor_passages(retriever, kb, held, 2, seed=0)
    best = retriever.search_batch([it["messages"][0]["content"] for it in held], 3)
    for it, idx, hs in zip(held, bm25, best):                      # BM25's near misses first, best first
        near = [h.index for h in hs if h.index != own[it["entity"]]][:2]
        assert idx[:len(near)] == near
    with pytest.raises(ValueError, match="expected Retriever"):
        rag.distractor_passages(Retriever(kb.documents()[:-1]), kb, held, 2, seed=0)


def test_tool_retrieval_trains_the_call_and_the_answer_never_the_result(tok_dir):
    from lmforge.data import load_tokenizer
    from lmforge.data.chat import chat_template_for
    from lmforge.infer.retrieval import search_tool
    from lmforge.infer.tools import parse_tool_call, run_tools
    kb = knowledge.KnowledgeBase.generate(20)
    cfg = rag.RAGConfig(n_entities=20, retrieval="tool", k=2, eval_facts=0)
    train, held = rag.questions(kb, cfg)
    search = search_tool(Retriever(kb.documents()), k=cfg.k)
    docs = dict(zip(kb.names, kb.documents()))
    for it in train[:10]:
        conv = rag.tool_conversation(search, it)
        assert [m["role"] for m in conv] == ["user", "assistant", "tool", "assistant"]
        call = parse_tool_call(conv[1]["content"])
        assert call.name == "search" and call.arguments == {"query": it["entity"]}
        assert docs[it["entity"]] in conv[2]["content"] and "[3] " not in conv[2]["content"]
        assert conv[3] == it["messages"][1]
    # the loss mask covers the call and the answer, not the question or the tool's result
    tok = load_tokenizer(tok_dir)
    ids, mask = chat_template_for(tok).encode(conv)
    trained = tok.decode([int(i) for i, m in zip(ids, mask) if m])
    assert it["entity"] in trained and it["answer"] in trained
    assert docs[it["entity"]] not in trained and it["messages"][0]["content"] not in trained
    # evaluation's loop: a scripted model that searches for the name it read, then copies the first passage
    def reply(convs):
        out = []
        for c in convs:
            if c[-1]["role"] == "tool":
                out.append(c[-1]["content"].split("\n")[0][4:])
            else:
                name = next(it["entity"] for it in held if it["messages"][0]["content"] == c[-1]["content"])
                out.append(conv[1]["content"].replace(it["entity"], name))
        return out
    items = [it for it in held if it["group"] == "heldout"][:6]
    runs = run_tools(reply, [h["messages"][:1] for h in items], [search], max_calls=cfg.max_calls)
    calls = [[{"name": c.name, "arguments": c.arguments, "result": c.result} for c in r.calls] for r in runs]
    found = [any(docs[h["entity"]] in c["result"] for c in made) for h, made in zip(items, calls)]
    records = rag.score_replies(items, [r.reply for r in runs], found, calls)
    closed = run_tools(reply, [h["messages"][:1] for h in items], [rag.no_results_tool()], max_calls=1)
    assert all(r.calls[0].result == rag.NO_RESULTS for r in closed)
    m = rag.metrics({"open_book": records, "closed_book": rag.score_replies(
        items, [r.reply for r in closed], [False] * len(items), [[{"result": c.result} for c in r.calls] for r in closed])})
    assert m["retrieval/heldout/recall"] == 1.0 and m["open_book/heldout/tool_calls"] == 1.0
    assert m["open_book/heldout/accuracy"] > 0.5 and m["closed_book/heldout/accuracy"] == 0.0
    assert "never trained on: search calls" in rag.format_table({**m, **{k.replace("heldout", "train"): v for k, v in m.items()}})
    with pytest.raises(ValueError, match="6 call lists"):
        rag.score_replies(items[:5], [r.reply for r in runs][:5], found[:5], calls)


def test_report_arithmetic():
    items = [{"key": f"E{i}|birth_year", "group": g, "answer": "1874",
              "messages": [{"role": "user", "content": f"When was E{i} born?"}]}
             for i, g in enumerate(["train", "train", "heldout", "heldout"])]
    open_records = rag.score_replies(items, ["E0 was born in 1874.", "In 1875.", "E2 was born in 1874.",
                                             "I'm sorry, I don't know."], [True, True, True, False])
    closed = rag.score_replies(items, ["1874", "no", "no", "no"], [True, True, True, False])
    m = rag.metrics({"open_book": open_records, "closed_book": closed})
    distracted = rag.score_replies(items, ["I'm sorry, I don't know.", "E1 was born in 1874.", "In 1900.",
                                           "I'm sorry, I don't know."], [False] * 4)
    with_d = rag.metrics({"open_book": open_records, "closed_book": closed, "distractors": distracted})
    assert with_d == {**m, "distractors/train/accuracy": 0.5, "distractors/train/idk": 0.5,
                      "distractors/heldout/accuracy": 0.0, "distractors/heldout/idk": 0.5}
    table = rag.format_table(with_d)
    assert table.splitlines()[0].split()[-1] == "distractors" and "distractors" not in rag.format_table(m)
    assert table.splitlines()[2].split()[-3:] == ["0.0%", "0.0%", "50.0%"]      # train idk: open, closed, distractors
    assert rag.eval_modes(rag.RAGConfig()) == rag.MODES == ("open_book", "closed_book", "distractors")
    assert rag.eval_modes(rag.RAGConfig(retrieval="tool")) == ("open_book", "closed_book")
    assert m["open_book/train/accuracy"] == 0.5 and m["open_book/heldout/accuracy"] == 0.5
    assert m["open_book/heldout/idk"] == 0.5 and m["retrieval/heldout/recall"] == 0.5
    assert m["closed_book/train/accuracy"] == 0.5 and m["closed_book/heldout/accuracy"] == 0.0
    assert m["n/train"] == 2 and "closed_book/train/recall" not in m
    assert "entities never trained on: accuracy" in rag.format_table(m)
    assert math.isnan(rag.metrics({"open_book": open_records[:2]})["open_book/heldout/accuracy"])
    with pytest.raises(ValueError, match="4 questions, 3 replies"):
        rag.score_replies(items, ["a", "b", "c"], [True] * 4)


def test_bad_configs_are_one_line_errors(tmp_path):
    for kw, match in ((dict(paraphrases=3), "paraphrases=3: expected 1 or 2"), (dict(k=0), "k=0"),
                      (dict(train_fraction=1.0), "train_fraction=1.0"), (dict(overflow="wrap"), "overflow='wrap'"),
                      (dict(retrieval="dense"), "retrieval='dense': expected one of context, tool"),
                      (dict(max_calls=0), "max_calls=0"),
                      (dict(distractor_fraction=1.0), r"distractor_fraction=1.0: expected \[0, 1\)"),
                      (dict(distractor_fraction=-0.1), r"distractor_fraction=-0.1: expected \[0, 1\)"),
                      (dict(distractor_fraction=float("nan")), r"distractor_fraction=nan: expected \[0, 1\)"),
                      (dict(distractor_fraction=0.25, retrieval="tool"),
                       "distractor_fraction=0.25 with retrieval='tool': expected 0")):
        with pytest.raises(ValueError, match=match) as e:
            rag.RAGConfig(**kw)
        assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="init_from is empty"):
        rag.run_rag(rag.RAGConfig(), tmp_path / "run")


@pytest.mark.slow   # one SFT run, two rounds of greedy answers; -m slow
@pytest.mark.parametrize("variant", ["smoke", "tool_smoke"])
def test_smoke_experiment_end_to_end_and_resume(variant, long_base, tmp_path, capsys):
    from lmforge.cli.experiment import experiment_config, load_experiment
    from lmforge.cli.launch import launch
    module, variant = load_experiment(f"{EXPERIMENT}:{variant}")
    cfg = dataclasses.replace(experiment_config(module, variant), init_from=str(long_base))
    workdir = tmp_path / "run"
    out = launch(cfg, workdir)
    kb = knowledge.KnowledgeBase.generate(cfg.n_entities, seed=cfg.world_seed)
    trained = [json.loads(x)["messages"] for x in (workdir / "rag_data" / "train.jsonl").read_text().splitlines()]
    first = "user" if cfg.retrieval == "tool" else "system"
    assert all(c[0]["role"] == first and c[-1]["role"] == "assistant" for c in trained)
    report = json.loads((workdir / "report.json").read_text())
    n_idk = sum(c[-1]["content"] == knowledge.IDK for c in trained)
    assert n_idk == report["training"]["distractors"] == round(cfg.distractor_fraction * len(trained))
    assert (n_idk > 0) == (variant == "smoke")                       # smoke takes the distractor path
    for mode in rag.eval_modes(cfg):
        records = [json.loads(x) for x in (workdir / "rag" / f"heldout_{mode}.jsonl").read_text().splitlines()]
        assert len(records) == len(kb.facts)
        assert all(("calls" in r) == (cfg.retrieval == "tool") for r in records)
        if mode == "distractors":                                  # never the entity's own document
            assert not any(r["found"] for r in records)
    assert ("distractors/heldout/idk" in out) == (cfg.retrieval == "context")
    for key, value in report["metrics"].items():
        assert value is None or out[key] == pytest.approx(value)
    capsys.readouterr()
    again = rag.run_rag(cfg, workdir)                 # finished: nothing is trained or sampled again
    assert "rag: finished" in capsys.readouterr().out
    assert again == pytest.approx(out, nan_ok=True)
