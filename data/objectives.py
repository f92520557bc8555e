"""Pretraining objectives as batch transforms: causal LM, BERT masked LM, T5 span corruption, and a
sequence-to-sequence reversal task for the original Transformer.

Each transform maps one packed causal batch (``inputs``, ``targets``, ``weights``, ``segment_ids``,
``positions``; (B, T)) and a numpy Generator to the batch its model family trains on, so every
objective reuses the same tokenization, packing, sharding and checkpointable iterator:

- ``causal``: unchanged (next-token prediction).
- ``mlm``: BERT masking of the tokens (15% of non-special tokens; 80% mask, 10% random, 10% kept;
  :func:`lmforge.data.corruption.mask_tokens`); targets are the original tokens, weights 1 on chosen
  positions only. Packed documents stay separated by their segment ids.
- ``span``: T5 span corruption of each row's tokens, concatenated across documents as T5's
  pre-processing does (``reduce_concat_tokens``): encoder inputs with sentinels, decoder targets
  the dropped spans each after its sentinel, plus EOS. Fixed shapes: the number of noise tokens and
  spans depends only on the length, so :func:`seq2seq_lengths` gives them up front.
- ``reverse``: encoder reads a prefix of a row's tokens (of random length), the decoder writes it
  in reverse order, then EOS — a task that cannot be solved without cross-attention.

Encoder-decoder batches carry ``encoder_inputs``, ``encoder_segment_ids``, ``encoder_positions``
(B, S) beside the decoder's ``inputs`` (BOS + targets shifted right), ``targets``, ``weights``,
``segment_ids``, ``positions`` (B, T_dec).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from lmforge.data.corruption import mask_tokens, random_spans_noise_mask, span_corrupt
from lmforge.data.tokenizer import SPECIAL_TOKENS

OBJECTIVES = ("causal", "mlm", "span", "reverse")
ENCODER_KEYS = ("encoder_inputs", "encoder_segment_ids", "encoder_positions")


@dataclasses.dataclass(frozen=True)
class ObjectiveConfig:
    kind: str = "causal"             # causal | mlm | span | reverse
    mask_rate: float = 0.15          # mlm: fraction of non-special tokens chosen
    noise_density: float = 0.15      # span: fraction of tokens dropped into spans
    mean_span_length: float = 3.0    # span: mean length of a dropped span

    def __post_init__(self):
        problems = [msg for bad, msg in (
            (self.kind not in OBJECTIVES, f"objective.kind={self.kind!r}; expected one of {OBJECTIVES}"),
            (not 0.0 < self.mask_rate < 1.0, f"objective.mask_rate={self.mask_rate}: expected a fraction in (0, 1)"),
            (not 0.0 < self.noise_density < 1.0,
             f"objective.noise_density={self.noise_density}: expected a fraction in (0, 1)"),
            (not self.mean_span_length >= 1.0,
             f"objective.mean_span_length={self.mean_span_length}: expected >= 1 (tokens)"),
        ) if bad]
        if problems:   # checked when the config is made: before a tokenizer is trained or a token read
            raise ValueError("; ".join(problems))

    @property
    def seq2seq(self) -> bool:
        return self.kind in ("span", "reverse")


def seq2seq_lengths(cfg: ObjectiveConfig, seq_len: int) -> tuple[int, int]:
    """(encoder length, decoder length) of a seq2seq objective for rows of ``seq_len`` tokens."""
    if cfg.kind == "reverse":
        return seq_len - 1, seq_len
    mask = random_spans_noise_mask(seq_len, np.random.default_rng(0), noise_density=cfg.noise_density,
                                   mean_span_length=cfg.mean_span_length)
    noise, spans = int(mask.sum()), int((mask[1:] & ~mask[:-1]).sum() + mask[0])
    return seq_len - noise + spans + 1, noise + spans + 1


class Objective:
    """``objective(batch, rng) -> batch`` for one model family's training data (numpy in, numpy out)."""

    def __init__(self, cfg: ObjectiveConfig, tok, seq_len: int):
        self.cfg, self.seq_len = cfg, seq_len
        if cfg.kind == "causal":
            return
        no_mask = cfg.kind == "mlm" and not _has(tok, "<|mask|>")
        if getattr(tok, "bos_id", -1) < 0 or getattr(tok, "eos_id", -1) < 0 or no_mask:
            raise ValueError(f"objective.kind={cfg.kind!r} needs a sentencepiece tokenizer with BOS/EOS and the "
                             f"reserved special tokens (tokenizer.kind='sentencepiece'), got {type(tok).__name__}")
        self.vocab_size, self.bos, self.eos = tok.vocab_size, tok.bos_id, tok.eos_id
        reserved = []
        while _has(tok, f"<|reserved_{len(reserved)}|>"):
            reserved.append(tok.token_id(f"<|reserved_{len(reserved)}|>"))
        self.sentinels = reserved
        self.special = [0, 1, 2, 3] + [tok.token_id(p) for p in SPECIAL_TOKENS if _has(tok, p)] + reserved
        if cfg.kind == "mlm":
            self.mask_id = tok.token_id("<|mask|>")
        if cfg.seq2seq:
            self.encoder_len, self.decoder_len = seq2seq_lengths(cfg, seq_len)

    def __call__(self, batch: dict, rng: np.random.Generator) -> dict:
        if self.cfg.kind == "causal":
            return batch
        if self.cfg.kind == "mlm":
            real = batch["segment_ids"] != 0
            out = mask_tokens(batch["inputs"], rng, mask_id=self.mask_id, vocab_size=self.vocab_size,
                              special_ids=self.special, rate=self.cfg.mask_rate)
            return {**batch, "inputs": np.where(real, out["inputs"], batch["inputs"]), "targets": out["targets"],
                    "weights": (out["weights"] * real).astype(np.float32)}
        rows = [self._row(x[s != 0], rng) for x, s in zip(batch["inputs"], batch["segment_ids"])]
        return {k: np.stack([r[k] for r in rows]) for k in rows[0]}

    def _row(self, ids: np.ndarray, rng: np.random.Generator) -> dict:
        if self.cfg.kind == "reverse":
            # A random length per row: with packed (always full) rows the model would learn to reverse
            # by absolute position and fail on any other length.
            ids = ids[: self.encoder_len]
            ids = ids[: rng.integers(1, len(ids) + 1)] if len(ids) else ids
            enc, targets = ids, np.concatenate([ids[::-1], [self.eos]])
        elif len(ids) >= 2:
            out = span_corrupt(ids, rng, sentinels=self.sentinels, noise_density=self.cfg.noise_density,
                               mean_span_length=self.cfg.mean_span_length, eos_id=self.eos)
            enc, targets = out["inputs"], out["targets"]
        else:   # an (almost) empty row: nothing to corrupt, nothing to score
            enc, targets = ids, ids[:0]
        if len(enc) > self.encoder_len or len(targets) > self.decoder_len:
            raise ValueError(f"span corruption made {len(enc)} / {len(targets)} tokens; the layout expects at most "
                             f"{self.encoder_len} / {self.decoder_len}")
        dec_in = np.concatenate([[self.bos], targets[:-1]]) if len(targets) else targets
        row = {"encoder_inputs": _pad(enc, self.encoder_len), "encoder_segment_ids": _pad(np.ones_like(enc), self.encoder_len),
                "encoder_positions": np.arange(self.encoder_len, dtype=np.int32),
                "inputs": _pad(dec_in, self.decoder_len), "targets": _pad(targets, self.decoder_len),
                "weights": _pad(np.ones(len(targets), np.float32), self.decoder_len).astype(np.float32),
                "segment_ids": _pad(np.ones_like(targets), self.decoder_len),
                "positions": np.arange(self.decoder_len, dtype=np.int32)}
        if self.cfg.kind == "span":   # the dropped text alone: not the sentinels (in order) nor EOS
            row["content_weights"] = _pad(~np.isin(targets, [*self.sentinels, self.eos]), self.decoder_len
                                          ).astype(np.float32)
        return row


def _pad(x: np.ndarray, n: int) -> np.ndarray:
    x = np.asarray(x)
    out = np.zeros(n, np.float32 if x.dtype.kind == "f" else np.int32)
    out[: len(x)] = x
    return out


def _has(tok, piece: str) -> bool:
    try:
        tok.token_id(piece)
    except (KeyError, ValueError):
        return False
    return True
