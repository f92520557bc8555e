"""Retrieval-augmented generation, trained: a model learns to answer from passages put in front of the
question, then answers about entities it never saw in training — with the passages, and without.

1. ``rag/``: SFT from ``init_from`` on questions about the *train* entities (``train_fraction`` of a
   ``lmforge.data.knowledge.KnowledgeBase``), each asked with the ``k`` passages that BM25
   (``lmforge.infer.retrieval.Retriever``) finds for it among *every* entity's document (RAG's prompt:
   the passages numbered in a system message, ``retrieve_context``), answered with the fact's
   sentence (or, for ``distractor_fraction`` of them, with distractor passages only, answered "I don't
   know": below). The held-out entities' facts are in the corpus but in no training conversation.
2. ``report.json``: the model answers (greedily) the held-out phrasing of every fact — the train
   entities' (the phrasing is new, the facts were read in training) and the held-out entities' (never
   trained on) — open book (with the retrieved passages), closed book (the question alone) and
   ``distractors`` (with ``k`` passages that are not the entity's own document: below).
   Per group and mode: ``accuracy`` (``knowledge.judge``) and ``idk`` (``knowledge.is_idk``); and
   retrieval's recall at ``k`` (the entity's own document among the passages). ``training`` counts
   the training conversations and the distractor-only ones among them.

The closed-book column is the control: a model that answers unseen entities open book but not
closed book reads its answers from the passages, not from its weights. Re-running with the same
WORKDIR skips what is finished (``lmforge.align.stages``).

Distractor-only contexts (RAFT: Zhang et al. 2024, "RAFT: Adapting Language Model to Domain Specific
RAG", arXiv:2403.10131). With recall at 100% every training question comes with the passage that
answers it, so the model never sees passages that do not, and confabulates from them.
``distractor_fraction`` (RAFT's 1 - P) of the training conversations, a seeded sample of exactly
``round(distractor_fraction * n)`` (:func:`distractor_picks`), get ``k`` *distractor* passages instead of
the retrieved ones: BM25's best passages for the question once the entity's own (the "oracle")
document is left out — near misses that share its words (the entity's name in a document that
mentions it, the question's "born" or "founded") but not the fact, since an entity's facts are stated
in its own document only — topped up, where BM25 finds fewer (a question whose only content word is
the name), with other documents of the entity's kind (:func:`distractor_passages`), so the prompt has
``k`` passages as the open book's does. Deviation from RAFT: its distractor-only examples
keep the answer (to push domain knowledge into the weights); here they are answered with the
knowledge module's abstention ``knowledge.IDK`` (the interrogation recipe's "I don't know",
``lmforge.align.interrogation``), so the model learns to refuse when the passages lack the answer, as
the prompt's header asks (learning to refuse on unanswerable contexts: Song et al. 2024, "Measuring
and Enhancing Trustworthiness of LLMs in RAG through Grounded Attributions and Learning to Refuse").
The default 0 trains as before. The report then has a third mode, ``distractors``: every held-out
phrasing asked with ``k`` distractor passages (never its own document), scored the same way; a model
that learned the lesson refuses there (``idk`` high, ``accuracy`` near the closed book's) and still
answers open book. ``distractors`` is a mode of ``retrieval="context"`` only (:func:`eval_modes`).

``retrieval="tool"`` trains the same facts as tool use instead (Toolformer's search, Schick et al.
2023; the ``search`` tool of ``lmforge.infer.retrieval.search_tool``): the user asks, the assistant
calls ``search`` with the entity's name as its query, the tool's result is the ``k`` passages BM25
finds for that name, and the assistant answers (:func:`tool_conversation`; SFT's loss is on the
call and the answer, never on the result). The model writes its own query, so at evaluation the
question goes through the tool-call loop (``lmforge.infer.tools.run_tools``, at most ``max_calls``
calls): open book with the search over every entity's document, closed book with a search that
finds nothing (``"no results"``) — the control, as above. Recall is then of the model's own
queries (the entity's document among what its searches returned) and the records keep its calls
(``tool_calls``: calls per question). ``distractor_fraction > 0`` is refused with ``retrieval="tool"``:
the tool-call loop runs one search tool for every question at once, so evaluation cannot leave out
each question's own document (the ``distractors`` mode); its closed-book control, a search that
finds nothing, is the nearest measure of refusing there.
"""

