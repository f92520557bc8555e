"""Checkpointer: sharded save/restore with a grain iterator, keep-N, corruption fallback, errors.

Tier (c): everything runs on the fake 8-device CPU mesh (2, 2, 2) from tests/conftest.py.
One set of steps is written once per module and copied per test, to keep the file fast.
"""

import pathlib
import shutil

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from lmforge.weights.checkpoint import CheckpointError, Checkpointer, NoReadableCheckpoint, _fingerprints

STEPS = (1, 2, 3)  # written by the `saved` fixture; step s holds iterator position 2 * s - 1


@pytest.fixture(scope="module")
def mesh():
    return jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"),
                         axis_types=(jax.sharding.AxisType.Auto,) * 3)


def make_state(mesh, step: int):
    """A train-state-like pytree: sharded f32 and bf16 leaves, a replicated scalar, an RNG key."""
    sharded = NamedSharding(mesh, P("fsdp", "tensor"))
    replicated = NamedSharding(mesh, P())
    # (128, 64) f32: 8 KiB per shard, above OCDBT's 1 KiB inline limit, so it gets a data file.
    w = jax.random.normal(jax.random.key(step), (128, 64), jnp.float32)
    return {
        "params": {"w": jax.device_put(w, sharded),
                   "b": jax.device_put(jnp.full((4, 8), step, jnp.bfloat16), sharded)},
        "opt_state": {"mu": jax.device_put(w * 0.5, sharded)},
        "step": jax.device_put(jnp.int32(step), replicated),
        "rng": jax.device_put(jax.random.key(100 + step), replicated),
    }


def abstract_of(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def dataset():
    return grain.MapDataset.range(100).batch(4).to_iter_dataset()


def assert_state_equal(got, want):
    for (path, g), w in zip(jax.tree_util.tree_flatten_with_path(got)[0], jax.tree.leaves(want)):
        name = jax.tree_util.keystr(path)
        assert g.dtype == w.dtype, name
        assert g.sharding.is_equivalent_to(w.sharding, g.ndim), name
        if jax.dtypes.issubdtype(g.dtype, jax.dtypes.prng_key):
            g, w = jax.random.key_data(g), jax.random.key_data(w)
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w), err_msg=name)


@pytest.fixture(scope="module")
def saved(tmp_path_factory, mesh) -> pathlib.Path:
    """A checkpoints/ folder with steps 1, 2, 3; step s holds iterator position 2 * s - 1."""
    directory = tmp_path_factory.mktemp("base") / "checkpoints"
    ckpt = Checkpointer(directory, keep=5)
    it = iter(dataset())
    for step in STEPS:
        next(it)
        assert ckpt.save(step, make_state(mesh, step), it)
        next(it)  # advancing right after an async save must not change what it wrote
    ckpt.close()
    return directory


@pytest.fixture
def ckdir(saved, tmp_path) -> pathlib.Path:
    copy = tmp_path / "checkpoints"
    shutil.copytree(saved, copy)
    return copy


def data_file(step_dir: pathlib.Path) -> pathlib.Path:
    """The largest file of a step: the OCDBT array data under state/ocdbt.process_0/d/."""
    files = [f for f in (step_dir / "state").rglob("*") if f.is_file()]
    return max(files, key=lambda f: f.stat().st_size)


def restore(directory, mesh, *, with_iter: bool = True, **kwargs):
    it = iter(dataset()) if with_iter else None
    with Checkpointer(directory) as ckpt:
        result = ckpt.restore(abstract_of(make_state(mesh, 0)), it, **kwargs)
    return result, it


def test_roundtrip_sharded_with_iterator(ckdir, mesh):
    (step, state), it = restore(ckdir, mesh)
    assert step == 3
    assert_state_equal(state, make_state(mesh, 3))
    assert state["params"]["b"].dtype == jnp.bfloat16
    assert state["params"]["w"].sharding.spec == P("fsdp", "tensor")
    assert it.get_state() == {"next_index": 5}
    np.testing.assert_array_equal(next(it), np.arange(20, 24))


