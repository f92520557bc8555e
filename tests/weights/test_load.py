"""load_params (run folders: parameters only, born sharded with FSDP=8; model folders; dtype) and
adapter checkpoints (round trip, several named adapters over one base, the wrong base refused)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmforge.model import DEFAULT_RULES, LoRAConfig, ModelConfig, build_model, create_sharded, use_mesh
from lmforge.model.lora import adapter_params
from lmforge.model.paths import combine, flatten
from lmforge.train.mesh import MeshConfig, make_mesh
from lmforge.train.optim import OptimConfig
from lmforge.train.pretrain import lm_loss
from lmforge.train.trainer import LoopConfig, Trainer
from lmforge.weights import CheckpointError, WeightsError, load_params, save_model_folder, write_model_config
from lmforge.weights.adapters import load_adapter, load_adapters, save_adapter

MODEL = ModelConfig.llama_tiny(vocab_size=128, max_seq_len=32, embed_dim=64, mlp_dim=128)
ONE = make_mesh(MeshConfig(data=1), devices=jax.devices()[:1])


def batches(n, b=8, t=16):
    rng = np.random.default_rng(0)
    for _ in range(n):
        tok = rng.integers(0, 128, size=(b, t + 1)).astype(np.int32)
        yield {"inputs": tok[:, :-1], "targets": tok[:, 1:], "weights": np.ones((b, t), np.float32),
               "segment_ids": np.ones((b, t), np.int32), "positions": np.tile(np.arange(t, dtype=np.int32), (b, 1))}


def make_run(workdir, model=MODEL, steps=3, mesh=ONE, optim=OptimConfig(warmup_steps=1), params=None, base=None,
             base_step=None):
    graphdef, p, sh = create_sharded(lambda: build_model(model, rngs=nnx.Rngs(0)), mesh, DEFAULT_RULES)
    if params is not None:
        p = params
    write_model_config(workdir, model)
    trainer = Trainer(lm_loss(graphdef, model), params=p, param_shardings=sh, optim=optim,
                      loop=LoopConfig(steps=steps, log_every=steps), mesh=mesh, rules=DEFAULT_RULES, base=base,
                      base_step=base_step)
    trainer.fit(batches(steps), workdir)
    return trainer


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    trainer = make_run(workdir)
    return workdir, jax.device_get(trainer.params)


def test_run_folder_loads_parameters_only_born_sharded_with_fsdp8(run):
    workdir, trained = run
    mesh = make_mesh(MeshConfig(data=1, fsdp=8))
    loaded = load_params(workdir, mesh)
    assert loaded.kind == "run" and loaded.step == 3 and loaded.cfg == MODEL
    for path, x in flatten(loaded.params):
        np.testing.assert_array_equal(np.asarray(x), dict(flatten(trained))[path], err_msg=path)
        spec = x.sharding.spec
        if "fsdp" in jax.tree.leaves(tuple(spec)):     # every fsdp-sharded parameter: 1/8 per device
            assert all(s.data.size * 8 == x.size for s in x.addressable_shards), path
    assert loaded.params["embed"].sharding.spec == jax.sharding.PartitionSpec("tensor", "fsdp")
    # a bfloat16 copy for inference
    half = load_params(workdir, ONE, dtype="bfloat16")
    assert half.params["blocks"][0]["attn"]["q"]["kernel"].dtype == jnp.bfloat16
    assert half.cfg.param_dtype == "bfloat16"


def test_model_folder_round_trip_and_logits(run, tmp_path):
    workdir, trained = run
    save_model_folder(tmp_path / "m", MODEL, trained)
    loaded = load_params(tmp_path / "m", ONE)
    ref = load_params(workdir, ONE)
    tokens = jnp.arange(12, dtype=jnp.int32)[None]
    with use_mesh(ONE):
        a = nnx.merge(loaded.graphdef, loaded.params)(tokens)[0]
        b = nnx.merge(ref.graphdef, ref.params)(tokens)[0]
    np.testing.assert_array_equal(a, b)


@pytest.mark.filterwarnings("ignore:.*Pallas's interpreter")
def test_runtime_settings_of_a_loaded_model(run, tmp_path, capsys):
    """A model recorded with an attention kernel this platform does not run natively loads with xla
    (said on stderr); ``runtime`` chooses the backend and the remat policy; the function is the same."""
    from lmforge.model import ModelRuntime
    _, trained = run
    save_model_folder(tmp_path / "m", dataclasses.replace(MODEL, attention="splash"), trained)
    tokens = jnp.arange(12, dtype=jnp.int32)[None]

    def logits(loaded):
        with use_mesh(ONE):
            return nnx.merge(loaded.graphdef, loaded.params)(tokens)[0]
    plain = load_params(tmp_path / "m", ONE)
    assert plain.cfg.attention == "xla" and plain.cfg == MODEL                 # CPU runs splash only interpreted
    assert "computes attention with 'splash', which runs on TPUs; using 'xla' on cpu" in capsys.readouterr().err
    chosen = load_params(tmp_path / "m", ONE, runtime=ModelRuntime(attention="flash", remat="minimal"),
                         lora=LoRAConfig(rank=2))
    assert (chosen.cfg.attention, chosen.cfg.remat, chosen.cfg.lora.rank) == ("flash", "minimal", 2)
    assert capsys.readouterr().err == ""
    np.testing.assert_allclose(logits(chosen), logits(plain), atol=1e-5)
    with pytest.raises(ValueError, match="model.remat='fast'; expected"):
        ModelRuntime(remat="fast")
    # bf16 compute over the source's float32 weights (a transformers folder imports as float32)
    half = load_params(tmp_path / "m", ONE, runtime=ModelRuntime(dtype="bfloat16"))
    assert (half.cfg.dtype, half.cfg.param_dtype) == ("bfloat16", "float32")
    assert jax.tree.leaves(half.params)[0].dtype == jnp.float32
    gap = float(jnp.abs(logits(half) - logits(plain)).max())   # logits come back float32: rounding tells
    assert 1e-4 < gap < 0.1, gap
    with pytest.raises(ValueError, match="model.dtype='fp8'; expected"):
        ModelRuntime(dtype="fp8")


def test_bad_sources_are_one_line_errors(run, tmp_path):
    workdir, _ = run
    (tmp_path / "empty_run" / "checkpoints").mkdir(parents=True)
    write_model_config(tmp_path / "empty_run", MODEL)
    with pytest.raises(WeightsError, match="holds no checkpoint"):
        load_params(tmp_path / "empty_run", ONE)
    # a checkpoint of another architecture: the model.json says 3 layers, the checkpoint has 2
    other = tmp_path / "other"
    import shutil
    shutil.copytree(workdir / "checkpoints", other / "checkpoints")
    write_model_config(other, dataclasses.replace(MODEL, num_layers=3))
    with pytest.raises((CheckpointError, WeightsError), match="does not fit the model"):
        load_params(other, ONE)
    with pytest.raises(WeightsError, match="is neither a run folder"):
        load_params(tmp_path, ONE)
    with pytest.raises(WeightsError, match="step=3 is for run folders"):
        save_model_folder(tmp_path / "m", MODEL, jax.device_get(load_params(workdir, ONE).params))
        load_params(tmp_path / "m", ONE, step=3)


def test_adapters_round_trip_several_over_one_base_and_refuse_another_base(run, tmp_path):
    workdir, _ = run
    base = load_params(workdir, ONE)
    lora = LoRAConfig(rank=4, alpha=8.0)
    cfg = dataclasses.replace(MODEL, lora=lora)
    graphdef, with_lora, _ = create_sharded(lambda: build_model(cfg, rngs=nnx.Rngs(1)), ONE, DEFAULT_RULES)
    tokens = jnp.arange(16, dtype=jnp.int32)[None]
    logits, folders = {}, {}
    for name, seed in (("sql", 1), ("poems", 2)):   # two adapters: random A and B, so they differ
        adapters, _ = adapter_params(with_lora)
        adapters = jax.tree.map(lambda x, k=seed: x + 0.05 * jax.random.normal(jax.random.key(k), x.shape), adapters)
        params = combine(base.params, adapters)
        with use_mesh(ONE):
            logits[name] = np.asarray(nnx.merge(graphdef, params)(tokens)[0])
        folders[name] = save_adapter(tmp_path / name, params, cfg)
    assert not np.allclose(logits["sql"], logits["poems"])
    # adapter folders hold the adapters only
    from safetensors.numpy import load_file
    assert all(".lora." in k for k in load_file(str(folders["sql"] / "adapter.safetensors")))
    loaded = load_adapters(folders, base.cfg, base.params, ONE)
    for name, (cfg2, adapters) in loaded.items():
        assert cfg2 == cfg
        with use_mesh(ONE):
            got = nnx.merge(graphdef, combine(base.params, adapters))(tokens)[0]
        np.testing.assert_allclose(got, logits[name], atol=1e-6)
    # another base of the same shapes (a fresh init): refused, naming both fingerprints
    _, fresh, _ = create_sharded(lambda: build_model(MODEL, rngs=nnx.Rngs(7)), ONE, DEFAULT_RULES)
    with pytest.raises(WeightsError, match="was trained over another base"):
        load_adapter(folders["sql"], MODEL, fresh, ONE)
    load_adapter(folders["sql"], MODEL, fresh, ONE, allow_other_base=True)
    # another architecture
    with pytest.raises(WeightsError, match="adapter for another architecture: the base differs in num_layers"):
        load_adapter(folders["sql"], dataclasses.replace(MODEL, num_layers=3), fresh, ONE)
    with pytest.raises(WeightsError, match="exists and is not empty"):
        save_adapter(folders["sql"], combine(base.params, loaded["sql"][1]), cfg)


def test_run_of_adapters_loads_over_its_base(run, tmp_path):
    """A LoRA run checkpoints only its adapters; load_params takes the rest from its base.json."""
    from lmforge.weights import write_base
    workdir, _ = run
    base = load_params(workdir, ONE)
    cfg = dataclasses.replace(MODEL, lora=LoRAConfig(rank=2))
    _, init, _ = create_sharded(lambda: build_model(cfg, rngs=nnx.Rngs(0)), ONE, DEFAULT_RULES)
    adapters, _ = adapter_params(init)
    lora_run = tmp_path / "lora_run"
    trainer = make_run(lora_run, cfg, params=combine(base.params, adapters),
                       optim=OptimConfig(warmup_steps=1, trainable=(r".*\.lora\.(a|b)",)))
    with pytest.raises(WeightsError, match="names no base"):
        load_params(lora_run, ONE)
    write_base(lora_run, workdir)
    loaded = load_params(lora_run, ONE)
    for path, x in flatten(jax.device_get(trainer.params)):
        np.testing.assert_array_equal(np.asarray(dict(flatten(loaded.params))[path]), x, err_msg=path)


def test_a_run_of_adapters_refuses_a_base_that_moved_on(tmp_path, capsys):
    """base.json records a digest of the frozen parameters. A base run that trained on is read at the step
    the run was trained over while that step is on disk (said on stderr), and refused by name once it is
    gone, never silently paired with the adapters; resuming the adapter run over the changed base is
    refused; a base that is gone is named as the run's base."""
    import json
    import shutil

    base_dir = tmp_path / "base"
    base_trainer = make_run(base_dir)
    base = load_params(base_dir, ONE)
    cfg = dataclasses.replace(MODEL, lora=LoRAConfig(rank=2))
    _, init, _ = create_sharded(lambda: build_model(cfg, rngs=nnx.Rngs(0)), ONE, DEFAULT_RULES)
    lora_run, optim = tmp_path / "lora_run", OptimConfig(warmup_steps=1, trainable=(r".*\.lora\.(a|b)",))
    make_run(lora_run, cfg, params=combine(base.params, adapter_params(init)[0]), optim=optim, base=base_dir)
    record = json.loads((lora_run / "base.json").read_text())
    assert record["source"] == str(base_dir.absolute()) and len(record["digest"]) == 16
    before = np.asarray(load_params(lora_run, ONE).params["embed"])
    # the base trains on: its newest checkpoint (5) holds other weights, its step 3 is still there
    base_trainer.loop = dataclasses.replace(base_trainer.loop, steps=5)
    base_trainer.fit(batches(5), base_dir)
    capsys.readouterr()
    np.testing.assert_array_equal(np.asarray(load_params(lora_run, ONE).params["embed"]), before)
    assert (f"lmforge: {base_dir.absolute()}, the base of {lora_run}, has trained on since (step 5); using its step 3, "
            f"the weights the run was trained over") in capsys.readouterr().err
    with pytest.raises(WeightsError, match="no longer holds the weights"):   # resuming over step 5: refused
        make_run(lora_run, cfg, params=combine(load_params(base_dir, ONE).params, adapter_params(init)[0]),
                 optim=optim, steps=4, base=base_dir)
    from lmforge.weights.load import resume_base_step                     # what run_sft resumes over instead
    assert resume_base_step(lora_run, ONE) == 3
    make_run(lora_run, cfg, params=combine(load_params(base_dir, ONE, step=3).params, adapter_params(init)[0]),
             optim=optim, steps=4, base=base_dir)
    shutil.rmtree(base_dir / "checkpoints" / "3")                          # the step it trained over is gone
    with pytest.raises(WeightsError, match=rf"{base_dir.absolute()}, the base of {lora_run} \(base.json\), no longer "
                                           r"holds the weights the run was trained over \(digest [0-9a-f]{16}, now"):
        load_params(lora_run, ONE)
    shutil.move(base_dir, tmp_path / "moved")
    with pytest.raises(WeightsError, match=rf"{base_dir.absolute()}, the base of {lora_run} \(base.json\), does not "
                                           r"exist"):
        load_params(lora_run, ONE)


