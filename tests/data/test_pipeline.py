"""Grain pipelines: window and pack invariants, exact resume, process sharding, the eval pass."""

import itertools
import json

import numpy as np
import pytest

from lmforge.data import DataConfig, TokenizerConfig, eval_batches, split_documents, train_dataset, train_tokenizer
from lmforge.data.pipeline import check_splits

KEYS = {"inputs": np.int32, "targets": np.int32, "weights": np.float32, "segment_ids": np.int32, "positions": np.int32}


def _take(it, n):
    return list(itertools.islice(it, n))


def _assert_batch_format(batch, rows, T):
    assert set(batch) == set(KEYS)
    for k, dtype in KEYS.items():
        assert batch[k].shape == (rows, T) and batch[k].dtype == dtype, k


def _same(a, b):
    return all(np.array_equal(a[k], b[k]) for k in KEYS)


def _doc_tokens(tok, doc):
    return np.array([tok.bos_id, *tok.encode(doc), tok.eos_id], np.int32)


# --------------------------------------------------------------------------- windows


def test_windows_are_nanogpt_windows_of_the_stream(sp_tok, corpus):
    cfg = DataConfig(packing="windows", seq_len=64, batch_size=4, seed=3)
    stream = np.concatenate([_doc_tokens(sp_tok, d) for d in corpus[:10]])
    batches = _take(iter(train_dataset(cfg, sp_tok, corpus[:10])), 3)
    for s, b in enumerate(batches):
        _assert_batch_format(b, 4, 64)
        for r in range(4):
            o = np.random.default_rng([3, s * 4 + r]).integers(0, len(stream) - 64)
            assert np.array_equal(b["inputs"][r], stream[o : o + 64])
            assert np.array_equal(b["targets"][r], stream[o + 1 : o + 65])
        assert (b["weights"] == 1).all() and (b["segment_ids"] == 1).all()
        assert (b["positions"] == np.arange(64)).all()


def test_windows_are_deterministic_and_seeded(sp_tok, corpus):
    cfg = DataConfig(packing="windows", seq_len=32, batch_size=4)
    a = _take(iter(train_dataset(cfg, sp_tok, corpus[:10])), 3)
    b = _take(iter(train_dataset(cfg, sp_tok, corpus[:10])), 3)
    c = _take(iter(train_dataset(DataConfig(packing="windows", seq_len=32, batch_size=4, seed=1), sp_tok, corpus[:10])), 3)
    assert all(_same(x, y) for x, y in zip(a, b))
    assert not _same(a[0], c[0])


def test_windows_without_shuffle_walk_the_stream(sp_tok, corpus):
    cfg = DataConfig(packing="windows", seq_len=16, batch_size=2, shuffle=False)
    stream = np.concatenate([_doc_tokens(sp_tok, d) for d in corpus[:3]])
    b0, b1 = _take(iter(train_dataset(cfg, sp_tok, corpus[:3])), 2)
    assert np.array_equal(b0["inputs"].ravel(), stream[:32])
    assert np.array_equal(b1["inputs"].ravel(), stream[32:64])


def test_windows_process_sharding_is_exact(sp_tok, corpus):
    cfg = DataConfig(packing="windows", seq_len=32, batch_size=8)
    whole = _take(iter(train_dataset(cfg, sp_tok, corpus[:10])), 4)
    parts = [_take(iter(train_dataset(cfg, sp_tok, corpus[:10], process_index=p, process_count=2)), 4) for p in (0, 1)]
    for s in range(4):
        _assert_batch_format(parts[0][s], 4, 32)
        for k in KEYS:
            assert np.array_equal(np.concatenate([parts[0][s][k], parts[1][s][k]]), whole[s][k])