def test_restore_explicit_step_and_reshard(ckdir, mesh):
    target = abstract_of(make_state(mesh, 0))
    resharded = NamedSharding(mesh, P("tensor", ("data", "fsdp")))
    target["params"]["w"] = jax.ShapeDtypeStruct((128, 64), jnp.float32, sharding=resharded)
    with Checkpointer(ckdir) as ckpt:
        step, state = ckpt.restore(target, step=2)  # no iterator: its item is not read
    assert step == 2
    assert state["params"]["w"].sharding.spec == P("tensor", ("data", "fsdp"))
    np.testing.assert_array_equal(state["params"]["w"], make_state(mesh, 2)["params"]["w"])


def test_keep_n_prunes_oldest(tmp_path, mesh):
    state = make_state(mesh, 1)
    with Checkpointer(tmp_path / "ck", keep=2) as ckpt:
        for step in (10, 20, 30, 40):
            assert ckpt.save(step, state)
        assert not ckpt.save(20, state)  # older than the newest: skipped, as orbax does
        ckpt.wait()
        assert ckpt.all_steps() == [30, 40] and ckpt.latest_step() == 40
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["30", "40"]
    (step, _), _ = restore(tmp_path / "ck", mesh, with_iter=False)  # saved without an iterator
    assert step == 40


def test_a_fresh_process_saves_and_restores_without_warnings(tmp_path):
    """The handler lmforge registers for one-host saves used to make orbax log 'Type handler registry
    ... overriding' through absl on every save and read; a fresh process (where it registers) is quiet."""
    import subprocess
    import sys

    script = (
        "import jax, jax.numpy as jnp, sys\n"
        "from lmforge.weights import Checkpointer\n"
        "params = {'w': jnp.arange(4.0)}\n"
        "with Checkpointer(sys.argv[1], async_save=False) as ck:\n"
        "    ck.save(1, {'params': params})\n"
        "abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), params)\n"
        "with Checkpointer(sys.argv[1]) as ck:\n"
        "    print(ck.restore_params(abstract)[1]['w'].tolist())\n")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "ck")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[0.0, 1.0, 2.0, 3.0]", done.stderr
    assert "Type handler registry" not in done.stderr and "WARNING" not in done.stderr, done.stderr


@pytest.mark.parametrize("kind", ["missing_metadata", "missing_manifests"])
def test_leaves_of_a_run_whose_newest_metadata_is_unreadable(ckdir, mesh, capsys, kind):
    """``saved_leaves`` (what ``load_params`` reads first) skips a step whose metadata does not read,
    so sampling falls back as training does; it used to stop there with an error."""
    step3 = ckdir / "3" / "state"
    if kind == "missing_metadata":
        (step3 / "_METADATA").unlink()
    else:
        for manifest in step3.rglob("manifest.ocdbt"):
            manifest.unlink()
    with Checkpointer(ckdir) as ckpt:
        assert ckpt.saved_leaves("params") == {"w", "b"}
        step, params = ckpt.restore_params(abstract_of(make_state(mesh, 0)["params"]))
        assert step == 2
        with pytest.raises(CheckpointError, match=f"checkpoint step 3 in {ckdir} is unreadable"):
            ckpt.saved_leaves("params", step=3)
    assert_state_equal(params, make_state(mesh, 2)["params"])
    err = capsys.readouterr().err.splitlines()
    assert err == [ln for ln in err if ln.startswith("lmforge: checkpoint step 3")] and len(err) == 1, err


def test_no_checkpoint_returns_none(tmp_path, mesh):
    assert restore(tmp_path / "empty", mesh)[0] is None


def _truncate(step_dir):
    f = data_file(step_dir)
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _garble(step_dir):
    # One flipped byte inside a zstd chunk: orbax reads it without error (no checksum there);
    # the fingerprint catches it.
    f = data_file(step_dir)
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))


