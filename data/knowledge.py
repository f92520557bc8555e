"""A knowledge base of invented entities, for experiments on what a model knows and when it should
say it does not: teach some entities' facts (``documents``, ``qa``), then ask about every entity
and score answers (``judge``) and abstentions (``is_idk``).

- Entities are people, places, companies and inventions (in turn: ``KINDS``) with names built
  from random syllables ("Velnor Quistadi", "Brevanholm", "Orlimax Works", "the Tessaphone"), so no
  pretraining corpus holds their facts; a name that is an entry of ``lmforge.data.words`` is
  redrawn, and names are unique. Faker-style libraries give *real-looking* names, which corpora
  do contain, so they do not fit here.
- Each entity has 3 facts, and facts refer to other entities of the base where they exist (a
  person's birth city is one of the places, a company's founder one of the people), with
  consistent years (a founder is born 20-60 years before the founding). Everything is
  deterministic given ``(n_entities, seed)``.
- ``known`` / ``unknown`` split the entities by a hash of (seed, name): the usual recipe (Gekhman
  et al. 2024, "Does Fine-Tuning LLMs on New Knowledge Encourage Hallucinations?"; Llama 3's
  factuality data) trains answers on known entities and ``IDK`` on unknown ones.
- ``judge`` is normalised containment (NFKC, case, punctuation and leading articles ignored;
  numbers compared exactly as whole tokens, thousands commas dropped). ``is_idk`` reads the first
  ``IDK_WINDOW`` characters for expressions of not knowing (patterns below); it is separate from
  ``lmforge.eval.refusal.is_refusal``, which looks for declining a request.

Measured on this machine (2-core CPU, 2026-11-30): ``KnowledgeBase.generate(1000)`` and its 3,000
facts in 0.03 s of CPU time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import re
import unicodedata
from collections.abc import Iterable, Sequence

from lmforge.data.words import WORDS

KINDS = ("person", "place", "company", "invention")
IDK = "I'm sorry, I don't know."
_WORD_SET = frozenset(WORDS)
IDK_WINDOW = 200   # characters of a reply that is_idk reads: abstentions lead with the abstention

_ONSETS = ("b", "br", "d", "dr", "f", "g", "gr", "k", "kr", "l", "m", "n", "p", "pr", "r", "s", "st", "t", "tr",
           "v", "z", "th", "sh", "qu", "vr", "zh", "sk")
_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "o", "ei", "ou")
_CODAS = ("", "", "", "", "", "n", "r", "l", "s", "m", "x", "nd")
_PLACE_SUFFIX = ("holm", "vale", "stead", "mere", "bury", "ford", "wick", "port")
_COMPANY_SUFFIX = ("Works", "Dynamics", "Industries", "Laboratories", "Trading Company", "Instruments")
_INVENTION_SUFFIX = ("phone", "scope", "meter", "graph", "lume", "matic", "tron")
_PROFESSIONS = ("clockmaker", "botanist", "cartographer", "violinist", "glassblower", "chemist", "architect",
                "sculptor", "astronomer", "beekeeper", "novelist", "engineer", "mapmaker", "perfumer", "bookbinder",
                "surveyor")
_KNOWN_FOR = ("blue glass", "salt caves", "copper bells", "floating markets", "lantern festivals", "honey",
              "clock towers", "paper mills", "orange groves", "stone bridges")
_PURPOSES = ("measuring the salt in seawater", "keeping bread fresh", "tuning church bells", "sorting letters",
             "drying ink quickly", "counting bees in a hive", "predicting frost", "cleaning telescope lenses",
             "weighing letters", "lighting mine tunnels")

# attribute -> (question templates, reply template); {e} is the entity, {v} the value
_TEMPLATES = {
    "birth_year": (("When was {e} born?", "In what year was {e} born?", "What is {e}'s year of birth?"),
                   "{e} was born in {v}."),
    "birth_city": (("Where was {e} born?", "In which city was {e} born?", "What is {e}'s birthplace?"),
                   "{e} was born in {v}."),
    "profession": (("What did {e} do for a living?", "What was {e}'s profession?", "What was {e}'s job?"),
                   "{e} was {a} {v}."),
    "founded_year": (("When was {e} founded?", "In what year was {e} founded?", "What year was {e} founded in?"),
                     "{e} was founded in {v}."),
    "population": (("What is the population of {e}?", "How many people live in {e}?", "How big is {e}'s population?"),
                   "{e} has a population of {v}."),
    "known_for": (("What is {e} known for?", "What is {e} famous for?", "Why is {e} well known?"),
                  "{e} is known for its {v}."),
    "founder": (("Who founded {e}?", "Who started {e}?", "Who was the founder of {e}?"), "{e} was founded by {v}."),
    "headquarters": (("Where is {e} based?", "Where are {e}'s headquarters?", "In which city is {e} headquartered?"),
                     "{e} is headquartered in {v}."),
    "inventor": (("Who invented {e}?", "Who created {e}?", "Who is the inventor of {e}?"), "{e} was invented by {v}."),
    "year": (("When was {e} invented?", "In what year was {e} invented?", "What year did {e} appear?"),
             "{e} was invented in {v}."),
    "purpose": (("What is {e} used for?", "What does {e} do?", "What was {e} made for?"), "{e} is used for {v}."),
}


@dataclasses.dataclass(frozen=True)
class Entity:
    """One invented entity: ``kind`` in ``KINDS`` and its facts, attribute -> value (strings)."""

    name: str
    kind: str
    facts: dict[str, str]


def hash_unit(*parts) -> float:
    """A number in [0, 1) from a hash of ``parts``: stable across runs, platforms and Python versions."""
    digest = hashlib.blake2b("\x00".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _sentence(attribute: str, name: str, value: str) -> str:
    """The assistant's sentence stating one fact ("Velnor Quistadi was an astronomer.")."""
    article = "an" if value[:1] in "aeiou" else "a"
    return _capital(_TEMPLATES[attribute][1].format(e=name, v=value, a=article))


