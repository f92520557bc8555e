"""Conversations from the chat data sets people have: OpenAI ``messages``, Alpaca, ShareGPT and
Anthropic HH-RLHF transcripts, as lists of ``{"role", "content"}`` (``lmforge.data.chat``'s messages).

    conversations, stats = read_conversations("train.jsonl.gz")          # the format is detected
    conversations, stats = read_conversations("hh.jsonl.gz", field="rejected")
    print(stats.summary())

Formats (one JSON object per line, ``.jsonl`` or gzip-compressed ``.jsonl.gz``; a ``.json`` file
holding one JSON array of the same objects is read too, as Alpaca and ShareGPT dumps ship):

- ``messages`` (OpenAI chat fine-tuning): ``{"messages": [{"role", "content"}, ...]}``. A content
  given as a list of parts keeps its text parts, joined; ``developer`` is the system role and
  ``function`` the tool role (OpenAI's names). An assistant message's ``tool_calls`` (``[{"type":
  "function", "function": {"name", "arguments"}}]``, arguments an object or a JSON string of one, as
  OpenAI's fine-tuning files, glaive and xLAM exports write them; the legacy ``function_call`` is one
  such call) are kept, arguments as an object (``lmforge.data.chat.check_tool_calls``), and its
  content may then be ``""``, null or absent; lmforge's chat format writes each call as
  ``<|tool_call|>{"name", "arguments"}`` in the assistant's turn (trained on, as the turn is), an
  imported model's template its own way. A ``tool`` message's content is the tool's result (not
  trained on); its ``tool_call_id`` is kept, its ``name`` is not read. A record's ``tools`` (the
  function schemas, in any format: a list or its JSON string, entries bare or wrapped;
  ``lmforge.data.chat.check_tools``) is :attr:`ChatRecord.tools`, which SFT renders where the chat
  template shows tools (not trained on), as TRL does; it stays a column as written too.
- ``alpaca``: ``{"instruction", "input", "output"}`` → user ``instruction + "\\n\\n" + input`` (just
  the instruction when the input is missing or empty), assistant ``output``; an optional
  ``system`` string and an optional ``history`` of ``[user, assistant]`` pairs (LLaMA-Factory's
  Alpaca) come first.
- ``sharegpt``: ``{"conversations": [{"from", "value"}, ...]}`` with ``from`` in ``human``/``user``,
  ``gpt``/``assistant``/``chatgpt``/``bard``/``bing``/``model``, ``system``, and
  ``tool``/``observation``/``function_response`` (a tool's result); an optional top-level
  ``system`` string comes first. A ``function_call`` turn (LLaMA-Factory's tool call) is refused,
  naming the OpenAI ``messages`` format with ``tool_calls``, which is read.
- ``prompt`` (TRL's prompt-only and prompt-completion formats): ``{"prompt", "completion"?}``, each a
  string (the user's turn, the assistant's reply) or a list of OpenAI messages; a prompt without a
  completion is a conversation ending in a user turn (a prompt for GRPO / PPO).
- ``hh`` (Anthropic HH-RLHF): ``{"chosen": "\\n\\nHuman: ...\\n\\nAssistant: ...", "rejected": ...}``;
  ``field`` picks the transcript (``chosen`` by default). Turns split on ``"\\n\\nHuman: "`` and
  ``"\\n\\nAssistant: "`` (:func:`parse_hh_transcript`); turns are kept as written and counted when
  irregular: in the harmless-base test split (2,312 records) 8 chosen and 5 rejected transcripts
  have two assistant turns in a row, and 4 chosen ones an empty turn.

``format="auto"`` decides from the first record's keys (``messages``, ``conversations``,
``instruction`` + ``output``, ``chosen``, ``prompt``) and every later record must be of that format.

A record's other keys — a reference ``answer``, a ``task``, test cases, metadata — are kept as its
``columns`` by :func:`read_chat_records` (TRL passes a data set's extra columns to its reward
functions the same way).

Nothing is dropped silently: a malformed record (not JSON, not an object, a missing or mistyped
key, an unknown role) is a one-line ValueError naming ``file:line`` and what was expected; what is
skipped on purpose — blank lines, conversations with no message, and, with ``require_assistant``,
conversations without an assistant turn (they carry no SFT weight) — is counted in
:class:`ReadStats`, as are kept records with irregular turns.
"""

