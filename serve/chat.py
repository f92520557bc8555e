"""``lmforge chat``: a streaming, multi-turn chat with a model in the terminal.

    lmforge chat runs/sft-... --system "You are a helpful assistant." --temperature 0.7 --top-p 0.95

    model = load_chat_model("runs/sft-...")                   # Sampler + chat template
    session = ChatSession(model, temperature=0.7, top_p=0.95, system="You are ...")
    reply = session.reply("Hi!", on_text=print)             # streamed pieces; Reply(text, stats)

Choices:
- The model comes through the one weights loader (``lmforge.weights.load_params``: a run folder, an
  lmforge model folder or a Hugging Face folder), its tokenizer from ``SOURCE/tokenizer/`` (what runs
  and ``lmforge convert`` write) or the folder itself (a Hugging Face folder's ``tokenizer.json`` /
  ``tokenizer.model``), and its chat template from ``lmforge.data.chat.chat_template_for``: an
  imported model's own Jinja template, else lmforge's ``<|user|> ... <|end|>`` format. Bad input
  is a one-line ValueError naming the folder: not a weights folder, no tokenizer, neither chat
  specials nor a template (all found before any parameter is read), an encoder model.
- One device by default: a chat is one row, and a data-parallel mesh would only compute copies of
  it. ``load_chat_model(mesh=...)`` places the parameters on any mesh (FSDP for a model bigger than
  a device); the sampler pads the batch to the mesh's batch shards and the stream stops those
  filler rows as soon as the real one ends.
- Each turn re-renders the whole conversation with the template (what the model was trained to
  read: no prompt cache is carried between turns; its cost shows as prefill time). With lmforge's
  format, special-token text inside a message (``"<|end|>"`` typed, or in a tool's result) stays
  text (``ChatFormat``'s ``plain_content``, as ``lmforge serve``, the tool loop and training encode). The prompt gets
  at most ``max_seq_len - max_new_tokens`` tokens: when the conversation outgrows that, its oldest
  messages are dropped (the system prompt stays; a message and the reply to it go together), and if
  the newest message alone is still too long, its first tokens are cut (nanoGPT's sampler crops its
  context from the front the same way). Both are said on the notice channel, never silent. ``max_new_tokens`` is capped at half the context, so a
  conversation always has room.
- Streaming: ``Sampler.generate_ids(stream=...)`` hands each sampled id to the host as the device
  loop produces it (``infer.sampler``: a host callback per step, compiled in only when streaming).
  Ids become text through the tokenizer's ``token_bytes`` and Python's incremental UTF-8 decoder
  (``codecs``), so a character split over several byte-fallback tokens prints whole, once complete:
  what transformers' ``TextStreamer`` and vLLM's incremental detokenizer get by re-decoding and
  holding back text that ends in U+FFFD, here exactly and in O(1) per token. The stop tokens (the
  template's end of turn, eos) are not printed or kept in the history.
- Timing: prefill is the time from the call to the first sampled token (it includes compiling when
  the prompt reaches a new width bucket, which the stats line says); the decode rate is the tokens
  after the first over the time from the first token to the last.
- In the terminal (:func:`run_terminal`), generation runs on a worker thread and the main thread
  prints what the stream queues. During a reply a SIGINT handler replaces KeyboardInterrupt, so
  Ctrl-C stops the reply at the next step (the stream returns True and the sampler ends the row,
  "cancelled") and never the program; the partial reply stays in the history, as it was shown. ``/reset``, ``/system TEXT``, ``/help``, ``/quit`` and
  EOF (Ctrl-D) are the commands; ANSI dim/bold only on a terminal without ``NO_COLOR``.
- Tools (``lmforge chat RUN --tools calculator``, ``ChatSession(tools=...)``): a reply that calls a
  tool (``lmforge.infer.tools``' format, as ``sft_tools.py`` trains it) has its calls run
  (:meth:`ChatSession.run_calls`), each result shown and added as a ``tool`` message, and the
  assistant goes on, as ``lmforge.infer.tools.run_tools`` does in evaluation; at most ``max_calls``
  calls per user message. The tools' schemas (``Tool.schema()``, OpenAI's shape) go into the prompt
  through the template's ``tools`` where the model learned to read them there: by default for an
  imported chat template (an instruct model's, such as Qwen 2.5's ``# Tools`` system block, whose
  ``<tool_call>`` replies ``lmforge.infer.tools`` reads), not for lmforge's format (``sft_tools.py``
  trains a fixed set of tools without them; ``--tool-schemas`` adds lmforge's tool instructions).
  An imported template that renders no ``tools`` is said on the notice channel.
"""

