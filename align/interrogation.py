"""Hallucination mitigation by model interrogation: teach some facts, ask the model about everything,
turn what it gets wrong into "I don't know", fine-tune again, measure.

The recipe of Llama 3's factuality data ("knowledge probing": Dubey et al. 2024, section 4.3.6) and of
Karpathy's "Deep Dive into LLMs like ChatGPT" (2025): the model, not the data set, decides which
questions deserve an abstention, because only the model knows what it knows.

Stages, each a normal run folder under WORKDIR (``lmforge chat WORKDIR/stage2`` talks to the result):

1. ``stage1/``: SFT (``lmforge.align.sft.run_sft``) from ``init_from`` on question-answer
   conversations about the KNOWN entities of a ``lmforge.data.knowledge.KnowledgeBase``
   (``knowledge.paraphrases`` phrasings per fact; optionally each entity's document as the answer
   to "Tell me about E."). Unknown entities never appear in its data.
2. ``interrogation.jsonl``: the stage-1 model answers every training phrasing of every fact of ALL
   entities ``interrogate.n`` times at ``interrogate.temperature``; each reply is judged against the
   reference (``knowledge.judge``). One record per question: question, answer, replies, n_correct,
   n_idk. A fact counts as known to the model when at least ``interrogate.threshold`` of its
   pooled samples (n per phrasing) are correct. ``interrogation_summary.json`` counts them.
3. ``stage2/``: SFT on the same questions with the model's own verdicts as targets: a fact the model
   knows keeps its reference sentence, a fact it does not (mostly unknown entities, plus known facts
   it never learned) gets ``knowledge.IDK``. Stage 2 starts from stage 1 (``stage2_from="stage1"``,
   the default): the verdicts describe stage 1's knowledge, so keeping its weights keeps the facts
   that were certified as known; from the base (``"base"``) the model must relearn every fact from
   the stage-2 data alone, and a fact whose verdict was "known" may not be relearned in time.
   ``unseen_fraction`` of the unknown entities are left out of the stage-2 data altogether, to
   measure whether abstention reaches entities the model was never told to abstain on.
4. ``report.json``: both stages answer (greedily) a phrasing of every fact that no stage trained on
   (``kb.qa`` has three phrasings per fact; training uses the first ``knowledge.paraphrases`` <= 2 and
   the last is held out). Per stage: accuracy on known facts (judged correct and not an abstention),
   refusal rate (``knowledge.is_idk``) on unknown entities (all, seen in stage 2, unseen), and
   false-refusal rate on known facts; the deltas; and the targets of issue 11 (unknown refusal >= 0.8
   after, known accuracy drop <= 5 points). Replies go to ``stageN/heldout.jsonl``.

Re-running with the same WORKDIR skips what is finished: a stage with ``final.json`` is not trained
again (an unfinished one resumes from its checkpoint), the interrogation and a stage's held-out
answers are read back from their files. Delete a file to redo that step. (Through ``lmforge run``, a
changed config in the same WORKDIR is refused once a stage holds checkpoints; before that, the CLI
moves the old files into ``replaced-<time>/`` and starts over.)

Choices: the verdict is per fact (samples pooled over its phrasings), so one fact never gets an
answer under one phrasing and "I don't know" under another. The stage-2 data follows the verdicts
for every entity, known or unknown: an unknown entity's fact answered correctly by chance in at
least ``threshold`` of its samples keeps the (lucky) answer, as the recipe would on real data; the
summary counts how often that happened.
"""

from __future__ import annotations

import dataclasses
import pathlib
import random

import numpy as np

from lmforge.align.stages import (RecipeConfig, StageConfig, chat_model, check_recipe_start, read_jsonl, sft_stage,
                                  write_json, write_jsonl)
from lmforge.data import knowledge
from lmforge.train.optim import OptimConfig

STAGE2_FROM = ("stage1", "base")
TARGET_REFUSAL = 0.8      # issue 11: refusals on unknown entities after stage 2
TARGET_MAX_DROP = 0.05    # issue 11: known-fact accuracy may drop by at most 5 points
DOCUMENT_PROMPT = "Tell me about {e}."