from __future__ import annotations

import collections
import dataclasses
import gzip
import json
import pathlib
import re
from collections.abc import Iterator, Mapping

from lmforge.data.chat import check_messages, check_tool_calls, check_tools

FORMATS = ("messages", "alpaca", "sharegpt", "hh", "prompt")
COLUMNS_READ = {"messages": {"messages"}, "alpaca": {"instruction", "input", "output", "system", "history"},
                "sharegpt": {"conversations", "system"}, "hh": {"chosen", "rejected"},
                "prompt": {"prompt", "completion"}}   # a format's own keys; the rest are a record's columns
HH_FIELDS = ("chosen", "rejected")
OPENAI_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant",
                "tool": "tool", "function": "tool"}
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "chatgpt": "assistant", "bard": "assistant", "bing": "assistant", "model": "assistant",
                  "tool": "tool", "observation": "tool", "function_response": "tool"}
_HH_TURN = re.compile(r"\n\n(Human|Assistant): ?")


@dataclasses.dataclass
class ReadStats:
    """What :func:`read_conversations` read, kept and skipped (all counts)."""
    path: str = ""
    format: str = ""
    records: int = 0                     # non-blank lines (or array items) read
    conversations: int = 0               # returned
    skipped: dict[str, int] = dataclasses.field(default_factory=lambda: collections.Counter())
    irregular: dict[str, int] = dataclasses.field(default_factory=lambda: collections.Counter())  # kept, counted
    unit: str = "conversations"          # what a kept record is called ("pairs" for preference files)

    def summary(self) -> str:
        """One line: ``"train.jsonl (sharegpt): 998 of 1,000 records kept; skipped: 2 empty conversations"``."""
        def items(counts):
            return ", ".join(f"{n:,} {why}" for why, n in sorted(counts.items()) if n) or "none"
        text = f"{self.path} ({self.format}): {self.conversations:,} {self.unit} from {self.records:,} records"
        text += f"; skipped: {items(self.skipped)}"
        if any(self.irregular.values()):
            text += f"; kept as written: {items(self.irregular)}"
        return text


@dataclasses.dataclass(frozen=True)
class ChatRecord:
    """One conversation of a chat data file: where it was read (``file:line``), its messages and the
    record's other keys as read (``columns``: ``{"answer": "42", "task": "gsm8k", ...}``); ``tools``: its
    ``tools`` column as chat templates take it (``lmforge.data.chat.check_tools``), None without one."""
    where: str
    messages: list[dict]
    columns: dict
    tools: list[dict] | None = None


def read_conversations(path, format: str = "auto", *, field: str = "chosen",
                       require_assistant: bool = False) -> tuple[list[list[dict]], ReadStats]:
    """Every conversation of a chat data file, in file order, with what was skipped.

    Args:
      path: a ``.jsonl`` / ``.jsonl.gz`` file (gzip is recognised by its magic bytes) or a ``.json``
        array.
      format: one of ``FORMATS``, or ``"auto"`` to detect it from the first record.
      field: the HH-RLHF transcript to read, ``"chosen"`` or ``"rejected"`` (other formats ignore it).
      require_assistant: skip (and count) conversations without an assistant turn.

    Returns:
      ``(conversations, stats)``: each conversation a list of ``{"role", "content"}`` dicts (roles in
      ``lmforge.data.chat.ROLES``; an assistant's may hold ``tool_calls``, a tool result's
      ``tool_call_id``: ``lmforge.data.chat.check_messages``), and a :class:`ReadStats`.
      :func:`read_chat_records` keeps each one's ``file:line`` and the record's other keys too.

    Raises:
      FileNotFoundError: no such file.
      ValueError: an unknown ``format`` / ``field``, an undetectable first record, or a malformed
        record, naming ``file:line``.
    """
    records, stats = read_chat_records(path, format, field=field, require_assistant=require_assistant)
    return [r.messages for r in records], stats


