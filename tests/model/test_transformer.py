"""Decoder-only Transformer: parameter counts, KV cache, packing isolation, backends, sharding specs."""

import dataclasses
import functools
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import AxisType, PartitionSpec as P

from lmforge.model import DecoderLM, ModelConfig, ShardingError, axis_rules, create_sharded, logical_spec
from lmforge.train.mesh import DEFAULT_RULES
from lmforge.model.sharding import EAGER_INIT_MAX_BYTES, eager_init, init_prng_lowering, run_init, use_mesh
from lmforge.train.mesh import MeshConfig as _MeshConfig, make_mesh as _make_mesh

ONE_DEVICE = _make_mesh(_MeshConfig(data=1), devices=jax.devices()[:1])   # models are called under a mesh

CONFIGS = {
    "gpt2": ModelConfig.gpt2_tiny(),
    "llama": ModelConfig.llama_tiny(),
    "gpt2_scan_remat": ModelConfig.gpt2_tiny(scan_layers=True, remat="full"),
    "llama_scan": ModelConfig.llama_tiny(scan_layers=True),
    "qwen_qkv_bias_qk_norm": ModelConfig.llama_tiny(qkv_bias=True, qk_norm=True),   # Qwen2's biases, Qwen3's norms
}


def one_device_mesh():
    return ONE_DEVICE


def make(cfg, mesh=None):
    mesh = mesh or one_device_mesh()
    with use_mesh(ONE_DEVICE):
        gd, params, sh = create_sharded(lambda: DecoderLM(cfg, rngs=nnx.Rngs(0)), mesh, DEFAULT_RULES)
    return gd, params, sh, mesh


@functools.partial(jax.jit, static_argnums=0)
def _forward(gd, params, tokens, kw):
    return nnx.merge(gd, params)(tokens, **kw)


def forward(gd, params, tokens, **kw):
    """The model jitted (an eager call compiles each primitive on its own: seconds per call on CPU)."""
    with use_mesh(ONE_DEVICE):
        return _forward(gd, params, tokens, kw)


@pytest.mark.parametrize("name", CONFIGS)
def test_param_count_matches_config(name):
    cfg = CONFIGS[name]
    _, params, _, _ = make(cfg)
    assert sum(x.size for x in jax.tree.leaves(params)) == cfg.num_params()


def test_named_preset_sizes():
    # GPT-2 small is the 124M model (with nanoGPT's padded vocabulary 50304: 124.4M).
    assert abs(ModelConfig.gpt2_small().num_params() - 124.4e6) < 0.1e6
    assert abs(ModelConfig.gpt2_medium().num_params() - 354.8e6) < 0.2e6
    assert abs(ModelConfig.llama_1b().num_params() - 1.236e9) < 0.005e9   # Llama 3.2 1B


@pytest.mark.parametrize("name", CONFIGS)
def test_kv_cache_decoding_matches_full_forward(name):
    cfg = CONFIGS[name]
    gd, params, _, _ = make(cfg)
    tokens = jax.random.randint(jax.random.key(1), (2, 24), 0, cfg.vocab_size)
    full, _ = forward(gd, params, tokens)
    cache = nnx.merge(gd, params).init_cache(2, 32)
    logits, cache = forward(gd, params, tokens[:, :10], cache=cache)  # prefill
    steps = [logits]
    for t in range(10, 24):                                            # decode one token at a time
        logits, cache = forward(gd, params, tokens[:, t:t + 1], cache=cache)
        steps.append(logits)
    np.testing.assert_allclose(jnp.concatenate(steps, 1), full, atol=2e-5, rtol=1e-5)
    assert int(cache["index"]) == 24


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_packed_documents_do_not_attend_to_each_other(name):
    cfg = CONFIGS[name]
    gd, params, _, _ = make(cfg)
    a = jax.random.randint(jax.random.key(2), (1, 10), 0, cfg.vocab_size)
    b = jax.random.randint(jax.random.key(3), (1, 6), 0, cfg.vocab_size)
    packed = jnp.concatenate([a, b], 1)
    seg = jnp.array([[1] * 10 + [2] * 6])
    pos = jnp.array([list(range(10)) + list(range(6))])
    out, _ = forward(gd, params, packed, positions=pos, segment_ids=seg)
    alone_a, _ = forward(gd, params, a)
    alone_b, _ = forward(gd, params, b)
    np.testing.assert_allclose(out[:, :10], alone_a, atol=2e-5)
    np.testing.assert_allclose(out[:, 10:], alone_b, atol=2e-5)


def test_dot_product_backend_matches_xla():
    gd, params, _, _ = make(CONFIGS["llama"])
    gd2, _, _, _ = make(dataclasses.replace(CONFIGS["llama"], attention="dot_product"))
    tokens = jax.random.randint(jax.random.key(4), (2, 16), 0, 256)
    seg = jnp.array([[1] * 8 + [2] * 8, [1] * 16])
    np.testing.assert_allclose(forward(gd2, params, tokens, segment_ids=seg)[0],
                               forward(gd, params, tokens, segment_ids=seg)[0], atol=2e-5)