@dataclasses.dataclass(frozen=True)
class KnowledgeConfig:
    """The invented entities (``lmforge.data.knowledge.KnowledgeBase.generate``) and what stage 1 teaches."""
    n_entities: int = 48
    seed: int = 0
    known_fraction: float = 0.5      # share of entities taught in stage 1 (``kb.known``)
    paraphrases: int = 2             # training phrasings per fact (1 or 2); the third is held out for evaluation
    documents: bool = False          # stage 1 also learns "Tell me about E." -> E's document (known entities)
    unseen_fraction: float = 0.25    # share of unknown entities left out of the stage-2 data (abstention transfer)


@dataclasses.dataclass(frozen=True)
class InterrogateConfig:
    """How the stage-1 model is questioned and what makes a fact unknown to it."""
    n: int = 8                       # sampled answers per question
    temperature: float = 0.7
    top_p: float = 1.0
    threshold: float = 0.5           # a fact is known to the model when >= this share of its samples are correct
    max_new_tokens: int = 32


@dataclasses.dataclass(frozen=True)
class InterrogationConfig(RecipeConfig):
    knowledge: KnowledgeConfig = KnowledgeConfig()
    interrogate: InterrogateConfig = InterrogateConfig()
    stage1: StageConfig = StageConfig()
    stage2: StageConfig = StageConfig(steps=150, optim=OptimConfig(lr=1e-3, min_lr=1e-4, warmup_steps=10,
                                                                   weight_decay=0.0))
    stage2_from: str = "stage1"      # STAGE2_FROM: fine-tune stage 1 again, or start over from init_from
    seq_len: int = 64                # SFT rows (a question and its answer are ~40 tokens; short ones are packed)

    def __post_init__(self):
        super().__post_init__()
        k, q = self.knowledge, self.interrogate
        problems = [msg for bad, msg in (
            (k.n_entities < 4, f"knowledge.n_entities={k.n_entities}: expected >= 4 (known and unknown entities)"),
            (not 0.0 < k.known_fraction < 1.0, f"knowledge.known_fraction={k.known_fraction}: expected (0, 1)"),
            (k.paraphrases not in (1, 2), f"knowledge.paraphrases={k.paraphrases}: expected 1 or 2 (of the 3 "
                                          f"phrasings per fact, one is held out for evaluation)"),
            (not 0.0 <= k.unseen_fraction < 1.0, f"knowledge.unseen_fraction={k.unseen_fraction}: expected [0, 1)"),
            (q.n < 1, f"interrogate.n={q.n}: expected >= 1 sampled answers per question"),
            (not q.temperature >= 0, f"interrogate.temperature={q.temperature}: expected >= 0"),
            (q.n > 1 and q.temperature == 0, f"interrogate.n={q.n} with interrogate.temperature=0 gives {q.n} "
                                             f"identical greedy answers; expected temperature > 0 or n=1"),
            (not 0 < q.top_p <= 1, f"interrogate.top_p={q.top_p}: expected (0, 1]"),
            (not 0.0 < q.threshold <= 1.0, f"interrogate.threshold={q.threshold}: expected (0, 1], the share of "
                                           f"correct samples that makes a fact known to the model"),
            (q.max_new_tokens < 1 or self.eval_max_new_tokens < 1,
             f"interrogate.max_new_tokens={q.max_new_tokens}, eval_max_new_tokens={self.eval_max_new_tokens}: "
             f"expected >= 1"),
            (self.stage2_from not in STAGE2_FROM, f"stage2_from={self.stage2_from!r}: expected one of "
                                                  f"{', '.join(STAGE2_FROM)}"),
            (self.seq_len < 16, f"seq_len={self.seq_len}: expected >= 16 tokens (one question and its answer)"),
        ) if bad]
        if problems:
            raise ValueError("; ".join(problems))

    def check_runnable(self, workdir: pathlib.Path | None = None) -> None:
        """What the run needs beyond a valid config, checked before anything is written (``lmforge run``,
        every point of ``lmforge sweep``, :func:`run_interrogation`): ``init_from`` names a weights source
        (each stage starts from it, so a resumed run needs it too: ``workdir`` is not consulted).
        Raises ValueError."""
        check_recipe_start(self.init_from, self.seq_len, "interrogation")


