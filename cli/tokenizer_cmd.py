"""``lmforge tokenizer show TEXT_OR_JSONL --tokenizer DIR_OR_RUN``: what a tokenizer makes of a text or
of chat conversations, token by token.

    lmforge tokenizer show "Hello  world" --tokenizer runs/quickstart-.../
    lmforge tokenizer show train.jsonl --tokenizer hf_llama/ --limit 2
    lmforge tokenizer show hh.jsonl.gz --tokenizer hf_llama/ --format hh --field rejected

- ``--tokenizer``: a tokenizer folder (lmforge's, or a Hugging Face folder's ``tokenizer.json``), or
  a run / model folder holding one in ``tokenizer/``.
- The input is a chat data file when it names an existing ``.jsonl``, ``.jsonl.gz`` or ``.json`` file
  (formats of ``lmforge.data.chat_readers``, detected unless ``--format`` says); a file of
  pretraining documents when it is a ``.jsonl[.gz|.zst]`` whose first record has a string
  ``--text-field`` (``"text"``) and no chat keys, e.g. a curation's output shard (``--format
  documents``; the first ``--limit`` documents are shown); the text of any other existing file
  (tokens of its first 2,000 characters shown, counts of the whole file); else the argument itself
  as text (``--format text`` forces that, even for a file's name).
- Conversations go through the tokenizer's chat template (``chat_template_for``: an imported
  model's jinja template, else lmforge's chat format), so the ids are those SFT trains on and the
  loss mask is shown: on a terminal, weighted tokens are bold and underlined; in plain output
  their ids are marked with ``*``.
- On a terminal (or ``--color always``) tokens alternate background colours; otherwise (a pipe, a
  file, ``--color never``, ``NO_COLOR`` set) tokens are separated by ``|``. Either way each token is
  the text it decodes to, with newlines, tabs and other control characters escaped (``\\n``), and
  bytes that are only part of a character (byte-level BPE splits emoji) as ``\\xNN``.
- ANSI escape codes are written directly (five of them); a terminal library (rich) would add a
  dependency for that.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

from .errors import ConfigError
from .typecheck import check_flag

CHAT_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz")
DOCUMENT_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst")
_CHAT_KEYS = ("messages", "conversations", "instruction", "chosen", "prompt")
_SHOW_CHARS = 2_000   # a text file's tokens shown; its counts cover all of it
_BACKGROUNDS = ("\x1b[30;48;5;153m", "\x1b[30;48;5;223m")   # black on light blue / light orange
_WEIGHTED = "\x1b[1;4m"                                      # bold, underlined
_RESET = "\x1b[0m"


def add_show_parser(tok_sub) -> None:
    show = tok_sub.add_parser("show", help="show a text's or conversations' tokens, ids and loss mask",
                              description=_user_doc(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
    show.add_argument("input", metavar="TEXT_OR_JSONL", help="a text, a text file, or a chat .jsonl[.gz] / .json file")
    show.add_argument("--tokenizer", required=True, metavar="DIR_OR_RUN",
                      help="a tokenizer folder, or a run / model folder with tokenizer/ in it")
    show.add_argument("--format", default="auto",
                      choices=("auto", "text", "documents", "messages", "alpaca", "sharegpt", "hh", "prompt"),
                      help="what the input is (default: detected)")
    show.add_argument("--text-field", default="text", metavar="FIELD",
                      help="the field holding a document in a documents .jsonl (default: text)")
    show.add_argument("--field", default="chosen", choices=("chosen", "rejected"), help="HH-RLHF transcript to show")
    show.add_argument("--limit", type=int, default=3, help="conversations or documents to show (default 3)")
    show.add_argument("--train-on", default="assistant", choices=("assistant", "all"),
                      help="the loss mask shown for conversations (default: assistant turns)")
    show.add_argument("--color", default="auto", choices=("auto", "always", "never"),
                      help="colour the tokens (default: when stdout is a terminal)")
    show.set_defaults(handler=show_cmd)


def show_cmd(args: argparse.Namespace) -> int:
    """Print the tokens, ids and counts of a text, or of the first --limit conversations of a chat file."""
    from lmforge.data.tokenizer import load_tokenizer

    check_flag("--limit", args.limit, low=1)
    tok = load_tokenizer(tokenizer_folder(pathlib.Path(args.tokenizer)))
    color = args.color == "always" or (args.color == "auto" and sys.stdout.isatty() and not os.environ.get("NO_COLOR"))
    view = TokenView(tok, color)
    if not args.input:
        raise ConfigError("TEXT_OR_JSONL is empty text; expected a text, a text file or a chat .jsonl[.gz] / .json "
                          "file")
    path = pathlib.Path(args.input)
    is_chat_name = args.input.endswith(CHAT_SUFFIXES)
    if args.format == "auto" and _is_dir(path):
        raise ConfigError(f"{path} is a folder; expected a text, a text file or a chat .jsonl[.gz] / .json file "
                          f"(--format text shows the tokens of the words themselves)")
    if args.text_field != "text" and args.format not in ("auto", "documents"):
        raise ConfigError(f"--text-field {args.text_field} is read from a documents .jsonl; --format {args.format} "
                          f"does not read it")
    is_documents = args.format == "documents" or (
        args.format == "auto" and args.input.endswith(DOCUMENT_SUFFIXES) and _is_file(path)
        and _first_record_is_document(path, args.text_field))
    if not is_documents and (args.format == "text" or (args.format == "auto" and not is_chat_name)):
        from lmforge.data.sources import read_text_file   # pylint: disable=import-outside-toplevel

        from_file = args.format == "auto" and _is_file(path)
        text = read_text_file(path) if from_file else args.input
        _show_text(view, tok, text, shown=_SHOW_CHARS if from_file else len(text))
        return 0
    if not path.is_file():
        raise FileNotFoundError(2, "no such file", str(path))
    if is_documents:
        docs, total = _read_documents(path, args.text_field, args.limit)
        for i, (where, text) in enumerate(docs):
            print(f"== document {i + 1} of {total} records ({where}) ==")   # records: non-blank lines, read or not
            _show_text(view, tok, text, shown=_SHOW_CHARS)
        return 0
    from lmforge.data.chat import chat_template_for
    from lmforge.data.chat_readers import read_conversations

    try:
        conversations, stats = read_conversations(path, args.format, field=args.field)
    except ValueError as e:
        if args.format != "auto" or "cannot tell the chat format" not in str(e):
            raise
        raise ValueError(f"{e}; for a file of documents (pretraining text in one field): --format documents "
                         f"--text-field FIELD") from None
    template = chat_template_for(tok)
    shown = conversations[:args.limit]
    for i, conv in enumerate(shown):
        ids, weights = template.encode(conv, train_on=args.train_on)
        print(f"== conversation {i + 1} of {len(conversations):,} ({len(conv)} messages; {describe(template)}) ==")
        print(view.tokens(ids, weights))
        print(view.ids(ids, weights))
        marked = "underlined" if color else "marked *"
        print(f"{len(ids):,} tokens, {int(weights.sum()):,} trained on ({marked}, train_on={args.train_on})")
    print(stats.summary())
    return 0


def _show_text(view: TokenView, tok, text: str, *, shown: int) -> None:
    """The tokens and ids of ``text``'s first ``shown`` characters (whole lines where it can), and the
    counts of all of it."""
    ids = tok.encode(text)
    part = text if len(text) <= shown else text[:text.rfind("\n", 0, shown) + 1 or shown]
    part_ids = ids if part is text else tok.encode(part)
    print(view.tokens(part_ids))
    print(view.ids(part_ids))
    n_bytes = len(text.encode("utf-8"))
    head = "" if part is text else f"the first {len(part):,} characters shown; all of it: "
    print(f"{head}{len(ids):,} tokens, {len(text):,} chars, {n_bytes:,} bytes "
          f"({len(text) / max(len(ids), 1):.2f} chars/token, {tok!r})")


def _first_record_is_document(path: pathlib.Path, text_field: str) -> bool:
    """Whether the first non-blank line of a .jsonl[.gz|.zst] is an object with a string ``text_field``
    and none of the chat formats' keys (a pretraining document, not a conversation)."""
    import json   # pylint: disable=import-outside-toplevel

    from lmforge.data.sources import open_bytes   # pylint: disable=import-outside-toplevel

    with open_bytes(path) as f:
        for line in f:
            if line.strip():
                try:
                    obj = json.loads(line)
                except ValueError:
                    return False   # the chat reader names the bad line
                return (isinstance(obj, dict) and isinstance(obj.get(text_field), str)
                        and not any(k in obj for k in _CHAT_KEYS))
    return False