def test_a_reference_run_keeps_the_step_a_dpo_run_recorded(tmp_path, capsys):
    """A frozen model read at a recorded step (DPO/GRPO/PPO's reference.json, PPO's reward.json) pins that
    step in its source run: continuing the source with keep_checkpoints=1 keeps it, so the run resumes;
    removing the record releases it; a recorded step that is gone is a one-line error naming the record."""
    import json

    from lmforge.align.common import load_recorded
    from lmforge.model import ModelRuntime
    from lmforge.weights.pins import pinned_steps

    source, dpo = tmp_path / "sft", tmp_path / "dpo"
    dpo.mkdir()
    trainer = make_run(source)
    record = dpo / "reference.json"
    first = load_recorded(str(source), record, ONE, DEFAULT_RULES, ModelRuntime(), what="reference")
    assert first.step == 3 and json.loads(record.read_text()) == {"source": str(source), "step": 3}
    assert pinned_steps(source) == {3: [str(dpo.resolve())]}
    trainer.loop = dataclasses.replace(trainer.loop, steps=6, checkpoint_every=1, keep_checkpoints=1)
    capsys.readouterr()
    trainer.fit(batches(6), source)
    assert f"{dpo.resolve()} trained over it" in capsys.readouterr().err
    assert sorted(int(d.name) for d in (source / "checkpoints").iterdir() if d.name.isdigit()) == [3, 6]
    again = load_recorded(str(source), record, ONE, DEFAULT_RULES, ModelRuntime(), what="reference")   # a resume
    assert again.step == 3
    np.testing.assert_array_equal(np.asarray(again.params["embed"]), np.asarray(first.params["embed"]))
    record.write_text(json.dumps({"source": str(source), "step": 5}))
    with pytest.raises(ValueError, match=rf"the reference {source} at step 5, recorded in {record} at this run's "
                                         r"first start, is gone \(") as e:
        load_recorded(str(source), record, ONE, DEFAULT_RULES, ModelRuntime(), what="reference")
    assert "\n" not in str(e.value)
    record.unlink()
    assert pinned_steps(source) == {}