# ------------------------------------------------------------------------------------- the data


def split_phrasings(kb: knowledge.KnowledgeBase, entities, paraphrases: int) -> tuple[list[dict], list[dict]]:
    """(training questions, held-out questions) about ``entities``: ``kb.qa`` items with reference
    answers (``{"task", "key", "entity", "attribute", "answer", "messages"}``). Each fact gets its
    first ``paraphrases`` phrasings for training and its third phrasing held out."""
    train, held = [], []
    by_key: dict[str, list[dict]] = {}
    for it in kb.qa(entities, paraphrases=3):
        by_key.setdefault(it["key"], []).append(it)
    for items in by_key.values():
        train += items[:paraphrases]
        held.append(items[2])
    return train, held


def entity_groups(kb: knowledge.KnowledgeBase, cfg: KnowledgeConfig) -> dict[str, str]:
    """Each entity's group: ``"known"`` (taught in stage 1), ``"unknown"`` (never taught, abstention
    trained in stage 2 where the model gets it wrong) or ``"unseen"`` (unknown, left out of stage 2)."""
    known = set(kb.known(cfg.known_fraction, seed=cfg.seed))
    unknown = [n for n in kb.names if n not in known]
    n_unseen = int(round(len(unknown) * cfg.unseen_fraction))
    unseen = set(random.Random(f"lmforge.interrogation:{cfg.seed}").sample(unknown, n_unseen))
    return {n: "known" if n in known else "unseen" if n in unseen else "unknown" for n in kb.names}


def stage1_conversations(kb: knowledge.KnowledgeBase, cfg: KnowledgeConfig) -> tuple[list[list[dict]], list[list[dict]]]:
    """(train, held-out) conversations of stage 1: the known entities' facts (training phrasings;
    their documents when ``cfg.documents``) and the held-out phrasing of the same facts."""
    known = [n for n, g in entity_groups(kb, cfg).items() if g == "known"]
    if not known:
        raise ValueError(f"knowledge.known_fraction={cfg.known_fraction} leaves no known entity among "
                         f"{len(kb.entities)}; expected a larger fraction or more entities")
    train, held = split_phrasings(kb, known, cfg.paraphrases)
    convs = [it["messages"] for it in train]
    if cfg.documents:
        convs += [[{"role": "user", "content": DOCUMENT_PROMPT.format(e=name)},
                   {"role": "assistant", "content": doc}] for name, doc in zip(known, kb.documents(known))]
    return convs, [it["messages"] for it in held]


def fact_verdicts(records, threshold: float) -> dict[str, bool]:
    """Whether the model knows each fact (``key``): its correct samples, pooled over the fact's
    interrogation records (one per phrasing, ``n_correct`` of ``len(replies)``), reach ``threshold``
    of all its samples. Raises ValueError for a record without replies."""
    correct: dict[str, int] = {}
    total: dict[str, int] = {}
    for r in records:
        if not r["replies"]:
            raise ValueError(f"interrogation record {r['key']!r} ({r['question']!r}) has no replies; expected n >= 1")
        correct[r["key"]] = correct.get(r["key"], 0) + int(r["n_correct"])
        total[r["key"]] = total.get(r["key"], 0) + len(r["replies"])
    return {k: correct[k] >= threshold * total[k] - 1e-9 for k in total}


