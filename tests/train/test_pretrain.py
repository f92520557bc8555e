"""The pretraining runner at run level: a killed and resumed run equals a straight one, a corrupt
newest checkpoint falls back to the previous one, two processes train exactly like one, and bad
configs fail with a clear error.

Runs that must be separate processes (SIGTERM, ``jax.distributed``) are subprocesses; they share
a persistent JAX compilation cache in a per-module folder, so only the first one pays for most of
the compiling. The model is tiny (2 layers, 32 dim, seq 32, char tokenizer, "windows" packing).
"""

import dataclasses
import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import portpicker
import pytest

from lmforge.data import DataConfig, SourceConfig, TokenizerConfig
from lmforge.model import ModelConfig
from lmforge.weights.checkpoint import Checkpointer
from lmforge.train.mesh import MeshConfig
from lmforge.train.metrics import read_metrics
from lmforge.train.optim import OptimConfig
from lmforge.train.pretrain import PretrainConfig, run_pretrain

STEPS = 100       # the straight run; long enough that a run killed at step 3 cannot finish first
EVAL_EVERY = 8    # the straight run also evaluates at step MP_STEPS, for the two-process test
MP_STEPS = 8      # the two-process run (the lr schedule is fixed by decay_steps, not by steps)
TIMEOUT_S = 240   # per subprocess

# One experiment file for every subprocess run; the CLI refuses a resume whose config differs.
EXPERIMENT = f'''
import pathlib
from lmforge.data import DataConfig, SourceConfig, TokenizerConfig
from lmforge.model import ModelConfig
from lmforge.train.mesh import MeshConfig
from lmforge.train.optim import OptimConfig
from lmforge.train.pretrain import PretrainConfig

VARIANTS = ("default",)
TEXT = str(pathlib.Path(__file__).with_name("text.txt"))


def get_config(variant="default"):
    return PretrainConfig(
        # dropout > 0: a resumed run must also draw the same dropout masks (RNG folded with the step)
        model=ModelConfig.gpt2(num_layers=2, num_heads=2, embed_dim=32, mlp_dim=64, max_seq_len=32,
                               vocab_size=0, dropout=0.1),
        tokenizer=TokenizerConfig(kind="char"),
        data=DataConfig(source=SourceConfig(kind="text", path=TEXT), seq_len=32, batch_size=16,
                        packing="windows"),
        optim=OptimConfig(lr=3e-3, warmup_steps=5, decay_steps={STEPS}),
        mesh=MeshConfig(data=-1),
        steps={STEPS}, log_every=1, eval_every={EVAL_EVERY}, eval_max_batches=2, sample_prompts=(),
    )
'''

# Runs the experiment's config with `steps` and, for several processes, jax.distributed.
DRIVER = '''
import dataclasses, importlib.util, os, pathlib, sys, time
exp, workdir, pid, nproc, port, steps = sys.argv[1:7]
pid, nproc, steps = int(pid), int(nproc), int(steps)
spec = importlib.util.spec_from_file_location("exp", exp)
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
from lmforge.train import pretrain
from lmforge.train.distributed import DistributedConfig

cfg = dataclasses.replace(mod.get_config(), steps=steps)
if nproc > 1:
    cfg = dataclasses.replace(cfg, distributed=DistributedConfig(
        enabled=True, coordinator_address=f"127.0.0.1:{port}", num_processes=nproc, process_id=pid))
if pid > 0:
    # A slower host: it reaches the tokenizer check after process 0 has written the tokenizer.
    read = pretrain.read_documents
    def slow_read(*args, **kwargs):
        time.sleep(2.0)
        return read(*args, **kwargs)
    pretrain.read_documents = slow_read
from lmforge.train.trainer import Preempted
try:
    final = pretrain.run_pretrain(cfg, pathlib.Path(workdir))
except Preempted as e:
    print("PREEMPTED", e.step, flush=True)
    sys.exit(128 + int(e.signum))
print("FINAL", repr(final["final/val_loss"]), flush=True)
'''


