"""The sharding proof on 8 CPU devices, through the real Trainer: under FSDP = 8 each device holds
1/8 of the parameters + optimizer state (+5%), read from the arrays' shards; data-parallel,
FSDP and tensor-parallel runs give the same losses; the compiled step's collectives are the ones
each strategy implies. (tests/train/test_trainer.py already checks a (2, 2, 2) mesh against one
device and the specs; this file checks what each strategy costs.) The ahead-of-time compile of a
1B+ preset on 64 fake devices runs in a subprocess and is marked slow."""

import collections
import json
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx

from lmforge.model import DEFAULT_RULES, ModelConfig, build_model, create_sharded
from lmforge.train.mesh import MeshConfig, make_mesh
from lmforge.train.optim import OptimConfig
from lmforge.train.plan import hlo_collectives
from lmforge.train.pretrain import lm_loss
from lmforge.train.trainer import LoopConfig, Trainer

# Every sharded dimension divisible by 8: heads, KV heads, MLP, vocabulary (tensor) and embed (fsdp).
MODEL = ModelConfig.llama_tiny(num_layers=1, num_heads=8, num_kv_heads=8, embed_dim=64, mlp_dim=256,
                               vocab_size=256, max_seq_len=16)
STRATEGIES = {"dp": MeshConfig(data=8), "fsdp": MeshConfig(data=1, fsdp=8), "tp": MeshConfig(data=1, tensor=8)}
STEPS = 3


def batch(seed, b=8, t=16):
    tok = np.random.default_rng(seed).integers(0, 256, size=(b, t + 1)).astype(np.int32)
    return {"inputs": tok[:, :-1], "targets": tok[:, 1:], "weights": np.ones((b, t), np.float32),
            "segment_ids": np.ones((b, t), np.int32), "positions": np.tile(np.arange(t, dtype=np.int32), (b, 1))}


def run(mesh_cfg):
    mesh = make_mesh(mesh_cfg)
    graphdef, params, shardings = create_sharded(lambda: build_model(MODEL, rngs=nnx.Rngs(0)), mesh, DEFAULT_RULES)
    # eps 1e-6: see test_trainer.py (reduction-order noise in a zero gradient must not become an update)
    trainer = Trainer(lm_loss(graphdef, MODEL), params=params, param_shardings=shardings, mesh=mesh,
                      optim=OptimConfig(lr=3e-3, warmup_steps=1, eps=1e-6), loop=LoopConfig(steps=10))
    per_device = collections.Counter()
    for leaf in jax.tree.leaves({"params": trainer.state["params"], "opt": trainer.state["opt_state"]}):
        for shard in leaf.addressable_shards:
            per_device[shard.device.id] += shard.data.nbytes
    unsharded = sum(x.nbytes for x in jax.tree.leaves({"p": trainer.state["params"], "o": trainer.state["opt_state"]}))
    b0 = trainer.global_batch(batch(0))
    with jax.set_mesh(mesh):   # the trainer's own jitted step, compiled once; the steps run on it
        compiled = trainer.jitted("train", b0).lower(trainer.state, trainer.frozen, b0, jax.random.key(0)).compile()
    losses = []
    for _ in range(STEPS):
        trainer.state, metrics = compiled(trainer.state, trainer.frozen, b0,
                                          jax.random.key(0))
        losses.append(float(metrics["train/loss"]))
    return {"per_device": per_device, "unsharded": unsharded, "losses": losses,
            "collectives": hlo_collectives(compiled.as_text())}


@pytest.fixture(scope="module")
def runs():
    return {name: run(cfg) for name, cfg in STRATEGIES.items()}


def test_fsdp8_holds_an_eighth_of_parameters_and_optimizer_state_per_device(runs):
    for name in STRATEGIES:
        assert len(runs[name]["per_device"]) == 8
    fsdp, dp, tp = runs["fsdp"], runs["dp"], runs["tp"]
    assert max(fsdp["per_device"].values()) <= fsdp["unsharded"] / 8 * 1.05
    assert max(tp["per_device"].values()) <= tp["unsharded"] / 8 * 1.05
    assert set(dp["per_device"].values()) == {dp["unsharded"]}        # data parallel: every device holds it all


def test_tensor_parallel_and_fsdp_losses_equal_data_parallel(runs):
    dp = runs["dp"]["losses"]
    assert dp[-1] < dp[0]
    np.testing.assert_allclose(runs["fsdp"]["losses"], dp, rtol=1e-5)
    np.testing.assert_allclose(runs["tp"]["losses"], dp, rtol=1e-5)


def test_collectives_of_each_strategy(runs):
    params_bytes = MODEL.num_params() * 4
    norms_bytes = (2 * MODEL.num_layers + 1) * MODEL.embed_dim * 4
    dp, fsdp, tp = (runs[k]["collectives"] for k in ("dp", "fsdp", "tp"))
    scattered = "reduce-scatter (all-reduce + slice)"
    # Data parallel: gradients all-reduced whole (the full parameter bytes), nothing gathered or scattered.
    assert dp["all-gather"]["ops"] == 0 and dp[scattered]["ops"] == 0
    assert dp["all-reduce"]["bytes"] >= params_bytes
    table_bytes = MODEL.vocab_size * MODEL.embed_dim * 4
    gathered = params_bytes - norms_bytes - table_bytes
    # FSDP: every sharded weight (all but the replicated norm scales) all-gathered before use, and its
    # gradient reduced and kept as this device's slice (CPU XLA's reduce-scatter: all-reduce + slice)
    # -- except the token table, whose rows are looked up where they live (transformer.py).
    assert gathered <= fsdp["all-gather"]["bytes"] < gathered + table_bytes
    assert fsdp[scattered]["bytes"] >= 0.99 * gathered
    # Tensor parallel: weights stay put (little gathered), partial sums of activations all-reduced.
    assert tp["all-gather"]["bytes"] < params_bytes / 4 and tp["all-reduce"]["ops"] > 0
    activations = 8 * 16 * MODEL.embed_dim * 4     # the proof's batch 8 x 16, (B, T, D) float32
    for c in (dp, fsdp, tp):   # no expert parallelism: an all-to-all only in the sharded table's lookup
        assert c["all-to-all"]["bytes"] <= activations


@pytest.mark.slow
def test_ahead_of_time_compile_of_llama_1b_on_64_fake_devices():
    script = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "sharding.py"
    out = subprocess.run([sys.executable, str(script), "aot", "--preset", "llama_1b", "--devices", "64",
                          "--mesh", "1,64,1"], capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["devices"] == 64 and result["params"] > 1e9
    compiled, planned = result["compiled_bytes"], result["planned_bytes"]
    # nothing allocated: the state is only described; XLA's per-device arguments are the state's 1/64
    state = planned["parameters"] + planned["optimizer"]
    assert abs(compiled["arguments"] - state) <= 0.02 * compiled["arguments"]
    assert state < result["params"] * 12 / 64 * 1.05
