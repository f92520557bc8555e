"""Chat format: a conversation (OpenAI-style ``messages``) becomes token ids and a loss mask, and
conversations become SFT batches (packed with segment ids, or one per row).

The lmforge format, built from the tokenizer's reserved specials (``lmforge.data.tokenizer``)::

    <bos> <|system|> You are ... <|end|> <|user|> Hi <|end|> <|assistant|> Hello! <|end|> <eos>

- A turn is its role marker, the content encoded on its own, then ``<|end|>``. Roles and markers:
  ``system`` → ``<|system|>``, ``user`` → ``<|user|>``, ``assistant`` → ``<|assistant|>``,
  ``tool`` (what a tool returned) → ``<|tool_result|>``. Contents are encoded one by one, so a
  turn's ids do not depend on its neighbours (the rendered text decodes back exactly, since the
  SentencePiece tokenizer round-trips every string). Special-token text typed inside a content
  (the text ``"<|end|>"``) stays text (``plain_content=True``, the default): the marker is encoded
  as its first character and the rest (``"<"``, ``"|end|>"``), which decodes to the same string and
  holds no special id, so a user, a client of ``lmforge serve``, a tool's result or a retrieved
  passage cannot forge a turn, and training (SFT, DPO, GRPO and PPO prompts) reads such text as
  inference does. The format's own markers (the tool-call marker before a call, in an assistant's
  ``tool_calls`` or its content, where ``format_call`` and the tool loop write it; the one in the
  tools' instructions) stay special. ``plain_content=False`` encodes typed specials as their ids
  (data written with the markers inline). Until 2026-12-03 that was the default for training while
  every inference path asked for plain content.
- The generation prompt is the conversation so far followed by ``<|assistant|>``; the model
  ends its turn with ``<|end|>`` (the sampler's stop id).
- Tools in OpenAI's shapes (what ``lmforge serve`` receives): ``encode(..., tools=schemas)`` writes
  the function schemas into the system turn (:func:`tools_system_prompt`, after any system text of
  the conversation's own); an assistant message's ``tool_calls`` (``[{"type": "function",
  "function": {"name", "arguments"}}]``, arguments an object or a JSON string of one) become
  ``<|tool_call|>{"name": ..., "arguments": {...}}`` after its content, one per call, which
  ``lmforge.infer.tools.parse_tool_calls`` reads back.
- The loss mask ("weights", float32) marks the tokens the model is trained to produce: with
  ``train_on="assistant"`` (the default, as TRL's ``assistant_only_loss`` and nanochat do) the
  contents of assistant turns and their ``<|end|>``; with ``train_on="all"`` every token after
  the first. Role markers are never targets under ``"assistant"``: the format puts them there.
- Bad input is an error naming the conversation and what was expected: an empty conversation, a
  message that is not ``{"role", "content"}`` with string content, an unknown role, ``tool_calls``
  that are not OpenAI's (:func:`check_tool_calls`) or not on an assistant message, and (with
  ``train_on="assistant"``) a conversation with no assistant turn — it would carry no weight.
- A conversation longer than ``seq_len + 1`` tokens is cut to its first ``seq_len + 1`` tokens
  (``overflow="truncate"``) or left out (``overflow="drop"``); both are counted in
  :class:`ChatStats` and printed by the SFT runner, never silent. A truncated conversation that
  keeps no weighted token is dropped (and counted) either way.

Other chat formats: a model imported from Hugging Face brings its own jinja chat template, read
with its tokenizer (``lmforge.data.hf_tokenizer.HFChatTemplate``, the same ids as transformers'
``apply_chat_template`` and a loss mask on the assistant turns); :func:`chat_template_for` picks
that template when the tokenizer has one, else this format. Both satisfy :class:`ChatTemplate`, so
``sft_examples`` takes either. Conversations come from OpenAI / Alpaca / ShareGPT / HH-RLHF files
through ``lmforge.data.chat_readers.read_conversations``.

SFT batches have the pretraining layout (``lmforge.data.pipeline``): ``inputs``, ``targets``,
``weights``, ``segment_ids``, ``positions``, each ``(B, T)``, where ``weights[b, t]`` is the mask
of ``targets[b, t]``. Packed rows hold several conversations with their own segment ids and
positions restarting at 0, so a model that honours segment ids (every lmforge family does) never
attends across conversations, and the packed loss equals the unpacked one (tested).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

import grain
import numpy as np

from lmforge.data.tokenizer import Tokenizer

ROLES = ("system", "user", "assistant", "tool")
ROLE_TOKENS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>", "tool": "<|tool_result|>"}
END_TOKEN = "<|end|>"
TOOL_CALL = "<|tool_call|>"   # opens a tool call inside an assistant turn (lmforge.infer.tools)
SPECIAL_PATTERN = re.compile(r"<\|[A-Za-z0-9_]+\|>")   # the shape of lmforge's special pieces (data.tokenizer)
TRAIN_ON = ("assistant", "all")
OVERFLOW = ("truncate", "drop")
_READ = grain.ReadOptions(num_threads=2, prefetch_buffer_size=8)
_PACKING_BINS = 512

Message = Mapping[str, str]   # {"role": one of ROLES, "content": str}


def format_call(name: str, /, **arguments) -> str:
    """The assistant content that calls a tool: ``<|tool_call|>{"name": name, "arguments": {...}}``
    (the format of ``lmforge.infer.tools``, which runs it; the tool's result is the next message,
    role ``tool``)."""
    return TOOL_CALL + json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)


def tools_system_prompt(schemas: Sequence[Mapping]) -> str:
    """A system text that lists tools (OpenAI function schemas, ``{"type": "function", "function":
    {...}}`` or the inner ``{"name", "description", "parameters"}``; one JSON line each) and says how to
    call one in this format, for a model that was not fine-tuned on a fixed set of tools."""
    return "".join(text for text, _ in _tools_segments(schemas))


def _tools_segments(schemas: Sequence[Mapping]) -> list[tuple[str, bool]]:
    """:func:`tools_system_prompt` as ``(text, ours)`` pieces: the instructions (the format's, with its
    call marker) and the schemas' JSON lines (the caller's)."""
    lines = [json.dumps(dict(s.get("function", s)), ensure_ascii=False) for s in schemas]
    return [(f'You can call these tools. To call one, reply with {TOOL_CALL}{{"name": <tool>, '
             f'"arguments": {{...}}}} and nothing else; its result comes back as the next message.', True),
            *(("\n" + line, False) for line in lines)]


def call_arguments(arguments, where: str = "tool call") -> dict:
    """A tool call's arguments as a dict: OpenAI sends them as a JSON string of an object, templates and
    lmforge's format want the object. Raises ValueError naming ``where`` for anything else."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            raise ValueError(f"{where}: arguments {_short(arguments)} are not JSON; expected an object") from None
    if not isinstance(arguments, Mapping):
        raise ValueError(f"{where}: arguments {_short(arguments)} are not an object; expected {{\"name\": value, ...}}")
    return dict(arguments)