def test_remat_does_not_change_gradients():
    cfg = CONFIGS["gpt2"]
    gd, params, _, _ = make(cfg)
    gd_r, params_r, _, _ = make(dataclasses.replace(cfg, remat="dots"))
    tokens = jax.random.randint(jax.random.key(5), (2, 16), 0, 256)

    def loss(p, g):
        return forward(g, p, tokens)[0].mean()
    with jax.set_mesh(ONE_DEVICE):   # the gradient traces the forward: the mesh is set outside it
        pairs = zip(jax.tree.leaves(jax.grad(loss)(params, gd)), jax.tree.leaves(jax.grad(loss)(params_r, gd_r)))
        for a, b in pairs:
            np.testing.assert_allclose(a, b, atol=1e-6)


@functools.cache
def _llama_grads_and_dots(remat):
    """(gradient of a loss of llama_tiny's logits, ``dot`` ops in the compiled gradient) under ``remat``."""
    gd, params, _, _ = make(dataclasses.replace(CONFIGS["llama"], remat=remat))
    tokens = jax.random.randint(jax.random.key(5), (2, 16), 0, 256)
    loss = lambda p: nnx.merge(gd, p)(tokens)[0].mean()
    with use_mesh(ONE_DEVICE):
        compiled = jax.jit(jax.grad(loss)).lower(params).compile()
        return compiled(params), compiled.as_text().count(" dot(")


@pytest.mark.parametrize("policy", ["save_qkv_proj", "minimal", "dots"])
def test_named_remat_policies_keep_gradients_and_recompute_what_they_do_not_name(policy):
    """Gradients equal no remat's; the compiled gradient recomputes the matmuls a policy does not save:
    ``full`` every one the backward pass needs, ``save_qkv_proj`` all but q/k/v, ``minimal`` only the
    attention scores (q k^T), which no name covers, ``dots`` none (the scores are a dot_general too:
    ``layers.einsum_f32`` is a custom_jvp, not a custom_vjp that the policy would not see)."""
    (ref, none), (grads, dots), (_, full) = (_llama_grads_and_dots(r) for r in ("none", policy, "full"))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), grads, ref)
    layers = CONFIGS["llama"].num_layers
    assert full - none >= 7 * layers, (none, full)                    # the whole forward, less what is dead
    expected = {"save_qkv_proj": full - 3 * layers,                   # q, k, v are not recomputed
                "minimal": none + layers,                             # only attention's scores are
                "dots": none}[policy]
    assert dots == expected, (none, dots, full)


def test_dropout_is_deterministic_per_key_and_off_without_key():
    cfg = dataclasses.replace(CONFIGS["gpt2"], dropout=0.5)
    gd, params, _, _ = make(cfg)
    tokens = jnp.ones((1, 8), jnp.int32)
    a = forward(gd, params, tokens, dropout_rng=jax.random.key(0))[0]
    b = forward(gd, params, tokens, dropout_rng=jax.random.key(0))[0]
    c = forward(gd, params, tokens, dropout_rng=jax.random.key(1))[0]
    d = forward(gd, params, tokens)[0]
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c) and not np.allclose(a, d)


def test_parameters_carry_the_rule_specs_on_a_2x2x2_mesh():
    mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"), axis_types=(AxisType.Auto,) * 3)
    cfg = CONFIGS["llama_scan"]
    _, params, sh, _ = make(cfg, mesh)
    attn = params["blocks"]["attn"]
    assert attn["q"]["kernel"].sharding.spec == P(None, "fsdp", "tensor", None)   # (layers, embed, heads, head_dim)
    assert attn["o"]["kernel"].sharding.spec == P(None, "tensor", None, "fsdp")
    assert params["blocks"]["mlp"]["up"]["kernel"].sharding.spec == P(None, "fsdp", "tensor")
    assert params["embed"].sharding.spec == P("tensor", "fsdp")
    # born sharded: each device holds a quarter of the (embed, heads) plane of q
    assert attn["q"]["kernel"].addressable_shards[0].data.shape == (2, 32, 2, 16)
    assert jax.tree.map(lambda s: s.spec, sh) == jax.tree.map(lambda x: x.sharding.spec, params)


def test_kv_cache_is_born_sharded_like_its_keys_and_values():
    mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"), axis_types=(AxisType.Auto,) * 3)
    gd, params, _, _ = make(CONFIGS["llama"], mesh)

    @jax.jit
    def init(params):
        with axis_rules(DEFAULT_RULES):
            return nnx.merge(gd, params).init_cache(4, 32)
    with jax.set_mesh(mesh):
        cache = init(params)
    # (L, B, S, K, H): batch over data x fsdp, KV heads over tensor, as the projections write them
    assert cache["k"].sharding.spec == P(None, ("data", "fsdp"), None, "tensor")   # (head_dim whole)
    assert cache["v"].addressable_shards[0].data.shape == (CONFIGS["llama"].num_layers, 1, 32, 1, 16)
    assert cache["segment_ids"].sharding.spec == P(("data", "fsdp"))
    eager = nnx.merge(gd, params).init_cache(2, 8)          # no mesh active: plain zeros
    assert eager["k"].shape == (CONFIGS["llama"].num_layers, 2, 8, 2, 16)