def test_char_windows_on_tiny_shakespeare(shared_data, tmp_path):
    text = (shared_data / "tinyshakespeare.txt").read_text(encoding="utf-8")
    tok = train_tokenizer(TokenizerConfig(kind="char"), [text], tmp_path)
    train, val = text[:1_003_854], text[1_003_854:]
    cfg = DataConfig(packing="windows", seq_len=256, batch_size=8)
    (b,) = _take(iter(train_dataset(cfg, tok, [train])), 1)
    assert tok.decode(b["inputs"][0]) in train and b["inputs"].max() < 65
    batches, n_bytes = eval_batches(cfg, tok, [val])
    assert n_bytes == len(val.encode("utf-8"))
    assert sum(x["weights"].sum() for x in batches) == len(val) - 1  # no bos/eos for chars


# --------------------------------------------------------------------------- pack


def _check_packed_rows(b, docs_tokens, T):
    """Targets are next tokens within a segment; weights, segment ids and positions are consistent."""
    seg, pos, w = b["segment_ids"], b["positions"], b["weights"]
    assert np.array_equal(w, (seg != 0).astype(np.float32))
    assert ((b["inputs"] == 0) | (seg != 0)).all() and ((b["targets"] == 0) | (seg != 0)).all()
    haystack = [t.tobytes() for t in docs_tokens]
    for r in range(len(seg)):
        for s in np.unique(seg[r][seg[r] > 0]):
            idx = np.flatnonzero(seg[r] == s)
            assert np.array_equal(idx, np.arange(idx[0], idx[0] + len(idx)))  # contiguous
            assert np.array_equal(pos[r, idx], np.arange(len(idx)))  # positions restart at 0
            x, y = b["inputs"][r, idx], b["targets"][r, idx]
            assert np.array_equal(x[1:], y[:-1])  # target t is input t+1 within the segment
            piece = np.append(x, y[-1]).astype(np.int32).tobytes()
            assert any(piece in h for h in haystack)  # a real stretch of one document, never two
        # Padding only at the end of a row.
        nz = np.flatnonzero(seg[r])
        assert len(nz) == 0 or nz[-1] == len(nz) - 1


def test_pack_rows_never_cross_documents(sp_tok, corpus):
    T = 48
    docs = corpus[:12] + ["short", "x", "tiny doc"]
    tokens = [_doc_tokens(sp_tok, d) for d in docs]
    batches = _take(iter(train_dataset(DataConfig(seq_len=T, batch_size=4), sp_tok, docs)), 40)
    for b in batches:
        _assert_batch_format(b, 4, T)
        _check_packed_rows(b, tokens, T)
    segs_per_row = [len(np.unique(r[r > 0])) for b in batches for r in b["segment_ids"]]
    assert max(segs_per_row) > 1  # several documents really share a row
    assert np.mean([b["weights"].mean() for b in batches]) > 0.8  # and padding is modest


