"""The one trainer: sharded (2, 2, 2) == one device with a frozen tree, frozen leaves have no
optimizer state and never change, accumulation == the big batch with micro-batches of different
token counts, weight decay by path (stacked layers too), the non-finite policy and the loop driven
by the state's step, LoRA adapters training alone, and a missing mesh is an error."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmforge.model import DEFAULT_RULES, LoRAConfig, ModelConfig, ShardingError, axis_rules, build_model
from lmforge.model import create_sharded, use_mesh
from lmforge.model import constrain, token_logprobs
from lmforge.model.paths import flatten
from lmforge.train.mesh import MeshConfig, make_mesh
from lmforge.train.metrics import read_metrics
from lmforge.train.optim import OptimConfig, decay_mask, make_optimizer
from lmforge.train.plan import hlo_collectives
from lmforge.train.pretrain import lm_loss
from lmforge.train.trainer import LoopConfig, Trainer

MODEL = ModelConfig.llama_tiny(vocab_size=128, max_seq_len=32)
# eps 1e-6: Adam divides a near-zero gradient by its own magnitude, so reduction-order noise (1e-9) in a
# gradient that is zero in exact math would become a full-size update that differs between meshes.
OPTIM = OptimConfig(lr=3e-3, min_lr=3e-4, warmup_steps=2, eps=1e-6)


def batches(n, b=8, t=16, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        tok = rng.integers(0, 128, size=(b, t + 1)).astype(np.int32)
        out.append({"inputs": tok[:, :-1], "targets": tok[:, 1:], "weights": np.ones((b, t), np.float32),
                    "segment_ids": np.ones((b, t), np.int32), "positions": np.tile(np.arange(t, dtype=np.int32), (b, 1))})
    out[0]["weights"][:, :3] = 0.0    # some masked targets
    return out


def mesh_of(mesh_cfg):
    return make_mesh(mesh_cfg, devices=jax.devices()[:1] if mesh_cfg == MeshConfig(data=1) else None)


def model_params(mesh, model=MODEL, seed=0):
    return create_sharded(lambda: build_model(model, rngs=nnx.Rngs(seed)), mesh, DEFAULT_RULES)


def kl_to_reference_loss(graphdef, beta=0.5):
    """A second consumer of the loop: causal LM loss + beta * KL(policy || frozen reference) per token."""
    def loss_fn(params, frozen, batch, rng):
        policy, ref = nnx.merge(graphdef, params), nnx.merge(graphdef, frozen["reference"])
        logits, _ = policy(batch["inputs"], positions=batch["positions"], segment_ids=batch["segment_ids"])
        ref_logits, _ = ref(batch["inputs"], positions=batch["positions"], segment_ids=batch["segment_ids"])
        logp, ref_logp = jax.nn.log_softmax(logits), jax.nn.log_softmax(jax.lax.stop_gradient(ref_logits))
        kl = (jnp.exp(logp) * (logp - ref_logp)).sum(-1)                                   # (B, T)
        w = batch["weights"]
        nll = -jnp.take_along_axis(logp, batch["targets"][..., None], -1)[..., 0]
        loss = ((nll + beta * kl) * w).sum() / w.sum()
        return loss, {"kl": (kl * w).sum() / w.sum(), "weight_sum": w.sum()}
    return loss_fn


def train(mesh_cfg, *, optim=OPTIM, data=None, steps=3, loss="kl", model=MODEL):
    mesh = mesh_of(mesh_cfg)
    graphdef, params, shardings = model_params(mesh, model)
    frozen, frozen_sh = {}, {}
    if loss == "kl":   # the reference: a differently initialised copy, so the KL is not zero
        _, ref, ref_sh = model_params(mesh, model, seed=1)
        frozen, frozen_sh = {"reference": ref}, {"reference": ref_sh}
        loss_fn = kl_to_reference_loss(graphdef)
    else:
        loss_fn = lm_loss(graphdef, model)
    trainer = Trainer(loss_fn, params=params, param_shardings=shardings, optim=optim, loop=LoopConfig(steps=10),
                      mesh=mesh, rules=DEFAULT_RULES, frozen=frozen, frozen_shardings=frozen_sh)
    metrics = [trainer.train_step(b, jax.random.key(0)) for b in (data or batches(steps))]
    return [float(m["train/loss"]) for m in metrics], jax.device_get(trainer.params), trainer, metrics


def test_sharded_2x2x2_equals_one_device_with_a_frozen_reference():
    one, p1, t1, m1 = train(MeshConfig(data=1))                  # a one-device mesh
    eight, p8, t8, m8 = train(MeshConfig(data=2, fsdp=2, tensor=2))
    np.testing.assert_allclose(eight, one, rtol=1e-5)
    np.testing.assert_allclose([float(m["train/kl"]) for m in m8], [float(m["train/kl"]) for m in m1], rtol=1e-4)
    assert float(m1[0]["train/kl"]) > 1e-3                       # the reference differs: the KL term matters
    for a, b in zip(jax.tree.leaves(p8), jax.tree.leaves(p1)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # parameters, Adam moments and the frozen reference keep the specs the rules give
    q = t8.state["params"]["blocks"][0]["attn"]["q"]["kernel"]
    assert q.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor", None)
    mu = t8.state["opt_state"][1][0].mu["blocks"][0]["mlp"]["down"]["kernel"]
    assert mu.sharding.spec == jax.sharding.PartitionSpec("tensor", "fsdp")
    ref_q = t8.frozen["reference"]["blocks"][0]["attn"]["q"]["kernel"]
    assert ref_q.sharding.spec == q.sharding.spec
    assert len(one) == 3 and one[2] < one[0]


def test_frozen_leaves_have_no_optimizer_state_and_do_not_change():
    optim = dataclasses.replace(OPTIM, trainable=(r"blocks\.1\..*", r"final_norm\..*"))
    mesh = mesh_of(MeshConfig(data=1))
    graphdef, params, shardings = model_params(mesh)
    before = jax.device_get(params)
    trainer = Trainer(lm_loss(graphdef, MODEL), params=params, param_shardings=shardings, optim=optim,
                      loop=LoopConfig(steps=10), mesh=mesh, rules=DEFAULT_RULES)
    trainable = {p for p, _ in flatten(trainer.state["params"])}
    assert trainable and all(p.startswith(("blocks.1.", "final_norm.")) for p in trainable)
    moments = {p for p, _ in flatten(trainer.state["opt_state"][1][0].mu)}
    assert moments == trainable                                   # Adam state for trainable leaves only
    for b in batches(3):
        trainer.train_step(b, jax.random.key(0))
    after = dict(flatten(jax.device_get(trainer.params)))
    for path, x in flatten(before):
        if path in trainable:
            assert not np.array_equal(after[path], x), path
        else:
            np.testing.assert_array_equal(after[path], x, err_msg=path)
    with pytest.raises(ValueError, match=r"optim.trainable: .*blocks.*9.* matches no parameter path; paths look like"):
        Trainer(lm_loss(graphdef, MODEL), params=params, param_shardings=shardings, mesh=mesh, rules=DEFAULT_RULES,
                optim=dataclasses.replace(OPTIM, trainable=(r"blocks\.9\..*",)), loop=LoopConfig(steps=10))


def test_grad_accumulation_equals_big_batch_with_uneven_micro_batches():
    # Micro-batches are strided: micro-batch 0 (rows 0, 2, 4, 6) keeps 4 targets per row, micro-batch
    # 1 (the odd rows) all 16: a mean of per-micro-batch means would weight micro-batch 0's tokens 4x
    # too much.
    data = batches(2)
    for b in data:
        b["weights"][0::2, 4:] = 0.0
    big, p_big, _, _ = train(MeshConfig(data=1), data=data, loss="lm")
    acc, p_acc, _, _ = train(MeshConfig(data=1), optim=dataclasses.replace(OPTIM, grad_accum=2), data=data, loss="lm")
    np.testing.assert_allclose(acc, big, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(p_acc), jax.tree.leaves(p_big)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    # the mean of means differs: the test can tell
    mesh = mesh_of(MeshConfig(data=1))
    graphdef, params, _ = model_params(mesh)
    loss = lm_loss(graphdef, MODEL)
    with jax.set_mesh(mesh), axis_rules(DEFAULT_RULES):
        halves = [jax.jit(loss)(params, {}, {k: v[i::2] for k, v in data[0].items()}, None)[0] for i in (0, 1)]
        whole = jax.jit(loss)(params, {}, data[0], None)[0]
    assert abs(float(sum(halves)) / 2 - float(whole)) > 1e-3


def test_grad_accumulation_keeps_micro_batches_on_their_devices():
    """With the batch sharded over 8 devices (fsdp: the GSPMD step), micro-batch i is rows i, i + 2,
    ...: each device holds its share of both, so the compiled step moves no rows between devices.
    Contiguous micro-batches (rows 0-7, 8-15) put 21 collective-permutes in this step."""
    mesh = mesh_of(MeshConfig(data=1, fsdp=8))
    graphdef, params, shardings = model_params(mesh)
    trainer = Trainer(lm_loss(graphdef, MODEL), params=params, param_shardings=shardings, mesh=mesh,
                      optim=dataclasses.replace(OPTIM, grad_accum=2), loop=LoopConfig(steps=10), rules=DEFAULT_RULES)
    assert trainer.data_parallel is None                                   # the GSPMD step
    batch = trainer.global_batch(batches(1, b=16)[0])
    with jax.set_mesh(mesh), axis_rules(DEFAULT_RULES):
        hlo = trainer.jitted("train", batch).lower(trainer.state, trainer.frozen, batch,
                                                   jax.random.key(0)).compile().as_text()
    assert hlo_collectives(hlo)["collective-permute"]["ops"] == 0 and hlo_collectives(hlo)["all-gather"]["ops"] > 0
    big, _, _, _ = train(MeshConfig(data=1), data=batches(1, b=16), loss="lm", steps=1)
    acc, _, _, _ = train(MeshConfig(data=1, fsdp=8), optim=dataclasses.replace(OPTIM, grad_accum=2),
                         data=batches(1, b=16), loss="lm", steps=1)
    np.testing.assert_allclose(acc, big, rtol=1e-5)


def test_weight_decay_skips_norm_scales_and_biases_with_stacked_layers():
    for model in (ModelConfig.gpt2_tiny(), ModelConfig.gpt2_tiny(scan_layers=True)):
        mesh = mesh_of(MeshConfig(data=1))
        _, params, _ = model_params(mesh, model)
        mask = dict(flatten(decay_mask(OptimConfig(), params)))
        for path, decays in mask.items():
            assert decays == (not path.endswith((".bias", ".scale"))), path
        assert mask["blocks.attn_norm.scale" if model.scan_layers else "blocks.0.attn_norm.scale"] is False
        # and AdamW applies it so: a zero gradient moves a kernel (decay) but not a (L, D) norm scale
        tx, _ = make_optimizer(OptimConfig(lr=1e-2, warmup_steps=0, grad_clip=0.0), 10)
        # one jit for init + update: eagerly, each leaf shape compiles each optimizer op on its own
        updates = jax.jit(lambda p: tx.update(jax.tree.map(jnp.zeros_like, p), tx.init(p), p)[0])(params)
        flat = dict(flatten(jax.device_get(updates)))
        for path, u in flat.items():
            assert bool(np.any(u != 0)) == mask[path], path


def test_lr_multipliers_scale_a_group():
    mesh = mesh_of(MeshConfig(data=1))
    _, params, _ = model_params(mesh)
    base = OptimConfig(lr=1e-2, warmup_steps=0, grad_clip=0.0, weight_decay=0.0)

    def first_update(optim):   # jitted: eagerly, each leaf shape compiles each optimizer op on its own
        tx = make_optimizer(optim, 10)[0]
        return dict(flatten(jax.device_get(jax.jit(
            lambda p: tx.update(jax.tree.map(jnp.ones_like, p), tx.init(p), p)[0])(params))))
    u1 = first_update(base)
    grouped = dataclasses.replace(base, lr_multipliers=((r"embed", 0.1),))
    u2 = first_update(grouped)
    np.testing.assert_allclose(u2["embed"], 0.1 * u1["embed"], rtol=1e-5)
    np.testing.assert_allclose(u2["final_norm.scale"], u1["final_norm.scale"], rtol=1e-6)


def test_nonfinite_updates_are_skipped_counted_and_stop_the_run_per_policy(tmp_path, capsys):
    mesh = mesh_of(MeshConfig(data=1))
    graphdef, params, shardings = model_params(mesh)
    poison = {3, 4}   # the 3rd and 4th batches read a NaN embedding row

    def loss_fn(params, frozen, batch, rng):
        loss, m = lm_loss(graphdef, MODEL)(params, frozen, batch, rng)
        return loss + jnp.where(batch["poison"][0] > 0, jnp.nan, 0.0), m

    def data():
        for i, b in enumerate(batches(12), start=1):
            yield {**b, "poison": np.full((8,), int(i in poison), np.int32)}

    # max_nonfinite=2: both skips are reported and the run finishes at step 8 after 10 batches,
    # driven by the state's step (which did not advance on the two skipped updates).
    loop = LoopConfig(steps=8, log_every=4, max_nonfinite=2)
    trainer = Trainer(loss_fn, params=params, param_shardings=shardings, optim=OPTIM, loop=loop, mesh=mesh,
                      rules=DEFAULT_RULES)
    result = trainer.fit(data(), tmp_path / "run")
    assert result.step == 8 and int(trainer.state["step"]) == 8 and int(trainer.state["nonfinite"]) == 2
    err = capsys.readouterr().err
    assert "2 non-finite update(s) skipped" in err
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    train_rows = [r for r in rows if "train/loss" in r]
    # logged at host counts 4, 8 (state 2, 4) and then 12 (state 8): rows name the state's step
    assert [r["step"] for r in train_rows] == [2, 4, 8] and train_rows[-1]["train/nonfinite_steps"] == 2
    # max_nonfinite=0: the run stops at the first sync point after a skip (the log at host count 4,
    # which sees both), with one line naming the policy
    trainer = Trainer(loss_fn, params=model_params(mesh)[1], param_shardings=shardings, optim=OPTIM,
                      loop=LoopConfig(steps=8, log_every=4), mesh=mesh, rules=DEFAULT_RULES)
    with pytest.raises(FloatingPointError, match=r"2 update\(s\) skipped .* more than max_nonfinite=0; no checkpoint was written"):
        trainer.fit(data(), tmp_path / "run2")


def test_lora_adapters_train_alone_on_a_stacked_model(tmp_path):
    model = dataclasses.replace(ModelConfig.llama_tiny(vocab_size=128, max_seq_len=32, scan_layers=True),
                                lora=LoRAConfig(rank=4, alpha=8.0))
    mesh = mesh_of(MeshConfig(data=2, fsdp=2, tensor=2))
    graphdef, params, shardings = model_params(mesh, model)
    base_before = {p: x for p, x in flatten(jax.device_get(params)) if ".lora." not in p}
    optim = dataclasses.replace(OPTIM, trainable=(r".*\.lora\.(a|b)",))
    trainer = Trainer(lm_loss(graphdef, model), params=params, param_shardings=shardings, optim=optim,
                      loop=LoopConfig(steps=6, log_every=3), mesh=mesh, rules=DEFAULT_RULES)
    assert {p.rsplit(".", 2)[-2] for p, _ in flatten(trainer.state["params"])} == {"lora"}
    result = trainer.fit(iter(batches(6)), tmp_path / "run")
    assert result.train["train/loss"] < float(jax.device_get(
        trainer.eval_step(batches(1, seed=9)[0])["loss"])) + 1.0
    after = dict(flatten(jax.device_get(trainer.params)))
    for p, x in base_before.items():
        np.testing.assert_array_equal(after[p], x, err_msg=p)
    assert any(np.abs(after[p]).max() > 0 for p in after if p.endswith(".lora.b"))   # B left zero
    # the checkpoint holds the adapters only: an adapter checkpoint
    from lmforge.weights import Checkpointer
    saved = Checkpointer(tmp_path / "run" / "checkpoints").saved_leaves("params")
    assert saved and all(".lora." in p for p in saved)


def test_constrain_without_a_mesh_is_an_error():
    with axis_rules(DEFAULT_RULES), pytest.raises(ShardingError, match="no mesh is active"):
        constrain(jnp.zeros((2, 4)), ("act_batch", "act_embed"))
    with pytest.raises(ShardingError, match="no mesh is active"):
        with axis_rules(DEFAULT_RULES):
            token_logprobs(jnp.zeros((1, 2, 4)), jnp.zeros((4, 8)), jnp.zeros((1, 2), jnp.int32))


def test_loop_config_errors():
    with pytest.raises(ValueError, match="max_nonfinite must be >= 0"):
        LoopConfig(max_nonfinite=-1)
    with pytest.raises(ValueError, match="steps and log_every must be >= 1"):
        LoopConfig(steps=0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(b1=2.0), r"^optim\.b1=2\.0: expected a number in \[0, 1\)$"),
    (dict(b1=1.0), r"^optim\.b1=1\.0: expected a number in \[0, 1\)$"),
    (dict(b2=1.5), r"^optim\.b2=1\.5: expected a number in \[0, 1\)$"),
    (dict(b2=-0.1), r"^optim\.b2=-0\.1: expected"),
    (dict(eps=-1.0), r"^optim\.eps=-1\.0: expected a number > 0"),
    (dict(eps=0.0), r"^optim\.eps=0\.0: expected a number > 0"),
    (dict(weight_decay=-3.0), r"^optim\.weight_decay=-3\.0: expected a number >= 0"),
    (dict(grad_clip=-1.0), r"^optim\.grad_clip=-1\.0: expected a number >= 0 \(0: no clipping\)$"),
    (dict(grad_clip=float("nan")), r"^optim\.grad_clip=nan: expected"),
    (dict(lr=float("nan")), r"^optim: need 0 <= min_lr <= lr and lr > 0"),
    (dict(min_lr=float("nan")), r"^optim: need 0 <= min_lr <= lr and lr > 0"),
])
def test_optim_config_errors(kwargs, match):
    """Impossible optimizer values are one-line errors naming the key (a negative grad_clip used to
    turn clipping off silently; b1 >= 1 or a negative eps trained on)."""
    with pytest.raises(ValueError, match=match) as e:
        OptimConfig(**kwargs)
    assert "\n" not in str(e.value)
    OptimConfig(b1=0.0, b2=0.0, weight_decay=0.0, grad_clip=0.0)   # the boundaries that mean "off" are fine


def test_one_tree_as_policy_and_frozen_reference_and_fit_after_manual_steps(tmp_path):
    """A trainable leaf shared with a frozen tree is copied (the reference survives the donation of the
    state); fit continues from the state's step; fit writes model.json so load_params reads the run."""
    from lmforge.weights import load_params
    mesh = mesh_of(MeshConfig(data=1))
    graphdef, params, _ = model_params(mesh)
    before = jax.device_get(params)
    trainer = Trainer(kl_to_reference_loss(graphdef), params=params, optim=OPTIM, loop=LoopConfig(steps=5, log_every=1),
                      mesh=mesh, frozen={"reference": params}, model_cfg=MODEL)
    m = trainer.train_step(batches(1)[0], jax.random.key(0))
    # policy == reference at step 0: the KL is 0 up to rounding (the differentiated pass and the reference's are
    # fused differently by XLA; 4.5e-9 on the 2-core AMD EPYC machine, 2026-12-01), far below a real step's KL
    assert abs(float(m["train/kl"])) < 1e-6
    trainer.train_step(batches(1)[0], jax.random.key(0))
    for (p, a), (_, b) in zip(flatten(jax.device_get(trainer.frozen["reference"])), flatten(before)):
        np.testing.assert_array_equal(a, b, err_msg=p)
    result = trainer.fit(iter(batches(5)), tmp_path / "run")
    rows = [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "train/loss" in r]
    assert rows == [3, 4, 5] and result.step == 5               # 3 more updates, not 5
    loaded = load_params(tmp_path / "run", mesh)
    for (p, a), (_, b) in zip(flatten(loaded.params), flatten(jax.device_get(trainer.params))):
        np.testing.assert_array_equal(np.asarray(a), b, err_msg=p)


