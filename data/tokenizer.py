"""Tokenizers: a byte-fallback SentencePiece BPE (the default) and nanoGPT's character vocabulary.

Choices:
- SentencePiece BPE with ``byte_fallback=True`` and ``character_coverage=1.0``: no text is ever
  unknown. Identity normalization, no dummy prefix, extra whitespace kept, whitespace-only pieces
  allowed and ``"\\n"`` an atomic piece, so ``decode(encode(x)) == x`` for any string (code
  indentation survives; ``"\\n"`` is one token, not ``<0x0A>``). Digits are split one by one
  (as in LLaMA / PaLM), which helps arithmetic.
- Fixed ids: pad=0, unk=1, bos=2, eos=3, then ``SPECIAL_TOKENS`` (4, 5, ...), then
  ``num_reserved`` ``<|reserved_i|>`` pieces (kept for later uses such as T5 sentinels), then
  ``"\\n"``. All of them are user-defined symbols, i.e. atomic: ``"<|user|>"`` in text always
  encodes to its one id.
- SentencePiece turns spaces into U+2581 (``▁``) internally, so a literal ``▁`` in the text would
  decode as a space. ``encode`` emits a literal ``▁`` as its three UTF-8 byte pieces instead,
  which keeps the round trip exact for every string.
- Training reads at most ``max_train_chars`` characters: when the corpus is larger, whole lines
  are sampled with ``seed`` (BPE training itself is deterministic). Lines are the training
  "sentences"; ``"\\n"`` is atomic, so no merge could span lines anyway.
- The char tokenizer (nanoGPT's ``shakespeare_char``) has exactly the sorted characters of its
  text as vocabulary (65 for Tiny Shakespeare) and no special ids: pad/bos/eos are -1, meaning
  "none". Like nanoGPT's ``prepare.py``, the vocabulary comes from the whole text, the validation
  split too (``train_tokenizer(..., held_out=val_docs)``): a character that occurs only in the
  validation split must encode, and knowing that it exists tells the model nothing about the
  text. (The other way, an unknown id, would score every such character as one token of no
  meaning.) Encoding a character outside the vocabulary (a prompt's) is an error, not a silent unk.
- On disk: ``tokenizer.model`` (SentencePiece proto) or ``tokenizer.json`` (``{"kind": "char",
  "chars": ...}``); ``load_tokenizer`` tells them apart, and also reads a Hugging Face folder's
  ``tokenizer.json`` (``lmforge.data.hf_tokenizer``) by its content. No pickle.
"""

from __future__ import annotations

import dataclasses
import io
import json
import pathlib
import re
import time
from collections.abc import Iterator, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import sentencepiece as spm

SPECIAL_TOKENS = (
    "<|system|>",  # chat roles
    "<|user|>",
    "<|assistant|>",
    "<|end|>",  # end of a chat turn
    "<|tool_call|>",  # tool use: the model's call ...
    "<|tool_result|>",  # ... and what the tool returned
    "<|mask|>",  # MLM masking (encoder-only models)
)
SP_FILE = "tokenizer.model"
CHAR_FILE = "tokenizer.json"
KINDS = ("sentencepiece", "char")
_SPACE_MARK = "\u2581"  # SentencePiece's internal stand-in for " "
_MAX_LINE_CHARS = 4096  # longer lines are cut for training (SentencePiece skips over-long lines)


@dataclasses.dataclass(frozen=True)
class TokenizerConfig:
    """How to train a tokenizer."""

    kind: str = "sentencepiece"  # "sentencepiece" | "char"
    vocab_size: int = 4096  # sentencepiece only
    model_type: str = "bpe"
    max_train_chars: int = 20_000_000
    num_reserved: int = 32  # extra reserved special ids (<|reserved_0|>...) for later uses, e.g. T5 sentinels
    seed: int = 0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"tokenizer.kind={self.kind!r}: expected one of {', '.join(KINDS)}")
        if self.vocab_size < 1 or self.max_train_chars < 1 or self.num_reserved < 0:
            raise ValueError(f"tokenizer.vocab_size={self.vocab_size}, max_train_chars={self.max_train_chars}, "
                             f"num_reserved={self.num_reserved}: expected >= 1, >= 1 and >= 0")


@runtime_checkable
class Tokenizer(Protocol):
    """What every tokenizer offers. Ids < 0 mean "this tokenizer has no such token"."""

    vocab_size: int
    pad_id: int
    bos_id: int
    eos_id: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def token_id(self, piece: str) -> int: ...

    def token_bytes(self) -> list[bytes]: ...

    def save(self, directory: pathlib.Path) -> None: ...