def _read_documents(path: pathlib.Path, text_field: str, limit: int) -> tuple[list[tuple[str, str]], str]:
    """The first ``limit`` documents of a jsonl file as ``(PATH:LINE, text)``, and how many records
    (non-blank lines, counted to the end without being parsed) it holds. Raises ValueError naming ``PATH:LINE`` for a line that is not a JSON object
    with a string ``text_field``."""
    import json   # pylint: disable=import-outside-toplevel

    from lmforge.data.sources import open_bytes   # pylint: disable=import-outside-toplevel

    docs, n = [], 0
    with open_bytes(path) as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            n += 1
            if len(docs) == limit:
                continue
            try:
                obj = json.loads(line)
            except ValueError as e:
                raise ValueError(f"{path}:{i}: not a JSON line ({e}); expected {{\"{text_field}\": ...}}") from None
            text = obj.get(text_field) if isinstance(obj, dict) else None
            if not isinstance(text, str):
                got = f"keys {', '.join(sorted(obj))}" if isinstance(obj, dict) else type(obj).__name__
                raise ValueError(f"{path}:{i}: expected a JSON object with a string field {text_field!r} "
                                 f"(--text-field), got {got}")
            docs.append((f"{path}:{i}", text))
    return docs, f"{n:,}"


def tokenizer_folder(path: pathlib.Path) -> pathlib.Path:
    """``path`` itself when it holds a tokenizer file, else ``path/tokenizer`` (a run or model folder)."""
    if not path.is_dir():
        raise ConfigError(f"--tokenizer {path}: not a folder (expected a tokenizer folder, or a run / model folder "
                          f"with tokenizer/ in it)")
    if not any((path / n).is_file() for n in ("tokenizer.json", "tokenizer.model")) and (path / "tokenizer").is_dir():
        return path / "tokenizer"
    return path


