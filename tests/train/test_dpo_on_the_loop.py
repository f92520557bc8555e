"""A consumer the per-device data-parallel step was not built for: DPO (Rafailov et al. 2023) with a
frozen reference policy, written from the loss contract of train/step.py alone.

Each batch row is one whole preference pair (``chosen_*`` and ``rejected_*`` share a prompt), and
``weight_sum`` counts the real pairs; padding pairs (weight 0) are spread unevenly over the devices,
device 0's rows being all padding. On an 8-device data mesh the Trainer takes the per-device path,
and 3 steps match the same Trainer forced onto the GSPMD path and a (2, 2, 2) data/fsdp/tensor mesh:
losses, DPO metrics and parameters (and the evaluation step agrees). The reference never changes,
and at step 0 (policy == reference) the loss is log 2."""

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lmforge.model import DEFAULT_RULES, ModelConfig, build_model, create_sharded, forward_logprobs
from lmforge.train.mesh import MeshConfig, make_mesh
from lmforge.train.optim import OptimConfig
from lmforge.train.trainer import LoopConfig, Trainer

MODEL = ModelConfig.gpt2_tiny(vocab_size=64, max_seq_len=16)
# eps 1e-5: Adam divides a near-zero gradient by its own magnitude, which turns reduction-order noise
# into visible updates; with 1e-6 the paths differ by up to 0.9 of the parameter tolerance, with 1e-5 by 0.26.
OPTIM = OptimConfig(lr=1e-2, min_lr=1e-3, warmup_steps=0, eps=1e-5)
BETA = 0.5
PAIRS, T = 16, 12            # 2 pairs per device on 8 devices; 4 per batch shard on the (2, 2, 2) mesh
PADDING = {0, 1, 3, 10}      # device 0: both pairs padding; devices 1 and 5: one of two