def test_fresh_adapters_over_a_loaded_base_compute_the_base(tmp_path):
    from lmforge.weights import load_params, save_model_folder
    mesh = mesh_of(MeshConfig(data=1))
    graphdef, params, _ = model_params(mesh)
    save_model_folder(tmp_path / "base", MODEL, jax.device_get(params))
    lora = LoRAConfig(rank=4)
    loaded = load_params(tmp_path / "base", mesh, lora=lora, seed=3)
    assert loaded.cfg.lora == lora and any(".lora." in p for p, _ in flatten(loaded.params))
    # the same adapters as building the whole LoRA model from that seed (A random, B zero)
    _, full, _ = create_sharded(lambda: build_model(loaded.cfg, rngs=nnx.Rngs(3)), mesh, DEFAULT_RULES)
    full = dict(flatten(jax.device_get(full)))
    for p, x in flatten(jax.device_get(loaded.params)):
        if ".lora." in p:
            np.testing.assert_array_equal(x, full[p], err_msg=p)
    tokens = jnp.arange(12, dtype=jnp.int32)[None]
    # jitted: an eager call compiles each primitive on its own (seconds on CPU)
    forward = jax.jit(lambda g, p: nnx.merge(g, p)(tokens)[0], static_argnums=0)
    with use_mesh(mesh):   # B = 0: the adapters add exact zeros (XLA may fuse the two graphs differently)
        np.testing.assert_allclose(forward(loaded.graphdef, loaded.params), forward(graphdef, params), atol=1e-6)