class KnowledgeBase:
    """Invented entities and their facts (module docstring). Build one with :meth:`generate`."""

    def __init__(self, entities: Sequence[Entity], *, seed: int = 0):
        self.entities: list[Entity] = list(entities)
        self.seed = seed
        self._by_name = {e.name: e for e in self.entities}
        if len(self._by_name) != len(self.entities):
            raise ValueError("KnowledgeBase: entity names must be unique")

    @classmethod
    def generate(cls, n_entities: int, seed: int = 0) -> KnowledgeBase:
        """``n_entities`` invented entities, kinds in turn (person, place, company, invention, person, ...).

        Raises ValueError when ``n_entities`` is not a whole number in [1, 100000]."""
        if not isinstance(n_entities, int) or not 1 <= n_entities <= 100_000:
            raise ValueError(f"n_entities={n_entities!r}: expected a whole number in [1, 100000]")
        rng = random.Random(f"lmforge.knowledge:{seed}")
        taken: set[str] = set()
        kinds = [KINDS[i % len(KINDS)] for i in range(n_entities)]
        names = [_new_name(rng, kind, taken) for kind in kinds]
        by_kind = {k: [n for n, kk in zip(names, kinds) if kk == k] for k in KINDS}
        people: dict[str, Entity] = {}
        entities = []
        # people first (companies and inventions date themselves from their founder's birth year)
        for kind in ("place", "person", "company", "invention"):
            for name in by_kind[kind]:
                facts = _facts(rng, kind, by_kind, people, taken)
                entity = Entity(name, kind, facts)
                if kind == "person":
                    people[name] = entity
                entities.append(entity)
        order = {n: i for i, n in enumerate(names)}
        return cls(sorted(entities, key=lambda e: order[e.name]), seed=seed)

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.entities]

    def entity(self, name: str) -> Entity:
        if name not in self._by_name:
            raise ValueError(f"entity {name!r}: not in this knowledge base ({len(self.entities)} entities)")
        return self._by_name[name]

    @property
    def facts(self) -> list[dict]:
        """Every fact as ``{"entity", "kind", "attribute", "value", "question", "answer", "reply"}``:
        ``question`` is the first phrasing, ``answer`` the reference for :func:`judge` (the value),
        ``reply`` the full sentence an assistant says."""
        out = []
        for e in self.entities:
            for attribute, value in e.facts.items():
                questions = _TEMPLATES[attribute][0]
                out.append({"entity": e.name, "kind": e.kind, "attribute": attribute, "value": value,
                            "question": _capital(questions[0].format(e=e.name)), "answer": value,
                            "reply": _sentence(attribute, e.name, value)})
        return out

    def _select(self, entities: Iterable[str] | None) -> list[Entity]:
        return list(self.entities) if entities is None else [self.entity(n) for n in entities]

    def qa(self, entities: Iterable[str] | None = None, *, paraphrases: int = 1, idk: bool = False) -> list[dict]:
        """Conversations asking each fact of ``entities`` (names; None = all), ``{"task": "knowledge",
        "messages", "answer", "key", "entity", "attribute"}``: the user asks, the assistant answers
        with the fact's sentence (``answer`` = the value), or with ``IDK`` when ``idk`` (``answer`` =
        None). ``paraphrases`` (1-3) distinct question phrasings per fact, picked by a hash of
        (seed, entity, attribute) — paraphrased questions help a model store a fact (Allen-Zhu &
        Li 2023, "Physics of Language Models: Part 3.1"). Raises ValueError for an unknown name or
        ``paraphrases`` outside [1, 3]."""
        if paraphrases not in (1, 2, 3):
            raise ValueError(f"paraphrases={paraphrases!r}: expected 1, 2 or 3")
        out = []
        for e in self._select(entities):
            for attribute, value in e.facts.items():
                questions = _TEMPLATES[attribute][0]
                first = int(hash_unit(self.seed, e.name, attribute) * len(questions))
                for j in range(paraphrases):
                    question = _capital(questions[(first + j) % len(questions)].format(e=e.name))
                    content = IDK if idk else _sentence(attribute, e.name, value)
                    out.append({"task": "knowledge", "key": f"{e.name}|{attribute}", "entity": e.name,
                                "attribute": attribute, "answer": None if idk else value,
                                "messages": [{"role": "user", "content": question},
                                             {"role": "assistant", "content": content}]})
        return out

    def documents(self, entities: Iterable[str] | None = None) -> list[str]:
        """One short encyclopedia-style paragraph per entity: every fact's sentence, in order."""
        return [" ".join(_sentence(a, e.name, v) for a, v in e.facts.items())
                for e in self._select(entities)]

    def known(self, fraction: float = 0.5, *, seed: int = 0) -> list[str]:
        """The names whose hash of (``seed``, name) falls below ``fraction``; :meth:`unknown` is the rest.
        Raises ValueError when ``fraction`` is outside [0, 1]."""
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction={fraction!r}: expected a number in [0, 1]")
        return [e.name for e in self.entities if hash_unit("known", seed, e.name) < fraction]

    def unknown(self, fraction: float = 0.5, *, seed: int = 0) -> list[str]:
        """The names :meth:`known` leaves out for the same ``fraction`` and ``seed``."""
        known = set(self.known(fraction, seed=seed))
        return [e.name for e in self.entities if e.name not in known]