# ------------------------------------------------------------------------------ the loss
def dpo_loss(graphdef, beta=BETA):
    """-log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r))), summed response log-probs per side,
    a mean over the pairs' weights; metrics are means over the same weight, plus weight_sum."""
    def loss_fn(params, frozen, batch, rng):
        policy, reference = nnx.merge(graphdef, params), nnx.merge(graphdef, frozen["reference"])
        # one forward per model over both sides: rows [0, P) chosen, [P, 2P) rejected
        inputs = jnp.concatenate([batch["chosen_inputs"], batch["rejected_inputs"]])
        targets = jnp.concatenate([batch["chosen_targets"], batch["rejected_targets"]])
        mask = jnp.concatenate([batch["chosen_mask"], batch["rejected_mask"]]).astype(jnp.float32)

        def sequence_logps(model, dropout_rng):
            lp, _ = forward_logprobs(model, inputs, targets, dropout_rng=dropout_rng)
            seq = (lp.logprobs * mask).sum(-1)
            return seq[:seq.shape[0] // 2], seq[seq.shape[0] // 2:]

        pi_c, pi_r = sequence_logps(policy, rng)
        ref_c, ref_r = jax.tree.map(jax.lax.stop_gradient, sequence_logps(reference, None))
        chosen_reward, rejected_reward = beta * (pi_c - ref_c), beta * (pi_r - ref_r)
        margin = chosen_reward - rejected_reward
        w = batch["pair_weight"].astype(jnp.float32)
        n = w.sum()
        # A device can hold padding pairs only (weight 0): guarded like causal_lm_loss (the per-device
        # step would drop that device's 0/0 anyway).
        mean = lambda x: (x * w).sum() / jnp.maximum(n, 1e-8)
        loss = mean(-jax.nn.log_sigmoid(margin))
        return loss, {"reward_accuracy": mean((margin > 0).astype(jnp.float32)), "margin": mean(margin),
                      "chosen_reward": mean(chosen_reward), "rejected_reward": mean(rejected_reward),
                      "weight_sum": n}
    return loss_fn


# ------------------------------------------------------------------------------ the data
def pair_batch(seed):
    """PAIRS rows, each one pair: a shared prompt, then a chosen and a rejected response; the mask
    covers the response's target positions only. Right padding (token 0); padding pairs all zero."""
    rng = np.random.default_rng(seed)
    out = {f"{side}_{k}": np.zeros((PAIRS, T), np.int32 if k != "mask" else np.float32)
           for side in ("chosen", "rejected") for k in ("inputs", "targets", "mask")}
    weight = np.ones((PAIRS,), np.float32)
    for i in range(PAIRS):
        if i in PADDING:
            weight[i] = 0.0
            continue
        prompt = rng.integers(5, 64, size=rng.integers(2, 6))
        for side in ("chosen", "rejected"):
            response = rng.integers(5, 64, size=rng.integers(2, T + 1 - len(prompt)))
            seq = np.concatenate([prompt, response])             # at most T + 1 tokens
            n = len(seq) - 1
            out[f"{side}_inputs"][i, :n] = seq[:-1]
            out[f"{side}_targets"][i, :n] = seq[1:]
            out[f"{side}_mask"][i, len(prompt) - 1:n] = 1.0      # targets that are response tokens
    out["pair_weight"] = weight
    return out


# ------------------------------------------------------------------------------ the runs
def make_trainer(mesh, *, force_gspmd=False):
    graphdef, params, shardings = create_sharded(lambda: build_model(MODEL, rngs=nnx.Rngs(0)), mesh, DEFAULT_RULES)
    # one tree as policy and reference: the Trainer copies the shared trainable leaves (it donates them)
    kwargs = dict(params=params, param_shardings=shardings, optim=OPTIM, loop=LoopConfig(steps=10), mesh=mesh,
                  rules=DEFAULT_RULES, frozen={"reference": params}, frozen_shardings={"reference": shardings})
    return Trainer(dpo_loss(graphdef), per_device=not force_gspmd, **kwargs)


def run(trainer, steps=3):
    reference = jax.device_get(trainer.frozen["reference"])
    metrics = [jax.device_get(trainer.train_step(pair_batch(seed), jax.random.key(0))) for seed in range(steps)]
    return metrics, jax.device_get(trainer.params), reference


def test_dpo_per_device_step_equals_gspmd_and_a_sharded_mesh():
    data8 = make_mesh(MeshConfig(data=-1))
    dp = make_trainer(data8)
    assert dp.data_parallel is not None and dp.data_parallel.size == 8          # (1) the per-device path
    gspmd = make_trainer(data8, force_gspmd=True)
    sharded = make_trainer(make_mesh(MeshConfig(data=2, fsdp=2, tensor=2)))
    assert gspmd.data_parallel is None and sharded.data_parallel is None

    runs = {name: run(tr) for name, tr in (("dp", dp), ("gspmd", gspmd), ("2x2x2", sharded))}
    m_dp, p_dp, ref_before = runs["dp"]
    real_pairs = PAIRS - len(PADDING)
    for m in m_dp:
        assert m["train/weight_sum"] == real_pairs
        assert m["train/nonfinite"] == 0

    # (4) step 0: policy == reference, every margin is 0, the loss is log 2
    np.testing.assert_allclose(m_dp[0]["train/loss"], math.log(2), rtol=1e-6)
    np.testing.assert_allclose(m_dp[0]["train/margin"], 0.0, atol=1e-6)
    # ... and training moves it: the policy now prefers the chosen responses it was shown
    assert m_dp[2]["train/loss"] < math.log(2) - 1e-3 and m_dp[2]["train/margin"] > 0

    # (2) same losses, metrics and parameters on every path, within float32 tolerance
    for name in ("gspmd", "2x2x2"):
        m_other, p_other, _ = runs[name]
        assert set(m_other[0]) == set(m_dp[0]), name
        for step, (a, b) in enumerate(zip(m_dp, m_other)):
            for k in a:
                np.testing.assert_allclose(a[k], b[k], rtol=2e-5, atol=1e-6, err_msg=f"{name} step {step}: {k}")
        jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5, err_msg=name), p_dp, p_other)

    # (3) the frozen reference never changes (although the policy trained from the same arrays)
    for name, tr in (("dp", dp), ("gspmd", gspmd), ("2x2x2", sharded)):
        before = runs[name][2]
        jax.tree.map(lambda x, y: np.testing.assert_array_equal(x, y, err_msg=name),
                     jax.device_get(tr.frozen["reference"]), before)
        moved = jax.tree.leaves(jax.tree.map(lambda x, y: bool(np.any(x != y)), runs[name][1], before))
        assert all(moved), name
    jax.tree.map(np.testing.assert_array_equal, runs["gspmd"][2], ref_before)   # same init everywhere

    # the per-device evaluation step scores the trained policy as the GSPMD one does
    held_out = pair_batch(seed=99)
    got, want = jax.device_get(dp.eval_step(held_out)), jax.device_get(gspmd.eval_step(held_out))
    assert set(got) == set(want) and got["weight_sum"] == real_pairs
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-5, err_msg=f"eval: {k}")
