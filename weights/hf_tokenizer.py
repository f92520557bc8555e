"""lmforge tokenizers as Hugging Face ``tokenizer.json`` files (the ``tokenizers`` library's format).

:func:`save_hf_tokenizer` writes ``tokenizer.json`` + ``tokenizer_config.json`` that
``transformers.AutoTokenizer.from_pretrained`` loads as a fast tokenizer encoding text to the same ids
as lmforge's tokenizer, and returns the special ids for ``config.json``.

Choices:
- Built with the ``tokenizers`` library (what transformers' fast tokenizers are), not by
  transformers' SentencePiece converters: those assume Llama's settings (a dummy-prefix space, a
  space split per ``▁``), which are not lmforge's (data/tokenizer.py: identity normalization, no
  dummy prefix, runs of spaces kept as whitespace-only pieces, byte fallback).
- SentencePiece BPE -> a BPE model over the same pieces and ids with byte fallback; its merges are
  every split of a normal piece into two pieces, ranked by the piece's score (SentencePiece merges
  the adjacent pair whose union scores highest; the ``transformers`` converter ranks them the same
  way). Spaces become ``▁``; the text is split where a run of ``▁`` begins, as SentencePiece splits
  words with ``allow_whitespace_only_pieces``. User-defined symbols (``<|user|>``, ``"\\n"``) are
  added tokens, atomic as in SentencePiece. Control tokens (``<s>``, ``</s>``, ``<pad>``) are
  special tokens and ``split_special_tokens`` is on: SentencePiece never reads them from text, so
  ``"<s>"`` in a prompt is three pieces in both. An encoder's (BERT's) export names ``cls_token``
  (bos), ``sep_token`` (eos) and ``mask_token`` (``<|mask|>``), with ``split_special_tokens`` off:
  transformers' fill-mask pipeline reads the mask typed in its input.
- ``tokenizer(text)`` adds what lmforge's pipeline adds around a document: bos before it for
  decoders, eos after it for encoder-decoders' encoder inputs, both for encoders.
- A char tokenizer (nanoGPT's) becomes a word-level model over single characters, with no special
  tokens (it has none); an unseen character is an error in both.
- Known difference: a literal ``▁`` (U+2581) in text is a space to transformers; lmforge encodes it
  as its three UTF-8 bytes.
- A tokenizer imported from a transformers folder (``lmforge.data.hf_tokenizer.HFTokenizer``: a run
  that started from a Hugging Face model) is written back as it was read: its ``tokenizer.json``,
  ``tokenizer_config.json`` and chat template, so the exported model keeps its own chat format.
  lmforge's own tokenizers get no jinja chat template: their export has ``split_special_tokens``
  on (SentencePiece never reads ``"<s>"`` from text), so a template could not write the bos id that
  lmforge's chat format puts first; importing such a folder back gives lmforge's chat format and
  the same chat ids (tests/data/test_hf_tokenizer.py).
"""

from __future__ import annotations

import json
import pathlib

from lmforge.data.tokenizer import SP_FILE, CharTokenizer, SentencePieceTokenizer

_SPACE_MARK = "\u2581"


MASK = "<|mask|>"   # lmforge's masked-LM token (data/tokenizer.py's specials)


def save_hf_tokenizer(folder, tok, tokenizer_dir, *, architecture: str = "decoder",
                      max_length: int | None = None) -> dict:
    """Writes ``folder/tokenizer.json`` and ``folder/tokenizer_config.json`` for ``tok``.

    Args:
      tok: the lmforge tokenizer (``load_tokenizer(tokenizer_dir)``).
      tokenizer_dir: the folder ``tok`` was loaded from (the SentencePiece model is read from it).
      architecture: "decoder", "encoder" or "encoder_decoder": which of bos / eos ``tokenizer(text)`` adds.
      max_length: the model's context, written as ``model_max_length``.

    Returns:
      ``{"bos_token_id", "eos_token_id", "pad_token_id"}`` (None where the tokenizer has none).
    """
    try:
        import tokenizers  # noqa: F401
    except ImportError:
        raise ImportError("exporting a tokenizer to transformers needs the `tokenizers` package (pip install "
                          "tokenizers; transformers depends on it)") from None
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    from lmforge.data.hf_tokenizer import HFTokenizer

    if isinstance(tok, HFTokenizer):   # imported from transformers: back as it came
        tok.save(folder)
        return {f"{k}_token_id": (getattr(tok, f"{k}_id") if getattr(tok, f"{k}_id") >= 0 else None)
                for k in ("bos", "eos", "pad")}
    if isinstance(tok, SentencePieceTokenizer):
        hf, special = _sentencepiece(pathlib.Path(tokenizer_dir) / SP_FILE, tok, architecture)
    elif isinstance(tok, CharTokenizer):
        hf, special = _chars(tok), {}
    else:
        raise TypeError(f"no transformers export for a {type(tok).__name__}")
    hf.save(str(folder / "tokenizer.json"))
    # typed special-token text stays text (lmforge's plain_content), but in a masked LM's input, where "<|mask|>"
    # typed is the point (transformers' fill-mask pipeline)
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False,
              "split_special_tokens": architecture != "encoder", **special}
    if max_length:
        config["model_max_length"] = max_length
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    return {f"{k}_token_id": (getattr(tok, f"{k}_id") if getattr(tok, f"{k}_id") >= 0 else None)
            for k in ("bos", "eos", "pad")}