class ChatTemplate(Protocol):
    """What turns messages into ids: lmforge's :class:`ChatFormat`, or an imported model's template.
    ``tools``: OpenAI function schemas the template shows the model (None: no tools)."""

    stop_ids: tuple[int, ...]   # ids that end the assistant's turn (the sampler's stop ids)

    def encode(self, messages: Sequence[Message], *, train_on: str = "assistant", add_generation_prompt: bool = False,
               tools: Sequence[dict] | None = None) -> tuple[np.ndarray, np.ndarray]: ...

    def prompt(self, messages: Sequence[Message], *, tools: Sequence[dict] | None = None) -> np.ndarray: ...


def check_tool_calls(calls, where: str = "message") -> list[dict]:
    """An assistant message's OpenAI ``tool_calls`` in the shape chat templates take:
    ``[{"type": "function", "function": {"name": str, "arguments": dict}}]``, each call's ``id`` kept
    when it is a string (Mistral's template reads it). Arguments given as a JSON string of an object (as
    OpenAI sends them) are parsed (:func:`call_arguments`), absent ones are ``{}``, an absent ``type`` is
    ``"function"``. Raises ValueError naming ``where`` and the call for anything else."""
    shape = '{"type": "function", "function": {"name": ..., "arguments": ...}}'
    if not isinstance(calls, (list, tuple)):
        raise ValueError(f"{where}: tool_calls is {_short(calls)}; expected a list of {shape}")
    out = []
    for j, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str) or not fn["name"] \
                or call.get("type", "function") != "function":
            raise ValueError(f"{where}: tool call {j} is {_short(call)}; expected {shape}")
        one = {"type": "function", "function": {
            "name": fn["name"], "arguments": call_arguments(fn.get("arguments", {}), f"{where}, tool call {j}")}}
        if isinstance(call.get("id"), str):
            one["id"] = call["id"]
        out.append(one)
    return out