def test_a_base_run_keeps_the_step_its_adapter_runs_were_trained_over(tmp_path, capsys):
    """A LoRA run pins the base step it trained over (base_step, RUN/pins/): the base run trained on
    with keep_checkpoints=1 keeps that step beyond the newest (said once on stderr), so the adapters
    still load over their weights; deleting the LoRA run releases the step to pruning."""
    import json
    import shutil

    from lmforge.weights.pins import pinned_steps

    base_dir, lora_run = tmp_path / "base", tmp_path / "lora_run"
    base_trainer = make_run(base_dir)
    base = load_params(base_dir, ONE)
    cfg = dataclasses.replace(MODEL, lora=LoRAConfig(rank=2))
    _, init, _ = create_sharded(lambda: build_model(cfg, rngs=nnx.Rngs(0)), ONE, DEFAULT_RULES)
    optim = OptimConfig(warmup_steps=1, trainable=(r".*\.lora\.(a|b)",))
    make_run(lora_run, cfg, params=combine(base.params, adapter_params(init)[0]), optim=optim, base=base_dir,
             base_step=base.step)
    assert pinned_steps(base_dir) == {3: [str(lora_run.absolute())]}
    # A base.json of an older run, without a digest: resuming records the base's as it is now, and says so.
    record = json.loads((lora_run / "base.json").read_text())
    (lora_run / "base.json").write_text(json.dumps({"source": record["source"]}))
    capsys.readouterr()
    make_run(lora_run, cfg, params=combine(base.params, adapter_params(init)[0]), optim=optim, steps=4, base=base_dir,
             base_step=base.step)
    assert "records no digest of the weights the run was trained over (an older run)" in capsys.readouterr().err
    assert json.loads((lora_run / "base.json").read_text()) == record
    before = np.asarray(load_params(lora_run, ONE).params["embed"])
    base_trainer.loop = dataclasses.replace(base_trainer.loop, steps=6, checkpoint_every=1, keep_checkpoints=1)
    capsys.readouterr()
    base_trainer.fit(batches(6), base_dir)
    err = capsys.readouterr().err
    assert err.count(f"keeping checkpoint step 3 of {base_dir.absolute()} beyond the newest 1: "
                     f"{lora_run.absolute()} trained over it") == 1
    assert sorted(int(d.name) for d in (base_dir / "checkpoints").iterdir() if d.name.isdigit()) == [3, 6]
    np.testing.assert_array_equal(np.asarray(load_params(lora_run, ONE).params["embed"]), before)
    shutil.rmtree(lora_run)
    assert pinned_steps(base_dir) == {}
    base_trainer.loop = dataclasses.replace(base_trainer.loop, steps=7)
    base_trainer.fit(batches(7), base_dir)
    assert sorted(int(d.name) for d in (base_dir / "checkpoints").iterdir() if d.name.isdigit()) == [7]