def stage2_items(records, threshold: float) -> tuple[list[list[dict]], dict[str, int]]:
    """The stage-2 conversations from interrogation ``records`` (``{"key", "group", "question",
    "reference", "replies", "n_correct", ...}``, one per training question): a fact the model knows
    (:func:`fact_verdicts`) keeps ``reference`` (the fact's sentence) as the reply, any other gets
    ``knowledge.IDK``. Records of ``"unseen"`` entities are left out.

    Returns (conversations, counts): counts of facts per ``"<group>/answer"`` and ``"<group>/idk"``,
    and ``"conversations"``."""
    verdicts = fact_verdicts(records, threshold)
    convs, counts, seen_keys = [], {}, set()
    for r in records:
        if r["group"] == "unseen":
            continue
        knows = verdicts[r["key"]]
        convs.append([{"role": "user", "content": r["question"]},
                      {"role": "assistant", "content": r["reference"] if knows else knowledge.IDK}])
        if r["key"] not in seen_keys:
            seen_keys.add(r["key"])
            name = f"{r['group']}/{'answer' if knows else 'idk'}"
            counts[name] = counts.get(name, 0) + 1
    counts["conversations"] = len(convs)
    return convs, counts


# ------------------------------------------------------------------------------------- scoring


def score_replies(items, replies) -> list[dict]:
    """Held-out records: each item (``{"key", "entity", "attribute", "answer", "group", "messages"}``)
    with its reply, ``correct`` (``knowledge.judge`` and not an abstention) and ``idk``
    (``knowledge.is_idk``). Raises ValueError when the counts differ."""
    if len(items) != len(replies):
        raise ValueError(f"{len(items)} held-out questions but {len(replies)} replies; expected one reply each")
    out = []
    for it, reply in zip(items, replies):
        idk = knowledge.is_idk(reply)
        out.append({"key": it["key"], "entity": it["entity"], "attribute": it["attribute"], "group": it["group"],
                    "question": it["messages"][0]["content"], "answer": it["answer"], "reply": reply,
                    "correct": bool(knowledge.judge(reply, it["answer"])) and not idk, "idk": idk})
    return out


def heldout_metrics(records) -> dict[str, float]:
    """Rates over held-out records (``group``, ``correct``, ``idk``), as fractions in [0, 1]:

    - ``known/accuracy``: correct answers on known entities' facts;
    - ``known/false_refusal``: abstentions on known entities' facts;
    - ``unknown/refusal``: abstentions on every unknown entity's facts (``"unknown"`` and ``"unseen"``),
      with ``seen/refusal`` (those in the stage-2 data) and ``unseen/refusal`` (never trained on);
    - ``unknown/hallucination``: replies to unknown entities that are not abstentions;
    - ``n/known``, ``n/unknown``, ``n/unseen``: how many facts each rate is over.
    A rate over no records is NaN."""
    def rate(rows, field):
        return float(np.mean([r[field] for r in rows])) if rows else float("nan")
    known = [r for r in records if r["group"] == "known"]
    seen = [r for r in records if r["group"] == "unknown"]
    unseen = [r for r in records if r["group"] == "unseen"]
    unknown = seen + unseen
    return {"known/accuracy": rate(known, "correct"), "known/false_refusal": rate(known, "idk"),
            "unknown/refusal": rate(unknown, "idk"), "unknown/hallucination": 1.0 - rate(unknown, "idk"),
            "seen/refusal": rate(seen, "idk"), "unseen/refusal": rate(unseen, "idk"),
            "n/known": float(len(known)), "n/unknown": float(len(unknown)), "n/unseen": float(len(unseen))}


def compare(before: dict[str, float], after: dict[str, float]) -> dict:
    """The report's comparison: both stages' metrics, ``delta`` (after - before) of every rate, and
    the issue's targets (``unknown/refusal`` after >= 0.8; ``known/accuracy`` drop <= 0.05)."""
    rates = [k for k in before if not k.startswith("n/")]
    drop = before["known/accuracy"] - after["known/accuracy"]
    return {"before": before, "after": after, "delta": {k: after[k] - before[k] for k in rates},
            "targets": {"unknown_refusal_after": TARGET_REFUSAL, "max_known_accuracy_drop": TARGET_MAX_DROP,
                        "known_accuracy_drop": drop,
                        "refusal_met": bool(after["unknown/refusal"] >= TARGET_REFUSAL),
                        "accuracy_met": bool(drop <= TARGET_MAX_DROP + 1e-9)}}