def check_tools(tools, where: str = "record") -> list[dict] | None:
    """A record's ``tools`` (the function schemas its conversation may call) in the shape chat templates
    take (``apply_chat_template(tools=...)``): ``[{"type": "function", "function": {"name": str, ...}}]``.
    Read as OpenAI's fine-tuning files write them, as a JSON string of that list (glaive, LLaMA-Factory's
    sharegpt), and with bare ``{"name", "description", "parameters"}`` entries (xLAM), each wrapped; the
    function's other keys are kept as written. None (or an empty list) is None: no tools. Raises ValueError
    naming ``where`` and the entry for anything else."""
    shape = '{"type": "function", "function": {"name": ..., "parameters": {...}}}'
    if isinstance(tools, str):
        try:
            tools = json.loads(tools) if tools.strip() else None
        except json.JSONDecodeError:
            raise ValueError(f"{where}: tools {_short(tools)} is not JSON; expected a list of {shape}") from None
    if tools is None or (isinstance(tools, (list, tuple)) and not tools):
        return None
    if not isinstance(tools, (list, tuple)):
        raise ValueError(f"{where}: tools is {_short(tools)}; expected a list of {shape}")
    out = []
    for j, tool in enumerate(tools):
        fn = tool.get("function", tool) if isinstance(tool, Mapping) else None
        if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str) or not fn["name"] \
                or (isinstance(tool, Mapping) and "function" in tool and tool.get("type", "function") != "function") \
                or not isinstance(fn.get("parameters", {}), Mapping):
            raise ValueError(f"{where}: tool {j} is {_short(tool)}; expected {shape}")
        out.append({"type": "function", "function": dict(fn)})
    return out


def check_messages(messages, *, where: str = "conversation", need_assistant: bool = False) -> list[dict]:
    """Validates one conversation and returns it as a list of plain ``{"role", "content"}`` dicts,
    an assistant's with its OpenAI ``tool_calls`` (:func:`check_tool_calls`; not when empty) and a tool
    result's with its ``tool_call_id`` (a string) — the shape every ``ChatTemplate`` takes; other keys
    are dropped.

    Raises ValueError naming ``where`` (e.g. ``"train.jsonl:12"``) for: a conversation that is not
    a non-empty list, a message that is not a mapping with a string ``content``, an unknown
    ``role`` (expected one of ``ROLES``), ``tool_calls`` on a message that is not the assistant's or
    not in OpenAI's shape, and, with ``need_assistant``, no assistant turn.
    """
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ValueError(f"{where}: expected a non-empty list of messages, got {_short(messages)}")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
            raise ValueError(f"{where}: message {i} is {_short(m)}; expected {{\"role\": ..., \"content\": ...}}")
        if m["role"] not in ROLES:
            raise ValueError(f"{where}: message {i} has unknown role {m['role']!r}; expected one of {', '.join(ROLES)}")
        if not isinstance(m["content"], str):
            raise ValueError(f"{where}: message {i} ({m['role']}) has content {_short(m['content'])}; expected a string")
        one = {"role": m["role"], "content": m["content"]}
        if m.get("tool_calls"):
            if m["role"] != "assistant":
                raise ValueError(f"{where}: message {i} ({m['role']}) has tool_calls; expected them on an assistant "
                                 f"message only")
            one["tool_calls"] = check_tool_calls(m["tool_calls"], f"{where}: message {i}")
        if m["role"] == "tool" and isinstance(m.get("tool_call_id"), str):
            one["tool_call_id"] = m["tool_call_id"]
        out.append(one)
    if need_assistant and not any(m["role"] == "assistant" for m in out):
        raise ValueError(f"{where}: the conversation has no assistant turn, so nothing in it would be trained on; "
                         f"expected at least one message with role 'assistant'")
    return out


