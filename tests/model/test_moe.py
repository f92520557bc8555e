"""Mixture of experts: routing and losses on hand examples, capacity drops, dropless == a plain
per-token loop, the MoE decoder's KV cache, scan/remat, parameter counts and expert sharding."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from lmforge.model import DecoderLM, ModelConfig, axis_rules, create_sharded
from lmforge.model.moe import (MoE, capacity_dispatch, dropless_ffn, expert_capacity, load_balancing_loss, route,
                               router_z_loss)
from lmforge.train.mesh import DEFAULT_RULES, MeshConfig, make_mesh
from lmforge.model.sharding import use_mesh
from lmforge.train.mesh import MeshConfig as _MeshConfig, make_mesh as _make_mesh

ONE_DEVICE = _make_mesh(_MeshConfig(data=1), devices=jax.devices()[:1])   # models are called under a mesh

MOE = ModelConfig.llama_moe_tiny(vocab_size=128, max_seq_len=32)


def test_route_picks_top_k_and_renormalises():
    logits = jnp.log(jnp.array([[0.1, 0.4, 0.3, 0.2]]))
    w, e, probs = route(logits, 2)
    np.testing.assert_array_equal(e, [[1, 2]])
    np.testing.assert_allclose(w, [[0.4 / 0.7, 0.3 / 0.7]], rtol=1e-6)
    np.testing.assert_allclose(probs, [[0.1, 0.4, 0.3, 0.2]], rtol=1e-6)
    w1, e1, _ = route(logits, 1)          # top-1 keeps the raw probability (Switch)
    np.testing.assert_array_equal(e1, [[1]])
    np.testing.assert_allclose(w1, [[0.4]], rtol=1e-6)


def test_load_balancing_loss_hand_example():
    probs = jnp.array([[[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.3, 0.7]]])   # (B=1, T=4, E=2)
    experts = jnp.array([[[0], [0], [0], [1]]])                              # top-1
    # f = (3/4, 1/4), P = (0.65, 0.35): 2 * (0.75 * 0.65 + 0.25 * 0.35) = 1.15
    assert float(load_balancing_loss(probs, experts, jnp.ones((1, 4)))) == pytest.approx(1.15, rel=1e-6)
    # padding does not count: f = (1, 0), P = (2.3 / 3, 0.7 / 3) -> 2 * 2.3 / 3
    mask = jnp.array([[1, 1, 1, 0]])
    assert float(load_balancing_loss(probs, experts, mask)) == pytest.approx(2 * 2.3 / 3, rel=1e-6)
    # uniform routing is 1.0 for every k
    uniform = jnp.full((1, 4, 4), 0.25)
    top2 = jnp.array([[[0, 1], [2, 3], [0, 2], [1, 3]]])
    assert float(load_balancing_loss(uniform, top2, jnp.ones((1, 4)))) == pytest.approx(1.0, rel=1e-6)


def test_router_z_loss_hand_example():
    logits = jnp.array([[[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]]])             # logsumexp: ln2, 1 + ln2, (pad)
    mask = jnp.array([[1, 1, 0]])
    want = (math.log(2) ** 2 + (1 + math.log(2)) ** 2) / 2
    assert float(router_z_loss(logits, mask)) == pytest.approx(want, rel=1e-6)


def test_expert_capacity():
    assert expert_capacity(seq_len=16, num_experts=4, k=2, factor=1.0) == 8
    assert expert_capacity(seq_len=16, num_experts=4, k=2, factor=1.25) == 10
    assert expert_capacity(seq_len=16, num_experts=4, k=2, factor=100.0) == 16   # never more than T
    assert expert_capacity(seq_len=2, num_experts=64, k=1, factor=1.0) == 1


def test_capacity_gives_first_choices_priority_and_drops_the_rest():
    experts = jnp.array([[[0, 1], [0, 2], [1, 0]]])                       # (B=1, T=3, K=2), E=3
    weights = jnp.array([[[0.6, 0.4], [0.7, 0.3], [0.8, 0.2]]])
    dispatch, combine, kept = capacity_dispatch(experts, weights, jnp.ones((1, 3), bool), 3, capacity=1)
    # First choices: t0 -> e0, t1 -> e0 (full: dropped), t2 -> e1. Then second choices:
    # t0 -> e1 (taken by t2's *first* choice: dropped), t1 -> e2, t2 -> e0 (full: dropped).
    np.testing.assert_array_equal(kept, [[[True, False], [False, True], [True, False]]])
    assert dispatch.shape == (1, 3, 3, 1)
    np.testing.assert_array_equal(dispatch[0, :, :, 0], [[1, 0, 0], [0, 0, 1], [0, 1, 0]])
    np.testing.assert_allclose(combine[0, :, :, 0], [[0.6, 0, 0], [0, 0, 0.3], [0, 0.8, 0]])
    # capacity 2: slots in priority order, only t2's second choice (e0's third) is dropped
    dispatch, _, kept = capacity_dispatch(experts, weights, jnp.ones((1, 3), bool), 3, capacity=2)
    np.testing.assert_array_equal(kept, [[[True, True], [True, True], [True, False]]])
    assert int(dispatch[0, 0, 1, 1]) == 1                                  # t0's e1 is e1's 2nd slot
    # padding (t1) takes no slot
    _, _, kept = capacity_dispatch(experts, weights, jnp.array([[True, False, True]]), 3, capacity=1)
    np.testing.assert_array_equal(kept, [[[True, False], [False, False], [True, False]]])


def reference_moe(x, router, up, gate, down, k, capacity=None):
    """A plain per-token loop: route, then sum the chosen experts' SwiGLU outputs (numpy, float64).
    With ``capacity``, assignments are admitted in GShard priority order (choice, then token)."""
    x, router, up, gate, down = (np.asarray(a, np.float64) for a in (x, router, up, gate, down))
    b, t, _ = x.shape
    out = np.zeros_like(x)
    for bi in range(b):
        logits = x[bi] @ router
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        top = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
        load = np.zeros(router.shape[1], int)
        for c in range(k):
            for ti in range(t):
                e = top[ti, c]
                if capacity is not None:
                    if load[e] >= capacity:
                        continue
                    load[e] += 1
                w = probs[ti, e] / probs[ti, top[ti]].sum()
                g = x[bi, ti] @ gate[e]
                h = (g / (1 + np.exp(-g))) * (x[bi, ti] @ up[e])
                out[bi, ti] += w * (h @ down[e])
    return out


def make_moe(capacity_factor=0.0, num_shared=0, e=4, k=2, d=16, f=24):
    with nnx.use_eager_sharding(False):   # a bare module, no mesh: the annotations stay metadata
        return MoE(embed_dim=d, mlp_dim=f, num_experts=e, experts_per_token=k,
                   capacity_factor=capacity_factor,
                   num_shared=num_shared, activation="swiglu", init_std=0.3, out_std=0.3, dtype=jnp.float32,
                   param_dtype=jnp.float32, rngs=nnx.Rngs(0))


def call(moe, x, seg=None):
    with use_mesh(ONE_DEVICE):
        return moe(x, jnp.ones(x.shape[:2], jnp.int32) if seg is None else seg)


def test_dropless_equals_a_per_token_loop():
    moe = make_moe()
    x = jax.random.normal(jax.random.key(0), (2, 7, 16))
    y, aux = call(moe, x)
    want = reference_moe(x, moe.router[...], moe.up[...], moe.gate[...], moe.down[...], k=2)
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-5)
    assert float(aux["moe_dropped"]) == 0.0 and float(aux["moe_aux_loss"]) >= 1.0 - 1e-6


def test_capacity_equals_the_loop_with_drops():
    moe = make_moe(capacity_factor=0.5)                                    # C = ceil(2 * 8 * 0.5 / 4) = 2
    x = jax.random.normal(jax.random.key(1), (2, 8, 16))
    y, aux = call(moe, x)
    want = reference_moe(x, moe.router[...], moe.up[...], moe.gate[...], moe.down[...], k=2, capacity=2)
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-5)
    # 2 sequences x 4 experts x 2 slots = 16 of the 32 assignments fit at most: half or more dropped
    assert float(aux["moe_dropped"]) >= 0.5
    # a token whose every choice was dropped passes through with a zero FFN output
    dropped = np.all(np.abs(want) < 1e-12, axis=-1)
    assert dropped.any()
    np.testing.assert_array_equal(np.asarray(y)[dropped], 0.0)


def test_capacity_with_room_for_every_token_equals_dropless():
    x = jax.random.normal(jax.random.key(2), (2, 8, 16))
    y_cap, aux = call(make_moe(capacity_factor=2.0), x)                    # C = T: nothing can drop
    y_free, _ = call(make_moe(), x)
    np.testing.assert_allclose(y_cap, y_free, rtol=1e-5, atol=1e-6)
    assert float(aux["moe_dropped"]) == 0.0


def test_dropless_ffn_with_gelu_experts():
    e, d, f = 3, 8, 12
    ks = jax.random.split(jax.random.key(3), 4)
    x = jax.random.normal(ks[0], (1, 5, d))
    up, down = jax.random.normal(ks[1], (e, d, f)), jax.random.normal(ks[2], (e, f, d))
    experts = jnp.array([[[2, 0], [1, 2], [0, 1], [2, 1], [2, 0]]])
    weights = jax.random.uniform(ks[3], (1, 5, 2))
    y = dropless_ffn(x, experts, weights, up, None, down, "gelu")
    want = sum(weights[0, :, c, None] * jnp.stack([jax.nn.gelu(x[0, i] @ up[experts[0, i, c]]) @ down[experts[0, i, c]]
                                                   for i in range(5)]) for c in range(2))
    np.testing.assert_allclose(y[0], want, rtol=1e-5, atol=1e-5)



@pytest.mark.parametrize("activation", ["gelu", "gelu_exact", "relu", "swiglu", "geglu"])
@pytest.mark.parametrize("capacity", [0.0, 1.0])
def test_one_expert_is_the_dense_mlp(activation, capacity):
    """One expert with k=1 keeps all its router weight (1.0), so it is the dense MLP of the same
    activation: GeGLU experts are gated and ReLU ones are ReLU, as in ``layers.MLP``."""
    from lmforge.model.layers import MLP

    d, f, x = 8, 12, jax.random.normal(jax.random.key(0), (2, 5, 8))
    with nnx.use_eager_sharding(False):   # bare modules, no mesh: the annotations stay metadata
        common = dict(embed_dim=d, activation=activation, init_std=0.5, out_std=0.5, dtype=jnp.float32,
                      param_dtype=jnp.float32, rngs=nnx.Rngs(0))
        moe = MoE(mlp_dim=f, num_experts=1, experts_per_token=1, capacity_factor=capacity, num_shared=0, **common)
        mlp = MLP(mlp_dim=f, use_bias=False, **common)
    for name in ("up", "gate", "down"):
        if getattr(mlp, name) is not None:
            getattr(mlp, name).kernel[...] = getattr(moe, name)[...][0]
    assert (moe.gate is None) == (mlp.gate is None)
    with use_mesh(ONE_DEVICE):
        y, _ = moe(x, jnp.ones((2, 5), jnp.int32))
        np.testing.assert_allclose(y, mlp(x), rtol=1e-5, atol=1e-5)


def make(cfg, mesh=None):
    mesh = mesh or make_mesh(MeshConfig(data=1), devices=jax.devices()[:1])
    with use_mesh(ONE_DEVICE):
        return create_sharded(lambda: DecoderLM(cfg, rngs=nnx.Rngs(0)), mesh, DEFAULT_RULES)


@pytest.mark.parametrize("cfg", [MOE, MOE.llama_moe_tiny(num_shared_experts=1, experts_per_token=1),
                                 ModelConfig.gpt2_tiny(num_experts=3, use_bias=False)], ids=["llama", "shared", "gpt2"])
def test_param_count_matches_config(cfg):
    _, params, _ = make(cfg)
    assert sum(x.size for x in jax.tree.leaves(params)) == cfg.num_params()


@pytest.mark.parametrize("scan", [False, True])
def test_kv_cache_decoding_matches_full_forward(scan):
    cfg = dataclasses.replace(MOE, scan_layers=scan, remat="full" if scan else "none")
    gd, params, _ = make(cfg)
    tokens = jax.random.randint(jax.random.key(1), (2, 12), 0, cfg.vocab_size)

    @jax.jit
    def run(params, tokens, cache=None):
        with axis_rules(DEFAULT_RULES):
            return nnx.merge(gd, params).forward_with_aux(tokens, cache=cache)
    with jax.set_mesh(ONE_DEVICE), axis_rules(DEFAULT_RULES):   # (init_cache lays the cache out by the rules)
        full, _, aux = run(params, tokens)
        logits, cache, _ = run(params, tokens[:, :5], nnx.merge(gd, params).init_cache(2, 16))   # prefill
        steps = [logits]
        for t in range(5, 12):                                              # decode, one compile
            logits, cache, _ = run(params, tokens[:, t:t + 1], cache)
            steps.append(logits)
    np.testing.assert_allclose(jnp.concatenate(steps, 1), full, atol=2e-5, rtol=1e-5)
    assert set(aux) == {"moe_aux_loss", "moe_z_loss", "moe_dropped"} and aux["moe_aux_loss"].shape == ()


@pytest.mark.slow   # two compiled gradients, ~25 s on the 2-core machine
def test_scan_and_remat_equal_the_layer_loop():
    gd, params, _ = make(MOE)
    gd_s, params_s, _ = make(dataclasses.replace(MOE, scan_layers=True, remat="full"))
    # the loop's per-layer parameters, stacked on a leading layers axis, are the scan's parameters
    blocks = params["blocks"]
    stacked = jax.tree.map(lambda *v: jnp.stack(v), *[blocks[i] for i in sorted(blocks)])
    params_s = {**params, "blocks": stacked}
    tokens = jax.random.randint(jax.random.key(4), (2, 10), 0, MOE.vocab_size)

    def grads(g):
        def loss(p):
            with axis_rules(DEFAULT_RULES):
                logits, _, aux = nnx.merge(g, p).forward_with_aux(tokens)
            return logits.mean() + aux["moe_aux_loss"] + aux["moe_z_loss"], aux
        return jax.jit(jax.value_and_grad(loss, has_aux=True))
    with jax.set_mesh(ONE_DEVICE):
        (l1, a1), g1 = grads(gd)(params)
        (l2, a2), g2 = grads(gd_s)(params_s)
    np.testing.assert_allclose(l2, l1, rtol=1e-6)
    for key in a1:
        np.testing.assert_allclose(a2[key], a1[key], rtol=1e-6)
    g1_stacked = jax.tree.map(lambda *v: jnp.stack(v), *[g1["blocks"][i] for i in sorted(g1["blocks"])])
    for a, b in zip(jax.tree.leaves(g2["blocks"]), jax.tree.leaves(g1_stacked)):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert float(jnp.abs(g2["blocks"]["moe"]["router"]).max()) > 0        # the router learns


def test_expert_weights_shard_over_the_expert_axis():
    mesh = make_mesh(MeshConfig(data=1, fsdp=2, expert=2, tensor=2))
    _, params, _ = make(dataclasses.replace(MOE, scan_layers=True), mesh)
    moe = params["blocks"]["moe"]
    assert moe["up"].sharding.spec == P(None, "expert", "fsdp", "tensor")  # (layers, expert, embed, mlp)
    assert moe["down"].sharding.spec == P(None, "expert", "tensor", "fsdp")
    assert moe["router"].sharding.spec == P(None, "fsdp", None)
    assert moe["up"].addressable_shards[0].data.shape == (2, 2, 32, 48)


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_experts=-1), "num_experts"),
    (dict(num_experts=4, experts_per_token=5), "experts_per_token"),
    (dict(num_experts=4, moe_capacity_factor=-1.0), "moe_capacity_factor"),
    (dict(num_experts=4, use_bias=True), "use_bias"),
])
def test_moe_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig.llama_tiny(**kwargs)


def test_moe_presets():
    cfg = ModelConfig.preset("llama_moe")
    assert (cfg.num_experts, cfg.experts_per_token) == (8, 2)
    assert abs(cfg.num_params() - 0.408e9) < 0.005e9
    assert abs(cfg.num_params(active=True) - 0.153e9) < 0.005e9          # top-2 of 8: what a token uses
    tiny = ModelConfig.llama_tiny()                                      # a dense model: all active
    assert tiny.num_params(active=True) == tiny.num_params()