def test_convert_exports_a_lora_run_merged_over_its_base(tmp_path, capsys):
    """`lmforge convert` takes any run `lmforge sample` takes: a LoRA run exports as its base with the
    adapters merged (it used to refuse every run but pretraining ones)."""
    from lmforge.cli.main import main
    from lmforge.data import TokenizerConfig, train_tokenizer
    from lmforge.model import lora
    from lmforge.weights import read_model_folder

    base_dir, lora_run = tmp_path / "base", tmp_path / "lora_run"
    make_run(base_dir)
    base = load_params(base_dir, ONE)
    cfg = dataclasses.replace(MODEL, lora=LoRAConfig(rank=2))
    _, init, _ = create_sharded(lambda: build_model(cfg, rngs=nnx.Rngs(0)), ONE, DEFAULT_RULES)
    make_run(lora_run, cfg, params=combine(base.params, adapter_params(init)[0]), base=base_dir,
             optim=OptimConfig(warmup_steps=1, trainable=(r".*\.lora\.(a|b)",)))
    train_tokenizer(TokenizerConfig(kind="char"), ["def main(): pass"], lora_run / "tokenizer")
    assert main(["convert", str(lora_run), str(tmp_path / "hf")]) == 0
    assert main(["convert", str(tmp_path / "hf"), str(tmp_path / "back")]) == 0
    capsys.readouterr()
    back_cfg, back = read_model_folder(tmp_path / "back")
    merged = lora.merge(jax.device_get(load_params(lora_run, ONE).params), cfg.lora)
    assert back_cfg.lora.rank == 0
    got = dict(flatten(back))
    for path, x in flatten(merged):
        np.testing.assert_allclose(got[path], x, rtol=1e-6, atol=1e-6, err_msg=path)
    assert not np.allclose(got["blocks.0.attn.q.kernel"], np.asarray(base.params["blocks"][0]["attn"]["q"]["kernel"]))