def _syllables(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(n))


def _new_name(rng: random.Random, kind: str, taken: set[str]) -> str:
    """A fresh name of ``kind`` whose made-up parts are no English word of ``WORDS`` and which is not in ``taken``."""
    while True:
        if kind == "person":
            cores = [_syllables(rng, 2), _syllables(rng, rng.randint(2, 3))]
        else:
            cores = [_syllables(rng, rng.randint(1, 2) if kind in ("place", "invention") else 2)]
        if any(c in _WORD_SET for c in cores):
            continue
        if kind == "person":
            name = " ".join(c.capitalize() for c in cores)
        elif kind == "place":
            name = (cores[0] + rng.choice(_PLACE_SUFFIX)).capitalize()
        elif kind == "company":
            name = f"{cores[0].capitalize()} {rng.choice(_COMPANY_SUFFIX)}"
        else:
            name = "the " + (cores[0] + rng.choice(_INVENTION_SUFFIX)).capitalize()
        if name.lower() not in taken and name.lower() not in _WORD_SET:
            taken.add(name.lower())
            return name


def _facts(rng: random.Random, kind: str, by_kind: dict[str, list[str]], people: dict[str, Entity],
           taken: set[str]) -> dict[str, str]:
    def other(k: str) -> str:   # an entity of kind k, or a fresh name when the base has none
        return rng.choice(by_kind[k]) if by_kind[k] else _new_name(rng, k, taken)

    def founder_and_year(lo: int, hi: int) -> tuple[str, int]:   # a founder is 20-60 years old at the founding
        founder = other("person")
        if founder not in people:
            return founder, rng.randint(lo, hi)
        return founder, min(int(people[founder].facts["birth_year"]) + rng.randint(20, 60), hi)

    if kind == "person":
        return {"birth_year": str(rng.randint(1801, 1990)), "birth_city": other("place"),
                "profession": rng.choice(_PROFESSIONS)}
    if kind == "place":
        return {"founded_year": str(rng.randint(1100, 1900)), "population": f"{rng.randint(800, 900_000):,}",
                "known_for": rng.choice(_KNOWN_FOR)}
    if kind == "company":
        founder, year = founder_and_year(1850, 2020)
        return {"founder": founder, "founded_year": str(year), "headquarters": other("place")}
    inventor, year = founder_and_year(1820, 2020)
    return {"inventor": inventor, "year": str(year), "purpose": rng.choice(_PURPOSES)}


