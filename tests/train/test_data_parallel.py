"""The per-device data-parallel step (train/step.py): chosen only for whole replicas on a pure data
mesh; same losses, metrics and updates as the GSPMD step (uneven token counts per device, gradient
accumulation, a frozen tree, a loss without weight_sum); its fallback when micro-batches cannot
split a device's rows; a different dropout key per device; and the evaluation step."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from lmforge.model import DEFAULT_RULES, ModelConfig, build_model, create_sharded
from lmforge.train.mesh import MeshConfig, make_mesh
from lmforge.train.step import DataParallel, data_parallel_axes, make_eval_step, make_train_step
from lmforge.train.trainer import LoopConfig, Trainer
from lmforge.train.optim import OptimConfig
from lmforge.train.pretrain import lm_loss

MODEL = ModelConfig.gpt2_tiny(vocab_size=64, max_seq_len=16)
OPTIM = OptimConfig(lr=3e-3, min_lr=3e-4, warmup_steps=1, eps=1e-6)


def lm_batch(rows=16, t=12, seed=0):
    rng = np.random.default_rng(seed)
    tok = rng.integers(0, 64, size=(rows, t + 1)).astype(np.int32)
    weights = np.ones((rows, t), np.float32)
    weights[:2] = 0.0                  # device 0's rows score nothing...
    weights[2:4, 5:] = 0.0             # ...device 1's score 10 of 24 targets: token counts differ per device
    return {"inputs": tok[:, :-1], "targets": tok[:, 1:], "weights": weights,
            "segment_ids": np.ones((rows, t), np.int32), "positions": np.tile(np.arange(t, dtype=np.int32), (rows, 1))}


def trainer(mesh, *, data_parallel: bool, grad_accum=1, frozen=False):
    graphdef, params, shardings = create_sharded(lambda: build_model(MODEL, rngs=nnx.Rngs(0)), mesh, DEFAULT_RULES)
    loss_fn, trees = lm_loss(graphdef, MODEL), {}
    if frozen:   # a frozen tree the loss reads: an L2 pull of the embedding towards a fixed table
        trees = {"anchor": jax.device_put(jnp.full(params["embed"].shape, 0.01),
                                          NamedSharding(mesh, PartitionSpec()))}
        base = loss_fn

        def loss_fn(p, f, b, r):
            loss, m = base(p, f, b, r)
            pull = jnp.mean((p["embed"] - f["anchor"]) ** 2)
            return loss + pull, {**m, "pull": pull}
    return Trainer(loss_fn, params=params, param_shardings=shardings, loop=LoopConfig(steps=10), mesh=mesh,
                   optim=OptimConfig(**{**OPTIM.__dict__, "grad_accum": grad_accum}), rules=DEFAULT_RULES,
                   frozen=trees, per_device=data_parallel)


def run_steps(tr, n=3):
    metrics = [jax.device_get(tr.train_step(lm_batch(seed=i), jax.random.key(0))) for i in range(n)]
    return metrics, jax.device_get(tr.params)


def test_chosen_only_for_whole_replicas_on_a_pure_data_mesh():
    data8 = make_mesh(MeshConfig(data=-1))
    rep = NamedSharding(data8, PartitionSpec())
    dp = data_parallel_axes(data8, DEFAULT_RULES, {"w": rep}, {})
    assert isinstance(dp, DataParallel) and dp.size == 8 and "data" in dp.axes and dp.flat   # CPU: one buffer
    assert data_parallel_axes(data8, DEFAULT_RULES, {"w": NamedSharding(data8, PartitionSpec("data"))}) is None
    fsdp = make_mesh(MeshConfig(data=2, fsdp=4))
    assert data_parallel_axes(fsdp, DEFAULT_RULES, {"w": NamedSharding(fsdp, PartitionSpec())}) is not None
    assert data_parallel_axes(fsdp, DEFAULT_RULES, {"w": NamedSharding(fsdp, PartitionSpec("fsdp"))}) is None
    tensor = make_mesh(MeshConfig(data=4, tensor=2))
    assert data_parallel_axes(tensor, DEFAULT_RULES, {"w": NamedSharding(tensor, PartitionSpec())}) is None
    one = make_mesh(MeshConfig(data=1), devices=jax.devices()[:1])
    assert data_parallel_axes(one, DEFAULT_RULES, {"w": NamedSharding(one, PartitionSpec())}) is None
    # the model's own shardings on an 8-way data mesh are all replicated: the Trainer takes the path
    assert trainer(data8, data_parallel=True).data_parallel is not None
    assert trainer(data8, data_parallel=False).data_parallel is None      # Trainer(per_device=False)


@pytest.mark.parametrize("grad_accum, frozen", [(1, True), (2, False)])
def test_per_device_step_equals_the_gspmd_step(grad_accum, frozen):
    mesh = make_mesh(MeshConfig(data=-1))
    dp, dp_params = run_steps(trainer(mesh, data_parallel=True, grad_accum=grad_accum, frozen=frozen))
    ref, ref_params = run_steps(trainer(mesh, data_parallel=False, grad_accum=grad_accum, frozen=frozen))
    assert set(dp[0]) == set(ref[0])
    for a, b in zip(dp, ref):
        for k in a:
            np.testing.assert_allclose(a[k], b[k], rtol=2e-5, atol=1e-6, err_msg=k)
    assert dp[0]["train/weight_sum"] == 16 * 12 - 2 * 12 - 2 * 7
    # Adam turns reduction-order noise in a near-zero gradient into a visible update (its m / sqrt(v)
    # is ~1 whatever the gradient's size), so a few elements may move apart: on an AMD EPYC one of
    # 16,384 did by 1.07e-5. A wrong per-device weight moves parameters by ~1e-3, and broadly: every
    # element within 1e-4, and at most 0.1% of them beyond 1e-5 (0.1% of three steps at lr 3e-3).
    def close(x, y):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-4)
        apart = np.abs(x - y) > 1e-5 + 1e-4 * np.abs(y)
        assert apart.mean() <= 1e-3, f"{apart.sum()} of {apart.size} elements differ by more than 1e-5"
    jax.tree.map(close, dp_params, ref_params)


def test_micro_batches_that_cannot_split_a_devices_rows_fall_back_to_gspmd():
    mesh = make_mesh(MeshConfig(data=-1))
    # 16 rows on 8 devices = 2 per device; grad_accum=4 cannot split them, GSPMD splits the 16 rows
    dp, _ = run_steps(trainer(mesh, data_parallel=True, grad_accum=4), n=1)
    ref, _ = run_steps(trainer(mesh, data_parallel=False, grad_accum=4), n=1)
    np.testing.assert_allclose(dp[0]["train/loss"], ref[0]["train/loss"], rtol=1e-6)


def test_a_loss_without_weight_sum_and_a_different_dropout_key_per_device():
    mesh = make_mesh(MeshConfig(data=-1))
    dp = data_parallel_axes(mesh, DEFAULT_RULES, {})
    params = {"w": jax.device_put(jnp.ones((3,)), NamedSharding(mesh, PartitionSpec()))}

    def loss_fn(p, frozen, batch, rng):   # a plain mean over rows, and one uniform draw from the key
        loss = jnp.mean((batch["x"] @ p["w"] - batch["y"]) ** 2)
        return loss, {"u": jax.random.uniform(rng)}

    x = np.random.default_rng(0).normal(size=(16, 3)).astype(np.float32)
    batch = {"x": x, "y": x.sum(1) * 0.5}
    sh = NamedSharding(mesh, PartitionSpec(dp.axes))
    batch = {k: jax.device_put(v, sh) for k, v in batch.items()}
    tx = optax.sgd(0.1)
    state = {"params": params, "opt_state": tx.init(params), "step": jnp.int32(0), "nonfinite": jnp.int32(0)}
    key = jax.random.key(7)
    with jax.set_mesh(mesh):
        new, m = jax.jit(make_train_step(loss_fn, tx, lambda s: 0.1, rules=DEFAULT_RULES, data_parallel=dp))(
            state, {}, batch, key)
        ref, m_ref = jax.jit(make_train_step(loss_fn, tx, lambda s: 0.1, rules=DEFAULT_RULES))(state, {}, batch, key)
    assert "train/weight_sum" not in m
    assert "train/weight_sum" not in m_ref
    np.testing.assert_allclose(m["train/loss"], m_ref["train/loss"], rtol=1e-6)
    np.testing.assert_allclose(new["params"]["w"], ref["params"]["w"], rtol=1e-6)
    # device i draws from fold_in(fold_in(key, step), i): the metric is the mean of 8 different draws
    step_key = jax.random.fold_in(key, 0)
    draws = [float(jax.random.uniform(jax.random.fold_in(step_key, i))) for i in range(8)]
    assert len(set(draws)) == 8
    np.testing.assert_allclose(m["train/u"], np.mean(draws), rtol=1e-6)


def test_evaluation_step_equals_the_gspmd_one():
    mesh = make_mesh(MeshConfig(data=-1))
    tr = trainer(mesh, data_parallel=True)
    batch = tr.global_batch(lm_batch())
    loss_fn = tr.loss_fn
    with jax.set_mesh(mesh):
        got = jax.jit(make_eval_step(loss_fn, DEFAULT_RULES, tr.data_parallel))(tr.state["params"], {}, batch)
        want = jax.jit(make_eval_step(loss_fn, DEFAULT_RULES))(tr.state["params"], {}, batch)
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, err_msg=k)


def test_a_device_whose_rows_all_weigh_zero_adds_nothing_even_when_its_loss_is_nan():
    """An unguarded mean (sum / weight sum) is 0/0 on a device holding only padding; that device must
    not turn the update NaN (GSPMD divides by the global weight and never sees it), and an integer
    weight_sum comes back float32 on both paths."""
    mesh = make_mesh(MeshConfig(data=-1))
    dp = data_parallel_axes(mesh, DEFAULT_RULES, {})
    params = {"w": jax.device_put(jnp.ones((3,)), NamedSharding(mesh, PartitionSpec()))}

    def loss_fn(p, frozen, batch, rng):
        err = (batch["x"] @ p["w"] - batch["y"]) ** 2
        n = batch["w"].sum()
        return (err * batch["w"]).sum() / n, {"err": (err * batch["w"]).sum() / n, "weight_sum": n.astype(jnp.int32)}

    x = np.random.default_rng(1).normal(size=(16, 3)).astype(np.float32)
    w = np.ones(16, np.float32)
    w[:2] = 0.0                           # device 0's two rows
    sh = NamedSharding(mesh, PartitionSpec(dp.axes))
    batch = {k: jax.device_put(v, sh) for k, v in {"x": x, "y": x.sum(1) * 0.5, "w": w}.items()}
    tx = optax.sgd(0.1)
    state = {"params": params, "opt_state": tx.init(params), "step": jnp.int32(0), "nonfinite": jnp.int32(0)}
    with jax.set_mesh(mesh):
        new, m = jax.jit(make_train_step(loss_fn, tx, lambda s: 0.1, rules=DEFAULT_RULES, data_parallel=dp))(
            state, {}, batch, jax.random.key(0))
        ref, m_ref = jax.jit(make_train_step(loss_fn, tx, lambda s: 0.1, rules=DEFAULT_RULES))(
            state, {}, batch, jax.random.key(0))
        ev = jax.jit(make_eval_step(loss_fn, DEFAULT_RULES, dp))(params, {}, batch)
    assert int(m["train/nonfinite"]) == 0 and np.isfinite(m["train/loss"])
    np.testing.assert_allclose(m["train/loss"], m_ref["train/loss"], rtol=1e-6)
    np.testing.assert_allclose(new["params"]["w"], ref["params"]["w"], rtol=1e-6)
    assert m["train/weight_sum"].dtype == m_ref["train/weight_sum"].dtype == jnp.float32
    assert float(m["train/weight_sum"]) == 14.0
    np.testing.assert_allclose(ev["loss"], m_ref["train/loss"], rtol=1e-6)
