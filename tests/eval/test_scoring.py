"""The log-likelihood scorer and the perplexity / multiple-choice tasks on the tiny model: against the
full logits of a plain forward pass (tier b), sharded (2, 2, 2) equal to one device (tier c), the
pair encoding and rolling windows (tier a), a handful of compiled shapes."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmforge.eval import (
    ChoiceItem,
    Scorer,
    encode_pair,
    multiple_choice,
    perplexity,
    prefix_id,
    rolling_requests,
)
from lmforge.eval.scoring import _score_batch
from lmforge.infer import Sampler
from lmforge.model import ModelConfig, use_mesh
from lmforge.train.mesh import MeshConfig, make_mesh

TEXT = ("It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in "
        "want of a wife. However little known the feelings or views of such a man may be on his first entering "
        "a neighbourhood, this truth is so well fixed in the minds of the surrounding families.\n") * 2


@pytest.fixture(scope="module")
def single(tiny) -> Sampler:
    """The tiny model on one device."""
    one = make_mesh(MeshConfig(data=1), devices=jax.devices()[:1])
    params = jax.device_put(jax.device_get(tiny.params), jax.sharding.NamedSharding(one, jax.sharding.PartitionSpec()))
    return Sampler(tiny.sampler.graphdef, params, tiny.sampler.tok, tiny.cfg, one, tiny.sampler.rules)


def reference_logprob(sampler, ctx, cont) -> float:
    """log p(cont | ctx) from the model's full logits, one request at a time (one device): the input is
    right-padded to max_seq_len, which a causal model's earlier positions never see (one compile)."""
    max_len = sampler.model_cfg.max_seq_len
    whole = (list(ctx) + list(cont))[-(max_len + 1):]
    n = len(whole) - 1
    padded = jnp.asarray([whole[:-1] + [0] * (max_len - n)])
    with use_mesh(sampler.mesh, sampler.rules):
        logits = _logits(sampler.graphdef, sampler.params, padded)
    lp = np.asarray(jax.nn.log_softmax(logits[0].astype(jnp.float32), axis=-1))
    return float(sum(lp[i, whole[i + 1]] for i in range(n - len(cont), n)))


@functools.partial(jax.jit, static_argnums=0)
def _logits(graphdef, params, tokens):
    return nnx.merge(graphdef, params)(tokens)[0]


def test_encode_pair_follows_lm_eval_rules(tiny):
    tok = tiny.sampler.tok
    ctx, cont = encode_pair(tok, "The answer is ", "yes")             # the trailing space moves to the choice
    assert ctx == [tok.bos_id] + tok.encode("The answer is") and ctx + cont == [tok.bos_id] + tok.encode("The answer is yes")
    ctx, cont = encode_pair(tok, "", "hello")                          # an empty context: the prefix token
    assert ctx == [prefix_id(tok)] == [tok.bos_id] and cont == tok.encode("hello")
    with pytest.raises(ValueError, match="encodes to no tokens"):
        encode_pair(tok, "abc", "")


def test_rolling_windows_score_every_token_once_with_bounded_context():
    ids = list(range(100, 237))
    for stride in (None, 7, 64):
        windows = rolling_requests(ids, 64, stride=stride, prefix=1)
        scored = [t for _, cont in windows for t in cont]
        assert scored == ids                                               # each token once, in order
        full = [1] + ids
        for ctx, cont in windows:
            assert 1 <= len(ctx) and len(ctx) + len(cont) <= 65             # model reads at most 64 tokens
            start = full.index(ctx[0])                                     # a contiguous piece of the text
            assert ctx + cont == full[start:start + len(ctx) + len(cont)]
        assert all(len(ctx) + len(cont) == 65 for ctx, cont in windows[1:])   # later windows are full
    assert rolling_requests(ids[:3], 64, prefix=None) == [([100], [101, 102])]   # no prefix: the first is context
    with pytest.raises(ValueError, match="stride=65"):
        rolling_requests(ids, 64, stride=65)


def test_rolling_windows_equal_lm_eval_harness():
    utils = pytest.importorskip("lm_eval.utils", reason="lm-eval is not installed (pip install -e '.[eval]')")
    for n in (1, 5, 63, 64, 65, 128, 129, 300):
        for max_len in (4, 16, 64):
            ids = list(range(100, 100 + n))
            ref = [tuple(map(list, utils.make_disjoint_window(w)))
                   for w in utils.get_rolling_token_windows(ids, 7, max_len, 1)]
            assert rolling_requests(ids, max_len, prefix=7) == ref