class SentencePieceTokenizer:
    """A trained SentencePiece model (held as its serialized proto)."""

    def __init__(self, model_proto: bytes, *, origin: str = "<memory>"):
        self._proto = model_proto
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.LoadFromSerializedProto(model_proto)
        except RuntimeError as e:
            raise ValueError(
                f"{origin}: not a valid SentencePiece model ({_first_line(e)}); "
                f"expected the {SP_FILE} written by train_tokenizer"
            ) from None
        self.vocab_size = self._sp.get_piece_size()
        self.pad_id = self._sp.pad_id()
        self.unk_id = self._sp.unk_id()
        self.bos_id = self._sp.bos_id()
        self.eos_id = self._sp.eos_id()
        self._space_mark_ids = [self._sp.piece_to_id(f"<0x{b:02X}>") for b in _SPACE_MARK.encode()]

    def encode(self, text: str) -> list[int]:
        if _SPACE_MARK not in text:
            return self._sp.encode(text)
        ids: list[int] = []
        for i, part in enumerate(text.split(_SPACE_MARK)):
            if i:
                ids += self._space_mark_ids  # a literal "▁", as bytes: see the module docstring
            ids += self._sp.encode(part)
        return ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """``[encode(t) for t in texts]``, on SentencePiece's threads where possible."""
        out = self._sp.encode(list(texts), num_threads=2)
        for i, t in enumerate(texts):
            if _SPACE_MARK in t:
                out[i] = self.encode(t)
        return out

    def decode(self, ids: Sequence[int]) -> str:
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"decode: id {bad[0]} is outside the vocabulary [0, {self.vocab_size})")
        return self._sp.decode(ids)

    def token_id(self, piece: str) -> int:
        i = self._sp.piece_to_id(piece)
        if i == self.unk_id and piece != self._sp.id_to_piece(self.unk_id):
            raise KeyError(f"{piece!r} is not a piece of this SentencePiece vocabulary ({self.vocab_size} pieces)")
        return i

    def id_to_piece(self, i: int) -> str:
        return self._sp.id_to_piece(int(i))

    def token_bytes(self) -> list[bytes]:
        """The bytes each id contributes to decoded text: ``▁`` is a space, ``<0xNN>`` the byte NN,
        control ids (pad, unk, bos, eos) nothing, user-defined symbols (``<|user|>``) their text.
        What the sampler matches stop strings against. Computed once per tokenizer (a pass over the
        vocabulary) and shared: callers must not modify the list."""
        if getattr(self, "_token_bytes", None) is None:
            self._token_bytes = self._all_token_bytes()
        return self._token_bytes

    def _all_token_bytes(self) -> list[bytes]:
        out = []
        for i in range(self.vocab_size):
            piece = self._sp.id_to_piece(i)
            if self._sp.is_control(i) or self._sp.is_unknown(i):
                out.append(b"")
            elif self._sp.is_byte(i):
                out.append(bytes([int(piece[3:5], 16)]))
            else:
                out.append(piece.replace(_SPACE_MARK, " ").encode())
        return out

    def save(self, directory: pathlib.Path) -> None:
        directory = pathlib.Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / SP_FILE).write_bytes(self._proto)
        (directory / CHAR_FILE).unlink(missing_ok=True)  # one tokenizer per folder

    def __repr__(self) -> str:
        return f"SentencePieceTokenizer(vocab_size={self.vocab_size})"


class CharTokenizer:
    """nanoGPT's character vocabulary: id = index in the sorted characters of the training text."""

    def __init__(self, chars: str):
        if len(set(chars)) != len(chars) or list(chars) != sorted(chars):
            raise ValueError("CharTokenizer: chars must be sorted and distinct")
        self.chars = chars
        self._stoi = {c: i for i, c in enumerate(chars)}
        self.vocab_size = len(chars)
        self.pad_id = self.bos_id = self.eos_id = -1  # none: the pipeline pads with weight 0 instead

    def encode(self, text: str) -> list[int]:
        try:
            return [self._stoi[c] for c in text]
        except KeyError as e:
            c = e.args[0]
            raise ValueError(
                f"character {c!r} (U+{ord(c):04X}) at position {text.index(c)} is not in the char "
                f"tokenizer's vocabulary of {self.vocab_size} characters; train it on text that has it"
            ) from None

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: Sequence[int]) -> str:
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"decode: id {bad[0]} is outside the vocabulary [0, {self.vocab_size})")
        return "".join([self.chars[i] for i in ids])

    def token_bytes(self) -> list[bytes]:
        """The UTF-8 bytes of each id's character (what the sampler matches stop strings against)."""
        return [c.encode() for c in self.chars]

    def token_id(self, piece: str) -> int:
        if piece not in self._stoi:
            raise KeyError(f"{piece!r} is not in the char vocabulary ({self.vocab_size} single characters)")
        return self._stoi[piece]

    def save(self, directory: pathlib.Path) -> None:
        directory = pathlib.Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CHAR_FILE).write_text(json.dumps({"kind": "char", "chars": self.chars}, ensure_ascii=False))
        (directory / SP_FILE).unlink(missing_ok=True)  # one tokenizer per folder

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