def test_prefetched_batches_are_global_arrays_and_checkpoint_the_consumed_position():
    """loop.prefetch > 0: a thread makes the next batches global arrays on the mesh, equal to the numpy
    batches; the iterator's state (what a checkpoint stores) is the position after the batches
    consumed, not after those prefetched. (A killed and resumed pretraining run with prefetch=2 equals
    the straight run: tests/train/test_pretrain.py.)"""
    import grain
    data = batches(6)
    mesh = mesh_of(MeshConfig(data=8))
    graphdef, params, shardings = model_params(mesh)
    trainer = Trainer(lm_loss(graphdef, MODEL), params=params, param_shardings=shardings, optim=OPTIM, mesh=mesh,
                      loop=LoopConfig(steps=10, prefetch=3), rules=DEFAULT_RULES)
    it = trainer.batches(grain.MapDataset.source(data).to_iter_dataset())
    try:
        got = [next(it) for _ in range(2)]
        assert it.get_state() == {"next_index": 2}
    finally:
        it.close()
    for batch, want in zip(got, data):
        for key, x in batch.items():
            assert isinstance(x, jax.Array) and x.sharding.spec[0] == ("data", "fsdp"), key
            np.testing.assert_array_equal(np.asarray(x), want[key], err_msg=key)


def test_eval_on_start_scores_the_starting_weights_of_a_fresh_run_only(tmp_path):
    """eval_on_start: an evaluation at step 0, before any update, written to metrics.jsonl once (the
    row of an attempt that died before its first checkpoint is replaced); a run resumed from its
    checkpoint by a new trainer does not score step 0 again."""
    import json

    mesh = mesh_of(MeshConfig(data=1))
    graphdef, params, _ = model_params(mesh)
    seen = []

    def evaluate(trainer):
        seen.append(int(jax.device_get(trainer.state["step"])))
        return {"eval/calls": float(len(seen))}

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"step": 0, "eval/calls": 99.0}) + "\n")   # a died attempt
    loop = LoopConfig(steps=2, log_every=1, eval_on_start=True)
    Trainer(lm_loss(graphdef, MODEL), params=params, optim=OPTIM, loop=loop, mesh=mesh).fit(
        iter(batches(2)), run, evaluate=evaluate)
    assert seen == [0, 2]
    _, params, _ = model_params(mesh)
    Trainer(lm_loss(graphdef, MODEL), params=params, optim=OPTIM, loop=dataclasses.replace(loop, steps=3),
            mesh=mesh).fit(iter(batches(3)), run, evaluate=evaluate)
    assert seen == [0, 2, 3]
    rows = [r for r in read_metrics(run / "metrics.jsonl") if "eval/calls" in r]
    assert [(r["step"], r["eval/calls"]) for r in rows] == [(0, 1.0), (2, 2.0), (3, 3.0)]


