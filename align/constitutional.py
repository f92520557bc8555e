"""Constitutional AI (Bai et al. 2022, "Constitutional AI: Harmlessness from AI Feedback"): a list of
principles written in plain language, and a model that uses them on its own answers — no human labels
for harmlessness.

Two data-making steps, each a function of any chat model handed in as a callable, so they run with an
``lmforge.infer.Sampler`` (``chat_replies``), an imported transformers model or a scripted fake:

- **Critique and revision** (the paper's supervised stage, SL-CAI), :func:`critique_revise`: the model
  answers a red-team prompt; a user turn asks it to critique its answer by a principle drawn at random
  from ``principles``; the next asks it to rewrite the answer; rounds repeat with fresh principles in
  the same conversation (Sec. 3.1). :func:`revision_conversations` turns the final revisions into SFT
  conversations (prompt + revision), which ``lmforge.align.sft`` fine-tunes on. The conversation is
  chat turns — user: prompt, assistant: answer, user: critique request, assistant: critique, user:
  revision request, assistant: revision — as the Hugging Face H4 recipe does with chat models;
  ``examples`` (few-shot conversations in that form) go before each one.
- **AI feedback** (the reinforcement-learning stage, RL-CAI / RLAIF), :func:`ai_feedback`: for two
  answers to one prompt, the feedback model reads the paper's multiple-choice question (Sec. 4.1)

      Consider the following conversation between a human and an assistant:
      Human: ...
      Assistant: ...
      <a feedback principle, drawn at random>
      Options:
      (A) <answer a>
      (B) <answer b>
      The answer is:

  as one user turn, and the log-probabilities of its replies ``"(A)"`` and ``"(B)"`` give the label:
  ``p_a``, the normalised probability that (A) is better. The question is asked twice with the options
  swapped and the two probabilities averaged, which cancels a model's preference for a letter
  (position bias; the paper's soft labels are the normalised probabilities of one order).
  :func:`preference_pairs` keeps the pairs whose label is confident enough as chosen/rejected records
  in TRL's format, which ``lmforge.align.dpo`` (or a reward model, ``lmforge.align.reward``) reads.

``CONSTITUTION`` and ``FEEDBACK`` (name -> text; ``FEEDBACK_PRINCIPLES`` its texts) are principles of
the paper's Appendix C (its first three critique/revision pairs and three of its comparison
principles); pass your own for another constitution. ``lmforge.align.cai_privacy`` runs both stages
end to end on invented people whose private details a helpful-only model gives out.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable, Mapping, Sequence

from lmforge.data.chat import check_messages

Conversation = list[dict]
Reply = Callable[[list[Conversation]], list[str]]     # one assistant reply per conversation, in order
ScoreReplies = Callable[[list[Conversation], list[str]], list[float]]   # log p(reply | conversation), nats


@dataclasses.dataclass(frozen=True)
class Principle:
    """One principle of a constitution: what to criticise and how to rewrite (two user turns), and a
    short name to pick it by in configs."""
    name: str
    critique: str
    revision: str

    def __post_init__(self):
        if not self.critique.strip() or not self.revision.strip():
            raise ValueError(f"Principle {self.name!r}: critique={self.critique!r}, revision={self.revision!r}; "
                             f"expected two non-empty requests")


CONSTITUTION: tuple[Principle, ...] = (
    Principle("harmful",
              "Identify specific ways in which the assistant's last response is harmful, unethical, racist, sexist, "
              "toxic, dangerous, or illegal.",
              "Please rewrite the assistant response to remove any and all harmful, unethical, racist, sexist, toxic, "
              "dangerous, or illegal content."),
    Principle("harm_to_others",
              "Explain ways in which the assistant's preceding response may be harmful to either the human or "
              "others. For example, if the assistant says anything that encourages dangerous or illegal activity, "
              "make sure to point it out. Other examples of harm include racism, sexism, and other social biases.",
              "Please rewrite the assistant response to remove any and all harmful content, including anything "
              "dangerous, illegal, racist, sexist or socially biased."),
    Principle("socially_biased",
              "Identify all ways in which the assistant's last response is harmful, unethical, or socially biased. "
              "Furthermore, provide specific details on how the assistant can improve its response.",
              "Please rewrite the assistant response to remove all harmful, unethical, or socially biased content, "
              "and move the conversation in a positive direction."),
)

FEEDBACK: dict[str, str] = {
    "less_harmful": "Which of these assistant responses is less harmful? Choose the response that a wise, ethical, "
                    "polite and friendly person would more likely say.",
    "helpful_honest_harmless": "Please choose the response that is the most helpful, honest, and harmless.",
    "degree_of_harm": "Compare the degree of harmfulness in the assistant responses and choose the one that's less "
                      "harmful. However, try to avoid choosing responses that are too preachy, obnoxious or "
                      "overly-reactive.",
}
FEEDBACK_PRINCIPLES: tuple[str, ...] = tuple(FEEDBACK.values())
OPTIONS = ("(A)", "(B)")


def _rng(seed: int, *key) -> random.Random:
    return random.Random(":".join(map(str, ("lmforge.constitutional", seed, *key))))


def _check_principles(principles, kind, what: str) -> None:
    if (isinstance(principles, (str, Mapping)) or not isinstance(principles, Sequence) or not principles
            or not all(isinstance(p, kind) for p in principles)):
        raise ValueError(f"principles={_short(principles)}: expected a non-empty sequence of {what}")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _check_prompts(prompts: Sequence[Sequence[Mapping]]) -> list[Conversation]:
    out = []
    for i, p in enumerate(prompts):
        p = check_messages(p, where=f"prompt {i}")
        if p[-1]["role"] != "user":
            raise ValueError(f"prompt {i} ends with a {p[-1]['role']} turn; expected the user turn to answer")
        out.append(p)
    return out


def _replies(reply: Reply, conversations: list[Conversation], what: str) -> list[str]:
    got = list(reply([[dict(m) for m in c] for c in conversations]))
    if len(got) != len(conversations) or not all(isinstance(r, str) for r in got):
        raise ValueError(f"reply gave {len(got)} {what} for {len(conversations)} conversations; expected one string "
                         f"per conversation")
    return [r.strip() for r in got]


# ------------------------------------------------------------------------------ critique and revision


def critique_revise(reply: Reply, prompts: Sequence[Sequence[Mapping]], principles: Sequence[Principle] = CONSTITUTION,
                    *, responses: Sequence[str] | None = None, revisions: int = 1,
                    examples: Sequence[Sequence[Mapping]] = (), seed: int = 0) -> list[dict]:
    """The supervised stage's data: each prompt answered, then critiqued and revised ``revisions`` times.

    ``reply(conversations)`` gives the model's next assistant turn for each conversation (all prompts
    go in one call per step: answer, then critique and revision of each round; build it with
    ``lmforge.infer.replier``, which seeds each call anew — the same key at every step would drive the
    critique and the revision by the same noise). Replies are stripped of surrounding whitespace.
    ``prompts``: message lists ending with the user turn to answer. ``responses``: the first answers,
    when already sampled (else ``reply`` gives them). Round ``r`` of prompt ``i`` uses a principle drawn by a seeded
    ``random.Random`` from ``(seed, i, r)``: the same inputs give the same draws. ``examples``:
    few-shot conversations, each ending with an assistant turn, put before each conversation the model
    reads (not in the records). The conversation grows by four turns a round: with ``examples`` it can
    outgrow a small model's context, and what the model does then is its own (an ``lmforge.infer.Sampler``
    keeps the last half of its context and says so on stderr) — keep the examples short.

    Returns one record per prompt: ``{"prompt", "response", "principles": [Principle.name per round],
    "critiques": [str per round], "revisions": [str per round], "revision": the last one,
    "messages": the whole conversation}``.

    Raises ValueError for a prompt that is not a valid conversation ending with a user turn, an example
    that does not end with an assistant turn, ``responses`` of another length, ``revisions`` < 1,
    ``principles`` that are not a non-empty sequence of ``Principle``, or a ``reply`` that does not give
    one string per conversation."""
    prompts = _check_prompts(prompts)
    if revisions < 1:
        raise ValueError(f"revisions={revisions}: expected >= 1 critique-and-revision rounds")
    _check_principles(principles, Principle, "Principle (e.g. CONSTITUTION)")
    shots = []
    for k, example in enumerate(examples):
        example = check_messages(example, where=f"example {k}")
        if example[-1]["role"] != "assistant":
            raise ValueError(f"example {k} ends with a {example[-1]['role']} turn; expected an assistant turn (a "
                             f"whole exchange, before the prompt's user turn)")
        shots += example
    if responses is None:
        responses = _replies(reply, [shots + p for p in prompts], "responses")
    elif len(responses) != len(prompts):
        raise ValueError(f"{len(responses)} responses for {len(prompts)} prompts; expected one each")
    convs = [p + [{"role": "assistant", "content": r}] for p, r in zip(prompts, responses)]
    picks = [[_rng(seed, i, r).randrange(len(principles)) for r in range(revisions)] for i in range(len(prompts))]
    critiques: list[list[str]] = [[] for _ in prompts]
    revised: list[list[str]] = [[] for _ in prompts]
    for r in range(revisions):
        for turn, out in (("critique", critiques), ("revision", revised)):
            for conv, pick in zip(convs, picks):
                conv.append({"role": "user", "content": getattr(principles[pick[r]], turn)})
            for conv, text, mine in zip(convs, _replies(reply, [shots + c for c in convs], f"{turn}s"), out):
                conv.append({"role": "assistant", "content": text})
                mine.append(text)
    return [{"prompt": p, "response": resp, "principles": [principles[k].name for k in pick], "critiques": c,
             "revisions": v, "revision": v[-1], "messages": conv}
            for p, resp, pick, c, v, conv in zip(prompts, responses, picks, critiques, revised, convs)]


def revision_conversations(records: Sequence[Mapping]) -> list[Conversation]:
    """SFT conversations from :func:`critique_revise` records: each prompt answered by its final revision."""
    return [list(r["prompt"]) + [{"role": "assistant", "content": r["revision"]}] for r in records]


# ------------------------------------------------------------------------------------- AI feedback


def transcript(messages: Sequence[Mapping]) -> str:
    """A conversation as the paper's text: ``Human: ...`` / ``Assistant: ...`` turns, one per
    paragraph (system turns as ``System: ...``)."""
    names = {"user": "Human", "assistant": "Assistant", "system": "System", "tool": "Tool"}
    return "\n\n".join(f"{names.get(m['role'], m['role'])}: {m['content']}" for m in messages)


def feedback_question(prompt: Sequence[Mapping], a: str, b: str, principle: str) -> str:
    """The multiple-choice question of the module docstring, asking which of answers ``a`` (A) and
    ``b`` (B) to ``prompt`` better follows ``principle``."""
    return (f"Consider the following conversation between a human and an assistant:\n\n{transcript(prompt)}\n\n"
            f"{principle}\nOptions:\n{OPTIONS[0]} {a}\n{OPTIONS[1]} {b}\nThe answer is:")


def ai_feedback(score: ScoreReplies, prompts: Sequence[Sequence[Mapping]], pairs: Sequence[tuple[str, str]],
                principles: Sequence[str] = FEEDBACK_PRINCIPLES, *, seed: int = 0) -> list[dict]:
    """AI preference labels for two answers to each prompt.

    ``score(conversations, replies)`` gives ``log p(reply | conversation)`` in nats for an assistant
    reply after each conversation (:func:`lmforge.eval.scoring.chat_logprobs` with a ``Scorer`` and a
    chat template bound gives one; it refuses a question longer than the model's context rather than
    cut off its start, where the conversation and option (A) are). ``principles``: the questions'
    texts (``FEEDBACK_PRINCIPLES``, or ``[FEEDBACK[name], ...]``). For prompt ``i`` one is drawn by a
    seeded ``random.Random`` from ``(seed, i)``; the question is asked with ``(a, b)`` and with
    ``(b, a)``, and each order's options normalised against each other (a softmax over the two
    log-probabilities of the letters).

    Returns one record per pair: ``{"prompt", "responses": [a, b], "principle": its text, "p_a": the mean
    probability that a is the better answer over both orders, in [0, 1], "p_a_orders": [from (a, b),
    from (b, a)]}``. Identical answers get ``p_a`` 0.5 without being asked.

    Raises ValueError for prompts that are not conversations ending with a user turn, a number of
    pairs other than the number of prompts, ``principles`` that are not a non-empty sequence of
    strings (a single string or a mapping is refused), or a ``score`` that does not give one finite
    number (int, float, a numpy or a 0-d JAX number) per request."""
    prompts = _check_prompts(prompts)
    if len(pairs) != len(prompts):
        raise ValueError(f"{len(pairs)} pairs for {len(prompts)} prompts; expected one pair of answers each")
    _check_principles(principles, str, "feedback principle texts (e.g. FEEDBACK_PRINCIPLES)")
    picks = [_rng(seed, "feedback", i).randrange(len(principles)) for i in range(len(prompts))]
    asked = [i for i, (a, b) in enumerate(pairs) if a != b]
    convs, replies = [], []
    for i in asked:
        a, b = pairs[i]
        for first, second in ((a, b), (b, a)):
            question = [{"role": "user", "content": feedback_question(prompts[i], first, second, principles[picks[i]])}]
            convs += [question, question]
            replies += list(OPTIONS)
    logps = _floats(score(convs, replies), len(convs))
    p_orders: dict[int, list[float]] = {}
    for k, i in enumerate(asked):
        ab_a, ab_b, ba_a, ba_b = logps[4 * k:4 * k + 4]
        p_orders[i] = [_softmax_first(ab_a, ab_b), _softmax_first(ba_b, ba_a)]   # (b, a): a is option B
    return [{"prompt": p, "responses": list(pair), "principle": principles[pick],
             "p_a": sum(p_orders[i]) / 2 if i in p_orders else 0.5, "p_a_orders": p_orders.get(i, [0.5, 0.5])}
            for i, (p, pair, pick) in enumerate(zip(prompts, pairs, picks))]


def _floats(values, n: int) -> list[float]:
    """``values`` as n finite Python floats, or ValueError saying what was wrong."""
    values = list(values)
    if len(values) != n:
        raise ValueError(f"score gave {len(values)} values for {n} requests; expected one log-probability per request")
    out = []
    for i, x in enumerate(values):
        try:
            x = float(x)
        except (TypeError, ValueError):
            raise ValueError(f"score gave {_short(values[i])} for request {i}; expected a number") from None
        if not math.isfinite(x):
            raise ValueError(f"score gave {x} for request {i}; expected a finite log-probability")
        out.append(x)
    return out


def _softmax_first(x: float, y: float) -> float:
    """exp(x) / (exp(x) + exp(y)), computed without overflow."""
    return 1.0 / (1.0 + math.exp(min(y - x, 700.0)))


def preference_pairs(records: Sequence[Mapping], *, margin: float = 0.0) -> list[dict]:
    """Chosen/rejected records (TRL's format: ``{"prompt": messages, "chosen": [assistant turn],
    "rejected": [assistant turn], "p_chosen"}``) from :func:`ai_feedback` records whose label is more
    than ``margin`` away from a tie (``|p_a - 0.5| > margin``): the default 0 keeps every pair but exact
    ties and identical answers, however unsure the label; raise it to keep only confident ones.
    ``p_chosen`` (the label's confidence, in (0.5, 1]) is kept for soft-label losses: DPO reads it with
    ``soft_labels=True`` (``lmforge.align.dpo.DPOConfig``), its hard labels otherwise. Raises ValueError for a margin outside [0, 0.5)."""
    if not 0.0 <= margin < 0.5:
        raise ValueError(f"margin={margin}: expected [0, 0.5), how far from a tie a label must be to keep the pair")
    out = []
    for r in records:
        a, b = r["responses"]
        if a == b or abs(r["p_a"] - 0.5) <= margin:
            continue
        chosen, rejected = (a, b) if r["p_a"] > 0.5 else (b, a)
        out.append({"prompt": list(r["prompt"]), "chosen": [{"role": "assistant", "content": chosen}],
                    "rejected": [{"role": "assistant", "content": rejected}], "p_chosen": max(r["p_a"], 1 - r["p_a"])})
    return out


__all__ = ["CONSTITUTION", "FEEDBACK", "FEEDBACK_PRINCIPLES", "OPTIONS", "Principle", "ai_feedback", "critique_revise",
           "feedback_question", "preference_pairs", "revision_conversations", "transcript"]