def read_chat_records(path, format: str = "auto", *, field: str = "chosen",
                      require_assistant: bool = False) -> tuple[list[ChatRecord], ReadStats]:
    """:func:`read_conversations` keeping, for each conversation, its ``file:line`` and its record's
    other keys (:class:`ChatRecord`); same arguments and errors."""
    path = pathlib.Path(path)
    if format != "auto" and format not in FORMATS:
        raise ValueError(f"format={format!r}: expected auto or one of {', '.join(FORMATS)}")
    if field not in HH_FIELDS:
        raise ValueError(f"field={field!r}: expected one of {', '.join(HH_FIELDS)} (the HH-RLHF transcript)")
    stats = ReadStats(path=str(path), format=format)
    out = []
    for where, record in _records(path, stats):
        if stats.format == "auto":
            stats.format = detect_format(record, where=where)
        messages = _CONVERTERS[stats.format](record, where, field, stats)
        if not messages:
            stats.skipped["empty conversations"] += 1
            continue
        messages = check_messages(messages, where=where)
        if require_assistant and not any(m["role"] == "assistant" for m in messages):
            stats.skipped["conversations without an assistant turn"] += 1
            continue
        roles = [m["role"] for m in messages if m["role"] != "system"]   # a tool result between two assistant
        if any(a == b != "tool" for a, b in zip(roles, roles[1:])):       # turns (a call, the answer) is regular
            stats.irregular["with two user or assistant turns in a row"] += 1
        read = COLUMNS_READ[stats.format]
        out.append(ChatRecord(where, messages, {k: v for k, v in record.items() if k not in read},
                              check_tools(record.get("tools"), where)))
    stats.conversations = len(out)
    if stats.format == "auto":   # an empty file: nothing to detect from
        stats.format = "empty"
    return out, stats


def detect_format(record, *, where: str = "record") -> str:
    """The format of one record, from its keys. Raises ValueError naming ``where`` when none fits."""
    if isinstance(record, Mapping):
        if "messages" in record:
            return "messages"
        if "conversations" in record:
            return "sharegpt"
        if "instruction" in record and "output" in record:
            return "alpaca"
        if "chosen" in record and isinstance(record["chosen"], str):
            return "hh"
        if "prompt" in record and "chosen" not in record:
            return "prompt"
    keys = sorted(record)[:6] if isinstance(record, Mapping) else type(record).__name__
    raise ValueError(f"{where}: cannot tell the chat format of a record with keys {keys}; expected \"messages\" "
                     f"(OpenAI), \"conversations\" (ShareGPT), \"instruction\" + \"output\" (Alpaca), \"chosen\" "
                     f"(HH-RLHF) or \"prompt\" (TRL)")


def parse_hh_transcript(text: str, *, where: str = "transcript") -> list[dict]:
    """An HH-RLHF transcript → messages: ``"\\n\\nHuman: a\\n\\nAssistant: b"`` →
    ``[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]``.

    Raises ValueError naming ``where`` for a transcript that does not start with ``"\\n\\nHuman: "``
    or ``"\\n\\nAssistant: "`` (text before the first turn would be lost).
    """
    if not isinstance(text, str):
        raise ValueError(f"{where}: the transcript is {type(text).__name__}; expected a string")
    parts = _HH_TURN.split(text)
    if parts[0].strip():
        raise ValueError(f"{where}: the transcript starts with {parts[0][:40]!r}; expected it to start with "
                         f"\"\\n\\nHuman: \"")
    return [{"role": "user" if who == "Human" else "assistant", "content": content}
            for who, content in zip(parts[1::2], parts[2::2])]