def describe(template) -> str:
    """A few words on which chat template made the ids, and how its mask is found."""
    if hasattr(template, "uses_generation_blocks"):
        how = "{% generation %} blocks" if template.uses_generation_blocks else "rendered prefixes"
        return f"the tokenizer's chat template, mask from {how}"
    return "lmforge's chat format"


class TokenView:
    """Token texts and ids as one line each, coloured or ``|``-separated."""

    def __init__(self, tok, color: bool):
        self.tok, self.color = tok, color
        self._bytes = tok.token_bytes()

    def text_of(self, i: int) -> str:
        b = self._bytes[i] if 0 <= i < len(self._bytes) else b""
        if not b:   # a control token (SentencePiece's <s>): its name
            piece = getattr(self.tok, "id_to_piece", None)
            return piece(i) if piece is not None else f"<id {i}>"
        return _escape(b.decode("utf-8", errors="backslashreplace"))

    def tokens(self, ids, weights=None) -> str:
        texts = [self.text_of(int(i)) for i in ids]
        if not self.color:
            return "|" + "|".join(texts) + "|" if texts else "||"
        out = []
        for k, t in enumerate(texts):
            bold = _WEIGHTED if weights is not None and weights[k] else ""
            out.append(f"{_BACKGROUNDS[k % 2]}{bold}{t}{_RESET}")
        return "".join(out)

    def ids(self, ids, weights=None) -> str:
        out = []
        for k, i in enumerate(ids):
            on = weights is not None and weights[k]
            if self.color:
                out.append(f"{_WEIGHTED}{int(i)}{_RESET}" if on else str(int(i)))
            else:
                out.append(f"{int(i)}*" if on else str(int(i)))
        return "ids: " + " ".join(out)


def _escape(text: str) -> str:
    out = []
    for c in text:
        if c == "\n":
            out.append("\\n")
        elif c == "\t":
            out.append("\\t")
        elif c == "\r":
            out.append("\\r")
        elif ord(c) < 32 or ord(c) == 127:
            out.append(f"\\x{ord(c):02x}")
        else:
            out.append(c)
    return "".join(out)


def _is_file(path: pathlib.Path) -> bool:
    try:
        return path.is_file()
    except OSError:   # a long text is not a valid file name
        return False


def _is_dir(path: pathlib.Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


def _user_doc(doc: str) -> str:
    """The module docstring as ``--help`` shows it: without the implementation note on ANSI codes."""
    return doc.split("\n- ANSI escape codes")[0]