def make_text(path: pathlib.Path, lines: int = 300) -> None:
    rng = random.Random(0)
    words = "the quick brown fox jumps over a lazy dog and the cat sat on my mat".split()
    path.write_text("\n".join(" ".join(rng.choice(words) for _ in range(12)) for _ in range(lines)) + "\n")


@pytest.fixture(scope="module")
def exp_dir(tmp_path_factory) -> pathlib.Path:
    d = tmp_path_factory.mktemp("pretrain_exp")
    make_text(d / "text.txt")
    (d / "exp.py").write_text(EXPERIMENT)
    (d / "driver.py").write_text(DRIVER)
    (d / "jax_cache").mkdir()
    return d


def subprocess_env(exp_dir: pathlib.Path, devices: int) -> dict[str, str]:
    env = dict(os.environ)
    # conftest's compile-speed flags stay; the device count given last wins over its 8 (XLA takes a
    # flag's last value).
    env["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}".strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["JAX_COMPILATION_CACHE_DIR"] = str(exp_dir / "jax_cache")
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Proc:
    """A subprocess with stdout/stderr in files (no pipe to fill up), killed on timeout."""

    def __init__(self, name: str, args: list[str], env: dict, logdir: pathlib.Path):
        self.name = name
        self.out, self.err = logdir / f"{name}.out", logdir / f"{name}.err"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.popen = subprocess.Popen(args, env=env, stdout=out, stderr=err)
        self.start = time.time()

    def wait(self, timeout: float = TIMEOUT_S) -> int:
        try:
            return self.popen.wait(timeout=max(timeout - (time.time() - self.start), 1))
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            pytest.fail(f"{self.name} did not finish in {timeout} s\n{self.report()}")

    def report(self) -> str:
        return (f"--- {self.name} (rc {self.popen.returncode}) stdout ---\n{self.out.read_text()[-4000:]}\n"
                f"--- {self.name} stderr ---\n{self.err.read_text()[-6000:]}")

    def check(self, want_rc: int = 0) -> None:
        rc = self.wait()
        assert rc == want_rc, f"{self.name} exited with {rc}, expected {want_rc}\n{self.report()}"


def cli_run(exp_dir: pathlib.Path, workdir: pathlib.Path, name: str, *bindings: str) -> Proc:
    args = [sys.executable, "-m", "lmforge.cli.main", "run", str(exp_dir / "exp.py"), *bindings, "--workdir", str(workdir)]
    return Proc(name, args, subprocess_env(exp_dir, 8), exp_dir)


def by_step(records: list[dict], key: str) -> dict[int, float]:
    """{step: value} of the records holding `key`; a step logged twice is an error."""
    steps = [r["step"] for r in records if key in r]
    assert len(steps) == len(set(steps)), f"{key}: steps logged more than once: {sorted(steps)}"
    return {r["step"]: r[key] for r in records if key in r}


def final_state(workdir: pathlib.Path):
    """(step, state) of the run's newest checkpoint, restored (and fingerprint-checked) on one device."""
    directory = workdir / "checkpoints"
    step = max(int(p.name) for p in directory.iterdir() if p.name.isdigit())
    meta = ocp.StandardCheckpointer().metadata(directory / str(step) / "state").item_metadata
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), meta.tree)
    with Checkpointer(directory) as ckpt:
        return ckpt.restore(abstract)


@pytest.fixture(scope="module")
def straight_run(exp_dir) -> pathlib.Path:
    """The experiment run straight through, in one process with 8 devices."""
    workdir = exp_dir / "straight"
    proc = cli_run(exp_dir, workdir, "straight")
    proc.check(0)
    return workdir


# ------------------------------------------------------------------------- kill + resume


