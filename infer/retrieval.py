"""Retrieval for RAG and for the ``search`` tool: BM25 over a list of passages, and the retrieved
passages put in front of a conversation.

- :class:`Retriever` ranks passages by Okapi BM25 (Robertson & Zaragoza 2009, "The Probabilistic
  Relevance Framework: BM25 and Beyond"; Lucene's variant, k1 = 1.5, b = 0.75) through ``bm25s``,
  a maintained implementation on sparse matrices: lower-cased word tokens, English stopwords
  dropped. Passages sharing no word with the query are never returned. Sparse lexical retrieval
  fits what lmforge's RAG experiments retrieve (names and facts, matched by their words) and needs
  no second model; a dense retriever is a drop-in: anything with ``search(query, k) -> [Hit]``.
- :func:`with_context` is retrieval-augmented generation's prompt (Lewis et al. 2020,
  arXiv:2005.11401, with the retrieved text in the context rather than marginalised over): the
  passages, numbered, in a system message before the conversation (appended to its system
  message when it has one), so a chat model trained on such prompts answers from them.
- :func:`search_tool` is the same retriever as a tool (``lmforge.infer.tools``) the model calls with
  a query it writes itself.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence

from lmforge.infer.tools import Tool

CONTEXT_HEADER = "Answer using the context below. If it does not hold the answer, say you don't know.\n\nContext:"


@dataclasses.dataclass(frozen=True)
class Hit:
    """One retrieved passage: its index in the corpus, its BM25 score (> 0) and its text."""
    index: int
    score: float
    text: str


class Retriever:
    """BM25 over ``passages`` (see the module docstring). Raises ValueError for no passages, a
    passage that is not a non-empty string (naming its index), or passages without one word to index."""

    def __init__(self, passages: Sequence[str], *, k1: float = 1.5, b: float = 0.75, stopwords: str = "en"):
        import bm25s   # pylint: disable=import-outside-toplevel

        logging.getLogger("bm25s").setLevel(logging.WARNING)   # it sets its own logger to DEBUG on import
        if not passages:
            raise ValueError("Retriever: expected at least one passage; got none")
        for i, p in enumerate(passages):
            if not isinstance(p, str) or not p.strip():
                raise ValueError(f"Retriever: passage {i} is {p!r}; expected non-empty text")
        self.passages = list(passages)
        self._bm25s, self._stopwords = bm25s, stopwords
        self._index = bm25s.BM25(k1=k1, b=b)
        tokens = self._tokenize(self.passages)
        if not tokens.vocab:
            raise ValueError(f"Retriever: the {len(passages)} passages have no word to index (words of 2+ letters or "
                             f"digits, {stopwords} stopwords left out)")
        self._index.index(tokens, show_progress=False)

    def __len__(self) -> int:
        return len(self.passages)

    def _tokenize(self, texts: Sequence[str]):
        return self._bm25s.tokenize(list(texts), stopwords=self._stopwords, show_progress=False)

    def search_batch(self, queries: Sequence[str], k: int = 3) -> list[list[Hit]]:
        """The ``k`` best passages for each query, best first (fewer when fewer share a word with it).
        Raises ValueError for ``k < 1``."""
        if k < 1:
            raise ValueError(f"search: k must be >= 1; got {k}")
        if not queries:
            return []
        ids, scores = self._index.retrieve(self._tokenize(queries), k=min(k, len(self.passages)), show_progress=False)
        return [[Hit(int(i), float(s), self.passages[int(i)]) for i, s in zip(row_i, row_s) if s > 0]
                for row_i, row_s in zip(ids, scores)]

    def search(self, query: str, k: int = 3) -> list[Hit]:
        """The ``k`` best passages for ``query`` (see :meth:`search_batch`)."""
        return self.search_batch([query], k)[0]


def format_context(hits: Sequence[Hit | str], *, header: str = CONTEXT_HEADER) -> str:
    """``header`` then the passages numbered ``[1] ...``, one per line."""
    return f"{header}\n{_numbered(hits) or '(nothing found)'}"


def _numbered(hits: Sequence[Hit | str]) -> str:
    return "\n".join(f"[{n}] {h.text if isinstance(h, Hit) else h}" for n, h in enumerate(hits, 1))


def with_context(messages: Sequence[Mapping[str, str]], hits: Sequence[Hit | str], *,
                 header: str = CONTEXT_HEADER) -> list[dict]:
    """``messages`` with the passages (:func:`format_context`) in a system message first; a leading
    system message keeps its text and gets the context after a blank line."""
    out = [dict(m) for m in messages]
    context = format_context(hits, header=header)
    if out and out[0]["role"] == "system":
        out[0]["content"] = f"{out[0]['content']}\n\n{context}"
        return out
    return [{"role": "system", "content": context}, *out]


def last_user(messages: Sequence[Mapping[str, str]]) -> str:
    """The text of the last user message (RAG's query). Raises ValueError when there is none."""
    for m in reversed(messages):
        if m["role"] == "user":
            return m["content"]
    raise ValueError(f"retrieval needs a user message to search for; got roles {[m['role'] for m in messages]}")


def retrieve_context(retriever: Retriever, conversations: Sequence[Sequence[Mapping[str, str]]], *, k: int = 3,
                     header: str = CONTEXT_HEADER) -> list[list[dict]]:
    """Each conversation with the ``k`` passages best matching its last user message in front
    (:func:`with_context`): the prompts of RAG."""
    hits = retriever.search_batch([last_user(c) for c in conversations], k)
    return [with_context(c, h, header=header) for c, h in zip(conversations, hits)]


def search_tool(retriever: Retriever, *, k: int = 3) -> Tool:
    """``search(query)``: the ``k`` best passages, numbered, one per line (``"no results"`` when none)."""

    def search(query: str) -> str:
        return _numbered(retriever.search(query, k)) or "no results"

    return Tool("search", search, f"Searches {len(retriever)} passages by their words (BM25); returns the best {k}",
                {"query": "the words to search for"})


__all__ = ["CONTEXT_HEADER", "Hit", "Retriever", "format_context", "last_user", "retrieve_context", "search_tool",
           "with_context"]
