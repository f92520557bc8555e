"""Tokenizers: exact round trips, atomic special tokens, fixed ids, save/load and their errors."""

import json

import pytest

from lmforge.data import (
    SPECIAL_TOKENS,
    SourceConfig,
    Tokenizer,
    TokenizerConfig,
    compression_report,
    load_tokenizer,
    read_documents,
    train_tokenizer,
)

TRICKY = [
    "",
    "hello world",
    "def f(x):\n    return x**2  # héllo ✓ 日本 🙂\n",
    "  two leading spaces, three trailing   ",
    "multiple\n\n\nnewlines\r\nand CRLF\tand tabs\x0b\x0c",
    "a literal \u2581 (U+2581, SentencePiece's space mark) and \u2581\u2581 twice\u2581",
    "NUL \x00 byte, BOM \ufeff, combining e\u0301, RTL \u05e9\u05dc\u05d5\u05dd, \U0001f468\u200d\U0001f469\u200d\U0001f467",
    "<|user|>What is 12345 + 678?<|end|>\n<|assistant|>13023<|end|>",
    "<s></s><unk><pad> look like control pieces but are text",
    "unknown-ish <|reserved_31|><|nope|> tokens",
]


# --------------------------------------------------------------------------- sentencepiece


@pytest.mark.parametrize("text", TRICKY)
def test_sentencepiece_round_trip_is_exact(sp_tok, text):
    assert sp_tok.decode(sp_tok.encode(text)) == text


def test_sentencepiece_round_trip_on_val_text(sp_tok):
    docs = read_documents(SourceConfig())[-5:]  # text it was not trained on
    for doc in docs:
        assert sp_tok.decode(sp_tok.encode(doc)) == doc


def test_sentencepiece_fixed_ids(sp_tok):
    assert isinstance(sp_tok, Tokenizer)
    assert (sp_tok.pad_id, sp_tok.bos_id, sp_tok.eos_id) == (0, 2, 3)
    assert sp_tok.vocab_size == 512
    assert [sp_tok.token_id(t) for t in SPECIAL_TOKENS] == list(range(4, 4 + len(SPECIAL_TOKENS)))
    first_reserved = 4 + len(SPECIAL_TOKENS)
    assert sp_tok.token_id("<|reserved_0|>") == first_reserved
    assert sp_tok.token_id("<|reserved_31|>") == first_reserved + 31
    assert sp_tok.token_id("\n") == first_reserved + 32
    assert sp_tok.token_id("<unk>") == 1
    assert sp_tok.token_id("<0x41>") > sp_tok.token_id("\n")  # byte-fallback pieces exist


def test_special_tokens_are_atomic(sp_tok):
    user, end, asst = (sp_tok.token_id(t) for t in ("<|user|>", "<|end|>", "<|assistant|>"))
    ids = sp_tok.encode("<|user|>hi<|end|>\n<|assistant|>")
    assert ids[0] == user and end in ids and ids[-1] == asst
    assert sp_tok.encode("<|tool_call|>") == [sp_tok.token_id("<|tool_call|>")]
    assert sp_tok.encode("x\ny") == sp_tok.encode("x") + [sp_tok.token_id("\n")] + sp_tok.encode("y")


def test_digits_are_split(sp_tok):
    ids = sp_tok.encode("12345")
    assert len(ids) == 5 and sp_tok.decode(ids[:1]) == "1"


def test_unknown_piece_is_a_key_error_naming_it(sp_tok):
    with pytest.raises(KeyError, match="<|nope|>"):
        sp_tok.token_id("<|nope|>")


def test_decode_out_of_range_id(sp_tok):
    with pytest.raises(ValueError, match="id 99999 is outside the vocabulary"):
        sp_tok.decode([5, 99999])


def test_save_load_round_trip(sp_tok, sp_dir, tmp_path):
    assert (sp_dir / "tokenizer.model").is_file()
    sp_tok.save(tmp_path / "copy")
    again = load_tokenizer(tmp_path / "copy")
    assert type(again) is type(sp_tok) and again.vocab_size == 512
    assert again.encode(TRICKY[2]) == sp_tok.encode(TRICKY[2])


def test_training_prints_time_and_vocab_and_respects_max_chars(corpus, tmp_path, capsys):
    cfg = TokenizerConfig(vocab_size=400, max_train_chars=50_000, num_reserved=4)
    tok = train_tokenizer(cfg, corpus, tmp_path)
    out = capsys.readouterr().out
    assert "vocab_size=400" in out and "s on " in out
    n_chars = int(out.split(" on ")[1].split(" chars")[0].replace(",", ""))
    assert 40_000 < n_chars <= 50_000
    assert tok.token_id("\n") == 4 + len(SPECIAL_TOKENS) + 4
    # Same seed, same sample, same model; another seed samples other lines.
    assert train_tokenizer(cfg, corpus, tmp_path / "b").encode(corpus[0]) == tok.encode(corpus[0])