def test_killed_and_resumed_run_equals_straight_run(exp_dir, straight_run):
    """Killed and resumed with batches prefetched two ahead (the checkpoint keeps the position of the
    batches consumed), it equals the straight run without prefetch."""
    workdir = exp_dir / "killed"
    metrics = workdir / "metrics.jsonl"
    proc = cli_run(exp_dir, workdir, "killed", "prefetch=2")
    killed_at = None
    while proc.popen.poll() is None and time.time() - proc.start < TIMEOUT_S:
        if metrics.exists():
            steps = [r["step"] for r in read_metrics(metrics) if "train/loss" in r]
            if steps and max(steps) >= 3:
                proc.popen.send_signal(signal.SIGTERM)
                killed_at = max(steps)
                break
        time.sleep(0.01)
    assert killed_at is not None, f"the run never logged step 3\n{proc.report()}"
    proc.check(128 + signal.SIGTERM)  # the handler saved a checkpoint and exited 143
    saved = [int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()]
    assert len(saved) == 1 and killed_at <= saved[0] < STEPS, saved
    assert "SIGTERM: saved a checkpoint at step" in proc.out.read_text() + proc.err.read_text()
    assert max(r["step"] for r in read_metrics(metrics)) == saved[0]

    resumed = cli_run(exp_dir, workdir, "resumed", "prefetch=2")  # same command, same workdir, same config
    resumed.check(0)
    assert f"resumed from step {saved[0]}" in resumed.out.read_text()

    want, got = read_metrics(straight_run / "metrics.jsonl"), read_metrics(metrics)
    for key in ("train/loss", "train/grad_norm", "train/lr", "train/token_accuracy", "eval/loss"):
        w, g = by_step(want, key), by_step(got, key)
        assert list(g) == list(w), f"{key}: logged steps differ: {list(g)} vs {list(w)}"
        np.testing.assert_allclose([g[s] for s in w], list(w.values()), rtol=1e-6, err_msg=key)
    assert list(by_step(got, "train/loss")) == list(range(1, STEPS + 1))

    (step_a, state_a), (step_b, state_b) = final_state(straight_run), final_state(workdir)
    assert step_a == step_b == STEPS
    assert int(state_b["step"]) == STEPS
    for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(state_a)[0], jax.tree.leaves(state_b)):
        np.testing.assert_array_equal(np.asarray(b), np.asarray(a), err_msg=jax.tree_util.keystr(path))


# ----------------------------------------------------------------- two processes == one


def two_processes(exp_dir: pathlib.Path, workdir: pathlib.Path, name: str, steps: int) -> list[Proc]:
    """The driver as 2 processes x 4 CPU devices on one coordinator (jax.distributed)."""
    port = portpicker.pick_unused_port()
    return [Proc(f"{name}{i}", [sys.executable, str(exp_dir / "driver.py"), str(exp_dir / "exp.py"),
                                str(workdir), str(i), "2", str(port), str(steps)],
                 subprocess_env(exp_dir, 4), exp_dir)
            for i in range(2)]


def test_two_processes_train_like_one(exp_dir, straight_run):
    """2 processes x 4 CPU devices, 8-way data parallel, one workdir == 1 process x 8 devices."""
    workdir = exp_dir / "two_processes"
    procs = two_processes(exp_dir, workdir, "process", MP_STEPS)
    try:
        for p in procs:
            p.wait()
    finally:
        for p in procs:
            if p.popen.poll() is None:
                p.popen.kill()
    for p in procs:
        assert p.popen.returncode == 0, "\n".join(q.report() for q in procs)

    want, got = read_metrics(straight_run / "metrics.jsonl"), read_metrics(workdir / "metrics.jsonl")
    # Only process 0 writes metrics: every step exactly once.
    loss = by_step(got, "train/loss")
    assert list(loss) == list(range(1, MP_STEPS + 1))
    ref = by_step(want, "train/loss")
    np.testing.assert_allclose(list(loss.values()), [ref[s] for s in loss], rtol=1e-5)
    eval_loss = by_step(got, "eval/loss")
    assert list(eval_loss) == [MP_STEPS]
    np.testing.assert_allclose(eval_loss[MP_STEPS], by_step(want, "eval/loss")[MP_STEPS], rtol=1e-5)
    # Both processes computed the same evaluation (each fed its own rows of the global batch).
    finals = [float(p.out.read_text().split("FINAL")[-1]) for p in procs]
    assert finals[0] == finals[1] == eval_loss[MP_STEPS]
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == [str(MP_STEPS)]