def test_pack_segments_are_the_chunks_and_cover_every_target(sp_tok, corpus):
    T = 40
    docs = corpus[:6] + ["a b c", "one two three four"]
    tokens = [_doc_tokens(sp_tok, d) for d in docs]
    # Chunks of T+1 tokens overlapping by one: together they predict each token after a bos once.
    chunks = {t[s : s + T + 1].tobytes() for t in tokens for s in range(0, len(t) - 1, T)}
    assert sum(len(c) // 4 - 1 for c in chunks) == sum(len(t) - 1 for t in tokens)
    n_rows = 3 * sum(len(t) for t in tokens) // T  # enough rows for more than one epoch
    segments = set()
    for b in itertools.islice(iter(train_dataset(DataConfig(seq_len=T, batch_size=4), sp_tok, docs)), n_rows // 4):
        for r in range(4):
            seg = b["segment_ids"][r]
            for s in np.unique(seg[seg > 0]):
                idx = seg == s
                segments.add(np.append(b["inputs"][r, idx], b["targets"][r, idx][-1]).astype(np.int32).tobytes())
    assert segments == chunks


def test_pack_process_sharding_splits_the_data(sp_tok, corpus):
    cfg = DataConfig(seq_len=32, batch_size=4)
    b0 = _take(iter(train_dataset(cfg, sp_tok, corpus[:10], process_index=0, process_count=2)), 2)
    b1 = _take(iter(train_dataset(cfg, sp_tok, corpus[:10], process_index=1, process_count=2)), 2)
    _assert_batch_format(b0[0], 2, 32)
    assert not np.array_equal(b0[0]["inputs"], b1[0]["inputs"])


def test_bad_process_arguments(sp_tok, corpus):
    with pytest.raises(ValueError, match="data.batch_size=6 is not divisible by process_count=4"):
        train_dataset(DataConfig(batch_size=6), sp_tok, corpus[:2], process_index=0, process_count=4)
    with pytest.raises(ValueError, match="process_index=2, process_count=2"):
        train_dataset(DataConfig(batch_size=4), sp_tok, corpus[:2], process_index=2, process_count=2)
    with pytest.raises(ValueError, match="data.packing='concat'"):
        train_dataset(DataConfig(packing="concat"), sp_tok, corpus[:2])
    with pytest.raises(ValueError, match="data.seq_len=512: the train token stream has only"):
        train_dataset(DataConfig(packing="windows", seq_len=512), sp_tok, ["tiny"])


# --------------------------------------------------------------------------- resume


@pytest.mark.parametrize("packing", ["windows", "pack"])
def test_resume_is_exact(sp_tok, corpus, packing):
    cfg = DataConfig(packing=packing, seq_len=32, batch_size=4)
    ds = train_dataset(cfg, sp_tok, corpus[:10])
    it = iter(ds)
    _take(it, 5)
    state = json.loads(json.dumps(it.get_state()))  # plain JSON, as grain's orbax handler writes it
    expected = _take(it, 5)
    it2 = iter(train_dataset(cfg, sp_tok, corpus[:10]))
    it2.set_state(state)
    assert all(_same(a, b) for a, b in zip(_take(it2, 5), expected))


def test_pack_resume_across_epochs_and_packing_groups(sp_tok, corpus):
    cfg = DataConfig(seq_len=32, batch_size=32)
    docs = corpus[:2]  # ~30 chunks an epoch: the 512-bin packing groups span many epochs
    it = iter(train_dataset(cfg, sp_tok, docs))
    _take(it, 20)  # 640 rows: past the first group of 512
    state = it.get_state()
    expected = _take(it, 4)
    it2 = iter(train_dataset(cfg, sp_tok, docs))
    it2.set_state(state)
    assert all(_same(a, b) for a, b in zip(_take(it2, 4), expected))


# --------------------------------------------------------------------------- eval


def _weighted(batches, key):
    return np.concatenate([b[key][b["weights"] > 0] for b in batches])


def test_eval_windows_scores_every_val_token_once(sp_tok, corpus):
    docs = corpus[-4:]
    stream = np.concatenate([_doc_tokens(sp_tok, d) for d in docs])
    batches, n_bytes = eval_batches(DataConfig(packing="windows", seq_len=50, batch_size=3), sp_tok, docs)
    for b in batches:
        _assert_batch_format(b, 3, 50)
    assert n_bytes == sum(len(d.encode("utf-8")) for d in docs)
    assert sum(b["weights"].sum() for b in batches) == len(stream) - 1
    assert np.array_equal(_weighted(batches, "targets"), stream[1:])
    assert np.array_equal(_weighted(batches, "inputs"), stream[:-1])
    # The padding is all at the end.
    flat = np.concatenate([b["weights"].ravel() for b in batches])
    assert flat[: len(stream) - 1].all() and not flat[len(stream) - 1 :].any()


def test_eval_pack_respects_documents(sp_tok, corpus):
    T = 50
    docs = corpus[-4:] + ["a tiny last doc"]
    tokens = [_doc_tokens(sp_tok, d) for d in docs]
    batches, _ = eval_batches(DataConfig(seq_len=T, batch_size=4), sp_tok, docs, batch_size=2)
    for b in batches:
        _assert_batch_format(b, 2, T)
    assert sum(b["weights"].sum() for b in batches) == sum(len(t) - 1 for t in tokens)
    assert np.array_equal(_weighted(batches, "targets"), np.concatenate([t[1:] for t in tokens]))
    for b in batches:
        seg, pos = b["segment_ids"], b["positions"]
        for r in range(len(seg)):
            if seg[r, 0] == 0:
                continue
            starts = np.flatnonzero(np.diff(seg[r]) != 0) + 1
            assert seg[r, 0] == 1 and pos[r, 0] == 0
            assert all(pos[r, s] == 0 or seg[r, s] == 0 for s in starts)


def test_eval_long_document_matches_encoding_it_whole(sp_tok, corpus):
    doc = "\n".join(corpus) * 2  # > 64K chars: encoded in newline-cut pieces, same ids
    assert len(doc) > 200_000
    batches, _ = eval_batches(DataConfig(packing="windows", seq_len=256, batch_size=64), sp_tok, [doc])
    assert np.array_equal(_weighted(batches, "targets"), _doc_tokens(sp_tok, doc)[1:])


def test_eval_of_nothing(sp_tok):
    assert eval_batches(DataConfig(), sp_tok, []) == ([], 0)


def test_orbax_checkpoint_of_the_iterator(sp_tok, corpus, tmp_path):
    ocp = pytest.importorskip("orbax.checkpoint")
    import grain

    cfg = DataConfig(seq_len=32, batch_size=4)
    it = iter(train_dataset(cfg, sp_tok, corpus[:10]))
    _take(it, 3)
    mngr = ocp.CheckpointManager(tmp_path / "ckpt", item_names=("data_iter",))
    mngr.save(3, args=ocp.args.Composite(data_iter=grain.checkpoint.CheckpointSave(it)))
    mngr.wait_until_finished()
    expected = _take(it, 3)
    it2 = iter(train_dataset(cfg, sp_tok, corpus[:10]))
    mngr.restore(3, args=ocp.args.Composite(data_iter=grain.checkpoint.CheckpointRestore(it2)))
    assert all(_same(a, b) for a, b in zip(_take(it2, 3), expected))


# --------------------------------------------------------------------------- data too small


def test_check_splits_refuses_what_cannot_fill_one_sequence():
    # Issue 13: a 37-character text trained and reported a validation loss from a 4-character split.
    cfg = DataConfig(seq_len=32)
    train, val = split_documents(["x" * 36 + "\n"], 0.1)        # 33 + 4 characters
    with pytest.raises(ValueError) as info:
        check_splits(cfg, "char", train, val)
    assert str(info.value) == (
        "data too small: the validation split has 4 characters (of 37 in all, data.val_fraction=0.1), fewer than "
        "one sequence of data.seq_len + 1 = 33 tokens; expected more text in data.source, a smaller data.seq_len "
        "or a larger data.val_fraction")
    with pytest.raises(ValueError, match=r"^data too small: the train split has 9 characters \(of 10 in all"):
        check_splits(cfg, "char", *split_documents(["hello wor\n"], 0.1))
    # SentencePiece: bytes + bos/eos bound the tokens; "é" is 2 bytes, so 20 of them may fill 33 tokens
    with pytest.raises(ValueError, match=r"the validation split has 4 characters, at most 6 tokens"):
        check_splits(cfg, "sentencepiece", ["é" * 40], ["abcd"])
    check_splits(cfg, "sentencepiece", ["é" * 20], ["é" * 20])
    check_splits(cfg, "char", ["x" * 33], ["y" * 33])
    check_splits(cfg, "char", ["x" * 33], [])                 # val_fraction=0: no validation split to check


def test_data_config_checks_its_values():
    with pytest.raises(ValueError, match=r"data.val_fraction=1.5: expected a number in \[0, 1\)"):
        DataConfig(val_fraction=1.5)
    with pytest.raises(ValueError, match=r"data.seq_len=0, data.batch_size=16: expected both >= 1"):
        DataConfig(seq_len=0)