from __future__ import annotations

import codecs
import dataclasses
import os
import pathlib
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import TextIO

import jax
import numpy as np
from jax.sharding import AxisType

from lmforge.data import load_tokenizer
from lmforge.data.tokenizer import tokenizer_dir
from lmforge.data.chat import ChatFormat, ChatTemplate, chat_template_for, check_messages, special_pieces
from lmforge.infer import FINISH_NAMES, Sampler, SamplingConfig, bucket
from lmforge.model import DEFAULT_RULES
from lmforge.weights import load_params, refuse_reward_model, source_kind

COMMANDS = {
    "/reset": "clear the conversation (the system prompt stays)",
    "/system TEXT": "set the system prompt (alone: show it; '/system -' removes it)",
    "/help": "this list",
    "/quit": "leave (also Ctrl-D); Ctrl-C stops a reply",
}


# ------------------------------------------------------------------------------------------ loading
@dataclasses.dataclass
class ChatModel:
    """What a chat needs: the sampler (model, tokenizer, mesh) and the chat template."""
    sampler: Sampler
    template: ChatTemplate
    source: pathlib.Path


def one_device_mesh() -> jax.sharding.Mesh:
    """A (data 1, fsdp 1, tensor 1) mesh on the first device."""
    return jax.make_mesh((1, 1, 1), ("data", "fsdp", "tensor"), axis_types=(AxisType.Auto,) * 3,
                         devices=jax.devices()[:1])


def load_chat_model(source: str | pathlib.Path, *, mesh: jax.sharding.Mesh | None = None, rules=DEFAULT_RULES,
                    dtype: str | None = None) -> ChatModel:
    """Loads a decoder-only model, its tokenizer and chat template for chatting.

    Args:
      source: a run folder (its latest checkpoint), an lmforge model folder or a Hugging Face folder.
      mesh: where the parameters go (default: the first device); rules: the logical axis rules.
      dtype: cast floating-point parameters (e.g. "bfloat16"); None keeps them as stored.

    Raises:
      ValueError (WeightsError) for a folder that is not a weights source, has no tokenizer, whose
      tokenizer has neither a chat template nor lmforge's chat specials, whose model is not
      decoder-only, or whose vocabulary is smaller than the tokenizer's; CheckpointError for an
      unreadable checkpoint.
    """
    source = pathlib.Path(source)
    source_kind(source)                       # cheap checks first: nothing is loaded for a wrong folder
    refuse_reward_model(source, "chat")
    tok = load_tokenizer(tokenizer_dir(source))
    try:
        template = chat_template_for(tok)
    except ValueError as e:
        raise ValueError(f"{source}: cannot chat: {e}") from None
    mesh = one_device_mesh() if mesh is None else mesh
    loaded = load_params(source, mesh, rules=rules, dtype=dtype)
    if loaded.cfg.architecture != "decoder":
        raise ValueError(f"{source} holds a {loaded.cfg.family} model "
                         f"({loaded.cfg.architecture.replace('_', '-')}); chat needs a decoder-only model")
    if tok.vocab_size > loaded.cfg.vocab_size:
        raise ValueError(f"{source}: the tokenizer has {tok.vocab_size} ids but the model only {loaded.cfg.vocab_size}")
    return ChatModel(Sampler(loaded.graphdef, loaded.params, tok, loaded.cfg, mesh, rules, step=loaded.step),
                     template, source)


# ------------------------------------------------------------------------------------------ a session
class TextStream:
    """Token ids to text as they arrive, whole characters only.

    Each id's bytes (``tok.token_bytes()``: ``▁`` as a space, ``<0xNN>`` as its byte, control ids as
    nothing) go through an incremental UTF-8 decoder, so a character split over byte-fallback tokens
    comes out once complete; invalid bytes become U+FFFD, as ``bytes.decode(errors="replace")``.
    ``skip`` ids (the stop tokens) contribute nothing.
    """

    def __init__(self, tok, skip: Sequence[int] = ()):
        self._bytes = tok.token_bytes()
        self._skip = frozenset(int(i) for i in skip)
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        """The text that ``token_id`` completes ('' while a character is still incomplete)."""
        token_id = int(token_id)
        if token_id in self._skip or not 0 <= token_id < len(self._bytes):
            return ""
        return self._utf8.decode(self._bytes[token_id])

    def flush(self) -> str:
        """What is left at the end (a dangling incomplete character as U+FFFD)."""
        return self._utf8.decode(b"", final=True)