def _sentencepiece(path: pathlib.Path, tok: SentencePieceTokenizer, architecture: str):
    import sentencepiece as spm
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    sp = spm.SentencePieceProcessor(model_file=str(path))
    n = sp.get_piece_size()
    pieces = [sp.id_to_piece(i) for i in range(n)]
    vocab = {p: i for i, p in enumerate(pieces)}
    control = [i for i in range(n) if sp.is_control(i) or sp.is_unknown(i)]
    is_control = set(control)
    first_byte = min((i for i in range(n) if sp.is_byte(i)), default=n)
    # lmforge's layout (data/tokenizer.py): user-defined symbols sit between the control ids and the
    # byte pieces (the Python API cannot ask a piece its type).
    user = [i for i in range(first_byte) if i not in is_control and not sp.is_unused(i)]
    normal = {p for i, p in enumerate(pieces) if i >= first_byte and not (sp.is_byte(i) or sp.is_unused(i)
                                                                          or sp.is_control(i))}
    merges = []
    for i in sorted((vocab[p] for p in normal if len(p) > 1), key=lambda i: -sp.get_score(i)):
        p = pieces[i]
        merges += [(p[:k], p[k:]) for k in range(1, len(p)) if p[:k] in normal and p[k:] in normal]
    unk = sp.id_to_piece(sp.unk_id())
    hf = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=unk, byte_fallback=True, fuse_unk=True))
    hf.normalizer = normalizers.Replace(" ", _SPACE_MARK)
    hf.pre_tokenizer = pre_tokenizers.Split(Regex(f"{_SPACE_MARK}*[^{_SPACE_MARK}]+|{_SPACE_MARK}+"), "isolated")
    hf.decoder = decoders.Sequence([decoders.Replace(_SPACE_MARK, " "), decoders.ByteFallback(), decoders.Fuse()])
    hf.add_special_tokens([AddedToken(pieces[i], special=True, normalized=False) for i in control])
    hf.add_tokens([AddedToken(pieces[i], special=False, normalized=False) for i in user])
    bos, eos = pieces[tok.bos_id] if tok.bos_id >= 0 else None, pieces[tok.eos_id] if tok.eos_id >= 0 else None
    single = {"decoder": [bos, "$A"], "encoder": [bos, "$A", eos], "encoder_decoder": ["$A", eos]}[architecture]
    single = [s for s in single if s]
    pair = single + [("$B:1" if s == "$A" else f"{s}:1") for s in single]
    used = sorted({s for s in single if not s.startswith("$")}, key=vocab.get)
    hf.post_processor = processors.TemplateProcessing(single=single, pair=pair,
                                                      special_tokens=[(s, vocab[s]) for s in used])
    special = {"unk_token": unk}
    for key, i in (("bos_token", tok.bos_id), ("eos_token", tok.eos_id), ("pad_token", tok.pad_id)):
        if i >= 0:
            special[key] = pieces[i]
    if architecture == "encoder":   # BERT's names for them: transformers' fill-mask pipeline needs mask_token
        special.update({k: v for k, v in (("cls_token", bos), ("sep_token", eos)) if v})
        if MASK in vocab:
            special["mask_token"] = MASK
    return hf, special


def _chars(tok: CharTokenizer):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    vocab = {c: i for i, c in enumerate(tok.chars)}
    # No unk token: an unseen character is an error, as in lmforge (WordLevel needs a name for it).
    hf = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk-not-in-vocabulary>"))
    hf.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), "isolated")
    hf.decoder = decoders.Fuse()
    return hf
