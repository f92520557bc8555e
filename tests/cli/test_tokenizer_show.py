"""``lmforge tokenizer show``: a text's tokens, ids and count; a chat file's conversations with their
loss mask (ids marked ``*``) and what the reader skipped; colours only when asked or on a terminal."""

import json

import numpy as np
import pytest

from lmforge.cli.main import main
from lmforge.data.chat import ChatFormat
from lmforge.data.tokenizer import TokenizerConfig, train_tokenizer

TEXT = "Hello  world,\n\tthe tokenizer splits this text into pieces: 12345 ünïcode!"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run-like folder: the tokenizer lives in RUN/tokenizer (lmforge's SentencePiece, with chat specials)."""
    root = tmp_path_factory.mktemp("show")
    corpus = [("The quick brown fox jumps over the lazy dog. " * 3 + f"Line {i}: what is {i}+{i}?\n") * 4
              for i in range(40)]
    tok = train_tokenizer(TokenizerConfig(vocab_size=320, num_reserved=0), corpus, root / "run" / "tokenizer")
    return root / "run", tok


def _show(capsys, *argv):
    code = main(["tokenizer", "show", *argv])
    out = capsys.readouterr()
    return code, out.out.splitlines(), out.err


def test_text_shows_boundaries_ids_and_count(run_dir, capsys):
    run, tok = run_dir
    code, lines, _ = _show(capsys, TEXT, "--tokenizer", str(run))
    ids = tok.encode(TEXT)
    assert code == 0 and len(lines) == 3
    assert lines[0].startswith("|") and lines[0].endswith("|") and lines[0].count("|") == len(ids) + 1
    pieces = lines[0][1:-1].split("|")
    # escaped, nothing lost; "ü" is two byte-fallback tokens (the corpus is ASCII), shown byte by byte
    escaped = TEXT.replace("\n", "\\n").replace("\t", "\\t").replace("ü", "\\xc3\\xbc").replace("ï", "\\xc3\\xaf")
    assert "".join(pieces) == escaped
    assert lines[1] == "ids: " + " ".join(map(str, ids))
    assert lines[2].startswith(f"{len(ids)} tokens, {len(TEXT)} chars, {len(TEXT.encode())} bytes")
    assert "\x1b[" not in "".join(lines)   # not a terminal: no colour


def test_conversations_show_the_loss_mask(run_dir, capsys, tmp_path):
    run, tok = run_dir
    conv = {"conversations": [{"from": "human", "value": "what is 2+2?"}, {"from": "gpt", "value": "4, the fox says"}]}
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps(conv) + "\n\n" + json.dumps({"conversations": []}) + "\n" + json.dumps(conv) + "\n")
    code, lines, _ = _show(capsys, str(path), "--tokenizer", str(run / "tokenizer"), "--limit", "1")
    ids, weights = ChatFormat(tok).encode([{"role": "user", "content": "what is 2+2?"},
                                           {"role": "assistant", "content": "4, the fox says"}])
    assert code == 0 and len(lines) == 5
    assert lines[0] == "== conversation 1 of 2 (2 messages; lmforge's chat format) =="
    assert lines[1].startswith("|<s>|<|user|>|") and lines[1].endswith("|<|end|>|</s>|")
    shown = lines[2].removeprefix("ids: ").split()
    assert [int(s.rstrip("*")) for s in shown] == ids.tolist()
    assert np.array_equal([s.endswith("*") for s in shown], weights == 1)
    assert lines[3] == f"{len(ids)} tokens, {int(weights.sum())} trained on (marked *, train_on=assistant)"
    assert lines[4].endswith("(sharegpt): 2 conversations from 3 records; skipped: 1 blank lines, "
                             "1 empty conversations")
    # --color always: alternating backgrounds, weighted tokens bold and underlined
    code, lines, _ = _show(capsys, str(path), "--tokenizer", str(run), "--limit", "1", "--color", "always")
    assert "\x1b[30;48;5;153m" in lines[1] and "\x1b[30;48;5;223m" in lines[1] and "\x1b[1;4m" in lines[1]
    assert lines[2].count("\x1b[1;4m") == int(weights.sum())


def test_bad_inputs_are_one_line_errors(run_dir, capsys, tmp_path):
    run, _ = run_dir
    code, _, err = _show(capsys, str(tmp_path / "missing.jsonl"), "--tokenizer", str(run))
    assert code == 2 and err.strip() == f"lmforge: error: no such file or directory: {tmp_path / 'missing.jsonl'}"
    (tmp_path / "bad.jsonl").write_text('{"messages": [{"role": "user", "content": "hi"}]}\n{oops\n')
    code, _, err = _show(capsys, str(tmp_path / "bad.jsonl"), "--tokenizer", str(run))
    assert code == 2 and "bad.jsonl:2: not valid JSON" in err and err.count("\n") == 1
    code, _, err = _show(capsys, "hi", "--tokenizer", str(tmp_path / "nope"))
    assert code == 2 and "--tokenizer" in err and "not a folder" in err
    code, out, err = _show(capsys, str(tmp_path), "--tokenizer", str(run))   # a folder is not a text to tokenize
    assert code == 2 and out == [] and err.strip() == (
        f"lmforge: error: {tmp_path} is a folder; expected a text, a text file or a chat .jsonl[.gz] / .json file "
        f"(--format text shows the tokens of the words themselves)")
    code, out, _ = _show(capsys, str(tmp_path), "--tokenizer", str(run), "--format", "text")
    assert code == 0 and "tokens," in out[-1]