def test_a_run_resumed_at_its_last_step_reports_its_last_logged_training_loss(tmp_path):
    """Running a finished run again trains nothing; its result still carries the training metrics it
    logged last (not an empty dict that callers turn into a nan final loss)."""
    mesh = mesh_of(MeshConfig(data=1))
    graphdef, params, _ = model_params(mesh)
    loop = LoopConfig(steps=2, log_every=1)
    first = Trainer(lm_loss(graphdef, MODEL), params=params, optim=OPTIM, loop=loop, mesh=mesh).fit(
        iter(batches(2)), tmp_path)
    _, params, _ = model_params(mesh)
    again = Trainer(lm_loss(graphdef, MODEL), params=params, optim=OPTIM, loop=loop, mesh=mesh).fit(
        iter(batches(2)), tmp_path)
    assert again.resumed_from == 2 and again.step == 2
    assert np.isfinite(first.train["train/loss"])
    assert again.train["train/loss"] == pytest.approx(first.train["train/loss"], rel=1e-6)


def test_logged_throughput_is_a_fresh_measurement_after_each_evaluation_and_checkpoint(tmp_path):
    """An evaluation or a checkpoint restarts the throughput window, so the next logged step has no
    measurement: its row carries no perf/* keys (it used to repeat the previous row's, digit for digit),
    and curves.png still draws its tokens/s panel from the rows that have them."""
    from lmforge.train.curves import plot_curves
    mesh = mesh_of(MeshConfig(data=1))
    graphdef, params, _ = model_params(mesh)
    # logs at 2, 4, ..., 12; checkpoints at 4, 8 (and 12), an evaluation at 6 (and at the end)
    loop = LoopConfig(steps=12, log_every=2, eval_every=6, checkpoint_every=4)
    result = Trainer(lm_loss(graphdef, MODEL), params=params, optim=OPTIM, loop=loop, mesh=mesh).fit(
        iter(batches(12)), tmp_path, evaluate=lambda trainer: {"eval/loss": 1.0}, tokens_per_step=8 * 16)
    rows = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "train/loss" in r]
    assert [r["step"] for r in rows] == [2, 4, 6, 8, 10, 12]
    # 2 starts the clock, 4 is timed from 2; the restarts at 4, 6 and 8 leave 6, 8 and 10 to start it
    # again; 12 is timed from 10
    timed = {r["step"]: r["perf/tokens_per_s"] for r in rows if "perf/tokens_per_s" in r}
    assert list(timed) == [4, 12] and all(v > 0 for v in timed.values())
    assert all(("perf/step_ms" in r) == (r["step"] in timed) for r in rows)
    perf = [tuple(v for k, v in sorted(r.items()) if k.startswith("perf/")) for r in rows]
    assert all(a != b for a, b in zip(perf, perf[1:]) if a and b)
    assert result.perf["perf/tokens_per_s"] == timed[12]        # the last measurement
    assert plot_curves(tmp_path).is_file()