# ------------------------------------------------------------------------------------ converters
def _from_messages(record, where: str, field: str, stats: ReadStats) -> list[dict]:
    messages = _need(record, "messages", list, where, "a list of {\"role\", \"content\"} objects")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or "role" not in m:
            raise ValueError(f"{where}: message {i} is {_short(m)}; expected {{\"role\": ..., \"content\": ...}}")
        role = OPENAI_ROLES.get(m["role"]) if isinstance(m["role"], str) else None
        if role is None:
            raise ValueError(f"{where}: message {i} has role {_short(m['role'])}; expected one of "
                             f"{', '.join(OPENAI_ROLES)}")
        content = m.get("content")
        calls = m.get("tool_calls")
        if calls is None and m.get("function_call") is not None:   # OpenAI's legacy single call
            calls = [{"type": "function", "function": m["function_call"]}]
        if calls:
            if role != "assistant":
                raise ValueError(f"{where}: message {i} ({m['role']}) has tool_calls; expected them on an assistant "
                                 f"message only")
            calls = check_tool_calls(calls, f"{where}: message {i}")
            content = "" if content is None else content   # null or absent beside calls, as OpenAI writes it
        if isinstance(content, list):   # content parts: the text ones
            texts = [p.get("text") for p in content if isinstance(p, Mapping) and p.get("type") == "text"]
            if len(texts) != len(content) or not all(isinstance(t, str) for t in texts):
                raise ValueError(f"{where}: message {i} ({m['role']}) has content parts other than "
                                 f"{{\"type\": \"text\", \"text\": ...}}; expected text only")
            content = "".join(texts)
        if not isinstance(content, str):
            raise ValueError(f"{where}: message {i} ({m['role']}) has content {_short(content)}; expected a string "
                             f"(null only beside an assistant's tool_calls)")
        one = {"role": role, "content": content}
        if calls:
            one["tool_calls"] = calls
        if role == "tool" and isinstance(m.get("tool_call_id"), str):   # the call it answers (templates may read it)
            one["tool_call_id"] = m["tool_call_id"]
        out.append(one)
    return out


def _from_alpaca(record, where: str, field: str, stats: ReadStats) -> list[dict]:
    if not isinstance(record, Mapping):
        raise ValueError(f"{where}: expected a JSON object with \"instruction\" and \"output\", got {_short(record)}")
    instruction = _need(record, "instruction", str, where, "a string")
    output = _need(record, "output", str, where, "a string")
    extra = record.get("input") or ""
    if not isinstance(extra, str):
        raise ValueError(f"{where}: \"input\" is {_short(extra)}; expected a string (or absent)")
    out = _system_turn(record, where)
    for j, pair in enumerate(record.get("history") or []):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise ValueError(f"{where}: history item {j} is {_short(pair)}; expected [user text, assistant text]")
        out += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    user = f"{instruction}\n\n{extra}" if extra else instruction
    return out + [{"role": "user", "content": user}, {"role": "assistant", "content": output}]


def _system_turn(record, where: str) -> list[dict]:
    """A record's optional ``"system"`` string as a leading system message ([] when absent or empty)."""
    system = record.get("system") or ""
    if not isinstance(system, str):
        raise ValueError(f"{where}: \"system\" is {_short(system)}; expected a string (or absent)")
    return [{"role": "system", "content": system}] if system else []


def _from_sharegpt(record, where: str, field: str, stats: ReadStats) -> list[dict]:
    turns = _need(record, "conversations", list, where, "a list of {\"from\", \"value\"} objects")
    system = _system_turn(record, where)
    out = list(system)
    for i, t in enumerate(turns):
        if not isinstance(t, Mapping) or "from" not in t or "value" not in t:
            raise ValueError(f"{where}: turn {i} is {_short(t)}; expected {{\"from\": ..., \"value\": ...}}")
        role = SHAREGPT_ROLES.get(t["from"]) if isinstance(t["from"], str) else None
        if role is None:
            calls = (" (a tool call: not read in ShareGPT records; write them as OpenAI \"messages\" with an "
                     "assistant's \"tool_calls\", which are read)") if t["from"] == "function_call" else ""
            raise ValueError(f"{where}: turn {i} is from {_short(t['from'])}{calls}; expected one of "
                             f"{', '.join(SHAREGPT_ROLES)}")
        if not isinstance(t["value"], str):
            raise ValueError(f"{where}: turn {i} ({t['from']}) has value {_short(t['value'])}; expected a string")
        out.append({"role": role, "content": t["value"]})
    return out if len(out) > len(system) else []


