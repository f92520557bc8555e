"""Mixture-of-experts training: an expert-parallel mesh on 8 fake devices equals one device, the
router losses reach the loss and the metrics, and the ``llama_moe`` smoke experiment runs."""

import dataclasses
import json
import pathlib

import jax
import numpy as np
import pytest

from lmforge.cli.main import main
from flax import nnx

from lmforge.model import ModelConfig, build_model, create_sharded
from lmforge.train.mesh import DEFAULT_RULES, MeshConfig, make_mesh
from lmforge.train.optim import OptimConfig
from lmforge.train.pretrain import lm_loss
from lmforge.train.trainer import LoopConfig, Trainer

MODEL = ModelConfig.llama_moe_tiny(vocab_size=128, max_seq_len=32, moe_capacity_factor=1.0)
OPTIM = OptimConfig(lr=3e-3, min_lr=3e-4, warmup_steps=2, eps=1e-6)   # eps: see tests/train/test_trainer.py
EXPERIMENT = pathlib.Path(__file__).resolve().parents[2] / "experiments" / "llama_moe.py"


def batches(n, b=8, t=16, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        tok = rng.integers(0, 128, size=(b, t + 1)).astype(np.int32)
        seg = np.ones((b, t), np.int32)
        seg[0, 12:] = 0                                        # some padding: takes no expert slot
        out.append({"inputs": tok[:, :-1], "targets": tok[:, 1:], "weights": (seg > 0).astype(np.float32),
                    "segment_ids": seg, "positions": np.tile(np.arange(t, dtype=np.int32), (b, 1))})
    return out


def trainer_for(model, mesh):
    graphdef, params, shardings = create_sharded(lambda: build_model(model, rngs=nnx.Rngs(0)), mesh, DEFAULT_RULES)
    return Trainer(lm_loss(graphdef, model), params=params, param_shardings=shardings, optim=OPTIM,
                   loop=LoopConfig(steps=10), mesh=mesh, rules=DEFAULT_RULES)


def train(mesh_cfg, model=MODEL, steps=3):
    one = mesh_cfg == MeshConfig(data=1)
    trainer = trainer_for(model, make_mesh(mesh_cfg, devices=jax.devices()[:1] if one else None))
    metrics = [jax.device_get(trainer.train_step(b, jax.random.key(0))) for b in batches(steps)]
    return metrics, jax.device_get(trainer.state["params"]), trainer.state


@pytest.mark.parametrize("model, mesh", [
    (MODEL, MeshConfig(data=1, fsdp=2, expert=2, tensor=2)),                       # capacity: expert parallel
    pytest.param(dataclasses.replace(MODEL, moe_capacity_factor=0.0, scan_layers=True),
                 MeshConfig(data=2, expert=2, tensor=2), marks=pytest.mark.slow),   # shard_map per batch shard
], ids=["capacity", "dropless"])
def test_sharded_moe_equals_one_device(model, mesh):
    one, p1, _ = train(MeshConfig(data=1), model)
    eight, p8, state8 = train(mesh, model)
    for key in ("train/loss", "train/moe_aux_loss", "train/moe_z_loss", "train/moe_dropped"):
        np.testing.assert_allclose([m[key] for m in eight], [m[key] for m in one], rtol=1e-5, err_msg=key)
    for a, b in zip(jax.tree.leaves(p8), jax.tree.leaves(p1)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    up = state8["params"]["blocks"]["moe"]["up"] if model.scan_layers else state8["params"]["blocks"][0]["moe"]["up"]
    assert tuple(up.sharding.spec)[-3:] == ("expert", "fsdp", "tensor")
    assert 0.9 < one[0]["train/moe_aux_loss"] < 2.0 and one[0]["train/moe_z_loss"] > 0


@pytest.mark.slow   # two builds, ~40 s on the busy 2-core machine
def test_router_losses_are_added_with_their_weights():
    base = dataclasses.replace(MODEL, moe_aux_loss=0.0, moe_z_loss=0.0)
    mesh = make_mesh(MeshConfig(data=1), devices=jax.devices()[:1])
    b = batches(1)[0]
    grads = {}
    for name, cfg in (("none", base), ("aux", dataclasses.replace(base, moe_aux_loss=1.0))):
        m = trainer_for(cfg, mesh).train_step(b, jax.random.key(0))
        grads[name] = float(m["train/grad_norm"])
        assert float(m["train/moe_aux_loss"]) > 0                   # reported whatever its weight
    assert grads["aux"] != grads["none"]                             # and with a weight it is trained


@pytest.mark.slow   # tokenizer + 40 steps + evals + sampling: ~55 s on the busy 2-core machine
def test_llama_moe_smoke_experiment(tmp_path):
    workdir = tmp_path / "run"
    # the binding splits the 4 experts over 2 of the 8 fake devices (data takes the other 4 ways)
    assert main(["run", f"{EXPERIMENT}:smoke", "mesh.expert=2", "--workdir", str(workdir)]) == 0
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if "train/loss" in r]
    assert {"train/moe_aux_loss", "train/moe_z_loss", "train/moe_dropped"} <= set(train[-1])
    assert train[-1]["train/loss"] < train[0]["train/loss"]
    assert any("eval/loss" in r for r in records)