def test_scorer_equals_full_logits_and_compiles_few_shapes(tiny, single):
    tok, sampler = tiny.sampler.tok, tiny.sampler
    scorer = Scorer.from_sampler(sampler, rows=8)
    texts = ["def f(x):", "The ", "import os\nimport sys\n", "class A:\n    pass", "x" * 3, TEXT[:300]]
    requests = [encode_pair(tok, t, " return x") for t in texts] + [encode_pair(tok, "", "hello world")]
    before = _score_batch._cache_size()
    scores = scorer.score(requests)
    for (ctx, cont), s in zip(requests, scores):
        assert s.num_tokens == len(cont)
        assert s.logprob == pytest.approx(reference_logprob(single, ctx, cont), abs=2e-4)
    # The request over the context (TEXT[:300]) keeps its last 65 tokens, as the reference does.
    assert len(requests[5][0]) + len(requests[5][1]) > 65
    assert _score_batch._cache_size() - before <= 2                        # two widths, one row count
    assert scorer.rows == 8 and sampler.min_rows == 4
    # Order does not matter: the same set forms the same batches.
    again = scorer.score(requests[::-1])[::-1]
    assert [s.logprob for s in again] == [s.logprob for s in scores]


def test_sharded_scores_equal_one_device(tiny, single):
    requests = rolling_requests(tiny.sampler.tok.encode(TEXT), 64, stride=32, prefix=prefix_id(tiny.sampler.tok))
    a = Scorer.from_sampler(tiny.sampler).score(requests)
    b = Scorer.from_sampler(single).score(requests)
    np.testing.assert_allclose([s.logprob for s in a], [s.logprob for s in b], rtol=1e-5, atol=1e-4)


def test_perplexity_is_the_exact_token_weighted_mean(tiny, single):
    tok = tiny.sampler.tok
    scorer = Scorer.from_sampler(tiny.sampler)
    result = perplexity(scorer, TEXT)
    ids = tok.encode(TEXT)
    windows = rolling_requests(ids, 64, prefix=tok.bos_id)
    total = math.fsum(reference_logprob(single, c, t) for c, t in windows)
    assert result["tokens"] == len(ids) and result["windows"] == len(windows) == math.ceil(len(ids) / 64)
    assert result["logprob_sum"] == pytest.approx(total, abs=1e-3)
    assert result["nll_per_token"] == pytest.approx(-total / len(ids), rel=1e-6)
    assert result["perplexity"] == pytest.approx(math.exp(-total / len(ids)), rel=1e-6)
    assert result["bytes"] == len(TEXT.encode()) and result["bits_per_byte"] == pytest.approx(
        -total / math.log(2) / len(TEXT.encode()), rel=1e-6)
    # A random model is near uniform over its vocabulary: ln V nats per token.
    assert abs(result["nll_per_token"] - math.log(tiny.cfg.vocab_size)) < 0.5
    # More context per token (stride 16) scores the same tokens; --limit scores the first windows only.
    strided = perplexity(scorer, TEXT, stride=16)
    assert strided["tokens"] == len(ids) and strided["windows"] > result["windows"]
    first = perplexity(scorer, TEXT, max_windows=1)
    assert first["tokens"] == 64 and first["bytes"] == len(tok.decode(ids[:64]).encode())
    with pytest.raises(ValueError, match="the text is empty"):
        perplexity(scorer, "")


def test_multiple_choice_scores_each_choice_as_a_continuation(tiny, single):
    tok = tiny.sampler.tok
    items = [ChoiceItem("The capital of France is", (" Paris", " a very long answer indeed", " x"), 0, "t:1"),
             ChoiceItem("def f(x): return ", ("x", "None", "f(x) + f(x)"), 1, "t:2")]
    result = multiple_choice(Scorer.from_sampler(tiny.sampler), items)
    for item, sample in zip(items, result["samples"]):
        want = [reference_logprob(single, *encode_pair(tok, item.context, c)) for c in item.choices]
        np.testing.assert_allclose(sample["logprobs"], want, atol=2e-4)
        assert sample["tokens"] == [len(encode_pair(tok, item.context, c)[1]) for c in item.choices]
        lp = np.array(sample["logprobs"])
        assert sample["picks"] == {"acc": int(np.argmax(lp)),
                                   "acc_norm": int(np.argmax(lp / [len(c.lstrip()) for c in item.choices])),
                                   "acc_per_token": int(np.argmax(lp / np.array(sample["tokens"])))}
    m = result["metrics"]
    assert m["n"] == 2 and m["acc"] == np.mean([s["picks"]["acc"] == it.answer for s, it in zip(result["samples"], items)])


def test_scorer_refuses_what_it_cannot_score(tiny):
    scorer = Scorer.from_sampler(tiny.sampler)
    with pytest.raises(ValueError, match="request 0: a continuation of 65 tokens exceeds"):
        scorer.score([([1], list(range(5, 70)))])
    with pytest.raises(ValueError, match="request 1: the continuation has no tokens"):
        scorer.score([([1], [5]), ([1], [])])
    with pytest.raises(ValueError, match="need a decoder-only model"):
        Scorer(None, None, None, ModelConfig.bert_tiny(), tiny.sampler.mesh, tiny.sampler.rules)