def _from_hh(record, where: str, field: str, stats: ReadStats) -> list[dict]:
    text = _need(record, field, str, where, "an HH-RLHF transcript string")
    messages = parse_hh_transcript(text, where=f"{where}: {field}")
    if any(not m["content"].strip() for m in messages):
        stats.irregular["with an empty turn"] += 1
    return messages


def _from_prompt(record, where: str, field: str, stats: ReadStats) -> list[dict]:
    if not isinstance(record, Mapping) or "prompt" not in record:
        raise ValueError(f"{where}: expected a JSON object with \"prompt\" (and \"completion\"), got {_short(record)}")
    out = []
    for key, role in (("prompt", "user"), ("completion", "assistant")):
        value = record.get(key)
        if key == "completion" and value is None:
            break
        if isinstance(value, str):
            out.append({"role": role, "content": value})
        elif isinstance(value, list):
            out += _from_messages({"messages": value}, f"{where}: \"{key}\"", field, stats)
        else:
            raise ValueError(f"{where}: \"{key}\" is {_short(value)}; expected a string or a list of "
                             f"{{\"role\", \"content\"}} messages")
    return out


_CONVERTERS = {"messages": _from_messages, "alpaca": _from_alpaca, "sharegpt": _from_sharegpt, "hh": _from_hh,
               "prompt": _from_prompt}


# ------------------------------------------------------------------------------------ reading
def _records(path: pathlib.Path, stats: ReadStats) -> Iterator[tuple[str, object]]:
    """``(where, record)`` per non-blank line (or array item), ``where`` being ``file:line`` (``file[i]``)."""
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    opener = gzip.open if gz else open
    name = str(path)
    with opener(path, "rb") as f:
        first = _first_char(f)
    if first == b"[":   # one JSON array
        try:
            with opener(path, "rb") as f:
                items = json.loads(f.read().decode("utf-8"))
        except ValueError as e:
            raise ValueError(f"{name}: not a valid JSON array ({_first_line(e)}); expected a JSON array of "
                             f"records, or one JSON object per line") from None
        for i, item in enumerate(items):
            stats.records += 1
            yield f"{name}[{i}]", item
        return
    with opener(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            where = f"{name}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{where}: not UTF-8 ({e.reason} at byte {e.start}); expected UTF-8 JSON") from None
            if not line.strip():
                stats.skipped["blank lines"] += 1
                continue
            stats.records += 1
            try:
                record = json.loads(line)
            except ValueError as e:
                raise ValueError(f"{where}: not valid JSON ({_first_line(e)}); expected one JSON object per "
                                 f"line") from None
            yield where, record


def _first_char(f) -> bytes:
    while chunk := f.read(4096):
        stripped = chunk.lstrip()
        if stripped:
            return stripped[:1]
    return b""


def _need(record, key: str, kind: type, where: str, expected: str):
    if not isinstance(record, Mapping):
        raise ValueError(f"{where}: expected a JSON object, got {_short(record)}")
    if key not in record:
        raise ValueError(f"{where}: no \"{key}\" (keys: {sorted(record)[:6]}); expected {expected}")
    if not isinstance(record[key], kind):
        raise ValueError(f"{where}: \"{key}\" is {_short(record[key])}; expected {expected}")
    return record[key]


def _short(x, n: int = 60) -> str:
    r = repr(x)
    return r if len(r) <= n else r[:n - 3] + "..."


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


__all__ = ["COLUMNS_READ", "FORMATS", "HH_FIELDS", "ChatRecord", "ReadStats", "detect_format", "parse_hh_transcript",
           "read_chat_records", "read_conversations"]