def train_tokenizer(cfg: TokenizerConfig, texts: Sequence[str], directory: pathlib.Path, *,
                    held_out: Sequence[str] = ()) -> Tokenizer:
    """Trains a tokenizer on ``texts``, saves it into ``directory`` and returns it.

    ``held_out`` (the validation documents) adds its characters to a char vocabulary, as nanoGPT
    builds its vocabulary from the whole text; SentencePiece ignores it (byte fallback encodes any
    text, and its merges must not be fitted to the validation split).
    """
    if cfg.kind not in KINDS:
        raise ValueError(f"tokenizer.kind={cfg.kind!r}: expected one of {', '.join(KINDS)}")
    if not any(texts):
        raise ValueError("train_tokenizer: the training texts are empty; expected some text")
    start = time.perf_counter()
    if cfg.kind == "char":
        # All the text, not max_train_chars of it: a character left out could never be encoded.
        tok: Tokenizer = CharTokenizer("".join(sorted(set().union(*map(set, texts), *map(set, held_out)))))
        n_chars = sum(map(len, texts))
    else:
        lines = _training_lines(texts, cfg.max_train_chars, cfg.seed)
        n_chars = sum(map(len, lines))
        tok = SentencePieceTokenizer(_train_sentencepiece(cfg, lines))
    tok.save(pathlib.Path(directory))
    print(
        f"tokenizer: trained {cfg.kind} ({cfg.model_type if cfg.kind != 'char' else 'chars'}) in "
        f"{time.perf_counter() - start:.1f}s on {n_chars:,} chars; vocab_size={tok.vocab_size} -> {directory}",
        flush=True,
    )
    return tok


def tokenizer_dir(source: pathlib.Path) -> pathlib.Path:
    """Where a weights folder keeps its tokenizer: ``SOURCE/tokenizer/`` when it holds one (run and
    model folders), else SOURCE itself when it does (a Hugging Face folder). Raises ValueError naming
    what was looked for."""
    source = pathlib.Path(source)
    for folder in (source / "tokenizer", source):
        if any((folder / n).is_file() for n in (SP_FILE, CHAR_FILE)):
            return folder
    raise ValueError(f"{source} has no tokenizer (expected {source / 'tokenizer'}/ or {source}/ with "
                     f"{SP_FILE} or {CHAR_FILE})")


def load_tokenizer(directory: pathlib.Path) -> Tokenizer:
    """Loads what ``train_tokenizer`` (or ``Tokenizer.save``) wrote into ``directory``, or a Hugging Face
    tokenizer folder (``tokenizer.json`` in the ``tokenizers`` format, with ``tokenizer_config.json``:
    ``lmforge.data.hf_tokenizer.HFTokenizer``).

    ``tokenizer.json`` is told apart by its content: lmforge's char tokenizer writes
    ``{"kind": "char", ...}``, the ``tokenizers`` library an object with a ``model``. A Hugging Face
    folder may also hold a SentencePiece ``tokenizer.model`` (Llama's); its ``tokenizer.json`` is what
    transformers' fast tokenizer reads, so it wins. Raises ValueError for a malformed file or a folder
    holding two lmforge tokenizers, FileNotFoundError for a folder with none.
    """
    directory = pathlib.Path(directory)
    sp_path, char_path = directory / SP_FILE, directory / CHAR_FILE
    if char_path.is_file():
        text, obj, problem = None, None, "wrong structure"
        try:
            text = char_path.read_text(encoding="utf-8")
            obj = json.loads(text)
        except ValueError as e:  # JSONDecodeError, UnicodeDecodeError: reported below
            problem = _first_line(e)
        from lmforge.data.hf_tokenizer import HFTokenizer, is_hf_tokenizer_json  # imports `tokenizers` when used

        if is_hf_tokenizer_json(obj):
            return HFTokenizer.from_folder(directory, tokenizer_json=text)
        if sp_path.is_file():
            raise ValueError(f"{directory}: holds both {SP_FILE} and {CHAR_FILE}; expected exactly one")
        try:
            if not (isinstance(obj, dict) and obj.get("kind") == "char" and isinstance(obj.get("chars"), str)):
                raise ValueError(problem)
            return CharTokenizer(obj["chars"])
        except ValueError as e:
            raise ValueError(
                f'{char_path}: expected a JSON object {{"kind": "char", "chars": "<sorted distinct characters>"}} '
                f"or a Hugging Face tokenizers file ({_first_line(e)})"
            ) from None
    if sp_path.is_file():
        return SentencePieceTokenizer(sp_path.read_bytes(), origin=str(sp_path))
    raise FileNotFoundError(f"{directory}: no tokenizer found; expected {SP_FILE} or {CHAR_FILE} in it")