def test_sharding_errors_are_clear():
    with pytest.raises(ShardingError, match="no rule"):
        logical_spec(("act_batch", "nonsense"), DEFAULT_RULES)
    mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"), axis_types=(AxisType.Auto,) * 3)
    with pytest.raises(ShardingError, match="vocab|not divisible"):
        make(dataclasses.replace(CONFIGS["gpt2"], vocab_size=255), mesh)   # 255 rows over tensor=2
    with pytest.raises(ShardingError, match="no logical axis rules"):
        nnx.merge(*make(CONFIGS["gpt2"])[:2])(jnp.ones((1, 4), jnp.int32))
    with axis_rules(DEFAULT_RULES), pytest.raises(ShardingError, match="no mesh is active"):
        nnx.merge(*make(CONFIGS["gpt2"])[:2])(jnp.ones((1, 4), jnp.int32))


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_heads=4, num_kv_heads=3), "multiple"),
    (dict(norm="batchnorm"), "model.norm"),
    (dict(embed_dim=66, num_heads=4), "divisible"),
    (dict(dropout=1.0), "dropout"),
    (dict(init_std=-1.0), r"^model\.init_std must be >= 0, got -1\.0$"),
    (dict(init_std=float("nan")), r"^model\.init_std must be >= 0"),
    (dict(norm_eps=0.0), r"^model\.norm_eps must be > 0, got 0\.0$"),
    (dict(norm_eps=-1e-5), r"^model\.norm_eps must be > 0"),
])
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig.gpt2_tiny(**kwargs)


def test_init_prng_lowering_takes_the_threefry_kernel_on_one_gpu_only():
    """The parameter init's random draws lower to jax's CUDA threefry kernel on a one-GPU mesh (its
    unrolled lowering spent 80 s compiling Llama 1B's init on an H200), nowhere else unless asked,
    and the process-wide flag is restored after. Lowered for CUDA here, on CPU."""
    draw = jax.jit(lambda: jax.random.normal(jax.random.key(0), (4, 8)))
    cpu_mesh = jax.sharding.Mesh(jax.devices()[:1], ("data",))
    gpu = types.SimpleNamespace(platform="gpu")
    one_gpu, two_gpus = (types.SimpleNamespace(devices=np.array([gpu] * n)) for n in (1, 2))

    def kernel(mesh, flag) -> bool:
        with init_prng_lowering(mesh, flag):
            return "cu_threefry2x32_ffi" in draw.trace().lower(lowering_platforms=("cuda",)).as_text()

    assert kernel(one_gpu, None) and kernel(cpu_mesh, True) and kernel(two_gpus, True)
    assert not kernel(cpu_mesh, None) and not kernel(one_gpu, False) and not kernel(two_gpus, None)
    assert jax.config.jax_threefry_gpu_kernel_lowering is False


def test_a_small_cpu_init_runs_op_by_op_into_the_same_shards_and_values():
    """create_sharded on a CPU mesh draws a small model op by op (model.sharding.eager_init) and
    places each parameter in its shards: the shardings of the born-sharded jitted init, its values
    to the last place of a normal draw's transform, on every mesh; big, unknown and GPU inits jit."""
    cfg = ModelConfig.llama_tiny()
    mesh = _make_mesh(_MeshConfig(data=2, fsdp=2, tensor=2))
    gd, eager, shardings = create_sharded(lambda: DecoderLM(cfg, rngs=nnx.Rngs(3)), mesh, DEFAULT_RULES)

    def init():
        with nnx.use_eager_sharding(False):
            return nnx.to_pure_dict(nnx.state(DecoderLM(cfg, rngs=nnx.Rngs(3))))
    jitted = run_init(init, shardings, mesh)   # no nbytes: the jitted init
    _, one, _ = create_sharded(lambda: DecoderLM(cfg, rngs=nnx.Rngs(3)), ONE_DEVICE, DEFAULT_RULES)
    for (path, e), j, o, sh in zip(jax.tree_util.tree_flatten_with_path(eager)[0], jax.tree.leaves(jitted),
                                   jax.tree.leaves(one), jax.tree.leaves(shardings)):
        assert e.sharding == j.sharding == sh, jax.tree_util.keystr(path)
        np.testing.assert_allclose(np.asarray(e), np.asarray(j), rtol=0, atol=1e-7, err_msg=jax.tree_util.keystr(path))
        np.testing.assert_array_equal(np.asarray(e), np.asarray(o), err_msg=jax.tree_util.keystr(path))
    assert any(len(a.sharding.device_set) == 8 and a.addressable_shards[0].data.size < a.size
               for a in jax.tree.leaves(eager))   # some parameter really is split
    gpu_mesh = types.SimpleNamespace(devices=np.array([types.SimpleNamespace(platform="gpu")]))
    assert eager_init(mesh, EAGER_INIT_MAX_BYTES) and not eager_init(mesh, EAGER_INIT_MAX_BYTES + 1)
    assert not eager_init(mesh, None) and not eager_init(gpu_mesh, 1)