def test_documents_jsonl_and_long_text_files(run_dir, capsys, tmp_path):
    """A pretraining jsonl ({"text": ...} per line, a curation's .jsonl.zst shard too) shows its first
    --limit documents with PATH:LINE; a long text file shows its first 2,000 characters' tokens and the
    whole file's counts (it used to print every id of a 1 MB file, and refuse a {"text"} jsonl as chat)."""
    import zstandard

    run, tok = run_dir
    lines = "".join(json.dumps({"id": i, "text": f"Line {i}: the quick brown fox."}) + "\n" for i in range(5))
    for name, data in (("docs.jsonl", lines.encode()), ("docs.jsonl.zst", zstandard.ZstdCompressor().compress(lines.encode()))):
        (tmp_path / name).write_bytes(data)
        code, out, _ = _show(capsys, str(tmp_path / name), "--tokenizer", str(run), "--limit", "2")
        assert code == 0 and out[0] == f"== document 1 of 5 records ({tmp_path / name}:1) ==" and out[4].startswith("== document 2 of 5 records")
        assert len([line for line in out if line.startswith("==")]) == 2
        assert [int(i) for i in out[2].removeprefix("ids: ").split()] == tok.encode("Line 0: the quick brown fox.")
    (tmp_path / "other.jsonl").write_text('{"body": "a"}\n')
    code, out, _ = _show(capsys, str(tmp_path / "other.jsonl"), "--tokenizer", str(run), "--text-field", "body")
    assert code == 0 and out[0].startswith("== document 1 of 1 records")
    code, _, err = _show(capsys, str(tmp_path / "other.jsonl"), "--tokenizer", str(run), "--format", "documents")
    assert code == 2 and "other.jsonl:1: expected a JSON object with a string field 'text' (--text-field), got keys body" in err
    code, _, err = _show(capsys, "hi", "--tokenizer", str(run), "--format", "text", "--text-field", "body")
    assert code == 2 and "--text-field body is read from a documents .jsonl" in err
    big = "".join(f"Line {i}: what is {i}+{i}?\n" for i in range(2000))
    (tmp_path / "big.txt").write_text(big)
    code, out, _ = _show(capsys, str(tmp_path / "big.txt"), "--tokenizer", str(run))
    assert code == 0 and len(out) == 3 and out[-1].startswith("the first 1,9") and f"{len(big):,} chars" in out[-1]
    assert len(out[1].split()) - 1 < len(tok.encode(big)) // 10


def test_odd_inputs_are_named_errors(run_dir, capsys, tmp_path):
    # Data audit #10: a latin-1 file gave a bare codec error, "" was taken as the folder ".", and a file of
    # documents in another field was only "cannot tell the chat format".
    run, _ = run_dir
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    code, _, err = _show(capsys, str(tmp_path / "latin1.txt"), "--tokenizer", str(run))
    assert code == 2 and err.strip() == (f"lmforge: error: {tmp_path / 'latin1.txt'}: invalid UTF-8 at byte offset 3 "
                                         f"(b'\\xe9 au'); expected UTF-8 text")
    code, out, err = _show(capsys, "", "--tokenizer", str(run))
    assert code == 2 and out == [] and err.startswith("lmforge: error: TEXT_OR_JSONL is empty text; expected a text")
    (tmp_path / "gsm.jsonl").write_text(json.dumps({"question": "what is 2+2?", "answer": "4"}) + "\n")
    code, _, err = _show(capsys, str(tmp_path / "gsm.jsonl"), "--tokenizer", str(run))
    assert code == 2 and "cannot tell the chat format of a record with keys ['answer', 'question']" in err
    assert err.strip().endswith("; for a file of documents (pretraining text in one field): --format documents "
                                "--text-field FIELD") and err.count("\n") == 1
    code, out, _ = _show(capsys, str(tmp_path / "gsm.jsonl"), "--tokenizer", str(run), "--format", "documents",
                         "--text-field", "question")
    assert code == 0 and out[0] == f"== document 1 of 1 records ({tmp_path / 'gsm.jsonl'}:1) =="


def test_show_offers_every_chat_format_the_reader_knows(tmp_path, capsys):
    """``--format`` lists the chat reader's FORMATS (kept literal so ``--help`` imports nothing heavy)."""
    import argparse

    from lmforge.cli.tokenizer_cmd import add_show_parser
    from lmforge.data.chat_readers import FORMATS

    sub = argparse.ArgumentParser().add_subparsers()
    add_show_parser(sub)
    (show,) = sub.choices.values()
    (fmt,) = [a for a in show._actions if a.dest == "format"]
    assert set(fmt.choices) == {"auto", "text", "documents", *FORMATS}