def special_tokens(tok) -> dict[int, str]:
    """``{id: text}`` of ``tok``'s special tokens whose text would show in decoded text: lmforge's
    ``<|...|>`` pieces (chat roles, ``<|end|>``, ``<|reserved_i|>``; ``tok.token_bytes()`` gives them
    their text), or a Hugging Face tokenizer's special tokens (those its config names: bos, eos, ...,
    ``additional_special_tokens``, and ``added_tokens_decoder`` entries marked special; transformers'
    ``skip_special_tokens``). Control ids that decode to nothing (SentencePiece's bos, eos, pad) are
    left out: they show as '' anyway."""
    table = tok.token_bytes()
    config = getattr(tok, "config", None)
    if not isinstance(config, dict):   # lmforge's tokenizers: SentencePiece or char (which has none)
        return special_pieces(tok)
    extra = config.get("extra_special_tokens", config.get("additional_special_tokens")) or []
    extra = list(extra.values()) if isinstance(extra, dict) else list(extra)
    decoder = config.get("added_tokens_decoder") or {}
    texts = [*getattr(tok, "special_tokens", {}).values(), *extra,
             *(t for t in (decoder.values() if isinstance(decoder, dict) else ())
               if isinstance(t, dict) and t.get("special"))]
    out = {}
    for t in texts:
        t = t.get("content") if isinstance(t, dict) else t
        if isinstance(t, str) and t:
            try:
                i = tok.token_id(t)
            except KeyError:
                continue
            if 0 <= i < len(table) and table[i]:
                out[i] = t
    return out


@dataclasses.dataclass
class ReplyStats:
    """How one reply went. Times in seconds (host clock, ``time.perf_counter``)."""
    prompt_tokens: int        # what the model read (after any cropping)
    tokens: int               # sampled, the stop token included
    prefill_s: float          # the call to the first sampled token (compiling included when ``compiled``)
    decode_s: float           # the first sampled token to the last
    finish: str               # "stop" | "length" | "cancelled"
    compiled: bool            # the prompt reached a new width bucket: prefill_s includes compiling

    @property
    def decode_tokens_per_s(self) -> float | None:
        """Tokens after the first over the time they took; None for a one-token reply."""
        return (self.tokens - 1) / self.decode_s if self.tokens > 1 and self.decode_s > 0 else None

    def line(self) -> str:
        rate = self.decode_tokens_per_s
        parts = [f"{self.tokens} token{'s' if self.tokens != 1 else ''}", f"{rate:.1f} tokens/s decode" if rate is not None else "no decode step",
                 f"prefill {self.prompt_tokens} tokens in {self.prefill_s:.2f} s"
                 + (" (incl. compiling)" if self.compiled else "")]
        if self.finish == "length":
            parts.append("stopped at the token limit")
        elif self.finish == "cancelled":
            parts.append("interrupted")
        return "[" + ", ".join(parts) + "]"


@dataclasses.dataclass
class Reply:
    text: str                 # the reply as printed (stop tokens left out)
    token_ids: list[int]      # as sampled, the stop token included
    stats: ReplyStats


