"""Hugging Face tokenizer folders as lmforge tokenizers, and their chat templates as ``ChatTemplate``s.

    tok = load_tokenizer("hf_llama/")          # recognises tokenizer.json by its content
    template = chat_template_for(tok)          # lmforge.data.chat: the folder's jinja template
    ids, weights = template.encode(messages)   # transformers' ids, and a loss mask on the assistant turns

What ``transformers.AutoTokenizer`` reads for a fast tokenizer is read here without transformers
(torch-sized): ``tokenizer.json`` with the ``tokenizers`` library (the Rust tokenizer transformers'
fast tokenizers wrap), ``tokenizer_config.json`` (with a legacy ``special_tokens_map.json`` under it)
for the named special tokens and options, and the chat template from ``chat_template.jinja``, which
transformers prefers, else the config's ``chat_template``.

Choices (each one what transformers 5 does, so ids agree; tested against it):
- ``encode`` adds nothing (``add_special_tokens=False``): lmforge's pipeline and sampler add bos
  themselves, and a chat template writes its own specials. ``split_special_tokens`` from the config
  is honoured (``encode_special_tokens``: "<s>" typed in text is then three pieces, not bos).
- Special tokens named in the config (bos, eos, unk, sep, pad, cls, mask, ``extra_special_tokens`` /
  ``additional_special_tokens``) and ``added_tokens_decoder`` entries that ``tokenizer.json`` lacks
  are added as transformers adds them at load time.
- ``decode`` keeps special tokens (transformers' default) and applies ``clean_up_tokenization_spaces``
  only to non-BPE models, as transformers 5 does (it corrupts BPE output).
- The chat template is rendered as ``apply_chat_template`` renders it: jinja2's
  ``ImmutableSandboxedEnvironment`` (templates are untrusted code), ``trim_blocks`` and
  ``lstrip_blocks``, the ``loopcontrols`` extension, ``raise_exception``, a ``tojson`` that does not
  escape HTML, ``strftime_now``, the named special tokens as variables (``bos_token`` ...),
  ``messages``, ``tools`` (None unless given: OpenAI's function schemas, as
  ``apply_chat_template(tools=...)`` passes them), ``documents=None`` and ``add_generation_prompt``;
  then tokenized with ``add_special_tokens=False``. Assistant messages may carry OpenAI's
  ``tool_calls`` and tool results come as role ``tool``: the template renders them its own way.
- The loss mask: from the template's ``{% generation %}`` blocks when it has them (the template's
  author marks what the model says; exactly transformers' ``return_assistant_tokens_mask``, which
  TRL's ``assistant_only_loss`` uses), else derived by rendering prefixes: assistant message ``i``
  owns the characters of ``render(messages[:i + 1])`` after its common prefix with
  ``render(messages[:i], add_generation_prompt=True)``, which is what the model must produce after
  the generation prompt, its end-of-turn marker included (whitespace the template writes after a
  stop token, as ChatML's "\\n" after ``<|im_end|>``, is not: the model stops before it). Almost no
  template on the Hub has generation blocks, so prefixes are what makes "train on the assistant
  turns" work for imported models. Both map character spans to tokens the same way (a token
  overlapping a span is weighted, as transformers does). A template that renders a conversation's
  beginning differently once later messages follow is refused with a ValueError rather than given
  a wrong mask.
- Stop ids: eos, plus the first added token the template writes after an assistant's content in
  a probe conversation (``<|im_end|>`` for ChatML, ``<|eot_id|>`` for Llama 3): what ends a turn.
- ``token_bytes``: byte-level BPE pieces through GPT-2's byte table, ``<0xNN>`` byte-fallback
  pieces as their byte, added tokens as their text, other pieces with the decoder's ``▁`` → space
  (Metaspace / Replace) and WordPiece's ``##``. A Metaspace decoder's strip of the first leading
  space is not applied (a piece does not know it is first).
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import re
from collections.abc import Sequence

import numpy as np

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
TEMPLATE_FILE = "chat_template.jinja"
SPECIAL_MAP_FILE = "special_tokens_map.json"
GENERATION_FILE = "generation_config.json"   # the model's, beside its tokenizer: carried to an export
SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
_GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")
_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def is_hf_tokenizer_json(obj) -> bool:
    """Whether a parsed ``tokenizer.json`` is the ``tokenizers`` library's (lmforge's char tokenizer
    writes ``{"kind": "char", ...}`` under the same name)."""
    return isinstance(obj, dict) and isinstance(obj.get("model"), dict) and "kind" not in obj


class HFTokenizer:
    """A Hugging Face fast tokenizer (``tokenizer.json`` + ``tokenizer_config.json``) behind lmforge's
    ``Tokenizer`` protocol. Ids < 0 mean "no such token". See the module docstring for the choices.

    Raises ValueError (naming ``origin``) for a file the ``tokenizers`` library cannot read.
    """

    def __init__(self, tokenizer_json: str, config: dict | None = None, *, chat_template_file: str | None = None,
                 origin: str = "<memory>", generation_config: dict | None = None):
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise ImportError("reading a Hugging Face tokenizer needs the `tokenizers` package "
                              "(pip install tokenizers)") from None
        self.origin = origin
        self._json = tokenizer_json
        self.config = dict(config or {})
        self._template_file = chat_template_file
        # The source model's generation_config.json (stop ids, sampling defaults), kept with the tokenizer
        # so that an export of a model fine-tuned from it writes them back (weights/hf.py save_hf).
        self.generation_config = None if generation_config is None else dict(generation_config)
        try:
            self._tk = Tokenizer.from_str(tokenizer_json)
        except Exception as e:  # the Rust side raises plain Exceptions
            raise ValueError(f"{origin}: not a tokenizer.json the `tokenizers` library reads ({_first_line(e)})") from None
        self._tk.no_truncation()
        self._tk.no_padding()
        self.special_tokens = {name: _token_text(self.config.get(name)) for name in SPECIAL_TOKEN_NAMES
                               if _token_text(self.config.get(name))}
        self._add_config_tokens()
        self._tk.encode_special_tokens = bool(self.config.get("split_special_tokens", False))
        spec = json.loads(tokenizer_json)
        self._model_type = (spec.get("model") or {}).get("type", "")
        self._decoder = spec.get("decoder") or {}
        self.vocab_size = max(self._tk.get_vocab(with_added_tokens=True).values(), default=-1) + 1
        ids = {name: self._tk.token_to_id(t) for name, t in self.special_tokens.items()}
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = (
            -1 if ids.get(k) is None else ids[k] for k in ("pad_token", "bos_token", "eos_token", "unk_token"))
        self.chat_template = self._select_template()

    # ------------------------------------------------------------------ reading and writing folders
    @classmethod
    def from_folder(cls, directory, *, tokenizer_json: str | None = None) -> "HFTokenizer":
        """Reads ``directory``'s tokenizer.json, tokenizer_config.json, special_tokens_map.json,
        chat_template.jinja and generation_config.json (all but the first optional). Raises ValueError
        naming a malformed file."""
        directory = pathlib.Path(directory)
        if tokenizer_json is None:
            tokenizer_json = (directory / TOKENIZER_FILE).read_text(encoding="utf-8")
        config = {}
        for name in (SPECIAL_MAP_FILE, CONFIG_FILE):   # the config wins over the legacy map
            config.update(_json_object(directory / name) or {})
        template = directory / TEMPLATE_FILE
        return cls(tokenizer_json, config, origin=str(directory / TOKENIZER_FILE),
                   chat_template_file=template.read_text(encoding="utf-8") if template.is_file() else None,
                   generation_config=_json_object(directory / GENERATION_FILE))

    def save(self, directory: pathlib.Path) -> None:
        """Writes tokenizer.json (as read), tokenizer_config.json, chat_template.jinja and
        generation_config.json (if it had them) into ``directory``; an lmforge ``tokenizer.model`` there
        is removed (one tokenizer per folder)."""
        from lmforge.data.tokenizer import SP_FILE

        directory = pathlib.Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / TOKENIZER_FILE).write_text(self._json, encoding="utf-8")
        (directory / CONFIG_FILE).write_text(json.dumps(self.config, indent=2, ensure_ascii=False) + "\n",
                                             encoding="utf-8")
        for name, text in ((TEMPLATE_FILE, self._template_file),
                           (GENERATION_FILE, None if self.generation_config is None else
                            json.dumps(self.generation_config, indent=2, ensure_ascii=False) + "\n")):
            if text is not None:
                (directory / name).write_text(text, encoding="utf-8")
            else:
                (directory / name).unlink(missing_ok=True)
        (directory / SP_FILE).unlink(missing_ok=True)

    # ------------------------------------------------------------------ the Tokenizer protocol
    def encode(self, text: str) -> list[int]:
        """``text`` → ids, no special tokens added (what ``tokenizer(text, add_special_tokens=False)`` gives)."""
        return self._tk.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """``[encode(t) for t in texts]``, on the ``tokenizers`` library's threads."""
        return [e.ids for e in self._tk.encode_batch(list(texts), add_special_tokens=False)]

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Ids and each id's ``(start, end)`` character span in ``text``."""
        e = self._tk.encode(text, add_special_tokens=False)
        return e.ids, e.offsets

    def decode(self, ids: Sequence[int]) -> str:
        """Ids → text, special tokens kept (transformers' ``decode`` defaults). Raises ValueError for
        an id outside ``[0, vocab_size)``."""
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"decode: id {bad[0]} is outside the vocabulary [0, {self.vocab_size})")
        text = self._tk.decode(ids, skip_special_tokens=False)
        if self.config.get("clean_up_tokenization_spaces") and (
                self._model_type != "BPE"
                or self.config.get("clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output")):
            text = _clean_up_tokenization(text)
        return text

    def token_id(self, piece: str) -> int:
        i = self._tk.token_to_id(piece)
        if i is None:
            raise KeyError(f"{piece!r} is not a token of {self.origin} ({self.vocab_size} ids)")
        return i

    def id_to_piece(self, i: int) -> str:
        piece = self._tk.id_to_token(int(i))
        return piece if piece is not None else f"<id {int(i)}>"

    def token_bytes(self) -> list[bytes]:
        """The bytes each id contributes to decoded text (see the module docstring); what the sampler
        matches stop strings against. Ids the vocabulary skips give ``b""``. Computed once per
        tokenizer (a pass over the vocabulary) and shared: callers must not modify the list."""
        if getattr(self, "_token_bytes", None) is None:
            self._token_bytes = self._all_token_bytes()
        return self._token_bytes

    def _all_token_bytes(self) -> list[bytes]:
        kinds = _decoder_steps(self._decoder)
        byte_level = any(d.get("type") == "ByteLevel" for d in kinds)
        table = {c: b for b, c in _bytes_to_unicode().items()} if byte_level else {}
        replaces = [(d["pattern"]["String"], d["content"]) for d in kinds
                    if d.get("type") == "Replace" and "String" in (d.get("pattern") or {})]
        replaces += [(d.get("replacement", "\u2581"), " ") for d in kinds if d.get("type") == "Metaspace"]
        wordpiece = next((d.get("prefix", "##") for d in kinds if d.get("type") == "WordPiece"), None)
        added = {i: t.content for i, t in self._tk.get_added_tokens_decoder().items()}
        out = []
        for i in range(self.vocab_size):
            piece = added.get(i, self._tk.id_to_token(i))
            if piece is None:
                out.append(b"")
            elif i in added:
                out.append(piece.encode())
            elif byte_level:
                out.append(bytes(table[c] for c in piece) if all(c in table for c in piece) else piece.encode())
            elif (m := _BYTE_PIECE.fullmatch(piece)) is not None:
                out.append(bytes([int(m.group(1), 16)]))
            else:
                for old, new in replaces:
                    piece = piece.replace(old, new)
                if wordpiece is not None:
                    piece = piece[len(wordpiece):] if piece.startswith(wordpiece) else " " + piece
                out.append(piece.encode())
        return out

    def __repr__(self) -> str:
        return f"HFTokenizer({self.origin!r}, vocab_size={self.vocab_size})"

    # ------------------------------------------------------------------ internals
    def _add_config_tokens(self) -> None:
        """Tokens the config names that tokenizer.json lacks, added as transformers adds them at load."""
        from tokenizers import AddedToken

        have = {t.content for t in self._tk.get_added_tokens_decoder().values()}
        wanted = []
        decoder = self.config.get("added_tokens_decoder") or {}
        for _, tok in sorted(decoder.items(), key=lambda kv: int(kv[0])) if isinstance(decoder, dict) else ():
            if isinstance(tok, dict) and isinstance(tok.get("content"), str) and tok["content"] not in have:
                wanted.append(AddedToken(tok["content"], single_word=bool(tok.get("single_word", False)),
                                         lstrip=bool(tok.get("lstrip", False)), rstrip=bool(tok.get("rstrip", False)),
                                         normalized=bool(tok.get("normalized", not tok.get("special", False))),
                                         special=bool(tok.get("special", False))))
        extra = self.config.get("extra_special_tokens", self.config.get("additional_special_tokens")) or []
        extra = list(extra.values()) if isinstance(extra, dict) else list(extra)
        for t in [*self.special_tokens.values(), *(_token_text(x) for x in extra)]:
            if t and t not in have and t not in {w.content for w in wanted}:
                wanted.append(AddedToken(t, special=True, normalized=False))
        if wanted:
            self._tk.add_tokens(wanted)

    def _select_template(self) -> str | None:
        """chat_template.jinja, else the config's ``chat_template`` (a string, or named templates of
        which "default" is used, as transformers does without tools)."""
        if self._template_file is not None:
            return self._template_file
        t = self.config.get("chat_template")
        if t is None or isinstance(t, str):
            return t or None
        named = {d.get("name"): d.get("template") for d in t if isinstance(d, dict)} if isinstance(t, list) else t
        if not isinstance(named, dict) or not all(isinstance(v, str) for v in named.values()):
            raise ValueError(f"{self.origin}: tokenizer_config.json's chat_template is {type(t).__name__}; expected "
                             f"a string or a list of {{\"name\", \"template\"}} objects")
        if "default" not in named:
            raise ValueError(f"{self.origin}: tokenizer_config.json has chat templates {sorted(named)} and no "
                             f"'default' one; expected a template named 'default'")
        return named["default"]