@pytest.mark.slow   # 32 s on the 2-core machine; test_two_processes_train_like_one keeps two processes in the default run
def test_sigterm_to_one_of_two_processes_saves_at_one_step_on_both(exp_dir):
    """SIGTERM reaches one host of two: JAX's preemption sync point makes both save the same step
    (a per-process flag could make them save at different steps, or one wait for the other forever)."""
    workdir = exp_dir / "preempted"
    procs = two_processes(exp_dir, workdir, "preempt", STEPS)
    try:
        metrics, sent = workdir / "metrics.jsonl", False
        while all(p.popen.poll() is None for p in procs) and time.time() - procs[0].start < TIMEOUT_S:
            if metrics.exists() and any(r["step"] >= 3 for r in read_metrics(metrics) if "train/loss" in r):
                procs[0].popen.send_signal(signal.SIGTERM)     # process 0 only
                sent = True
                break
            time.sleep(0.05)
        assert sent, "\n".join(p.report() for p in procs)
        codes = [p.wait() for p in procs]
    finally:
        for p in procs:
            if p.popen.poll() is None:
                p.popen.kill()
    assert codes == [128 + signal.SIGTERM] * 2, "\n".join(p.report() for p in procs)
    steps = [int(p.out.read_text().split("PREEMPTED")[-1].split()[0]) for p in procs]
    assert steps[0] == steps[1] and 3 <= steps[0] < STEPS
    assert sorted(int(d.name) for d in (workdir / "checkpoints").iterdir() if d.name.isdigit()) == [steps[0]]


# ------------------------------------------------------- in-process: checkpoints and bad input


def tiny_config(text: pathlib.Path, **overrides) -> PretrainConfig:
    cfg = PretrainConfig(
        model=ModelConfig.gpt2(num_layers=1, num_heads=2, embed_dim=32, mlp_dim=64, max_seq_len=32, vocab_size=0),
        tokenizer=TokenizerConfig(kind="char"),
        data=DataConfig(source=SourceConfig(kind="text", path=str(text)), seq_len=32, batch_size=8,
                        packing="windows"),
        optim=OptimConfig(lr=3e-3, warmup_steps=1, decay_steps=10),
        mesh=MeshConfig(data=-1), steps=4, log_every=1, eval_max_batches=1, sample_prompts=())
    return dataclasses.replace(cfg, **overrides)