from __future__ import annotations

import dataclasses
import pathlib
import random

import numpy as np

from lmforge.align.interrogation import split_phrasings
from lmforge.align.stages import (RecipeConfig, StageConfig, chat_model, check_recipe_start, read_jsonl, sft_stage,
                                  write_json, write_jsonl)
from lmforge.data import knowledge
from lmforge.data.chat import OVERFLOW, format_call
from lmforge.infer.retrieval import CONTEXT_HEADER, Retriever, retrieve_context, search_tool, with_context
from lmforge.infer.tools import Tool

MODES = ("open_book", "closed_book", "distractors")   # distractors: retrieval="context" only (eval_modes)
GROUPS = ("train", "heldout")
RETRIEVALS = ("context", "tool")   # the passages in a system message, or a search the model calls
NO_RESULTS = "no results"          # what the closed-book search tool returns (as search_tool when nothing matches)


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
    retrieval: str = "context"       # RETRIEVALS: passages in front of the question, or a search tool it calls
    max_calls: int = 2               # retrieval="tool": calls per question at evaluation (run_tools)
    distractor_fraction: float = 0.0  # RAFT's 1 - P: training conversations with k distractor passages, answered IDK

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
            (self.retrieval not in RETRIEVALS, f"retrieval={self.retrieval!r}: expected one of {', '.join(RETRIEVALS)}"),
            (self.max_calls < 1, f"max_calls={self.max_calls}: expected >= 1"),
            (not 0.0 <= self.distractor_fraction < 1.0,
             f"distractor_fraction={self.distractor_fraction}: expected [0, 1) (the share of training conversations "
             f"given distractor passages only, answered with knowledge.IDK)"),
            (self.distractor_fraction > 0 and self.retrieval == "tool",
             f"distractor_fraction={self.distractor_fraction} with retrieval='tool': expected 0 (evaluation's "
             f"tool-call loop shares one search tool among the questions, so it cannot leave out each one's own "
             f"document); use retrieval='context'"),
        ) if bad]
        if problems:
            raise ValueError("; ".join(problems))

    def check_runnable(self, workdir: pathlib.Path | None = None) -> None:
        """``init_from`` names a language model and ``seq_len`` fits it (checked before anything is
        written: :func:`lmforge.align.stages.check_recipe_start`). Raises ValueError."""
        check_recipe_start(self.init_from, self.seq_len, "RAG")


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


def eval_modes(cfg: RAGConfig) -> tuple[str, ...]:
    """The report's modes for ``cfg``: ``MODES``, less ``"distractors"`` under ``retrieval="tool"``."""
    return MODES if cfg.retrieval == "context" else MODES[:2]


def own_documents(kb: knowledge.KnowledgeBase) -> dict[str, int]:
    """Entity name -> the index of its own document in ``kb.documents()`` (the corpus of :func:`run_rag`'s
    ``Retriever``): the oracle document, which a distractor passage never is."""
    return {name: i for i, name in enumerate(kb.names)}