class ChatSession:
    """A conversation with a model: the system prompt, the turns so far and the sampling settings.

    ``notice`` receives one line whenever the session changes something the user did not ask for
    (the reply length capped, old messages dropped, a long message cut). Raises ValueError for
    sampling settings out of range (``SamplingConfig``) or ``max_new_tokens < 1``.
    """

    def __init__(self, model: ChatModel, *, system: str | None = None, temperature: float = 0.7, top_k: int = 0,
                 top_p: float = 0.95, max_new_tokens: int = 256, seed: int = 0, tools: Sequence = (),
                 max_calls: int = 4, tool_schemas: bool | None = None,
                 notice: Callable[[str], None] = lambda line: print(line, file=sys.stderr)):
        self.model, self.seed, self.notice = model, seed, notice
        self.tools = {t.name: t for t in tools}   # lmforge.infer.tools.Tool by name: run_calls runs them
        if len(self.tools) != len(tools) or max_calls < 1:
            raise ValueError(f"tools {[t.name for t in tools]}, max_calls={max_calls}: expected distinct names and "
                             f"max_calls >= 1")
        self.max_calls = max_calls
        imported = not isinstance(model.template, ChatFormat)
        # the schemas the template shows (its `tools`); None: where the model learned to read them (module docstring)
        show = imported if tool_schemas is None else tool_schemas
        self.tool_schemas = [t.schema() for t in tools] if show and tools else None
        if self.tool_schemas and imported and not _renders_tools(model.template):
            notice(f"{model.source}: its chat template renders no tools, so the model is not told of "
                   f"{', '.join(self.tools)}; describe them with --system")
        self.system = system or None
        self.turns: list[dict] = []           # user / assistant messages, oldest first
        self.context = model.sampler.model_cfg.max_seq_len
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={max_new_tokens}: expected >= 1")
        cap = max(self.context // 2, 1)
        if max_new_tokens > cap:
            notice(f"max_new_tokens={max_new_tokens} would leave the conversation too little of the model's "
                   f"context ({self.context} tokens): replies get at most {cap} tokens")
            max_new_tokens = cap
        tok = model.sampler.tok
        self.stop_ids = tuple(dict.fromkeys([*model.template.stop_ids, *([tok.eos_id] if tok.eos_id >= 0 else [])]))
        self.sampling = SamplingConfig(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                                       top_p=top_p, stop_token_ids=self.stop_ids)
        self._widths: set[int] = set()        # prompt width buckets already compiled
        self._replies = 0

    @property
    def messages(self) -> list[dict]:
        """The conversation as the template renders it: the system prompt (if any), then the turns."""
        return ([{"role": "system", "content": self.system}] if self.system else []) + self.turns

    def reset(self) -> None:
        """Forgets the turns; keeps the system prompt."""
        self.turns = []

    def set_system(self, text: str | None) -> None:
        """Sets (or, with None / "", removes) the system prompt; the turns stay."""
        self.system = text or None

    def prompt_ids(self) -> list[int]:
        """The rendered conversation ending in the assistant's generation prompt, fitted to the context
        (see the module docstring): drops the oldest turns from ``self.turns`` when needed."""
        budget = self.context - self.sampling.max_new_tokens
        # train_on="all": the prompt needs no loss mask (an imported template then skips finding the assistant spans);
        # lmforge's format keeps special-token text in a message as text: a tool's result cannot forge a turn
        render = lambda: [int(i) for i in self.model.template.encode(
            self.messages, train_on="all", add_generation_prompt=True, tools=self.tool_schemas)[0]]
        ids, dropped = render(), 0
        while len(ids) > budget and len(self.turns) > 1:
            # the oldest exchange goes: its user message and everything up to the next user message
            cut = next((i for i in range(1, len(self.turns)) if self.turns[i]["role"] == "user"), len(self.turns) - 1)
            dropped += cut
            del self.turns[:cut]
            ids = render()
        if dropped:
            self.notice(f"the conversation outgrew the context ({self.context} tokens, {self.sampling.max_new_tokens} "
                        f"kept for the reply): dropped the {dropped} oldest message(s)"
                        + (", the system prompt stays" if self.system else ""))
        if len(ids) > budget:
            parts = ["the last message", *(["the system prompt"] if self.system else []),
                     *(["the tools' schemas"] if self.tool_schemas else [])]
            self.notice(f"{', '.join(parts[:-1]) + ' and ' if len(parts) > 1 else ''}{parts[-1]} "
                        f"{'take' if len(parts) > 1 else 'takes'} {len(ids)} tokens; the model reads only the last {budget}")
            ids = ids[-budget:]
        return ids

    def reply(self, text: str | None, *, on_text: Callable[[str], None] = lambda piece: None,
              should_stop: Callable[[], bool] = lambda: False) -> Reply:
        """Adds the user's ``text``, samples the assistant's reply and adds it too; ``text=None`` asks
        the assistant to go on after the tool results :meth:`run_calls` added.

        ``on_text`` gets the reply's text piece by piece while it is generated (called from the
        runtime's callback thread); ``should_stop()`` is asked after every token and True ends the
        reply there (it is kept, as far as it got). Raises ValueError for a message that is not text,
        or ``None`` when the last message is not a tool result.
        """
        if text is None:
            if not self.turns or self.turns[-1]["role"] != "tool":
                raise ValueError("reply(None) goes on after tool results; the last message is not one")
        else:
            self.turns.append(check_messages([{"role": "user", "content": text}], where="chat message")[0])
        try:
            ids = self.prompt_ids()
        except BaseException:
            if text is not None:
                self.turns.pop()
            raise
        width = bucket(len(ids))
        compiled, self._widths = width not in self._widths, self._widths | {width}
        decoder = TextStream(self.model.sampler.tok, skip=self.stop_ids)
        pieces, times = [], []

        def on_step(step: int, tokens: np.ndarray, live: np.ndarray) -> bool:
            times.append(time.perf_counter())
            if not live[0]:        # the reply has ended; stop any filler rows of the batch too
                return True
            piece = decoder.push(tokens[0])
            if piece:
                pieces.append(piece)
                on_text(piece)
            return bool(should_stop())

        start = time.perf_counter()
        out = self.model.sampler.generate_ids([ids], self.sampling, seed=self.seed + self._replies, stream=on_step)
        self._replies += 1
        tail = decoder.flush()
        if tail:
            pieces.append(tail)
            on_text(tail)
        n = int(out.lengths[0])
        reply = "".join(pieces)
        self.turns.append({"role": "assistant", "content": reply})
        stats = ReplyStats(prompt_tokens=len(ids), tokens=n, prefill_s=times[0] - start if times else 0.0,
                           decode_s=times[n - 1] - times[0] if n > 1 and len(times) >= n else 0.0,
                           finish=FINISH_NAMES[int(out.finish_reason[0])], compiled=compiled)
        return Reply(reply, out.tokens[0, :n].tolist(), stats)

    def run_calls(self, reply: Reply) -> list:
        """Runs the tool calls of ``reply`` (the last assistant turn) with ``self.tools`` and adds each
        result as a ``tool`` message, as ``lmforge.infer.tools.run_tools`` does: ``[]`` when it calls
        nothing or the session has no tools. A call that cannot run (not JSON, an unknown tool, the tool
        raising) gets ``"error: ..."`` as its result, for the model to read. Past ``max_calls`` calls
        since the user's last message the calls are not run: ``[]``, said on the notice channel.
        Returns the ``lmforge.infer.tools.ToolCall`` s with their results; then ``reply(None)`` lets
        the assistant go on."""
        from lmforge.infer.tools import call_tool, read_calls   # pylint: disable=import-outside-toplevel

        calls = read_calls(reply.text) if self.tools else []
        if not calls:
            return []
        last_user = max((i for i, m in enumerate(self.turns) if m["role"] == "user"), default=-1)
        made = sum(m["role"] == "tool" for m in self.turns[last_user + 1:])
        if made + len(calls) > self.max_calls:
            self.notice(f"{made + len(calls)} tool calls since your message pass max_calls={self.max_calls}: not run")
            return []
        done = [c if c.error else call_tool(c, self.tools) for c in calls]
        self.turns.extend({"role": "tool", "content": c.result} for c in done)
        return done


def _renders_tools(template) -> bool:
    """Whether an imported template shows a ``tools`` list at all: rendering one conversation with a
    probe tool and without it gives different text."""
    probe = [{"type": "function", "function": {"name": "lmforge_probe", "description": "", "parameters": {}}}]
    messages = [{"role": "user", "content": "hi"}]
    try:
        return template.render(messages, tools=probe) != template.render(messages)
    except ValueError:
        return True   # a template that refuses the probe conversation is left to say so on the real one


# ------------------------------------------------------------------------------------------ the terminal
class _Style:
    """ANSI bold / dim, only for a terminal that wants colour (https://no-color.org)."""

    def __init__(self, out: TextIO):
        self.on = (hasattr(out, "isatty") and out.isatty() and "NO_COLOR" not in os.environ
                   and os.environ.get("TERM") != "dumb")

    def dim(self, text: str) -> str:
        return f"\x1b[2m{text}\x1b[0m" if self.on else text

    def bold(self, text: str) -> str:
        return f"\x1b[1m{text}\x1b[0m" if self.on else text


_DONE = object()


def stream_reply(session: ChatSession, text: str, write: Callable[[str], None], *, label: str = "") -> Reply:
    """Runs ``session.reply`` on a worker thread and writes ``label``, then the reply's pieces as they come,
    from this thread.

    Ctrl-C stops the reply at the next token (the partial reply is returned): on the main thread a
    SIGINT handler is installed before ``label`` is written and removed after the reply, so no
    KeyboardInterrupt can land between the two; elsewhere KeyboardInterrupt is caught while waiting.
    Whatever the reply raised is raised here.
    """
    pieces: queue.Queue = queue.Queue()
    stop = threading.Event()
    result: list = []

    def work():
        try:
            result.append(session.reply(text, on_text=pieces.put, should_stop=stop.is_set))
        except BaseException as e:   # noqa: BLE001 -- handed to the main thread
            result.append(e)
        pieces.put(_DONE)

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    try:
        write(label)
        worker = threading.Thread(target=work, name="lmforge-chat-reply", daemon=True)
        worker.start()
        while True:
            try:
                piece = pieces.get(timeout=0.1)
            except queue.Empty:
                continue
            except KeyboardInterrupt:
                stop.set()
                continue
            if piece is _DONE:
                break
            write(piece)
        worker.join()
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


def run_terminal(session: ChatSession, *, stdin: TextIO | None = None, out: TextIO | None = None) -> int:
    """The read-reply loop (see the module docstring); returns the exit status (0)."""
    stdin, out = stdin or sys.stdin, out or sys.stdout
    style = _Style(out)
    interactive = stdin is sys.stdin
    you = style.bold("you> ")
    if interactive and stdin.isatty():
        try:
            import readline  # noqa: F401  -- line editing and history for input()
            you = you.replace("\x1b[1m", "\001\x1b[1m\002").replace("\x1b[0m", "\001\x1b[0m\002")  # zero width
        except ImportError:
            pass

    def say(line: str = "") -> None:
        out.write(line + "\n")
        out.flush()

    def write(piece: str) -> None:
        out.write(piece)
        out.flush()

    session.notice = lambda line: say(style.dim(f"({line})"))
    cfg = session.model.sampler.model_cfg
    say(style.dim(f"chatting with {session.model.source} ({cfg.num_layers} layers, context {session.context} tokens)."
                  f" /help for commands, Ctrl-D to leave."))
    if session.system:
        say(style.dim(f"system: {session.system}"))
    while True:
        try:
            if interactive:
                line = input(you)
            else:
                write(style.bold("you> "))
                line = stdin.readline()
                if not line:
                    raise EOFError
                line = line.rstrip("\n")
        except EOFError:
            say()
            return 0
        except KeyboardInterrupt:
            say()
            say(style.dim("(/quit or Ctrl-D to leave)"))
            continue
        text = line.strip()
        if not text:
            continue
        if text.startswith("/"):
            command, _, arg = text.partition(" ")
            arg = arg.strip()
            if command in ("/quit", "/exit"):
                return 0
            if command == "/reset":
                session.reset()
                say(style.dim("(conversation cleared" + ("; the system prompt stays)" if session.system else ")")))
            elif command == "/system":
                if arg:
                    session.set_system(None if arg == "-" else arg)
                    say(style.dim(f"(system prompt {'set' if session.system else 'removed'})"))
                else:
                    say(style.dim(f"system: {session.system}" if session.system else "(no system prompt)"))
            elif command == "/help":
                for name, what in COMMANDS.items():
                    say(style.dim(f"  {name:<14} {what}"))
            else:
                say(style.dim(f"(unknown command {command}; commands: {', '.join(c.split()[0] for c in COMMANDS)})"))
            continue
        reply = stream_reply(session, line, write, label=style.bold("assistant> "))
        say()
        say(style.dim(reply.stats.line()))
        while calls := session.run_calls(reply):   # --tools: each result, then the assistant goes on
            for c in calls:
                args = ", ".join(f"{k}={v!r}" for k, v in c.arguments.items())
                say(style.dim(f"(tool {c.name or '?'}({args}) -> {c.result})"))
            reply = stream_reply(session, None, write, label=style.bold("assistant> "))
            say()
            say(style.dim(reply.stats.line()))