def garble_data_files(step_dir: pathlib.Path) -> None:
    """One flipped byte in the largest array data file of each OCDBT `d/` folder of the step.

    A finalized step holds the merged database (`state/d/`) that restore reads, beside the
    per-process one (`state/ocdbt.process_0/d/`); either may be the largest file.
    """
    for folder in (step_dir / "state").rglob("d"):
        files = [f for f in folder.iterdir() if f.is_file()]
        f = max(files, key=lambda f: f.stat().st_size)
        data = bytearray(f.read_bytes())
        data[len(data) // 2] ^= 0xFF
        f.write_bytes(bytes(data))


def test_corrupt_newest_checkpoint_falls_back_and_partial_save_is_ignored(tmp_path, capfd):
    make_text(tmp_path / "text.txt", lines=100)
    workdir = tmp_path / "run"
    run_pretrain(tiny_config(tmp_path / "text.txt", checkpoint_every=2), workdir)
    ckdir = workdir / "checkpoints"
    assert sorted(int(p.name) for p in ckdir.iterdir()) == [2, 4]
    garble_data_files(ckdir / "4")
    # A save cut short: orbax's unfinalized tmp folder of a newer step, holding part of a step.
    partial = ckdir / "8.orbax-checkpoint-tmp-1700000000"
    partial.mkdir()
    (partial / "state").mkdir()
    for f in (ckdir / "2" / "state").iterdir():
        if f.is_file():
            (partial / "state" / f.name).write_bytes(f.read_bytes())
    capfd.readouterr()

    final = run_pretrain(tiny_config(tmp_path / "text.txt", checkpoint_every=2, steps=6), workdir)

    out, err = capfd.readouterr()
    fallback = [line for line in err.splitlines() if "unreadable (" in line]
    assert len(fallback) == 1, err  # one line, about step 4 only: the tmp folder of step 8 is ignored
    assert fallback[0].startswith(f"lmforge: checkpoint step 4 in {ckdir} is unreadable (")
    assert fallback[0].endswith("); falling back to step 2"), fallback[0]
    assert "8.orbax-checkpoint-tmp" not in err
    assert "resumed from step 2" in out
    assert final["final/step"] == 6 and np.isfinite(final["final/val_loss"])
    assert list(by_step(read_metrics(workdir / "metrics.jsonl"), "train/loss")) == [1, 2, 3, 4, 5, 6]
    assert (ckdir / "4").is_dir() and partial.is_dir()  # nothing on disk is deleted
    assert 6 in [int(p.name) for p in ckdir.iterdir() if p.name.isdigit()]


def test_seq_len_longer_than_model_is_a_clear_error(tmp_path):
    make_text(tmp_path / "text.txt", lines=20)
    cfg = tiny_config(tmp_path / "text.txt")
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, seq_len=64))
    with pytest.raises(ValueError, match=r"data\.seq_len=64 exceeds model\.max_seq_len=32"):
        run_pretrain(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_batch_not_divisible_by_mesh_is_a_clear_error(tmp_path):
    make_text(tmp_path / "text.txt", lines=20)
    cfg = tiny_config(tmp_path / "text.txt")
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, batch_size=12))  # 8-way data mesh
    with pytest.raises(ValueError, match=r"data\.batch_size=12 must be divisible by the batch mesh axes \(8\)"):
        run_pretrain(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("kwargs, match", [
    (dict(eval_max_batches=-1), r"^eval_max_batches=-1: expected a whole number >= 0 \(0 → the whole validation split\)$"),
    (dict(eval_max_batches=1.5), r"^eval_max_batches=1\.5: expected a whole number >= 0"),
    (dict(eval_max_batches=True), r"^eval_max_batches=True: expected a whole number >= 0"),
    (dict(eval_batch_size=-8), r"^eval_batch_size=-8: expected a whole number >= 0 \(0 → data\.batch_size\)$"),
    (dict(eval_batch_size=2.0), r"^eval_batch_size=2\.0: expected a whole number >= 0"),
    (dict(z_loss=-1.0), r"^z_loss=-1\.0: expected a number >= 0"),
    (dict(z_loss=float("nan")), r"^z_loss=nan: expected a number >= 0"),
])
def test_eval_counts_and_z_loss_out_of_range_are_config_errors(kwargs, match):
    """A negative eval_max_batches used to cut the last batches off the validation split
    (``val_batches[:-1]``) and a negative z_loss trained with the wrong sign; both are refused."""
    with pytest.raises(ValueError, match=match):
        PretrainConfig(**kwargs)
    PretrainConfig(eval_max_batches=0, eval_batch_size=0, z_loss=0.0)   # 0 is each one's documented default
    PretrainConfig(eval_max_batches=np.int64(3), eval_batch_size=16, z_loss=1e-4)


def test_resume_on_other_documents_is_refused_and_the_same_ones_resume(tmp_path):
    """The first start fingerprints the documents (data.json); a resume on a changed source is a one-line
    error naming it — the old tokenizer and the grain iterator's position would not fit the new data."""
    text = tmp_path / "text.txt"
    make_text(text, lines=60)
    workdir = tmp_path / "run"
    run_pretrain(tiny_config(text, checkpoint_every=2, steps=2), workdir)
    recorded = json.loads((workdir / "data.json").read_text())["data"]
    assert recorded["train_documents"] + recorded["val_documents"] >= 1 and len(recorded["sha256"]) == 64
    text.write_text(text.read_text().replace("a", "b"))
    with pytest.raises(ValueError, match=r"^data\.source: the documents differ from those this run started on") as e:
        run_pretrain(tiny_config(text, checkpoint_every=2, steps=4), workdir)
    assert "\n" not in str(e.value) and f"init_from={workdir}" in str(e.value)
    assert [p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()] == ["2"]   # nothing trained on
    assert json.loads((workdir / "data.json").read_text())["data"] == recorded                  # nor overwritten


def test_a_curated_source_is_not_curated_again(tmp_path, capfd):
    """``data.source.kind=curated`` with the experiment's ``curate`` set (the quickstart's): the documents
    `lmforge data curate` kept are used as they are, and stderr says the run's curation was skipped."""
    from lmforge.data.curate import CurateConfig, Document, OutputConfig, write_shard
    from lmforge.train.pretrain import data_splits
    texts = [f"doc {i}: " + "short line\n" * (i % 3 + 1) for i in range(20)]   # a quality filter would drop these
    write_shard(tmp_path / "cur" / "data", OutputConfig(), 0, [(i, Document(f"d{i}", t, "d")) for i, t in enumerate(texts)])
    (tmp_path / "cur" / "funnel.json").write_text("{}")
    cfg = tiny_config(tmp_path / "unused.txt", curate=CurateConfig())
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, source=SourceConfig(kind="curated",
                                                                                          path=str(tmp_path / "cur"))))
    train, val = data_splits(cfg, tmp_path / "run")["data"]
    assert sorted(train + val) == sorted(texts) and not (tmp_path / "run" / "curated").exists()
    assert "this run's curate stage is skipped" in capfd.readouterr().err