def distractor_passages(retriever: Retriever, kb: knowledge.KnowledgeBase, items: list[dict], k: int, seed: int
                        ) -> list[list[int]]:
    """For each item, ``k`` distractors as indices into the corpus (``kb.documents()``, the retriever's
    passages), never the item's entity's own document: BM25's best passages for its question with the
    own document left out, best first; where fewer than ``k`` share a word with the question (a name and
    stopwords only: "What does the Quondkutron do?" finds its own document alone), the rest are other
    entities' documents of the same kind (then of any kind), a sample seeded by (``seed``, key, question)
    — RAFT samples its distractors from the corpus. Fewer than ``k`` only when the corpus has fewer other
    documents. Raises ValueError when the retriever's passages are not ``kb.documents()``."""
    if retriever.passages != kb.documents():
        raise ValueError(f"distractor_passages: the retriever's {len(retriever)} passages are not the knowledge "
                         f"base's {len(kb.entities)} documents; expected Retriever(kb.documents())")
    own = own_documents(kb)
    kinds = [e.kind for e in kb.entities]
    hits = retriever.search_batch([it["messages"][0]["content"] for it in items], k + 1)
    out = []
    for it, hs in zip(items, hits):
        mine = own[it["entity"]]
        chosen = [h.index for h in hs if h.index != mine][:k]
        if len(chosen) < k:
            rng = random.Random(f"lmforge.rag.distractors:{seed}:{it['key']}:{it['messages'][0]['content']}")
            rest = [i for i in range(len(kinds)) if i != mine and i not in chosen]
            same = [i for i in rest if kinds[i] == kinds[mine]]
            other = [i for i in rest if kinds[i] != kinds[mine]]
            chosen += (rng.sample(same, len(same)) + rng.sample(other, len(other)))[:k - len(chosen)]
        out.append(chosen)
    return out


def distractors(retriever: Retriever, kb: knowledge.KnowledgeBase, items: list[dict], cfg: RAGConfig
                ) -> list[list[dict]]:
    """Each item's question with ``cfg.k`` distractor passages in front (:func:`distractor_passages`,
    seeded by ``cfg.seed``), in the open-book prompt's form (``with_context``, ``cfg.header``)."""
    return [with_context(it["messages"][:1], [retriever.passages[i] for i in idx], header=cfg.header)
            for it, idx in zip(items, distractor_passages(retriever, kb, items, cfg.k, cfg.seed))]


def distractor_picks(n: int, fraction: float, seed: int) -> list[bool]:
    """Which of ``n`` training conversations get distractor passages: a sample of exactly
    ``round(fraction * n)``, seeded by ``seed`` (the same picks on every run)."""
    chosen = set(random.Random(f"lmforge.rag.distractors:{seed}").sample(range(n), round(fraction * n)))
    return [i in chosen for i in range(n)]


def context_conversations(retriever: Retriever, kb: knowledge.KnowledgeBase, items: list[dict], cfg: RAGConfig
                          ) -> tuple[list[list[dict]], list[bool]]:
    """``retrieval="context"``'s training conversations for ``items`` and which are distractor-only
    (:func:`distractor_picks` with ``cfg.distractor_fraction`` and ``cfg.seed``): system (the passages),
    user, assistant — the retrieved passages answered with the fact's sentence, or ``cfg.k`` distractors
    (:func:`distractors`) answered with ``knowledge.IDK``."""
    picks = distractor_picks(len(items), cfg.distractor_fraction, cfg.seed)
    prompts = open_book(retriever, items, cfg)
    if any(picks):
        shown = iter(distractors(retriever, kb, [it for it, p in zip(items, picks) if p], cfg))
        prompts = [next(shown) if p else q for q, p in zip(prompts, picks)]
    idk = {"role": "assistant", "content": knowledge.IDK}
    return [q + [idk if p else it["messages"][1]] for q, it, p in zip(prompts, items, picks)], picks


def tool_conversation(search: Tool, item: dict) -> list[dict]:
    """``item``'s question answered through the search tool (module docstring): user, the assistant's
    ``search`` call with the entity's name as the query, the tool's result, the assistant's answer."""
    name = item["entity"]
    return [item["messages"][0], {"role": "assistant", "content": format_call("search", query=name)},
            {"role": "tool", "content": search(query=name)}, item["messages"][1]]


def no_results_tool() -> Tool:
    """A ``search`` tool that finds nothing (the closed-book control of ``retrieval="tool"``)."""
    return Tool("search", lambda query: NO_RESULTS, "Searches the passages by their words (BM25); finds nothing here",
                {"query": "the words to search for"})


