"""Retrieval-augmented generation, trained: a model learns to answer from passages put in front of the
question, then answers about entities it never saw in training — with the passages, and without.

1. ``rag/``: SFT from ``init_from`` on questions about the *train* entities (``train_fraction`` of a
   ``lmforge.data.knowledge.KnowledgeBase``), each asked with the ``k`` passages that BM25
   (``lmforge.infer.retrieval.Retriever``) finds for it among *every* entity's document (RAG's prompt:
   the passages numbered in a system message, ``retrieve_context``), answered with the fact's
   sentence. The held-out entities' facts are in the corpus but in no training conversation.
2. ``report.json``: the model answers (greedily) the held-out phrasing of every fact — the train
   entities' (the phrasing is new, the facts were read in training) and the held-out entities' (never
   trained on) — open book (with the retrieved passages) and closed book (the question alone).
   Per group and mode: ``accuracy`` (``knowledge.judge``) and ``idk`` (``knowledge.is_idk``); and
   retrieval's recall at ``k`` (the entity's own document among the passages).

The closed-book column is the control: a model that answers unseen entities open book but not
closed book reads its answers from the passages, not from its weights. Re-running with the same
WORKDIR skips what is finished (``lmforge.align.stages``).
"""

from __future__ import annotations

import dataclasses
import pathlib
import random

import numpy as np

from lmforge.align.interrogation import split_phrasings
from lmforge.align.stages import (RecipeConfig, StageConfig, chat_model, read_jsonl, sft_stage, write_json,
                                  write_jsonl)
from lmforge.data import knowledge
from lmforge.data.chat import OVERFLOW
from lmforge.infer.retrieval import CONTEXT_HEADER, Retriever, retrieve_context

MODES = ("open_book", "closed_book")
GROUPS = ("train", "heldout")


@dataclasses.dataclass(frozen=True)
class RAGConfig(RecipeConfig):
    n_entities: int = 128            # KnowledgeBase.generate(n_entities, world_seed)
    world_seed: int = 0
    train_fraction: float = 0.5      # entities whose questions are trained on (kb.known); the rest are held out
    paraphrases: int = 1             # training phrasings per fact (1 or 2); the third is held out
    eval_facts: int = 200            # held-out phrasings answered per group (a seeded sample); 0 → all
    k: int = 2                       # passages retrieved per question
    header: str = CONTEXT_HEADER     # the system message's text before the passages
    stage: StageConfig = StageConfig(steps=600)
    seq_len: int = 256
    overflow: str = "drop"           # OVERFLOW: a training conversation past seq_len is dropped (or cut: truncate)

    def __post_init__(self):
        super().__post_init__()
        problems = [msg for bad, msg in (
            (self.n_entities < 4, f"n_entities={self.n_entities}: expected >= 4 (train and held-out entities)"),
            (not 0.0 < self.train_fraction < 1.0, f"train_fraction={self.train_fraction}: expected (0, 1)"),
            (self.paraphrases not in (1, 2), f"paraphrases={self.paraphrases}: expected 1 or 2 (the third phrasing "
                                             f"of every fact is held out)"),
            (self.k < 1, f"k={self.k}: expected >= 1 passages per question"),
            (self.overflow not in OVERFLOW, f"overflow={self.overflow!r}: expected one of {', '.join(OVERFLOW)}"),
            (self.eval_max_new_tokens < 1, f"eval_max_new_tokens={self.eval_max_new_tokens}: expected >= 1"),
            (self.eval_facts < 0, f"eval_facts={self.eval_facts}: expected >= 0 (0: every fact)"),
        ) if bad]
        if problems:
            raise ValueError("; ".join(problems))

    def check_runnable(self, workdir: pathlib.Path | None = None) -> None:
        """``init_from`` names a weights source (checked before anything is written). Raises ValueError."""
        from lmforge.weights import check_init_from   # pylint: disable=import-outside-toplevel

        check_init_from(self.init_from, "RAG fine-tunes a pretrained model with chat specials")


def questions(kb: knowledge.KnowledgeBase, cfg: RAGConfig) -> tuple[list[dict], list[dict]]:
    """(training questions about the train entities, held-out phrasings to answer), ``kb.qa`` items with
    ``"group"``: ``"train"`` or ``"heldout"`` (an entity no training question is about). The held-out
    phrasings are every fact's, or a seeded sample of ``cfg.eval_facts`` per group."""
    train_names = set(kb.known(cfg.train_fraction, seed=cfg.world_seed))
    train, held = split_phrasings(kb, kb.names, cfg.paraphrases)
    for it in train + held:
        it["group"] = "train" if it["entity"] in train_names else "heldout"
    if cfg.eval_facts:
        rng = random.Random(f"lmforge.rag:{cfg.seed}")
        held = [it for g in GROUPS for it in _sample(rng, [it for it in held if it["group"] == g], cfg.eval_facts)]
    return [it for it in train if it["group"] == "train"], held


def _sample(rng: random.Random, items: list, n: int) -> list:
    return items if len(items) <= n else [items[i] for i in sorted(rng.sample(range(len(items)), n))]


def open_book(retriever: Retriever, items: list[dict], cfg: RAGConfig) -> list[list[dict]]:
    """Each item's question with its retrieved passages in front (``retrieve_context``)."""
    return retrieve_context(retriever, [it["messages"][:1] for it in items], k=cfg.k, header=cfg.header)


