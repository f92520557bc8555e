"""The sharded train step: 8 fake devices == 1 device, accumulation == big batch, NaN guard."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmforge.model import ModelConfig
from lmforge.train.mesh import DEFAULT_RULES, MeshConfig, make_mesh
from lmforge.train.optim import OptimConfig
from lmforge.train.step import build, global_batch

MODEL = ModelConfig.llama_tiny(vocab_size=128, max_seq_len=32)
OPTIM = OptimConfig(lr=3e-3, min_lr=3e-4, warmup_steps=2)


def batches(n, b=8, t=16, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        tok = rng.integers(0, 128, size=(b, t + 1)).astype(np.int32)
        out.append({"inputs": tok[:, :-1], "targets": tok[:, 1:], "weights": np.ones((b, t), np.float32),
                    "segment_ids": np.ones((b, t), np.int32), "positions": np.tile(np.arange(t, dtype=np.int32), (b, 1))})
    out[0]["weights"][:, :3] = 0.0    # some masked targets
    return out


def train(mesh_cfg, model=MODEL, optim=OPTIM, data=None, steps=3):
    mesh = make_mesh(mesh_cfg, devices=jax.devices()[:1] if mesh_cfg == MeshConfig(data=1) else None)
    setup = build(model, optim, total_steps=10, mesh=mesh, rules=DEFAULT_RULES, seed=0)
    state, losses = setup.state, []
    with jax.set_mesh(mesh):
        for b in (data or batches(steps)):
            state, m = setup.train_step(state, global_batch(b, setup.batch_sharding), jax.random.key(0))
            losses.append(float(m["train/loss"]))
    return losses, jax.device_get(state["params"]), state, setup


def test_sharded_2x2x2_equals_one_device():
    one, p1, _, _ = train(MeshConfig(data=1))          # a one-device mesh
    eight, p8, state8, setup = train(MeshConfig(data=2, fsdp=2, tensor=2))
    np.testing.assert_allclose(eight, one, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(p8), jax.tree.leaves(p1)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # parameters and Adam moments keep the specs the rules give
    assert state8["params"]["blocks"][0]["attn"]["q"].sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor", None)
    mu = state8["opt_state"][1][0].mu["blocks"][0]["mlp"]["down"]
    assert mu.sharding.spec == jax.sharding.PartitionSpec("tensor", "fsdp")
    assert len(one) == 3 and one[2] < one[0]


def test_grad_accumulation_equals_big_batch():
    data = batches(2)
    big, p_big, _, _ = train(MeshConfig(data=1), data=data)
    acc, p_acc, _, _ = train(MeshConfig(data=1), optim=dataclasses.replace(OPTIM, grad_accum=2), data=data)
    np.testing.assert_allclose(acc, big, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(p_acc), jax.tree.leaves(p_big)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_nonfinite_loss_skips_the_update():
    mesh = make_mesh(MeshConfig(data=1), devices=jax.devices()[:1])
    setup = build(MODEL, OPTIM, total_steps=10, mesh=mesh, rules=DEFAULT_RULES, seed=0)
    state = setup.state
    state["params"]["embed"] = state["params"]["embed"].at[0, 0].set(jnp.nan)
    before = jax.device_get(state["params"])
    b = batches(1)[0]
    b["inputs"][:] = 0                                           # every position reads the NaN row
    with jax.set_mesh(mesh):
        state, m = setup.train_step(state, global_batch(b, setup.batch_sharding), jax.random.key(0))
    assert int(m["train/nonfinite"]) == 1 and int(state["step"]) == 0
    for a, c in zip(jax.tree.leaves(jax.device_get(state["params"])), jax.tree.leaves(before)):
        np.testing.assert_array_equal(a, c)


def test_mesh_config_errors():
    with pytest.raises(ValueError, match="needs 6 devices"):
        make_mesh(MeshConfig(data=3, fsdp=2, tensor=1))
    with pytest.raises(ValueError, match="unknown mesh axis"):
        MeshConfig(rules=tuple((n, "pipeline" if n == "mlp" else a) for n, a in DEFAULT_RULES))


def test_host_devices_splits_a_fresh_cpu_process_and_is_reported_when_too_late(capsys):
    import subprocess
    import sys

    from lmforge.train.mesh import use_host_devices

    with pytest.raises(ValueError, match="mesh.host_devices must be >= 0"):
        MeshConfig(host_devices=-1)
    # A fresh process (its XLA_FLAGS ask for 8 devices, as the tests' do): the config wins.
    code = ("from lmforge.train.mesh import MeshConfig, make_mesh, use_host_devices\n"
            "use_host_devices(MeshConfig(host_devices=2)); import jax\n"
            "print(len(jax.devices()), dict(make_mesh(MeshConfig()).shape)['data'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.split() == ["2", "2"], out.stderr[-2000:]
    # Here JAX already runs with 8 devices: said on stderr, devices kept.
    use_host_devices(MeshConfig(host_devices=2))
    assert "mesh.host_devices=2 ignored: JAX already started in this process with 8 CPU devices" in capsys.readouterr().err
    assert jax.device_count() == 8
    use_host_devices(MeshConfig(host_devices=8))   # the count in force: nothing to say
    assert capsys.readouterr().err == ""