def test_a_missing_source_fails_before_the_run_folder_is_written(tmp_path):
    from lmforge.cli.launch import launch
    with pytest.raises(FileNotFoundError, match=r"^data\.source: .*nowhere\.txt: no such file"):
        launch(tiny_config(tmp_path / "nowhere.txt"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def _docstring_runs(module) -> list[list[str]]:
    """The ``lmforge run`` commands of an experiment's docstring, as [spec, *bindings] (up to the first
    word that is not a binding: a comment or a note in parentheses)."""
    import itertools
    import shlex
    runs = [shlex.split(line, comments=True)[2:] for line in module.__doc__.splitlines() if line.strip().startswith("lmforge run ")]
    return [[spec, *itertools.takewhile(lambda word: "=" in word, words)] for spec, *words in runs]


def test_experiment_docstrings_state_what_their_commands_run():
    """llama_moe's expert-parallel command fits the one-device CPU host it is written for (without
    mesh.host_devices=2 it was refused there); gpt2_small's docstring gives the parameter counts of the
    model it trains (its own 32,768-id tokenizer: 111.0M, not nanoGPT's 124M) and of its 124M binding."""
    from lmforge.cli import apply_bindings
    from lmforge.cli.experiment import experiment_config, load_experiment, split_spec
    from lmforge.train.mesh import mesh_shape
    from lmforge.train.pretrain import resolve_model

    root = pathlib.Path(__file__).resolve().parents[2]
    module, _ = load_experiment(str(root / "experiments" / "llama_moe.py"))
    runs = _docstring_runs(module)
    assert any("mesh.expert=2" in run for run in runs)
    for spec, *bindings in runs:
        cfg = apply_bindings(experiment_config(module, split_spec(spec)[1]), bindings)
        mesh_shape(cfg.mesh, cfg.mesh.host_devices or 1)   # raises ValueError when it does not fit

    module, _ = load_experiment(str(root / "experiments" / "pretrain" / "gpt2_small.py"))
    cfg = experiment_config(module, "default")
    sizes = {}
    for bindings in ((), ("model.vocab_size=50304",)):
        bound = apply_bindings(cfg, bindings)
        sizes[bindings] = resolve_model(bound.model, bound.tokenizer.vocab_size).num_params() / 1e6
        assert f"{sizes[bindings]:.3f}M" in module.__doc__, bindings
    assert sizes[()] == pytest.approx(111.008, abs=1e-3) and sizes[("model.vocab_size=50304",)] > 124
    assert any(run[1:] == ["model.vocab_size=50304"] for run in _docstring_runs(module))