def format_table(report: dict) -> str:
    """The report as a small text table (rates in percent)."""
    rows = [("known facts: accuracy", "known/accuracy"), ("known facts: false refusals", "known/false_refusal"),
            ("unknown entities: refusals", "unknown/refusal"), ("  seen in stage-2 data", "seen/refusal"),
            ("  unseen (never trained)", "unseen/refusal")]
    lines = [f"{'held-out phrasings':32s} {'stage 1':>8s} {'stage 2':>8s} {'delta':>8s}"]
    for label, key in rows:
        b, a = report["before"][key], report["after"][key]
        lines.append(f"{label:32s} {100 * b:7.1f}% {100 * a:7.1f}% {100 * (a - b):+7.1f}")
    t = report["targets"]
    lines.append(f"targets: unknown refusals >= {100 * t['unknown_refusal_after']:.0f}%: "
                 f"{'met' if t['refusal_met'] else 'NOT met'}; known accuracy drop <= "
                 f"{100 * t['max_known_accuracy_drop']:.0f} points ({100 * t['known_accuracy_drop']:+.1f}): "
                 f"{'met' if t['accuracy_met'] else 'NOT met'}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------- runner


def run_interrogation(cfg: InterrogationConfig, workdir: pathlib.Path) -> dict[str, float]:
    """Runs the four steps of the module docstring in ``workdir``; returns ``before/...``,
    ``after/...`` (:func:`heldout_metrics` of stage 1 and stage 2), ``interrogation/...`` counts and
    the two target flags as 0/1.

    Raises ValueError for an ``init_from`` that is empty or no weights source, or a config that does not fit (see
    ``InterrogationConfig`` and ``lmforge.align.sft.run_sft``).
    """
    workdir = pathlib.Path(workdir)
    cfg.check_runnable()
    workdir.mkdir(parents=True, exist_ok=True)
    kb = knowledge.KnowledgeBase.generate(cfg.knowledge.n_entities, seed=cfg.knowledge.seed)
    groups = entity_groups(kb, cfg.knowledge)
    train, held = split_phrasings(kb, kb.names, cfg.knowledge.paraphrases)
    for it in train + held:
        it["group"] = groups[it["entity"]]

    # (a) stage 1: the known entities' facts
    s1_train, s1_held = stage1_conversations(kb, cfg.knowledge)
    stage1 = _stage(cfg, cfg.stage1, "stage1", cfg.init_from, s1_train, s1_held, workdir)

    # (b) interrogation of stage 1 on every training question of every entity
    records = _interrogate(cfg, workdir / "stage1", train, workdir)
    verdicts = fact_verdicts(records, cfg.interrogate.threshold)
    summary = _summary(records, verdicts)
    write_json(workdir / "interrogation_summary.json", summary)
    print("interrogation: " + ", ".join(f"{g}: {s['facts_known_to_model']}/{s['facts']} facts known to the model, "
                                        f"{100 * s['sample_accuracy']:.1f}% of samples correct"
                                        for g, s in summary.items()), flush=True)

    # (c) stage 2: the model's verdicts as targets
    s2_train, counts = stage2_items(records, cfg.interrogate.threshold)
    s2_held = [[it["messages"][0], {"role": "assistant", "content": it["messages"][1]["content"]
                                    if verdicts[it["key"]] else knowledge.IDK}]
               for it in held if it["group"] != "unseen"]
    start = str(workdir / "stage1") if cfg.stage2_from == "stage1" else cfg.init_from
    stage2 = _stage(cfg, cfg.stage2, "stage2", start, s2_train, s2_held, workdir)

    # (d) held-out phrasings, before and after
    before = heldout_metrics(_heldout(cfg, workdir / "stage1", held))
    after = heldout_metrics(_heldout(cfg, workdir / "stage2", held))
    report = compare(before, after)
    report.update({"interrogation": summary, "stage2_data": counts, "stage2_from": cfg.stage2_from,
                   "stage1_final": stage1, "stage2_final": stage2})
    write_json(workdir / "report.json", report)
    print(format_table(report), flush=True)
    out = {f"before/{k}": v for k, v in before.items()}
    out.update({f"after/{k}": v for k, v in after.items()})
    out.update({f"stage2_data/{k}": float(v) for k, v in counts.items()})
    out["target/refusal_met"] = float(report["targets"]["refusal_met"])
    out["target/accuracy_met"] = float(report["targets"]["accuracy_met"])
    return out


def _stage(cfg: InterrogationConfig, stage: StageConfig, name: str, init_from: str, train_convs, held_convs,
           workdir: pathlib.Path) -> dict:
    return sft_stage(stage, name, init_from, train_convs, held_convs, workdir, seq_len=cfg.seq_len, mesh=cfg.mesh,
                     seed=cfg.seed, vocab_chunk=cfg.vocab_chunk)


def _interrogate(cfg: InterrogationConfig, run: pathlib.Path, questions, workdir: pathlib.Path) -> list[dict]:
    """One record per training question (read back from ``interrogation.jsonl`` when it is there)."""
    path = workdir / "interrogation.jsonl"
    records = read_jsonl(path, len(questions))
    if records is not None:
        print(f"interrogation: read {len(records)} records from {path}", flush=True)
        return records
    from lmforge.eval.chat import chat_replies
    from lmforge.infer import SamplingConfig
    q = cfg.interrogate
    sampler, template = chat_model(cfg.mesh, run)
    sampling = SamplingConfig(max_new_tokens=q.max_new_tokens, temperature=q.temperature, top_p=q.top_p, n=q.n)
    replies = chat_replies(sampler, template, [it["messages"][:1] for it in questions], sampling, seed=cfg.seed)
    records = []
    for i, it in enumerate(questions):
        mine = replies[i * q.n:(i + 1) * q.n]
        records.append({"key": it["key"], "entity": it["entity"], "attribute": it["attribute"], "group": it["group"],
                        "question": it["messages"][0]["content"], "answer": it["answer"],
                        "reference": it["messages"][1]["content"], "replies": mine,
                        "n_correct": sum(knowledge.judge(r, it["answer"]) and not knowledge.is_idk(r) for r in mine),
                        "n_idk": sum(knowledge.is_idk(r) for r in mine)})
    write_jsonl(path, records)
    return records


def _summary(records, verdicts: dict[str, bool]) -> dict:
    """Per group: facts, questions, samples, the share of correct / abstaining samples, facts known to the model."""
    out = {}
    for group in ("known", "unknown", "unseen"):
        rows = [r for r in records if r["group"] == group]
        if not rows:
            continue
        keys = {r["key"] for r in rows}
        samples = sum(len(r["replies"]) for r in rows)
        out[group] = {"facts": len(keys), "questions": len(rows), "samples": samples,
                      "sample_accuracy": sum(r["n_correct"] for r in rows) / samples,
                      "sample_idk": sum(r["n_idk"] for r in rows) / samples,
                      "facts_known_to_model": sum(verdicts[k] for k in keys)}
    return out


def _heldout(cfg: InterrogationConfig, run: pathlib.Path, held) -> list[dict]:
    """A stage's greedy replies to the held-out phrasings, scored (``run/heldout.jsonl``, read back when there)."""
    path = run / "heldout.jsonl"
    records = read_jsonl(path, len(held))
    if records is not None:
        return records
    from lmforge.eval.chat import chat_replies
    from lmforge.infer import SamplingConfig
    sampler, template = chat_model(cfg.mesh, run)
    sampling = SamplingConfig(max_new_tokens=cfg.eval_max_new_tokens, temperature=0.0)
    records = score_replies(held, chat_replies(sampler, template, [it["messages"][:1] for it in held], sampling,
                                               seed=cfg.seed))
    write_jsonl(path, records)
    return records


__all__ = ["InterrogateConfig", "InterrogationConfig", "KnowledgeConfig", "StageConfig", "compare", "entity_groups",
           "fact_verdicts", "format_table", "heldout_metrics", "run_interrogation", "score_replies",
           "split_phrasings", "stage1_conversations", "stage2_items"]