class HFChatTemplate:
    """A Hugging Face chat template (jinja) over an :class:`HFTokenizer`, as a ``ChatTemplate``.

    ``encode`` gives transformers' ``apply_chat_template(messages, tokenize=True)`` ids and a loss mask
    (see the module docstring for both). Raises ValueError (naming the tokenizer's folder) for a
    template that does not compile, one that refuses a conversation (``raise_exception``), and, for
    ``train_on="assistant"`` without generation blocks, one whose prefixes are not prefixes.
    """

    def __init__(self, tok: HFTokenizer, template: str | None = None):
        self.tok = tok
        self.template = template if template is not None else tok.chat_template
        if not self.template:
            raise ValueError(f"{tok.origin}: the tokenizer has no chat template; expected chat_template.jinja or a "
                             f"chat_template in tokenizer_config.json")
        self.variables = dict(tok.special_tokens)
        self._env, self._compiled = _compile(self.template, tok.origin)
        self.uses_generation_blocks = bool(_GENERATION_TAG.search(self.template))
        self._stop_texts: tuple[str, ...] = ()
        self.stop_ids = self._stop_ids()
        self._stop_texts = tuple(t for t in (tok.id_to_piece(i) for i in self.stop_ids) if t)

    def render(self, messages: Sequence, *, add_generation_prompt: bool = False,
               tools: Sequence[dict] | None = None) -> str:
        """The conversation as the template's text (``apply_chat_template(..., tokenize=False)``)."""
        return self._render(messages, add_generation_prompt, tools=tools)[0]

    def encode(self, messages: Sequence, *, train_on: str = "assistant", add_generation_prompt: bool = False,
               tools: Sequence[dict] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One conversation → ``(ids, weights)``, int32 and float32 of shape ``(L,)``; ``weights[i] = 1``
        marks ``ids[i]`` as a token to learn. ``train_on="all"`` weights every id after the first.
        ``tools``: OpenAI function schemas (``{"type": "function", "function": {...}}``) for the template."""
        from lmforge.data.chat import TRAIN_ON

        if train_on not in TRAIN_ON:
            raise ValueError(f"train_on={train_on!r}: expected one of {', '.join(TRAIN_ON)}")
        text, spans = self._render(messages, add_generation_prompt, track=train_on == "assistant", tools=tools)
        ids, offsets = self.tok.encode_with_offsets(text)
        weights = np.zeros(len(ids), np.float32)
        if train_on == "all":
            weights[1:] = 1.0
        else:
            weights[:] = _overlapping(offsets, spans)
        return np.asarray(ids, np.int32), weights

    def prompt(self, messages: Sequence, *, tools: Sequence[dict] | None = None) -> np.ndarray:
        """The ids that ask for the next assistant turn, ``(L,)`` int32 (no loss mask is worked out)."""
        return self.encode(messages, train_on="all", add_generation_prompt=True, tools=tools)[0]

    def assistant_spans(self, messages: Sequence, *, add_generation_prompt: bool = False) -> list[tuple[int, int]]:
        """The ``[start, end)`` character spans of ``render(messages)`` that the model is trained on."""
        return self._render(messages, add_generation_prompt, track=True)[1]

    def __repr__(self) -> str:
        return f"HFChatTemplate({self.tok.origin!r})"

    # ------------------------------------------------------------------ internals
    def _render(self, messages, add_generation_prompt: bool, *, track: bool = False, tools=None):
        messages = [{k: v for k, v in dict(m).items() if v is not None} for m in messages]
        tools = list(tools) if tools else None
        if not track:
            return self._call(messages, add_generation_prompt, None, tools), []
        if self.uses_generation_blocks:
            spans: list[tuple[int, int]] = []
            return self._call(messages, add_generation_prompt, spans, tools), spans
        text = self._call(messages, add_generation_prompt, None, tools)
        spans = []
        for i, m in enumerate(messages):
            if m.get("role") != "assistant":
                continue
            base = self._call(messages[:i], False, None, tools) if i else self._before_content(messages[0], tools)
            upto = self._call(messages[:i + 1], False, None, tools)
            if not (text.startswith(upto) and upto.startswith(base)):
                raise ValueError(
                    f"{self.tok.origin}: the chat template renders message {i} (assistant) differently once later "
                    f"messages follow, so its loss mask cannot be derived from prefixes; expected a template with "
                    f"{{% generation %}} blocks, or train_on='all'")
            # What the model writes after the generation prompt: a prompt that the turn does not begin
            # with verbatim (a stray newline after it) still ends where the two texts part.
            head = self._call(messages[:i], True, None, tools) if i else base
            start = max(len(base), len(os.path.commonprefix([head, upto])))
            end = len(upto)
            tail = upto[start:].rstrip()
            if any(tail.endswith(t) for t in self._stop_texts):   # "<|im_end|>\n": not the "\n"
                end = start + len(tail)
            spans.append((start, end))
        return text, spans

    def _before_content(self, message: dict, tools) -> str:
        """What a conversation that opens with ``message`` renders before its content (the role header a
        generation prompt would write, and any system text the template adds): the base of the first
        turn's loss span. Not the empty conversation's render: templates read ``messages[0]`` outside
        their loop (Qwen2.5's), which an empty list fails. "" when the template does not show the
        content verbatim."""
        marker = "\x00lmforge-content\x00"
        text = self._call([{**message, "content": marker}], False, None, tools)
        return text[:text.index(marker)] if marker in text else ""

    def _call(self, messages, add_generation_prompt: bool, spans: list | None, tools=None) -> str:
        import jinja2

        try:
            self._env.lmforge_spans = spans
            if spans is None:
                return self._compiled.render(messages=messages, tools=tools, documents=None,
                                             add_generation_prompt=add_generation_prompt, **self.variables)
            chunks: list[str] = []
            self._env.lmforge_chunks = chunks
            for chunk in self._compiled.generate(messages=messages, tools=tools, documents=None,
                                                 add_generation_prompt=add_generation_prompt, **self.variables):
                chunks.append(chunk)
            return "".join(chunks)
        except jinja2.TemplateError as e:
            raise ValueError(f"{self.tok.origin}: the chat template refused the conversation: {_first_line(e)}") from None
        finally:
            self._env.lmforge_spans = self._env.lmforge_chunks = None

    def _stop_ids(self) -> tuple[int, ...]:
        stops = [self.tok.eos_id] if self.tok.eos_id >= 0 else []
        probe = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
        try:
            text, spans = self._render(probe, False, track=True)
        except ValueError:   # a template that wants more than a user and an assistant turn
            return tuple(stops)
        added = {t.content for t in self.tok._tk.get_added_tokens_decoder().values()}
        for start, end in spans[-1:]:
            after = text[start:end]
            after = after[after.find("Hello") + len("Hello"):] if "Hello" in after else after
            first = min(((after.find(t), t) for t in added if t and t in after), default=None)
            if first is not None:
                stops.append(self.tok.token_id(first[1]))
        return tuple(dict.fromkeys(stops))


# ---------------------------------------------------------------------------------------- helpers
def _json_object(path: pathlib.Path) -> dict | None:
    """The JSON object in ``path``, None when there is no such file. Raises ValueError naming it otherwise."""
    if not path.is_file():
        return None
    try:
        fields = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ValueError(f"{path}: not valid JSON ({_first_line(e)}); expected a JSON object") from None
    if not isinstance(fields, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(fields).__name__}")
    return fields


def _compile(template: str, origin: str):
    """transformers' chat-template environment (utils/chat_template_utils.py), with a generation-block
    tracker that records character spans while a template is generated chunk by chunk."""
    import jinja2
    import jinja2.ext
    import jinja2.nodes
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationTracker(jinja2.ext.Extension):
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_generation"), [], [], body).set_lineno(lineno)

        def _generation(self, caller):
            text = caller()
            spans, chunks = self.environment.lmforge_spans, self.environment.lmforge_chunks
            if spans is not None and chunks is not None:
                start = sum(map(len, chunks))
                spans.append((start, start + len(text)))
            return text

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        return datetime.datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[GenerationTracker, jinja2.ext.loopcontrols])
    env.lmforge_spans = env.lmforge_chunks = None
    env.filters["tojson"] = tojson
    env.globals.update(raise_exception=raise_exception, strftime_now=strftime_now)
    try:
        return env, env.from_string(template)
    except jinja2.TemplateSyntaxError as e:
        raise ValueError(f"{origin}: the chat template does not compile (line {e.lineno}: {e.message})") from None


def _overlapping(offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]) -> np.ndarray:
    """1.0 for each token whose ``[start, end)`` overlaps one of ``spans`` (transformers' rule)."""
    if not spans or not offsets:
        return np.zeros(len(offsets), np.float32)
    tok = np.asarray(offsets, np.int64).reshape(-1, 2)     # (L, 2)
    span = np.asarray(spans, np.int64).reshape(-1, 2)      # (S, 2)
    hit = (tok[:, 1:2] > span[None, :, 0]) & (tok[:, 0:1] < span[None, :, 1])   # (L, S)
    return hit.any(axis=1).astype(np.float32)


def _decoder_steps(decoder: dict) -> list[dict]:
    if decoder.get("type") == "Sequence":
        return [s for d in decoder.get("decoders", []) for s in _decoder_steps(d)]
    return [decoder] if decoder else []


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte → printable character table (openai/gpt-2 encoder.py), which byte-level BPE uses."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def _clean_up_tokenization(text: str) -> str:
    """transformers' ``clean_up_tokenization`` (tokenization_utils_base.py)."""
    for old, new in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                     (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(old, new)
    return text


def _token_text(value) -> str | None:
    """A config's token: a string, or an AddedToken object ``{"content": ...}``."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


__all__ = ["HFChatTemplate", "HFTokenizer", "is_hf_tokenizer_json"]
