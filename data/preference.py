"""Preference pairs — a prompt, a chosen reply and a rejected one — read from the data sets people
have, and turned into the pair-stacked arrays that DPO and reward models train on.

    pairs, stats = read_preferences("hh_rlhf_harmless_base_test.jsonl.gz")   # the format is detected
    examples, enc = preference_examples(pairs, template, seq_len=256)
    batches = preference_dataset(examples, batch_size=16, seed=0)             # grain, endless, checkpointable

A pair is ``{"prompt": [messages], "chosen": [messages], "rejected": [messages]}`` in
``lmforge.data.chat``'s ``{"role", "content"}`` messages; the prompt ends where the two replies part.

Formats (one JSON object per line, ``.jsonl`` or ``.jsonl.gz``, or one JSON array):

- ``hh`` (Anthropic HH-RLHF): ``{"chosen": "\\n\\nHuman: ...\\n\\nAssistant: ...", "rejected": ...}``,
  two whole transcripts (``lmforge.data.chat_readers.parse_hh_transcript``). The prompt is their
  longest common run of turns that is followed by an assistant turn in both, and each reply is
  the rest of its transcript — as TRL's ``extract_prompt`` does for an implicit prompt.
- ``trl`` (TRL's preference format): ``{"prompt", "chosen", "rejected"}`` with strings (the prompt
  a user turn, the replies assistant turns) or lists of OpenAI messages (conversational); without
  ``"prompt"``, ``chosen`` and ``rejected`` are whole conversations and the prompt is found as for
  ``hh``.

Nothing is dropped silently: a malformed record is a one-line ValueError naming ``file:line``; a
pair whose transcripts never part (identical replies) or share no prompt is skipped and counted in
:class:`~lmforge.data.chat_readers.ReadStats`, as are kept pairs with an empty reply.

Encoding (:func:`preference_examples`) renders ``prompt + reply`` through the chat template for
each side: weights are 1 on the reply's assistant tokens only (its role marker is the prompt's
generation prompt and weighs 0), as TRL's ``completion_mask``. A side longer than ``seq_len + 1``
tokens is cut at the end (``overflow="truncate"``, TRL's default ``keep_start``: a long prompt can
leave no reply token, and the pair is left out), cut at the start (``"truncate_start"``, TRL's
``keep_end``: the reply stays whole and the prompt loses its first turns, bos included) or the pair
is left out (``"drop"``); all counted in :class:`PreferenceStats`. Rows are right-padded (weight 0),
which a causal model needs no mask for.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Iterable, Mapping, Sequence

import grain
import numpy as np

from lmforge.data.chat import ChatTemplate, check_messages
from lmforge.data.chat_readers import ReadStats, _from_messages, _records, _short, parse_hh_transcript

PREFERENCE_FORMATS = ("hh", "trl")
# A side longer than seq_len + 1 tokens: cut at the end (TRL's default "keep_start"), cut at the start (TRL's
# "keep_end": the reply stays whole, the prompt loses its first tokens), or the pair left out.
PREFERENCE_OVERFLOW = ("truncate", "truncate_start", "drop")
SIDES = ("chosen", "rejected")
_READ = grain.ReadOptions(num_threads=2, prefetch_buffer_size=8)


def read_preferences(path, format: str = "auto") -> tuple[list[dict], ReadStats]:
    """Every preference pair of a file, in file order, with what was skipped.

    Args:
      path: a ``.jsonl`` / ``.jsonl.gz`` file or a ``.json`` array (see the module docstring).
      format: one of ``PREFERENCE_FORMATS``, or ``"auto"``: ``hh`` when the first record's
        ``chosen`` is an HH-RLHF transcript (a string starting ``"\\n\\nHuman:"``), else ``trl``.

    Returns:
      ``(pairs, stats)``: each pair ``{"prompt", "chosen", "rejected"}``, each a list of
      ``{"role", "content"}`` dicts, and ``"p_chosen"`` when the record has one (a soft label: the
      probability that chosen is the better reply, as AI feedback gives it; see
      :func:`preference_examples`); ``stats.conversations`` counts the pairs kept.

    Raises:
      FileNotFoundError: no such file.
      ValueError: an unknown ``format``, or a malformed record naming ``file:line``.
    """
    if format != "auto" and format not in PREFERENCE_FORMATS:
        raise ValueError(f"format={format!r}: expected auto or one of {', '.join(PREFERENCE_FORMATS)}")
    path = pathlib.Path(path)
    stats = ReadStats(path=str(path), format=format, unit="pairs")
    pairs = []
    for where, record in _records(path, stats):
        if not isinstance(record, Mapping) or "chosen" not in record or "rejected" not in record:
            raise ValueError(f"{where}: expected a JSON object with \"chosen\" and \"rejected\" (and, in TRL's "
                             f"format, \"prompt\"), got {_short(record)}")
        if stats.format == "auto":
            chosen = record["chosen"]
            stats.format = "hh" if isinstance(chosen, str) and chosen.startswith("\n\nHuman:") else "trl"
        pair = _from_hh(record, where) if stats.format == "hh" else _from_trl(record, where)
        if isinstance(pair, str):
            stats.skipped[pair] += 1
            continue
        if "p_chosen" in record:
            pair["p_chosen"] = _probability(record["p_chosen"], where)
        if any(not "".join(m["content"] for m in pair[s]).strip() for s in SIDES):
            stats.irregular["with an empty reply"] += 1
        pairs.append(pair)
    stats.conversations = len(pairs)
    if stats.format == "auto":
        stats.format = "empty"
    return pairs, stats


def _probability(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{where}: \"p_chosen\" is {_short(value)}; expected a probability in [0, 1] that the "
                         f"chosen reply is the better one")
    return float(value)


def split_prompt(chosen: list[dict], rejected: list[dict]) -> dict | str:
    """Two whole conversations → ``{"prompt", "chosen", "rejected"}``: the prompt is their longest
    common run of messages after which both go on with an assistant turn. Returns the reason
    instead (a string, for :class:`ReadStats`' skip counts) when the two are identical or share no
    prompt with a user turn in it."""
    if chosen == rejected:
        return "pairs with identical chosen and rejected"
    k = 0
    while k < min(len(chosen), len(rejected)) and chosen[k] == rejected[k]:
        k += 1
    while k > 0 and not (k < len(chosen) and k < len(rejected)
                         and chosen[k]["role"] == rejected[k]["role"] == "assistant"):
        k -= 1
    if not any(m["role"] == "user" for m in chosen[:k]):
        return "pairs with no shared prompt before the replies part"
    return {"prompt": chosen[:k], "chosen": chosen[k:], "rejected": rejected[k:]}


def _from_hh(record: Mapping, where: str) -> dict | str:
    sides = []
    for side in SIDES:
        if not isinstance(record[side], str):
            raise ValueError(f"{where}: \"{side}\" is {_short(record[side])}; expected an HH-RLHF transcript string")
        sides.append(parse_hh_transcript(record[side], where=f"{where}: {side}"))
    return split_prompt(*sides)


def _from_trl(record: Mapping, where: str) -> dict | str:
    def messages(key: str, role: str) -> list[dict]:
        value = record[key]
        if isinstance(value, str):
            return [{"role": role, "content": value}]
        if isinstance(value, list):
            return check_messages(_from_messages({"messages": value}, f"{where}: \"{key}\"", key, None),
                                  where=f"{where}: \"{key}\"")
        raise ValueError(f"{where}: \"{key}\" is {_short(value)}; expected a string or a list of "
                         f"{{\"role\", \"content\"}} messages")

    chosen, rejected = messages("chosen", "assistant"), messages("rejected", "assistant")
    if "prompt" not in record:
        return split_prompt(chosen, rejected)
    prompt = messages("prompt", "user")
    for side, reply in zip(SIDES, (chosen, rejected)):
        if reply[0]["role"] != "assistant":
            raise ValueError(f"{where}: \"{side}\" starts with a {reply[0]['role']} message; expected the "
                             f"assistant's reply to the prompt")
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


# ------------------------------------------------------------------------------------ encoding
@dataclasses.dataclass
class PreferenceStats:
    """What happened to the pairs on their way into examples (all counts)."""
    pairs: int = 0
    kept: int = 0
    truncated: int = 0               # a side longer than seq_len + 1 tokens, cut (at the end or the start)
    dropped_too_long: int = 0        # a side longer than seq_len + 1 tokens, left out (overflow="drop")
    dropped_no_reply: int = 0        # no reply token left on a side within seq_len
    dropped_identical: int = 0       # chosen and rejected the same tokens within seq_len: no preference to learn
    reply_tokens: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(SIDES, 0))

    def summary(self) -> str:
        hint = (" — prompts that fill the context: data.overflow=truncate_start cuts a prompt's start instead, or "
                "raise data.seq_len" if self.dropped_no_reply else "")
        return (f"{self.kept}/{self.pairs} pairs kept ({self.truncated} truncated, {self.dropped_too_long} dropped "
                f"as too long, {self.dropped_no_reply} with no reply token within the context{hint}, "
                f"{self.dropped_identical} with chosen identical to rejected); reply tokens: "
                f"chosen {self.reply_tokens['chosen']:,}, rejected {self.reply_tokens['rejected']:,}")


def preference_examples(pairs: Iterable[Mapping], template: ChatTemplate, seq_len: int, *,
                        overflow: str = "truncate", where: str = "pair", soft_labels: bool = False
                        ) -> tuple[list[dict[str, np.ndarray]], PreferenceStats]:
    """Pairs → examples ``{"inputs", "targets", "weights", "segment_ids"}``, each ``(2, seq_len)``
    (row 0 chosen, row 1 rejected): ``inputs = ids[:-1]``, ``targets = ids[1:]``, right-padded with 0;
    ``weights`` (float32) 1 on the reply's trained tokens; ``segment_ids`` 1 on real tokens, 0 on
    padding. With ``soft_labels`` each example also has ``labels`` ``(2,)`` float32 ``[p, 1 - p]``,
    ``p`` the pair's ``p_chosen`` (1 when it has none): the targets of a soft-label DPO loss.

    A pair whose two sides are the same tokens within ``seq_len`` (chosen == rejected, or equal once
    cut) is left out and counted (``dropped_identical``). Raises ValueError naming ``f"{where} {i}"``
    for an invalid pair, a template that does not render the prompt as a prefix of prompt + reply, or
    an unknown ``overflow``.
    """
    if overflow not in PREFERENCE_OVERFLOW:
        raise ValueError(f"overflow={overflow!r}: expected one of {', '.join(PREFERENCE_OVERFLOW)}")
    if seq_len < 1:
        raise ValueError(f"seq_len={seq_len}: expected >= 1")
    stats, out = PreferenceStats(), []
    for i, pair in enumerate(pairs):
        stats.pairs += 1
        name = f"{where} {i}"
        prompt = check_messages(pair["prompt"], where=f"{name} prompt")
        rows, cut, too_long = [], False, False
        for side in SIDES:
            reply = check_messages(pair[side], where=f"{name} {side}", need_assistant=True)
            ids, weights = encode_reply(template, prompt, reply, f"{name} {side}")
            if len(ids) > seq_len + 1:
                too_long, cut = True, overflow != "drop"
                keep = slice(-(seq_len + 1), None) if overflow == "truncate_start" else slice(seq_len + 1)
                ids, weights = ids[keep], weights[keep]
            rows.append((ids, weights))
        if too_long and overflow == "drop":
            stats.dropped_too_long += 1
            continue
        if not all(w[1:].any() for _, w in rows):
            stats.dropped_no_reply += 1
            continue
        if np.array_equal(rows[0][0], rows[1][0]):   # the loss is log 2 whatever the weights: only float noise
            stats.dropped_identical += 1             # would move them (Adam scales it up to lr-sized steps)
            continue
        stats.kept += 1
        stats.truncated += cut
        example = {"inputs": np.zeros((2, seq_len), np.int32), "targets": np.zeros((2, seq_len), np.int32),
                   "weights": np.zeros((2, seq_len), np.float32), "segment_ids": np.zeros((2, seq_len), np.int32)}
        if soft_labels:
            p = float(pair.get("p_chosen", 1.0))
            example["labels"] = np.array([p, 1.0 - p], np.float32)
        for row, (side, (ids, weights)) in enumerate(zip(SIDES, rows)):
            n = len(ids) - 1
            example["inputs"][row, :n], example["targets"][row, :n] = ids[:-1], ids[1:]
            example["weights"][row, :n] = weights[1:]
            example["segment_ids"][row, :n] = 1
            stats.reply_tokens[side] += int(weights[1:].sum())
        out.append(example)
    return out, stats


def reward_examples(pairs: Iterable[Mapping], template: ChatTemplate, seq_len: int, *,
                    overflow: str = "truncate_start", where: str = "pair"
                    ) -> tuple[list[dict[str, np.ndarray]], PreferenceStats]:
    """Pairs → a reward model's examples ``{"tokens", "segment_ids"}``, each ``(2, seq_len)`` int32 (row 0
    chosen, row 1 rejected): each side's whole rendered conversation (prompt + reply + end of turn +
    eos, at most ``seq_len`` tokens, cut or dropped by ``overflow`` as :func:`preference_examples`
    does), right-padded with 0; ``segment_ids`` 1 on real tokens. The reward is read at each row's last
    real token (``DecoderLM.scores``), as TRL's ``RewardTrainer`` reads its sequences'.

    Raises ValueError as :func:`preference_examples` does, and for ``seq_len < 2``."""
    if seq_len < 2:
        raise ValueError(f"seq_len={seq_len}: expected >= 2 (a reward model reads whole sequences)")
    shifted, stats = preference_examples(pairs, template, seq_len - 1, overflow=overflow, where=where)
    out = []
    for ex in shifted:
        n = ex["segment_ids"].sum(-1)                                         # (2,) input tokens per side
        tokens = np.zeros((2, seq_len), np.int32)
        tokens[:, :-1] = ex["inputs"]
        tokens[np.arange(2), n] = ex["targets"][np.arange(2), n - 1]           # the last id, a target only
        out.append({"tokens": tokens, "segment_ids": (np.arange(seq_len) <= n[:, None]).astype(np.int32)})
    return out, stats


def conversation_rows(conversations: Sequence[Sequence[Mapping]], template: ChatTemplate, seq_len: int
                      ) -> dict[str, np.ndarray]:
    """Whole conversations (each a list of messages) → a reward model's rows ``{"tokens", "segment_ids"}``,
    each ``(N, seq_len)`` int32: the rendered conversation (prompt + reply + end of turn + eos), its last
    ``seq_len`` tokens when longer (the end is where the reward is read), right-padded with 0 — the rows
    :func:`reward_examples` trains on, one conversation at a time (best-of-n, a PPO rollout's score).
    Raises ValueError naming ``conversation {i}`` for an invalid one."""
    if seq_len < 2:
        raise ValueError(f"seq_len={seq_len}: expected >= 2 (a reward model reads whole sequences)")
    rows = {"tokens": np.zeros((len(conversations), seq_len), np.int32),
            "segment_ids": np.zeros((len(conversations), seq_len), np.int32)}
    for i, messages in enumerate(conversations):
        ids, _ = template.encode(check_messages(messages, where=f"conversation {i}"))
        ids = ids[-seq_len:]
        rows["tokens"][i, :len(ids)], rows["segment_ids"][i, :len(ids)] = ids, 1
    return rows


def encode_reply(template: ChatTemplate, prompt: list[dict], reply: list[dict], where: str
                  ) -> tuple[np.ndarray, np.ndarray]:
    """``prompt + reply`` as ids and weights, ``(L,)`` each, the prompt (with its generation prompt) weighing 0:
    the reply's tokens start at ``len(template.prompt(prompt))``. Raises ValueError naming ``where`` when
    the template does not render the prompt as the start of prompt + reply."""
    head = template.prompt(prompt)
    ids, weights = template.encode(prompt + reply, train_on="assistant")
    if len(ids) < len(head) or not np.array_equal(ids[:len(head)], head):
        raise ValueError(f"{where}: the chat template does not render the prompt (with its generation prompt) as "
                         f"the start of prompt + reply; expected a template that appends turns")
    weights = weights.copy()
    weights[:len(head)] = 0.0
    return ids, weights


def preference_dataset(examples: Sequence[dict[str, np.ndarray]], batch_size: int, *, shuffle: bool = True,
                       seed: int = 0, process_index: int = 0, process_count: int = 1) -> grain.IterDataset:
    """The endless stream of this process's batches of ``batch_size // process_count`` pairs:
    ``{"inputs", "targets", "weights", "segment_ids"}`` of shape ``(pairs, 2, seq_len)``, reshuffled each epoch.

    Process ``p`` reads examples ``p::process_count``. The iterator is grain's, so its state
    checkpoints with the run. Raises ValueError when the batch does not split over the processes
    or this process gets no pair.
    """
    if batch_size % process_count:
        raise ValueError(f"batch_size={batch_size} is not divisible by process_count={process_count}")
    mine = list(examples)[process_index::process_count]
    if not mine:
        raise ValueError(f"process {process_index} of {process_count} got no preference pair (of {len(examples)}); "
                         f"expected at least one pair per process")
    ds = grain.MapDataset.source(mine)
    if shuffle:
        ds = ds.shuffle(seed=seed)
    return ds.repeat(None).batch(batch_size // process_count, drop_remainder=True).to_iter_dataset(_READ)


def preference_eval_batches(examples: Sequence[dict[str, np.ndarray]], batch_size: int
                            ) -> list[dict[str, np.ndarray]]:
    """Every pair once, in batches of ``batch_size`` pairs ``(batch_size, 2, seq_len)``, the last one
    shorter (``lmforge.train.BatchEvaluator`` pads it with all-zero pairs, which weigh 0)."""
    rows = list(examples)
    return [{k: np.stack([r[k] for r in rows[b:b + batch_size]]) for k in rows[0]}
            for b in range(0, len(rows), batch_size)]


__all__ = ["PREFERENCE_FORMATS", "PREFERENCE_OVERFLOW", "SIDES", "PreferenceStats", "conversation_rows", "preference_dataset",
           "reward_examples",
           "preference_eval_batches", "preference_examples", "read_preferences", "split_prompt"]