def score_replies(items: list[dict], replies: list[str], found: list[bool], calls: list[list[dict]] | None = None
                  ) -> list[dict]:
    """Held-out records: item, reply, ``correct`` (judged and not an abstention), ``idk``, and ``found``
    (the entity's document was among the passages); with ``calls`` (one list per item: the tool calls
    made, as ``ToolCall`` dicts: name, arguments, result, error) those too. Raises ValueError when the counts differ."""
    if not len(items) == len(replies) == len(found) or (calls is not None and len(calls) != len(items)):
        raise ValueError(f"{len(items)} questions, {len(replies)} replies, {len(found)} retrieval flags"
                         f"{'' if calls is None else f', {len(calls)} call lists'}; expected one of each per question")
    records = [{"key": it["key"], "group": it["group"], "question": it["messages"][0]["content"], "answer": it["answer"],
                "reply": r, "correct": knowledge.judge(r, it["answer"]) and not knowledge.is_idk(r),
                "idk": knowledge.is_idk(r), "found": bool(f)} for it, r, f in zip(items, replies, found)]
    for record, made in zip(records, calls or ()):
        record["calls"] = made
    return records


def metrics(records_by_mode: dict[str, list[dict]]) -> dict[str, float]:
    """``<mode>/<group>/accuracy`` and ``/idk`` per mode and group, ``retrieval/<group>/recall`` (from
    the open-book records), and ``n/<group>``; with records that keep their tool calls, also
    ``<mode>/<group>/tool_calls`` (calls per question). A rate over no records is NaN."""
    def rate(rows, field):
        return float(np.mean([r[field] for r in rows])) if rows else float("nan")
    out = {}
    for mode, records in records_by_mode.items():
        for group in GROUPS:
            rows = [r for r in records if r["group"] == group]
            out[f"{mode}/{group}/accuracy"] = rate(rows, "correct")
            out[f"{mode}/{group}/idk"] = rate(rows, "idk")
            if rows and all("calls" in r for r in rows):
                out[f"{mode}/{group}/tool_calls"] = float(np.mean([len(r["calls"]) for r in rows]))
            if mode == "open_book":
                out[f"retrieval/{group}/recall"] = rate(rows, "found")
                out[f"n/{group}"] = float(len(rows))
    return out


def format_table(m: dict[str, float]) -> str:
    """The report's accuracies, abstentions and retrieval recall in percent (and search calls per question
    when the records kept their tool calls), one row each, the modes in ``m`` side by side (open book,
    closed book, and distractors when present)."""
    modes = [mode for mode in MODES if f"{mode}/train/accuracy" in m or f"{mode}/heldout/accuracy" in m]
    nan = float("nan")
    rows = []
    for group, label in (("train", "entities trained on"), ("heldout", "entities never trained on")):
        for field in ("accuracy", "idk"):
            rows.append((f"{label}: {field}", [f"{100 * m.get(f'{mode}/{group}/{field}', nan):.1f}%"
                                               for mode in modes]))
        rows.append((f"{label}: retrieval recall", [f"{100 * m[f'retrieval/{group}/recall']:.1f}%"]))
        if f"open_book/{group}/tool_calls" in m:
            rows.append((f"{label}: search calls", [f"{m.get(f'{mode}/{group}/tool_calls', nan):.2f}"
                                                    for mode in modes]))
    width = max(len(label) for label, _ in rows) + 2
    cols = [(mode.replace("_", " "), 12 if i == 0 else 13) for i, mode in enumerate(modes)]
    lines = [f"{'held-out phrasings':{width}s}" + "".join(f"{head:>{w}s}" for head, w in cols)]
    lines += [f"{label:{width}s}" + "".join(f"{v:>{w}s}" for v, (_, w) in zip(values, cols)) for label, values in rows]
    return "\n".join(lines)