class ChatFormat:
    """lmforge's chat format over a tokenizer with the reserved specials (see the module docstring).

    Raises ValueError if the tokenizer lacks a role marker, ``<|end|>`` or bos/eos (the char
    tokenizer has none of them: train a SentencePiece tokenizer for chat).
    """

    def __init__(self, tok: Tokenizer):
        self.tok = tok
        try:
            self.role_ids = {r: tok.token_id(p) for r, p in ROLE_TOKENS.items()}
            self.end_id = tok.token_id(END_TOKEN)
        except KeyError as e:
            raise ValueError(f"{tok!r} has no chat specials ({e.args[0]}); expected a SentencePiece tokenizer "
                             f"trained by lmforge (its reserved {', '.join(ROLE_TOKENS.values())}, {END_TOKEN})") from None
        if tok.bos_id < 0 or tok.eos_id < 0:
            raise ValueError(f"{tok!r} has no bos/eos ids; expected a tokenizer with both for chat")
        self.stop_ids = (self.end_id,)
        self._specials = None   # special_texts(), made at the first use

    def encode(self, messages: Sequence[Message], *, train_on: str = "assistant", add_generation_prompt: bool = False,
               tools: Sequence[dict] | None = None, plain_content: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """One conversation → ``(ids, weights)``, int32 and float32 of shape ``(L,)``.

        ``weights[i] = 1`` marks ``ids[i]`` as a token to learn (predicted from ``ids[:i]``).
        ``add_generation_prompt`` appends ``<|assistant|>`` (and no eos): the prompt to sample a reply.
        ``tools`` (OpenAI function schemas) go into the system turn; assistant ``tool_calls`` become
        call markers (module docstring). ``plain_content`` (default): special-token text typed in a
        content, a call's arguments or a tool schema stays text, but for the call marker in an
        assistant's content (module docstring); False: it encodes as the special (the ids are the same
        when there is none). Raises ValueError for
        ``train_on`` outside ``TRAIN_ON`` or a tool call without a name or with arguments that are no
        object (messages: see :func:`check_messages`).
        """
        if train_on not in TRAIN_ON:
            raise ValueError(f"train_on={train_on!r}: expected one of {', '.join(TRAIN_ON)}")
        parts = [_segments(m, i) for i, m in enumerate(messages)]   # per message: (text, ours) pieces
        roles = [m["role"] for m in messages]
        if tools:
            if roles and roles[0] == "system":
                parts[0] = [parts[0][0], ("\n\n", True), *_tools_segments(tools), *parts[0][1:]]
            else:
                parts.insert(0, _tools_segments(tools))
                roles.insert(0, "system")
        ids, weights = [self.tok.bos_id], [0.0]
        for role, segments in zip(roles, parts):
            content = self._encode_segments(segments) if plain_content else \
                self.tok.encode("".join(text for text, _ in segments))
            learn = 1.0 if train_on == "all" or role == "assistant" else 0.0
            ids += [self.role_ids[role], *content, self.end_id]
            weights += [1.0 if train_on == "all" else 0.0] + [learn] * (len(content) + 1)
        if add_generation_prompt:
            ids.append(self.role_ids["assistant"])
            weights.append(0.0)
        else:
            ids.append(self.tok.eos_id)
            weights.append(1.0 if train_on == "all" else 0.0)
        return np.asarray(ids, np.int32), np.asarray(weights, np.float32)

    def prompt(self, messages: Sequence[Message], *, tools: Sequence[dict] | None = None,
               plain_content: bool = True) -> np.ndarray:
        """The ids that ask for the next assistant turn, ``(L,)`` int32 (``plain_content``: see ``encode``)."""
        return self.encode(messages, add_generation_prompt=True, tools=tools, plain_content=plain_content)[0]

    def special_texts(self) -> frozenset[str]:
        """The texts that encode to one special id: lmforge's ``<|...|>`` pieces (``data.tokenizer``)."""
        if self._specials is None:
            self._specials = frozenset(special_pieces(self.tok).values())
        return self._specials

    def _encode_segments(self, segments: Sequence[tuple[str, bool]]) -> list[int]:
        """``(text, ours)`` pieces as ids, with special-token text in the pieces not ours kept as text:
        split at every marker (each is one atomic piece, so the split alone changes no id), the ours
        encoded as themselves, the others as their first character and the rest."""
        text = "".join(t for t, _ in segments)
        found = [m for m in SPECIAL_PATTERN.finditer(text) if m.group() in self.special_texts()]
        starts, at = set(), 0
        for t, ours in segments:
            if ours:
                starts |= {at + m.start() for m in SPECIAL_PATTERN.finditer(t)}
            at += len(t)
        if all(m.start() in starts for m in found):
            return self.tok.encode(text)
        ids, at = [], 0
        for m in found:
            ids += self.tok.encode(text[at:m.start()])
            marker = m.group()
            ids += self.tok.encode(marker) if m.start() in starts else \
                self.tok.encode(marker[:1]) + self.tok.encode(marker[1:])
            at = m.end()
        return ids + self.tok.encode(text[at:])


def special_pieces(tok: Tokenizer) -> dict[int, str]:
    """``{id: text}`` of the pieces of ``tok`` shaped as lmforge's specials (``<|user|>``, ``<|end|>``,
    ``<|reserved_i|>``: ``SPECIAL_PATTERN``), by the text ``tok.token_bytes()`` gives each id."""
    texts = ((i, b.decode("utf-8", errors="replace")) for i, b in enumerate(tok.token_bytes()))
    return {i: t for i, t in texts if SPECIAL_PATTERN.fullmatch(t)}


def _segments(message: Mapping, index: int) -> list[tuple[str, bool]]:
    """A message's content as ``(text, ours)`` pieces: its own text (not ours; in an assistant's, the call
    marker is ours: ``format_call`` and the tool loop write calls into the content), then each of its
    OpenAI ``tool_calls`` as the call marker (ours) and the call's JSON (not ours)."""
    text = message.get("content") or ""
    if message.get("role") == "assistant" and TOOL_CALL in text:
        first, *rest = text.split(TOOL_CALL)
        out = [(first, False)]
        for part in rest:
            out += [(TOOL_CALL, True), (part, False)]
    else:
        out = [(text, False)]
    for j, call in enumerate(message.get("tool_calls") or ()):
        fn = call.get("function", call) if isinstance(call, Mapping) else None
        if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
            raise ValueError(f"message {index}: tool call {j} is {_short(call)}; expected {{\"type\": \"function\", "
                             f"\"function\": {{\"name\": ..., \"arguments\": ...}}}}")
        arguments = call_arguments(fn.get("arguments", {}), f"message {index}, tool call {j}")
        out += [(TOOL_CALL, True), (format_call(fn["name"], **arguments).removeprefix(TOOL_CALL), False)]
    return out


def chat_template_for(tok: Tokenizer) -> ChatTemplate:
    """The chat template to use with ``tok``: the imported model's own (an ``HFTokenizer`` from a
    Hugging Face folder with a chat template: ``lmforge.data.hf_tokenizer.HFChatTemplate``), else
    lmforge's :class:`ChatFormat`.

    Raises ValueError when ``tok`` has neither a chat template nor lmforge's chat specials.
    """
    if getattr(tok, "chat_template", None):
        from lmforge.data.hf_tokenizer import HFChatTemplate

        return HFChatTemplate(tok)
    try:
        return ChatFormat(tok)
    except ValueError as e:
        if hasattr(tok, "chat_template"):   # an imported tokenizer without a template
            raise ValueError(f"{tok!r} has no chat template (chat_template.jinja or tokenizer_config.json's "
                             f"chat_template) and not lmforge's chat specials; expected one of them for chat") from None
        raise e


@dataclasses.dataclass
class ChatStats:
    """What happened to the conversations on their way into SFT examples (all counts)."""
    conversations: int = 0
    kept: int = 0
    truncated: int = 0          # longer than seq_len + 1 tokens, cut (overflow="truncate")
    dropped_too_long: int = 0   # longer than seq_len + 1 tokens, left out (overflow="drop")
    dropped_no_weight: int = 0  # nothing left to learn after truncation
    tokens: int = 0             # targets kept (inputs positions), padding excluded
    weighted_tokens: int = 0    # targets with weight 1

    def summary(self) -> str:
        return (f"{self.kept}/{self.conversations} conversations kept ({self.truncated} truncated, "
                f"{self.dropped_too_long} dropped as too long, {self.dropped_no_weight} with nothing to learn), "
                f"{self.weighted_tokens:,} of {self.tokens:,} targets trained on")


def sft_examples(conversations: Iterable[Sequence[Message]], template: ChatTemplate, seq_len: int, *,
                 train_on: str = "assistant", overflow: str = "truncate", where: str = "conversation",
                 names: Sequence[str] | None = None,
                 tools: Sequence[Sequence[dict] | None] | None = None) -> tuple[list[dict[str, np.ndarray]], ChatStats]:
    """Conversations → examples ``{"inputs", "targets", "weights"}`` (each ``(n,)``, ``n <= seq_len``).

    ``inputs = ids[:-1]``, ``targets = ids[1:]``, ``weights = mask[1:]``. Conversation ``i`` is
    named ``names[i]`` in errors (a reader's ``file:line``), else ``f"{where} {i}"``. ``tools[i]``: the
    function schemas conversation ``i`` is rendered with (:func:`check_tools`'s shape; None: none), where
    the template shows them (lmforge's format: the system turn; not trained on), as TRL's SFT renders a
    data set's ``tools`` column. Raises ValueError for an invalid conversation or option.
    """
    if overflow not in OVERFLOW:
        raise ValueError(f"overflow={overflow!r}: expected one of {', '.join(OVERFLOW)}")
    if seq_len < 1:
        raise ValueError(f"seq_len={seq_len}: expected >= 1")
    stats, out = ChatStats(), []
    for i, conv in enumerate(conversations):
        stats.conversations += 1
        name = names[i] if names is not None else f"{where} {i}"
        conv = check_messages(conv, where=name, need_assistant=train_on == "assistant")
        try:
            ids, weights = template.encode(conv, train_on=train_on, tools=None if tools is None else tools[i])
        except ValueError as e:
            raise ValueError(f"{name}: {e}") from None
        if len(ids) > seq_len + 1:
            if overflow == "drop":
                stats.dropped_too_long += 1
                continue
            stats.truncated += 1
            ids, weights = ids[:seq_len + 1], weights[:seq_len + 1]
        if not weights[1:].any():
            stats.dropped_no_weight += 1
            continue
        stats.kept += 1
        stats.tokens += len(ids) - 1
        stats.weighted_tokens += int(weights[1:].sum())
        out.append({"inputs": ids[:-1], "targets": ids[1:], "weights": weights[1:]})
    return out, stats


def sft_dataset(examples: Sequence[dict[str, np.ndarray]], seq_len: int, batch_size: int, *, pack: bool = True,
                shuffle: bool = True, seed: int = 0, process_index: int = 0,
                process_count: int = 1) -> grain.IterDataset:
    """The endless stream of this process's ``(batch_size // process_count, seq_len)`` SFT batches.

    ``pack=True`` packs whole examples into rows with grain's ``FirstFitPackIterDataset`` (segment
    ids 1, 2, ...; positions restart per example; padding has segment 0 and weight 0); ``pack=False``
    puts one example per row, padded. Process ``p`` reads examples ``p::process_count``. The
    iterator is grain's, so its state checkpoints with the run. Raises ValueError when this process
    gets no example or the batch does not split over the processes.
    """
    if batch_size % process_count:
        raise ValueError(f"batch_size={batch_size} is not divisible by process_count={process_count}")
    rows = batch_size // process_count
    mine = list(examples)[process_index::process_count]
    if not mine:
        raise ValueError(f"process {process_index} of {process_count} got no SFT example (of {len(examples)}); "
                         f"expected at least one conversation per process")
    ds = grain.MapDataset.source(mine)
    if shuffle:
        ds = ds.shuffle(seed=seed)   # reshuffled each epoch by the repeat below
    ds = ds.repeat(None)
    if not pack:
        return ds.map(_PadRow(seq_len)).batch(rows, drop_remainder=True).to_iter_dataset(_READ)
    packed = grain.experimental.FirstFitPackIterDataset(
        ds.to_iter_dataset(_READ),
        length_struct={"inputs": seq_len, "targets": seq_len, "weights": seq_len},
        num_packing_bins=max(rows, _PACKING_BINS), seed=seed, shuffle_bins=shuffle)
    return packed.batch(rows, drop_remainder=True).map(_PackedToBatch())


def sft_eval_batches(examples: Sequence[dict[str, np.ndarray]], seq_len: int,
                     batch_size: int) -> list[dict[str, np.ndarray]]:
    """Every example once, one per row, in fixed-shape ``(batch_size, seq_len)`` batches (the last
    padded with all-zero-weight rows): the exact held-out loss is the weighted mean over them."""
    rows = [_PadRow(seq_len).map(e) for e in examples]
    if not rows:
        return []
    empty = {k: np.zeros_like(v) for k, v in rows[0].items()}
    rows += [empty] * (-len(rows) % batch_size)
    return [{k: np.stack([r[k] for r in rows[b:b + batch_size]]) for k in rows[0]}
            for b in range(0, len(rows), batch_size)]


class _PadRow(grain.transforms.Map):
    """One example → one padded row of the batch layout."""

    def __init__(self, seq_len: int):
        self.T = seq_len

    def map(self, e: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n, T = len(e["inputs"]), self.T
        if n > T:
            raise ValueError(f"an SFT example of {n} targets does not fit seq_len={T}")
        pad = lambda x, dtype: np.concatenate([x, np.zeros(T - n, x.dtype)]).astype(dtype)
        return {"inputs": pad(e["inputs"], np.int32), "targets": pad(e["targets"], np.int32),
                "weights": pad(e["weights"], np.float32),
                "segment_ids": pad(np.ones(n, np.int32), np.int32), "positions": pad(np.arange(n), np.int32)}


class _PackedToBatch(grain.transforms.Map):
    def map(self, p: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        seg = p["inputs_segment_ids"].astype(np.int32)
        return {"inputs": p["inputs"].astype(np.int32), "targets": p["targets"].astype(np.int32),
                "weights": (p["weights"] * (seg != 0)).astype(np.float32), "segment_ids": seg,
                "positions": p["inputs_positions"].astype(np.int32)}


def _short(x, n: int = 60) -> str:
    r = repr(x)
    return r if len(r) <= n else r[:n - 3] + "..."


__all__ = ["ChatFormat", "ChatStats", "ChatTemplate", "END_TOKEN", "Message", "ROLES", "ROLE_TOKENS", "TRAIN_ON",
           "chat_template_for", "check_messages", "check_tool_calls", "check_tools", "sft_dataset", "sft_eval_batches", "sft_examples",
           "special_pieces"]