def compression_report(tok: Tokenizer, texts: Sequence[str]) -> dict:
    """How well ``tok`` compresses ``texts``: chars and UTF-8 bytes per token (no bos/eos)."""
    encode_batch = getattr(tok, "encode_batch", None)
    encoded = encode_batch(texts) if encode_batch else [tok.encode(t) for t in texts]
    tokens = sum(map(len, encoded))
    chars = sum(map(len, texts))
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    return {
        "chars_per_token": chars / max(tokens, 1),
        "bytes_per_token": n_bytes / max(tokens, 1),
        "tokens": tokens,
        "chars": chars,
        "bytes": n_bytes,
    }


# --------------------------------------------------------------------------- sentencepiece training


def _training_lines(texts: Sequence[str], max_chars: int, seed: int) -> list[str]:
    """Non-empty lines (cut to _MAX_LINE_CHARS), sampled with ``seed`` down to ``max_chars``."""
    lines = [
        line[i : i + _MAX_LINE_CHARS]
        for text in texts
        for line in text.split("\n")
        for i in range(0, len(line), _MAX_LINE_CHARS)
    ]
    lengths = np.fromiter(map(len, lines), dtype=np.int64, count=len(lines))
    if lengths.sum() <= max_chars:
        return lines
    order = np.random.default_rng(seed).permutation(len(lines))
    keep = order[np.cumsum(lengths[order]) <= max_chars]
    return [lines[i] for i in np.sort(keep)]  # sorted: keep the corpus order of what is kept


def user_symbols(cfg: TokenizerConfig) -> list[str]:
    """The pieces a trained SentencePiece vocabulary holds whole: lmforge's specials, the reserved ones, "\n"."""
    return [*SPECIAL_TOKENS, *(f"<|reserved_{i}|>" for i in range(cfg.num_reserved)), "\n"]


def check_vocab_size(cfg: TokenizerConfig) -> None:
    """``cfg.vocab_size`` leaves room beyond the pieces every SentencePiece vocabulary holds (4 control,
    :func:`user_symbols`, 256 byte pieces). Raises ValueError naming the smallest size."""
    symbols = len(user_symbols(cfg))
    smallest = 4 + symbols + 256  # pad/unk/bos/eos + user symbols + byte pieces
    if cfg.vocab_size <= smallest:
        raise ValueError(
            f"tokenizer.vocab_size={cfg.vocab_size}: expected more than {smallest} "
            f"(4 control + {symbols} special + 256 byte pieces), plus room for the corpus' characters"
        )


def _train_sentencepiece(cfg: TokenizerConfig, lines: list[str]) -> bytes:
    symbols = user_symbols(cfg)
    check_vocab_size(cfg)
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=_iter(lines),
            model_writer=model,
            model_type=cfg.model_type,
            vocab_size=cfg.vocab_size,
            byte_fallback=True,
            character_coverage=1.0,
            split_digits=True,
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            add_dummy_prefix=False,
            allow_whitespace_only_pieces=True,
            user_defined_symbols=symbols,
            pad_id=0,
            unk_id=1,
            bos_id=2,
            eos_id=3,
            max_sentence_length=4 * _MAX_LINE_CHARS,  # bytes; a character is at most 4
            num_threads=2,
            minloglevel=2,
        )
    except RuntimeError as e:
        msg = _first_line(e)
        msg = msg[msg.find("]") + 1 :].strip() if "]" in msg else msg  # drop the C++ source location
        need = re.search(r"Vocabulary size is smaller than required_chars\. \d+ vs (\d+)", msg)
        if need:   # SentencePiece's advice (lower --character_coverage) is no option here: coverage stays 1.0
            raise ValueError(
                f"tokenizer.vocab_size={cfg.vocab_size}: expected at least {need.group(1)} for this corpus (its "
                f"distinct characters and the special pieces each need an id; every character is kept)") from None
        raise ValueError(
            f"tokenizer.vocab_size={cfg.vocab_size}, model_type={cfg.model_type!r}: SentencePiece "
            f"training failed on {len(lines):,} lines: {msg}"
        ) from None
    return model.getvalue()


def _iter(lines: list[str]) -> Iterator[str]:
    yield from lines


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]