def run_rag(cfg: RAGConfig, workdir: pathlib.Path) -> dict[str, float]:
    """Runs the two steps of the module docstring in ``workdir``; returns :func:`metrics` (modes:
    :func:`eval_modes`). Raises ValueError for an ``init_from`` that is empty or no weights source, or a
    config that does not fit (``RAGConfig``, ``lmforge.align.sft.run_sft``)."""
    workdir = pathlib.Path(workdir)
    cfg.check_runnable()
    workdir.mkdir(parents=True, exist_ok=True)
    kb = knowledge.KnowledgeBase.generate(cfg.n_entities, seed=cfg.world_seed)
    retriever = Retriever(kb.documents())
    train, held = questions(kb, cfg)
    if not train:
        raise ValueError(f"train_fraction={cfg.train_fraction} leaves no entity to train on among {cfg.n_entities}")
    seen = [it for it in held if it["group"] == "train"]
    if cfg.retrieval == "tool":
        search = search_tool(retriever, k=cfg.k)
        train_convs, held_convs = ([tool_conversation(search, it) for it in items] for items in (train, seen))
        picks = [False] * len(train)
    else:   # the held-out loss stays open book: comparable across distractor fractions
        train_convs, picks = context_conversations(retriever, kb, train, cfg)
        held_convs = [c + [it["messages"][1]] for c, it in zip(open_book(retriever, seen, cfg), seen)]
    final = sft_stage(cfg.stage, "rag", cfg.init_from, train_convs, held_convs, workdir, seq_len=cfg.seq_len,
                      mesh=cfg.mesh, seed=cfg.seed, vocab_chunk=cfg.vocab_chunk, overflow=cfg.overflow)
    records = {mode: _answers(cfg, workdir, retriever, kb, held, mode) for mode in eval_modes(cfg)}
    out = metrics(records)
    write_json(workdir / "report.json", {"metrics": out, "stage_final": final,
                                         "training": {"conversations": len(train_convs), "distractors": sum(picks)}})
    print(format_table(out), flush=True)
    return out


def _answers(cfg: RAGConfig, workdir: pathlib.Path, retriever: Retriever, kb: knowledge.KnowledgeBase,
             held: list[dict], mode: str) -> list[dict]:
    """The model's greedy answers to ``held`` in ``mode``, scored (``rag/heldout_<mode>.jsonl``, read back)."""
    path = workdir / "rag" / f"heldout_{mode}.jsonl"
    records = read_jsonl(path, len(held))
    if records is not None:
        return records
    # pylint: disable=import-outside-toplevel
    from lmforge.infer import SamplingConfig, chat_replies, replier
    from lmforge.infer.tools import run_tools
    sampler, template = chat_model(cfg.mesh, workdir / "rag")
    sampling = SamplingConfig(max_new_tokens=cfg.eval_max_new_tokens, temperature=0.0)
    docs = dict(zip(kb.names, kb.documents()))               # an entity's own document
    own = own_documents(kb)
    questions_only = [it["messages"][:1] for it in held]
    if cfg.retrieval == "tool":
        tool = search_tool(retriever, k=cfg.k) if mode == "open_book" else no_results_tool()
        runs = run_tools(replier(sampler, template, sampling, seed=cfg.seed), questions_only, [tool],
                         max_calls=cfg.max_calls)
        replies = [run.reply for run in runs]
        calls = [[dataclasses.asdict(c) for c in run.calls] for run in runs]
        found = [any(docs[it["entity"]] in c["result"] for c in made) for it, made in zip(held, calls)]
    else:   # found: the own document among the passages shown (open and closed book: those open book shows)
        shown = (distractor_passages(retriever, kb, held, cfg.k, cfg.seed) if mode == "distractors"
                 else [[h.index for h in hs] for hs in retriever.search_batch(
                     [it["messages"][0]["content"] for it in held], cfg.k)])
        found, calls = [own[it["entity"]] in idx for it, idx in zip(held, shown)], None
        prompts = (questions_only if mode == "closed_book" else
                   [with_context(q, [retriever.passages[i] for i in idx], header=cfg.header)
                    for q, idx in zip(questions_only, shown)])
        replies = chat_replies(sampler, template, prompts, sampling, seed=cfg.seed)
    records = score_replies(held, replies, found, calls)
    write_jsonl(path, records)
    return records


__all__ = ["GROUPS", "MODES", "NO_RESULTS", "RAGConfig", "RETRIEVALS", "context_conversations", "distractor_passages",
           "distractor_picks", "distractors", "eval_modes", "format_table", "metrics", "no_results_tool", "open_book",
           "own_documents", "questions", "run_rag", "score_replies", "tool_conversation"]