def test_vocab_too_small_names_the_key(corpus, tmp_path):
    with pytest.raises(ValueError, match=r"tokenizer.vocab_size=200: expected more than 300"):
        train_tokenizer(TokenizerConfig(vocab_size=200), corpus, tmp_path)
    with pytest.raises(ValueError, match=r"tokenizer.vocab_size=5000.*Vocabulary size too high"):
        train_tokenizer(TokenizerConfig(vocab_size=5000), ["tiny corpus"], tmp_path)


# --------------------------------------------------------------------------- char


def test_char_tokenizer(tmp_path, capsys):
    tok = train_tokenizer(TokenizerConfig(kind="char"), ["hello", "world!\n"], tmp_path)
    assert "vocab_size=9" in capsys.readouterr().out
    assert isinstance(tok, Tokenizer)
    assert tok.vocab_size == 9 and (tok.pad_id, tok.bos_id, tok.eos_id) == (-1, -1, -1)
    assert tok.encode("\n!dehlorw") == list(range(9))  # sorted characters
    assert tok.decode(tok.encode("hello\nworld!")) == "hello\nworld!"
    assert tok.token_id("w") == 8
    with pytest.raises(KeyError, match="'z' is not in the char vocabulary"):
        tok.token_id("z")
    with pytest.raises(ValueError, match=r"character 'é' \(U\+00E9\) at position 1 is not in"):
        tok.encode("hé")
    loaded = load_tokenizer(tmp_path)
    assert json.loads((tmp_path / "tokenizer.json").read_text())["kind"] == "char"
    assert loaded.encode("world") == tok.encode("world") and loaded.vocab_size == 9


def test_char_vocabulary_covers_the_held_out_text(tmp_path):
    # Issue 13: nanoGPT builds its vocabulary from the whole text; a '!' only in the validation split must encode.
    train, val = ["the cat sat\n"], ["tea!\n"]
    tok = train_tokenizer(TokenizerConfig(kind="char"), train, tmp_path, held_out=val)
    assert tok.decode(tok.encode(val[0])) == val[0] and tok.chars == "".join(sorted(set(train[0] + val[0])))
    assert load_tokenizer(tmp_path).chars == tok.chars
    with pytest.raises(ValueError, match=r"character '!' \(U\+0021\) at position 3 is not in"):
        train_tokenizer(TokenizerConfig(kind="char"), train, tmp_path).encode(val[0])


def test_tokenizer_config_checks_its_values():
    with pytest.raises(ValueError, match=r"tokenizer.kind='bpe': expected one of sentencepiece, char"):
        TokenizerConfig(kind="bpe")
    with pytest.raises(ValueError, match=r"tokenizer.vocab_size=0, max_train_chars=20000000, num_reserved=32: "
                                         r"expected >= 1, >= 1 and >= 0"):
        TokenizerConfig(vocab_size=0)


def test_char_vocab_of_tiny_shakespeare_is_65(shared_data, tmp_path):
    text = (shared_data / "tinyshakespeare.txt").read_text(encoding="utf-8")
    tok = train_tokenizer(TokenizerConfig(kind="char"), [text], tmp_path)
    assert tok.vocab_size == 65
    assert tok.decode(tok.encode(text[:5000])) == text[:5000]
    assert tok.encode("\n") == [0] and tok.encode(" ") == [1]  # nanoGPT's stoi


def test_retraining_another_kind_replaces_the_file(corpus, tmp_path):
    train_tokenizer(TokenizerConfig(kind="char"), corpus[:3], tmp_path)
    train_tokenizer(TokenizerConfig(vocab_size=400, num_reserved=0), corpus[:20], tmp_path)
    assert not (tmp_path / "tokenizer.json").exists()
    assert load_tokenizer(tmp_path).bos_id == 2


# --------------------------------------------------------------------------- load errors


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no tokenizer found; expected tokenizer.model or tokenizer.json"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.model").write_bytes(b"not a model")
    with pytest.raises(ValueError, match=r"tokenizer.model: not a valid SentencePiece model"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.model").unlink()
    (tmp_path / "tokenizer.json").write_text('{"kind": "char"}')
    with pytest.raises(ValueError, match=r"tokenizer.json: expected a JSON object"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{truncated")
    with pytest.raises(ValueError, match=r"tokenizer.json: expected a JSON object"):
        load_tokenizer(tmp_path)


def test_bad_kind_names_the_key(tmp_path):
    with pytest.raises(ValueError, match="tokenizer.kind='wordpiece'"):
        train_tokenizer(TokenizerConfig(kind="wordpiece"), ["x"], tmp_path)


# --------------------------------------------------------------------------- compression


def test_compression_report(sp_tok, corpus):
    texts = corpus[:5] + ["héllo 🙂"]
    r = compression_report(sp_tok, texts)
    assert r["tokens"] == sum(len(sp_tok.encode(t)) for t in texts)
    assert r["chars"] == sum(map(len, texts))
    assert r["bytes"] == sum(len(t.encode("utf-8")) for t in texts)
    assert r["chars_per_token"] == pytest.approx(r["chars"] / r["tokens"])
    assert r["bytes_per_token"] == pytest.approx(r["bytes"] / r["tokens"])
    assert r["chars_per_token"] > 1.5  # even a 512-piece BPE beats bytes on its own training text
