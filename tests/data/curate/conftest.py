"""Fixtures for the curation tests: real English prose (Python's own docs) and small inputs."""

import json
import random
import pathlib

import pytest

from lmforge.data import SourceConfig, read_documents


@pytest.fixture(scope="session")
def prose() -> list[str]:
    """~300 pydoc topics / module docstrings of 80..3000 words: real English text, all different."""
    docs = read_documents(SourceConfig(kind="python_docs"))
    return [d for d in docs if 80 <= len(d.split()) <= 3000][:300]


_NOUNS = ("river", "garden", "library", "mountain", "harbor", "kitchen", "museum", "forest", "market", "bridge",
          "school", "station", "theater", "farm", "island", "castle", "valley", "bakery", "hospital", "village")
_ADJS = ("old", "quiet", "busy", "green", "famous", "small", "bright", "ancient", "modern", "hidden",
         "narrow", "wide", "cold", "warm", "lovely", "strange", "simple", "proud", "gentle", "distant")
_VERBS = ("visit", "paint", "describe", "protect", "explore", "remember", "photograph", "study", "clean", "admire")
_PEOPLE = ("children", "farmers", "tourists", "teachers", "artists", "neighbors", "students", "doctors", "sailors",
           "writers")
_TEMPLATES = (
    "The {a} {n} near the {a2} {n2} has been part of local life for {k} years.",
    "Many {p} {v} the {n} in the early morning, when the light over the {n2} is soft.",
    "In {y}, a group of {p} decided to {v} every {a} {n} in the region.",
    "Nobody expected that the {n} would become so {a} after the {n2} was rebuilt.",
    "Some {p} say that you cannot {v} a {n} properly without a {a} {n2} nearby.",
    "Every spring the {p} of the {n2} gather to {v} the {a} {n} together.",
    "It took {k} weeks for the {p} to {v} the {n}, and they were proud of the result.",
    "A {a} path leads from the {n} to the {n2}, and {p} walk it each evening.",
    "Local {p} still tell stories about the {a} {n} and the {n2} beside it.",
    "When the {n} closed for a season, the {p} went to {v} the {a2} {n2} instead.",
)


def web_page(i: int) -> str:
    """A clean English page, different from every other ``web_page(j)``, that passes every filter."""
    r = random.Random(i)
    paras, templates = [], r.sample(_TEMPLATES, len(_TEMPLATES))  # each template once: no repeated 5-grams
    for part in (templates[:3], templates[3:6], templates[6:8], templates[8:]):
        sentences = []
        for t in part:
            sentences.append(t.format(a=r.choice(_ADJS), a2=r.choice(_ADJS), n=r.choice(_NOUNS), n2=r.choice(_NOUNS),
                                      v=r.choice(_VERBS), p=r.choice(_PEOPLE), k=r.randrange(2, 90),
                                      y=r.randrange(1800, 2020)))
        paras.append(" ".join(sentences))
    return "\n\n".join(paras)


def write_jsonl(path: pathlib.Path, rows: list) -> pathlib.Path:
    with path.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n")
    return path