def test_a_folder_of_stage_runs_names_them(tmp_path):
    """Interrogation's workdir holds its stages' runs (stage1/, stage2/), not a model: say which to give."""
    from lmforge.weights import source_kind

    for stage in ("stage2", "stage1"):
        write_model_config(tmp_path / stage, MODEL)
    with pytest.raises(WeightsError, match=r"nor a model folder \(model.json \+ params.safetensors\); it holds stage1, "
                                           r"stage2: give one of those$"):
        source_kind(tmp_path)


def test_a_file_that_is_not_json_names_where_and_what_was_expected(tmp_path):
    """A truncated model.json / config.json: line and column, a truncation named as such, and what the
    file should hold (it read 'Invalid control character at at line 1')."""
    import re

    from lmforge.weights.hf import InteropError, read_hf_config
    from lmforge.weights.load import source_kind

    write_model_config(tmp_path / "cut", MODEL)
    (tmp_path / "cut" / "model.json").write_text('{"family": "gpt2", "vocab\n')
    with pytest.raises(WeightsError, match=re.escape(
            f"{tmp_path / 'cut' / 'model.json'}: not valid JSON (invalid control character, line 1 column 26; the "
            f"file ends there: truncated?); expected a JSON object: the model's ModelConfig fields")):
        load_params(tmp_path / "cut", ONE)
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text('{"model_type": "gpt2",}')
    with pytest.raises(WeightsError, match=re.escape(
            "config.json: not valid JSON (expecting property name enclosed in double quotes, line 1 column 23); "
            "expected a JSON object: a run's config or a transformers model's config")):
        source_kind(tmp_path / "hf")
    (tmp_path / "hf" / "config.json").write_text("")
    with pytest.raises(InteropError, match=re.escape("(expecting value, line 1 column 1; the file is empty); expected "
                                                     "a JSON object: the transformers model's config")):
        read_hf_config(tmp_path / "hf")