CORRUPTIONS = {
    "truncated_data": (_truncate, "OUT_OF_RANGE"),
    "garbled_data": (_garble, "fingerprint"),
    "missing_metadata": (lambda d: (d / "state" / "_METADATA").unlink(), "_METADATA"),
    "garbled_metadata": (lambda d: (d / "state" / "_METADATA").write_text("{not json"), "metadata"),
    "missing_data_iter": (lambda d: shutil.rmtree(d / "data_iter"), "data_iter"),
    "garbled_data_iter": (lambda d: (d / "data_iter" / "process_0-of-1.json").write_text('{"next'),
                          "JSONDecodeError"),
    "missing_step_metadata": (lambda d: (d / "_CHECKPOINT_METADATA").unlink(), "fingerprints"),
}


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_corrupt_newest_falls_back_to_previous(ckdir, mesh, capsys, kind):
    corrupt, reason_word = CORRUPTIONS[kind]
    corrupt(ckdir / "3")
    (step, state), it = restore(ckdir, mesh)
    assert step == 2
    assert_state_equal(state, make_state(mesh, 2))
    assert it.get_state() == {"next_index": 3}
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("lmforge:")]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"lmforge: checkpoint step 3 in {ckdir} is unreadable (")
    assert lines[0].endswith("); falling back to step 2")
    assert reason_word in lines[0]
    assert (ckdir / "3").is_dir()  # left for a person to inspect


def test_saves_after_fallback_keep_progress_and_prune(ckdir, mesh, capsys):
    _garble(ckdir / "3")
    ckpt = Checkpointer(ckdir, keep=3)
    step, _ = ckpt.restore(abstract_of(make_state(mesh, 0)))
    assert step == 2
    assert not ckpt.save(3, make_state(mesh, 3))  # the unreadable folder is in the way: skipped
    assert "not saving step 3" in capsys.readouterr().err
    for new in (4, 5, 6):
        assert ckpt.save(new, make_state(mesh, new))
    ckpt.close()
    assert sorted(int(p.name) for p in ckdir.iterdir()) == [4, 5, 6]
    (step, state), _ = restore(ckdir, mesh, with_iter=False)
    assert step == 6
    assert_state_equal(state, make_state(mesh, 6))


def test_save_behind_unreadable_step_is_forced(tmp_path, mesh):
    directory = tmp_path / "ck"
    with Checkpointer(directory, keep=5) as ckpt:
        for step in (10, 20):
            ckpt.save(step, make_state(mesh, step))
    _garble(directory / "20")
    with Checkpointer(directory, keep=5) as ckpt:
        assert ckpt.restore(abstract_of(make_state(mesh, 0)))[0] == 10
        assert ckpt.save(15, make_state(mesh, 15))  # orbax alone would skip it (15 < 20)
    (step, state), _ = restore(directory, mesh, with_iter=False)
    assert step == 15
    assert_state_equal(state, make_state(mesh, 15))


def test_all_corrupt_raises_naming_directory_and_steps(ckdir, mesh, capsys):
    for step in STEPS:
        _truncate(ckdir / str(step))
    with pytest.raises(CheckpointError) as err:
        restore(ckdir, mesh)
    message = str(err.value)
    assert "\n" not in message
    assert str(ckdir) in message
    # No advice about starting a run: a reader (sample, eval, convert) starts nothing; the trainer adds it.
    assert isinstance(err.value, NoReadableCheckpoint) and "scratch" not in message
    assert message.endswith("could not be read (they are left as they are)")
    assert all(f"step(s) 3 (" in message or f"; {s} (" in message for s in STEPS)
    assert len([ln for ln in capsys.readouterr().err.splitlines() if "falling back" in ln]) == 2
    assert sorted(p.name for p in ckdir.iterdir()) == ["1", "2", "3"]  # nothing deleted


def test_unfinished_tmp_folder_is_ignored(ckdir, mesh):
    shutil.copytree(ckdir / "3", ckdir / "4.orbax-checkpoint-tmp")  # how orbax 0.12.8 names it
    shutil.copytree(ckdir / "3", ckdir / "5.orbax-checkpoint-tmp-1767225600")  # older naming
    with Checkpointer(ckdir) as ckpt:
        assert ckpt.latest_step() == 3
        assert ckpt.restore(abstract_of(make_state(mesh, 0)))[0] == 3
        assert ckpt.save(4, make_state(mesh, 4))  # orbax replaces the stale tmp folder
    assert (ckdir / "4").is_dir() and not (ckdir / "4.orbax-checkpoint-tmp").exists()