def score_replies(items: list[dict], replies: list[str], found: list[bool]) -> list[dict]:
    """Held-out records: item, reply, ``correct`` (judged and not an abstention), ``idk``, and ``found``
    (the entity's document was among the passages). Raises ValueError when the counts differ."""
    if not len(items) == len(replies) == len(found):
        raise ValueError(f"{len(items)} questions, {len(replies)} replies, {len(found)} retrieval flags; expected "
                         f"one of each per question")
    return [{"key": it["key"], "group": it["group"], "question": it["messages"][0]["content"], "answer": it["answer"],
             "reply": r, "correct": knowledge.judge(r, it["answer"]) and not knowledge.is_idk(r),
             "idk": knowledge.is_idk(r), "found": bool(f)} for it, r, f in zip(items, replies, found)]


def metrics(records_by_mode: dict[str, list[dict]]) -> dict[str, float]:
    """``<mode>/<group>/accuracy`` and ``/idk`` per mode and group, ``retrieval/<group>/recall`` (from
    the open-book records), and ``n/<group>``; a rate over no records is NaN."""
    def rate(rows, field):
        return float(np.mean([r[field] for r in rows])) if rows else float("nan")
    out = {}
    for mode, records in records_by_mode.items():
        for group in GROUPS:
            rows = [r for r in records if r["group"] == group]
            out[f"{mode}/{group}/accuracy"] = rate(rows, "correct")
            out[f"{mode}/{group}/idk"] = rate(rows, "idk")
            if mode == "open_book":
                out[f"retrieval/{group}/recall"] = rate(rows, "found")
                out[f"n/{group}"] = float(len(rows))
    return out


def format_table(m: dict[str, float]) -> str:
    """The report's accuracies and abstentions, in percent."""
    lines = [f"{'held-out phrasings':38s}{'open book':>12s}{'closed book':>13s}"]
    for group, label in (("train", "entities trained on"), ("heldout", "entities never trained on")):
        for field in ("accuracy", "idk"):
            lines.append(f"{label + ': ' + field:38s}" + "".join(f"{100 * m[f'{mode}/{group}/{field}']:11.1f}%"
                                                                for mode in MODES))
        lines.append(f"{label + ': retrieval recall':38s}{100 * m[f'retrieval/{group}/recall']:11.1f}%")
    return "\n".join(lines)


def run_rag(cfg: RAGConfig, workdir: pathlib.Path) -> dict[str, float]:
    """Runs the two steps of the module docstring in ``workdir``; returns :func:`metrics`. Raises
    ValueError for an ``init_from`` that is empty or no weights source, or a config that does not fit
    (``RAGConfig``, ``lmforge.align.sft.run_sft``)."""
    workdir = pathlib.Path(workdir)
    cfg.check_runnable()
    workdir.mkdir(parents=True, exist_ok=True)
    kb = knowledge.KnowledgeBase.generate(cfg.n_entities, seed=cfg.world_seed)
    retriever = Retriever(kb.documents())
    train, held = questions(kb, cfg)
    if not train:
        raise ValueError(f"train_fraction={cfg.train_fraction} leaves no entity to train on among {cfg.n_entities}")
    train_convs = [c + [it["messages"][1]] for c, it in zip(open_book(retriever, train, cfg), train)]
    seen = [it for it in held if it["group"] == "train"]
    held_convs = [c + [it["messages"][1]] for c, it in zip(open_book(retriever, seen, cfg), seen)]
    final = sft_stage(cfg.stage, "rag", cfg.init_from, train_convs, held_convs, workdir, seq_len=cfg.seq_len,
                      mesh=cfg.mesh, seed=cfg.seed, vocab_chunk=cfg.vocab_chunk, overflow=cfg.overflow)
    own = {name: i for i, name in enumerate(kb.names)}      # an entity's document index
    hits = retriever.search_batch([it["messages"][0]["content"] for it in held], cfg.k)
    found = [own[it["entity"]] in {h.index for h in hs} for it, hs in zip(held, hits)]
    records = {mode: _answers(cfg, workdir, retriever, held, found, mode) for mode in MODES}
    out = metrics(records)
    write_json(workdir / "report.json", {"metrics": out, "stage_final": final})
    print(format_table(out), flush=True)
    return out


def _answers(cfg: RAGConfig, workdir: pathlib.Path, retriever: Retriever, held: list[dict], found: list[bool],
             mode: str) -> list[dict]:
    """The model's greedy answers to ``held`` in ``mode``, scored (``rag/heldout_<mode>.jsonl``, read back)."""
    path = workdir / "rag" / f"heldout_{mode}.jsonl"
    records = read_jsonl(path, len(held))
    if records is not None:
        return records
    from lmforge.infer import SamplingConfig, chat_replies   # pylint: disable=import-outside-toplevel
    sampler, template = chat_model(cfg.mesh, workdir / "rag")
    prompts = open_book(retriever, held, cfg) if mode == "open_book" else [it["messages"][:1] for it in held]
    replies = chat_replies(sampler, template, prompts, SamplingConfig(max_new_tokens=cfg.eval_max_new_tokens,
                                                                      temperature=0.0), seed=cfg.seed)
    records = score_replies(held, replies, found)
    write_jsonl(path, records)
    return records


__all__ = ["GROUPS", "MODES", "RAGConfig", "format_table", "metrics", "open_book", "questions", "run_rag",
           "score_replies"]