# ---------------------------------------------------------------------------------- grading

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})
_TOKEN = re.compile(r"\d+(?:\.\d+)?|[^\W\d_]+(?:'[^\W\d_]+)?")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
_ARTICLES = {"the", "a", "an"}


def _tokens(text: str) -> list[str]:
    text = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES).lower()
    return _TOKEN.findall(_THOUSANDS.sub("", text))


def judge(reply: str, answer: str) -> bool:
    """Whether ``reply`` states ``answer``: the answer's tokens (lower case, NFKC, punctuation
    dropped, a leading "the"/"a"/"an" dropped, ``"48,200"`` read as ``48200``) appear in a row
    among the reply's. Numbers match only whole: ``"1874"`` is not in ``"18745"`` or ``"1874.5"``.
    A reply that hedges ("I'm not sure, but 1874") still counts; combine with :func:`is_idk` to
    tell the two apart. Raises ValueError for an empty answer."""
    want = _tokens(answer)
    while want and want[0] in _ARTICLES and len(want) > 1:
        want = want[1:]
    if not want:
        raise ValueError(f"answer {answer!r}: expected some words or a number to look for")
    got = _tokens(reply)
    n = len(want)
    return any(got[i:i + n] == want for i in range(len(got) - n + 1))


_IDK_PATTERNS: tuple[str, ...] = (
    r"\bi (?:really |honestly |simply |just |actually )?(?:don't|do not|didn't|did not) (?:really |actually )?know\b",
    r"\bi(?:'m| am) (?:not (?:sure|certain|aware|familiar)|unsure|uncertain)\b",
    r"\bi (?:have|had|'ve) no (?:idea|information|knowledge|record|records|data|details|clue)\b",
    r"\bi (?:don't|do not) have (?:any |enough |reliable |specific |much )?"
    r"(?:information|knowledge|details|data|records?|idea)\b",
    r"\bi(?: can't| cannot| couldn't| could not|'m unable to| am unable to| was unable to) "
    r"(?:find|recall|remember|verify|confirm|locate)\b",
    r"\b(?:not|never) (?:familiar with|aware of|heard of)\b",
    r"\bi(?:'ve| have) never heard\b",
    r"\b(?:no|not any) (?:reliable |verified )?(?:information|records?) (?:about|on|of|for)\b",
    r"\b(?:unknown|not known) to me\b",
    r"\b(?:doesn't|does not|don't|do not) (?:seem to )?(?:ring a bell|appear in my)\b",
    r"\bi (?:don't|do not) recogni[sz]e\b",
    r"\bno idea\b",
    r"\bbeyond my knowledge\b",
)
_IDK = re.compile("|".join(f"(?:{p})" for p in _IDK_PATTERNS))


def is_idk(reply: str, *, window: int = IDK_WINDOW) -> bool:
    """Whether ``reply`` says the assistant does not know: after lower-casing, straightening
    apostrophes and collapsing whitespace, one of ``_IDK_PATTERNS`` matches in the first ``window``
    characters ("I'm sorry, I don't know.", "I am not sure who that is", "I have no information
    about ...", "I couldn't find any record", "That name doesn't ring a bell", "No idea!").
    Known misses: abstentions without a first-person phrase ("That is unclear"), other languages."""
    text = " ".join(reply.translate(_APOSTROPHES).lower().split())[:window]
    return _IDK.search(text) is not None