def test_shape_mismatch_is_an_error_naming_the_leaf(ckdir, mesh, capsys):
    target = abstract_of(make_state(mesh, 0))
    target["params"]["w"] = jax.ShapeDtypeStruct((256, 64), jnp.float32,
                                                 sharding=target["params"]["w"].sharding)
    with Checkpointer(ckdir) as ckpt, pytest.raises(CheckpointError) as err:
        ckpt.restore(target)
    message = str(err.value)
    assert "params/w" in message and "(128, 64)" in message and "(256, 64)" in message
    assert "step 3" in message and "falling back" not in capsys.readouterr().err


def test_dtype_and_structure_mismatch_are_errors(ckdir, mesh):
    target = abstract_of(make_state(mesh, 0))
    b = target["params"]["b"]
    target["params"]["b"] = jax.ShapeDtypeStruct(b.shape, jnp.float32, sharding=b.sharding)
    with Checkpointer(ckdir) as ckpt, pytest.raises(CheckpointError, match="params/b.*bfloat16"):
        ckpt.restore(target)
    target = abstract_of(make_state(mesh, 0))
    target["params"]["extra"] = target["params"]["b"]
    with Checkpointer(ckdir) as ckpt, pytest.raises(CheckpointError, match="missing.*params/extra"):
        ckpt.restore(target)


def test_save_rejects_non_array_leaves(tmp_path, mesh):
    state = make_state(mesh, 1) | {"epoch": 3}
    with Checkpointer(tmp_path / "ck") as ckpt, pytest.raises(TypeError, match=r"\['epoch'\]"):
        ckpt.save(1, state)


def test_abstract_leaf_without_sharding_is_rejected(ckdir, mesh):
    target = abstract_of(make_state(mesh, 0))
    target["step"] = jax.ShapeDtypeStruct((), jnp.int32)
    with Checkpointer(ckdir) as ckpt, pytest.raises(TypeError, match=r"\['step'\].*sharding"):
        ckpt.restore(target)


def test_fingerprint_ignores_sharding_and_sees_one_element(mesh):
    x = make_state(mesh, 7)["params"]["w"]
    tree = {"x": x, "key": jax.random.key(3), "half": x.astype(jnp.bfloat16)}
    digests = _fingerprints(tree)
    assert digests == _fingerprints(jax.device_get(tree) | {"key": jax.random.key(3)})  # unsharded
    changed = np.asarray(x).copy()
    changed[3, 5] = np.nextafter(changed[3, 5], np.float32(np.inf))  # one ulp in one element
    assert _fingerprints({"x": changed})["x"] != digests["x"]
    assert _fingerprints({"x": np.asarray(x).T.reshape(x.shape)})["x"] != digests["x"]


def test_host_digests_equal_the_device_digests(mesh, monkeypatch):
    """Small CPU states are digested in numpy; every dtype must give the device path's value, or
    checkpoints written by one path would fail verification under the other."""
    from lmforge.weights import checkpoint
    x = make_state(mesh, 7)["params"]["w"]
    rng = np.random.default_rng(0)
    tree = {"sharded": x, "bf16": x.astype(jnp.bfloat16), "f16": x.astype(jnp.float16),
            "i32": jnp.asarray(rng.integers(-2**31, 2**31, (5, 3, 2)), jnp.int32),
            "u8": jnp.asarray(rng.integers(0, 256, (17,)), jnp.uint8), "i8": jnp.arange(-9, 9, dtype=jnp.int8),
            "bool": jnp.asarray(rng.random((4, 4)) < 0.5), "key": jax.random.key(3), "scalar": jnp.float32(2.5)}
    with jax.enable_x64(True):
        tree["i64"] = jnp.asarray(rng.integers(-2**62, 2**62, (3, 4)), jnp.int64)
        tree["f64"] = jnp.asarray(rng.random((7,)), jnp.float64)
        assert checkpoint._on_host(list(tree.values()))
        host = _fingerprints(tree)
        monkeypatch.setattr(checkpoint, "HOST_DIGEST_MAX_ELEMENTS", -1)   # every leaf on the device path
        device = _fingerprints(tree)
    assert host == device and len(set(host.values())) == len(tree)
