"""LoRA on the projection module: B = 0 computes the base exactly, merged == unmerged, merge then
unmerge gives the kernels back, stacked (scan) layers, target patterns, rsLoRA scaling."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmforge.model import DEFAULT_RULES, LoRAConfig, ModelConfig, adapter_params, build_model, combine, create_sharded
from lmforge.model import flatten, use_mesh
from lmforge.model import lora as L
from lmforge.train.mesh import MeshConfig, make_mesh

ONE = make_mesh(MeshConfig(data=1), devices=jax.devices()[:1])
BASES = {"gpt2": ModelConfig.gpt2_tiny(), "llama_scan": ModelConfig.llama_tiny(scan_layers=True),
         "bert": ModelConfig.bert_tiny(), "t5": ModelConfig.t5_tiny()}
TOKENS = jnp.asarray(np.random.default_rng(0).integers(0, 256, (2, 12)), jnp.int32)


def logits_fn(graphdef, cfg):
    """params -> logits on TOKENS, jitted once per model: params of the same tree reuse the compile."""
    kw = {"encoder_tokens": TOKENS} if cfg.architecture == "encoder_decoder" else {}
    fn = jax.jit(lambda p: nnx.merge(graphdef, p)(TOKENS, **kw)[0])

    def logits(params):
        with use_mesh(ONE):
            return np.asarray(fn(params))
    return logits


@pytest.mark.parametrize("name", BASES)
def test_b_zero_equals_base_and_merged_equals_unmerged(name):
    base_cfg = BASES[name]
    cfg = dataclasses.replace(base_cfg, lora=LoRAConfig(rank=4, alpha=8.0))
    g0, p0, _ = create_sharded(lambda: build_model(base_cfg, rngs=nnx.Rngs(0)), ONE, DEFAULT_RULES)
    g, p, _ = create_sharded(lambda: build_model(cfg, rngs=nnx.Rngs(0)), ONE, DEFAULT_RULES)
    adapters, base = adapter_params(p)
    assert adapters and all(p.endswith((".lora.a", ".lora.b")) for p, _ in flatten(adapters))
    # adapters are drawn after every base parameter: the base initialises as without adapters
    for (k, a), (_, b) in zip(flatten(base), flatten(p0)):
        np.testing.assert_array_equal(a, b, err_msg=k)
    logits, base_logits = logits_fn(g, cfg), logits_fn(g0, base_cfg)
    base_out = base_logits(p0)
    np.testing.assert_array_equal(logits(p), base_out)                                   # B = 0: exactly the base
    # noise drawn on the host (jax.random compiles a sampler per adapter shape, seconds in all),
    # put back with each adapter's sharding so the jitted forward above is reused
    rng = np.random.default_rng(1)
    trained = combine(base, jax.tree.map(lambda x: jax.device_put(
        np.asarray(x) + 0.05 * rng.standard_normal(x.shape).astype(x.dtype), x.sharding), adapters))
    adapted = logits(trained)
    assert np.abs(adapted - base_out).max() > 1e-3                                       # the adapters matter
    merged = L.merge(trained, cfg.lora)
    np.testing.assert_allclose(base_logits(merged), adapted, atol=1e-5)
    back = L.unmerge(merged, adapter_params(trained)[0], cfg.lora)
    for (k, a), (_, b) in zip(flatten(back), flatten(trained)):
        np.testing.assert_allclose(a, b, atol=1e-6, err_msg=k)


def test_stacked_adapters_carry_the_layers_axis_and_shard_like_their_projection():
    cfg = dataclasses.replace(ModelConfig.llama_tiny(scan_layers=True), lora=LoRAConfig(rank=2))
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    _, p, _ = create_sharded(lambda: build_model(cfg, rngs=nnx.Rngs(0)), mesh, DEFAULT_RULES)
    q = p["blocks"]["attn"]["q"]
    assert q["lora"]["a"].shape == (2, 64, 2) and q["lora"]["b"].shape == (2, 2, 4, 16)   # (L, D, r), (L, r, N, H)
    P = jax.sharding.PartitionSpec
    assert q["lora"]["a"].sharding.spec == P(None, "fsdp", None)
    assert q["lora"]["b"].sharding.spec == P(None, None, "tensor", None)


def test_targets_scale_and_errors():
    only_q = dataclasses.replace(ModelConfig.gpt2_tiny(), lora=LoRAConfig(rank=2, targets=(r".*attn\.q",)))
    _, p, _ = create_sharded(lambda: build_model(only_q, rngs=nnx.Rngs(0)), ONE, DEFAULT_RULES)
    owners = {k.rsplit(".lora.", 1)[0] for k, _ in flatten(adapter_params(p)[0])}
    assert owners == {"blocks.0.attn.q", "blocks.1.attn.q"}
    assert LoRAConfig(rank=4, alpha=8.0).scale == 2.0 and LoRAConfig(rank=4, alpha=8.0, rslora=True).scale == 4.0
    with pytest.raises(ValueError, match=r"LoRA target '.\*attn\\\\.z' matches no projection"):
        bad = dataclasses.replace(ModelConfig.gpt2_tiny(), lora=LoRAConfig(rank=2, targets=(r".*attn\.z",)))
        create_sharded(lambda: build_model(bad, rngs=nnx.Rngs(0)), ONE, DEFAULT_RULES)
    with pytest.raises(ValueError, match=r"matches no projection; .* a mixture of experts' FFNs are experts, which "
                                         r"LoRA does not adapt: target the attention's projections"):
        moe = ModelConfig.llama_moe_tiny(lora=LoRAConfig(rank=2))   # the default targets name the MLP's
        create_sharded(lambda: build_model(moe, rngs=nnx.Rngs(0)), ONE, DEFAULT_RULES)
    with pytest.raises(ValueError, match="LoRA: need rank >= 0"):
        LoRAConfig(rank=-1)
    with pytest.raises(ValueError, match="not a valid regular expression"):
        LoRAConfig(rank=1, targets=("(",))
