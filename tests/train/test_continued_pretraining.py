"""Continued pretraining with replay (issue 11): the mixture holds the asked share of replay rows,
a resumed run with replay equals a straight one, every evaluation scores both domains on the very
held-out split the base run evaluated, bad settings are one-line errors, and the experiment's smoke
variants run end to end through ``lmforge run`` and ``lmforge sweep`` (forgetting.png).

The run-level tests share one tiny base run (2 layers, 32 dim, char tokenizer, seq 16) on a text
of lower-case words; the new domain is other words of the same letters (the char tokenizer is the base's).
"""

import dataclasses
import json
import math
import pathlib
import random
import shutil

import numpy as np
import pytest

from lmforge.cli.launch import launch
from lmforge.data import DataConfig, SourceConfig, TokenizerConfig, train_tokenizer
from lmforge.data.pipeline import mixed_train_dataset
from lmforge.model import ModelConfig
from lmforge.train.mesh import MeshConfig
from lmforge.train.metrics import read_metrics
from lmforge.train.optim import OptimConfig
from lmforge.train.pretrain import PretrainConfig, run_pretrain

EXPERIMENT = pathlib.Path(__file__).resolve().parents[2] / "experiments" / "continued_pretraining.py"


def _words(seed: int, vocab: list[str], n: int) -> str:
    rng = random.Random(seed)
    return "\n".join(" ".join(rng.choice(vocab) for _ in range(12)) for _ in range(n))


def _base_config(text_a: pathlib.Path, **kw) -> PretrainConfig:
    return PretrainConfig(
        model=ModelConfig.gpt2(num_layers=2, num_heads=2, embed_dim=32, mlp_dim=64, max_seq_len=16, vocab_size=0),
        tokenizer=TokenizerConfig(kind="char"),
        data=DataConfig(source=SourceConfig(kind="text", path=str(text_a)), val_fraction=0.2, seq_len=16,
                        batch_size=8, packing="pack"),
        optim=OptimConfig(lr=3e-3, warmup_steps=1, decay_steps=8),
        mesh=MeshConfig(data=-1), steps=4, log_every=1, eval_batch_size=8, sample_prompts=(), **kw)


@pytest.fixture(scope="module")
def domains(tmp_path_factory):
    """(base run folder, original-domain file, new-domain file); the base run is launched as the CLI does
    (config.json written), so replay settings are checked against it."""
    root = tmp_path_factory.mktemp("cpt")
    a, b = root / "docs.txt", root / "new.txt"
    a.write_text(_words(0, ["the", "with", "statement", "list", "class", "raise"], 60))
    b.write_text(_words(1, ["calm", "stare", "smith", "rental", "claim", "wrist"], 60))   # a's letters: one char vocab
    launch(_base_config(a), root / "base")
    return root / "base", a, b


def _continued(domains, **kw) -> PretrainConfig:
    base, a, b = domains
    cfg = _base_config(a)
    return dataclasses.replace(
        cfg, data=dataclasses.replace(cfg.data, source=SourceConfig(kind="text", path=str(b))), init_from=str(base),
        replay=SourceConfig(kind="text", path=str(a)), replay_val_fraction=0.2, **kw)


# ------------------------------------------------------------------------------------------ the mixture
@pytest.mark.parametrize("packing", ["pack", "windows"])
@pytest.mark.parametrize("fraction", [0.25, 0.1])
def test_mixture_holds_the_asked_share_of_replay_rows(tmp_path, packing, fraction):
    new = [_words(i, ["ab", "ba", "aab"], 8) for i in range(6)]        # letters a, b (and spaces, newlines)
    old = [_words(10 + i, ["xy", "yx", "xxy"], 8) for i in range(6)]   # letters x, y
    tok = train_tokenizer(TokenizerConfig(kind="char"), new + old, tmp_path)
    old_ids = {tok.encode(c)[0] for c in "xy"}
    cfg = DataConfig(seq_len=16, batch_size=10, packing=packing)
    it = iter(mixed_train_dataset(cfg, tok, new, old, fraction))
    n_batches, replay_rows = 20, 0
    for _ in range(n_batches):
        batch = next(it)
        assert batch["inputs"].shape == (10, 16)
        for targets, weights in zip(batch["targets"], batch["weights"]):
            ids = set(targets[weights > 0].tolist())
            assert ids, "a row with no scored target"
            is_old = bool(ids & old_ids)
            assert not (is_old and ids & {tok.encode(c)[0] for c in "ab"}), "a row mixes the two sources"
            replay_rows += is_old
    assert replay_rows == round(n_batches * 10 * fraction)   # grain's mix is an exact interleave


def test_mixture_resumes_exactly_from_its_state(tmp_path):
    docs = [_words(i, ["ab", "ba", "aab", "bbb"], 8) for i in range(6)]
    old = [_words(10 + i, ["xy", "yx", "xxy"], 8) for i in range(6)]
    tok = train_tokenizer(TokenizerConfig(kind="char"), docs + old, tmp_path)
    ds = mixed_train_dataset(DataConfig(seq_len=16, batch_size=8), tok, docs, old, 0.3)
    it = iter(ds)
    for _ in range(7):
        next(it)
    state = json.loads(json.dumps(it.get_state()))       # what the checkpoint holds: plain JSON
    assert set(state["parents"]) == {"data", "replay"}
    straight = [next(it) for _ in range(5)]
    resumed = iter(ds)
    resumed.set_state(state)
    for want in straight:
        got = next(resumed)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])


# ------------------------------------------------------------------------------------------ run level
@pytest.fixture(scope="module")
def straight_run(domains, tmp_path_factory):
    """A continued run with replay, 4 steps, checkpoints at 2 and 4. Its learning rate of 1e-9 leaves
    the base's parameters as they were (to ~1e-9): every evaluation of the replay domain must give the
    base run's own final validation loss, and every step's loss is a fingerprint of its batch."""
    cfg = _continued(domains, replay_fraction=0.25, steps=4, checkpoint_every=2, eval_every=2,
                     optim=OptimConfig(lr=1e-9, min_lr=0.0, warmup_steps=0, decay_steps=8))
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    return cfg, run_dir, run_pretrain(cfg, run_dir)


def test_replay_eval_scores_the_base_runs_held_out_split_and_the_new_domain(domains, straight_run):
    base = domains[0]
    _, run_dir, final = straight_run
    base_eval = [m for m in read_metrics(base / "metrics.jsonl") if "eval/loss" in m][-1]
    evals = [m for m in read_metrics(run_dir / "metrics.jsonl") if "eval/loss" in m]
    assert [m["step"] for m in evals] == [2, 4]
    for ev in evals:
        assert ev["eval/replay/tokens"] == base_eval["eval/tokens"]
        assert ev["eval/replay/loss"] == pytest.approx(base_eval["eval/loss"], abs=1e-5)
        assert ev["eval/loss"] > ev["eval/replay/loss"] + 0.05   # the new domain: unseen words, higher loss
        assert {"eval/replay/bits_per_byte", "eval/bits_per_byte", "eval/replay/perplexity"} <= set(ev)
    assert final["final/replay_val_perplexity"] == pytest.approx(math.exp(evals[-1]["eval/replay/loss"]), rel=1e-6)
    assert final["final/val_perplexity"] == pytest.approx(math.exp(evals[-1]["eval/loss"]), rel=1e-6)


def test_killed_and_resumed_run_with_replay_equals_straight_run(straight_run, tmp_path):
    cfg, straight, _ = straight_run
    # The same run, stopped after its step-2 checkpoint: its folder without the later checkpoint and rows.
    resumed = tmp_path / "resumed"
    shutil.copytree(straight, resumed)
    shutil.rmtree(resumed / "checkpoints" / "4")
    run_pretrain(cfg, resumed)
    want, got = (read_metrics(d / "metrics.jsonl") for d in (straight, resumed))
    assert [r["step"] for r in got] == [r["step"] for r in want]
    for w, g in zip(want, got):
        for key in ("train/loss", "eval/loss", "eval/replay/loss"):
            assert g.get(key) == w.get(key), (w["step"], key)   # bit for bit: the same batches in the same order
    losses = [r["train/loss"] for r in want if "train/loss" in r]
    assert len(set(losses)) == len(losses)   # distinct batches: a repeated or skipped one would show


def test_a_run_resumes_from_its_own_checkpoint_once_init_from_has_moved(domains, tmp_path, capsys):
    """A continued run without replay trains every weight: its checkpoints hold them all, so resuming it
    (after a preemption, or to continue it) does not read init_from, which may have been cleaned up since;
    the resumed run equals the straight one, bit for bit. With replay, init_from holds the original run's
    data split and is still required, as a one-line error."""
    base = tmp_path / "base"
    shutil.copytree(domains[0], base)
    cfg = dataclasses.replace(_continued(domains, steps=4, checkpoint_every=2, eval_every=2, sample_prompts=("the",)),
                              init_from=str(base), replay=None)
    cfg = dataclasses.replace(cfg, sample=dataclasses.replace(cfg.sample, max_new_tokens=4))
    launch(cfg, tmp_path / "straight")
    resumed = tmp_path / "resumed"
    shutil.copytree(tmp_path / "straight", resumed)
    shutil.rmtree(resumed / "checkpoints" / "4")
    (resumed / "final.json").unlink()        # stopped after its step-2 checkpoint
    shutil.move(base, tmp_path / "moved")
    capsys.readouterr()
    launch(cfg, resumed)
    printed = capsys.readouterr()
    assert f"init_from={base} is not read" in printed.err and "resumed from step 2" in printed.out
    want, got = (read_metrics(d / "metrics.jsonl") for d in (tmp_path / "straight", resumed))
    assert [r.get("train/loss") for r in got] == [r.get("train/loss") for r in want] and len(want) >= 4
    (earlier,) = resumed.glob("samples.*.txt")      # the samples written before are kept, not overwritten
    assert f"the earlier samples.txt is kept as {earlier.name}" in printed.err
    assert earlier.read_text() == (tmp_path / "straight" / "samples.txt").read_text()
    with_replay = dataclasses.replace(_continued(domains, steps=4), init_from=str(base))
    _one_line_error(lambda: launch(with_replay, resumed), f"init_from: {base} is not a folder")


def test_a_run_over_part_of_a_base_run_pins_its_step_and_resumes_over_it(domains, tmp_path, capsys):
    """A continued run that trains part of the model (optim.trainable) reads the rest from its base run:
    it pins the base step it trained over (BASE/pins/), and once the base has trained on, resuming it
    reads that step, not the base's newest (which would be refused: other weights)."""
    from lmforge.weights.pins import pinned_steps

    base = tmp_path / "base"
    shutil.copytree(domains[0], base)
    part = tmp_path / "part"
    cfg = dataclasses.replace(_continued(domains, steps=4, checkpoint_every=2), init_from=str(base), replay=None,
                              optim=OptimConfig(lr=3e-3, warmup_steps=1, decay_steps=8, trainable=(r"blocks\.1\..*",)))
    launch(cfg, part)
    assert pinned_steps(base) == {4: [str(part.resolve())]}
    launch(dataclasses.replace(_base_config(domains[1]), steps=6), base)     # the base trains on: steps 4 and 6
    resumed = tmp_path / "resumed"
    shutil.copytree(part, resumed)
    shutil.rmtree(resumed / "checkpoints" / "4")
    (resumed / "final.json").unlink()
    capsys.readouterr()
    launch(cfg, resumed)
    assert f"has trained on since (step 6); using its step 4" in capsys.readouterr().err
    want, got = (read_metrics(d / "metrics.jsonl") for d in (part, resumed))
    assert [r.get("train/loss") for r in got] == [r.get("train/loss") for r in want]


def _one_line_error(cfg_or_fn, match, tmp_path=None, exc=ValueError):
    with pytest.raises(exc, match=match) as e:
        cfg_or_fn()
    assert "\n" not in str(e.value)


def test_bad_replay_settings_are_one_line_errors(domains, tmp_path):
    base, a, b = domains
    for value in (1.0, -0.1, float("nan")):
        _one_line_error(lambda: PretrainConfig(replay_fraction=value), r"replay_fraction=.*expected a number in \[0, 1\)")
    _one_line_error(lambda: PretrainConfig(replay_val_fraction=0.0), r"replay_val_fraction=0.0: expected")
    no_source = dataclasses.replace(_continued(domains), replay=None, replay_fraction=0.25)
    _one_line_error(lambda: run_pretrain(no_source, tmp_path / "1"), r"replay_fraction=0.25 but replay is None")
    no_base = dataclasses.replace(_continued(domains), init_from="")
    _one_line_error(lambda: run_pretrain(no_base, tmp_path / "2"), r"replay is set but init_from is empty")
    # Another held-out split than the base run's would score documents it trained on.
    for change in (dict(replay_val_fraction=0.1), dict(replay=SourceConfig(kind="text", path=str(b)))):
        other = dataclasses.replace(_continued(domains), **change)
        _one_line_error(lambda: run_pretrain(other, tmp_path / "3"), r"replay does not match the data of init_from")
    from lmforge.cli.bindings import apply_bindings
    from lmforge.cli.errors import ConfigError
    _one_line_error(lambda: apply_bindings(_continued(domains), ["replay_fraction=1.5"]), "replay_fraction=1.5",
                    exc=ConfigError)


def test_the_model_is_init_froms_and_its_lengths_are_checked(domains, tmp_path, capsys):
    """With init_from the model is the source's: the config's other model.* fields are named as not
    applied, and a sequence longer than the source's positions is refused before anything is read
    (it used to train into NaNs and blame the learning rate)."""
    cfg = _continued(domains)
    longer = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, num_layers=3, max_seq_len=32),
                                 data=dataclasses.replace(cfg.data, seq_len=32))
    _one_line_error(lambda: run_pretrain(longer, tmp_path / "1"),
                    r"init_from=.*base \(the model is its, not this config's model\.\*\): data.seq_len=32 exceeds "
                    r"model.max_seq_len=16")
    assert not any((tmp_path / "1").iterdir())   # refused from init_from's model.json: no data read, no tokenizer
    fits = dataclasses.replace(longer, steps=1)
    fits = dataclasses.replace(fits, data=dataclasses.replace(fits.data, seq_len=16))
    run_pretrain(fits, tmp_path / "2")
    assert "model.num_layers, model.max_seq_len differ from it and do not apply" in capsys.readouterr().err


def test_sampling_refuses_a_tokenizer_larger_than_the_model(domains, tmp_path):
    """A run whose tokenizer was replaced after training (more ids than the model has rows) is refused
    by name instead of sampled through the wrong vocabulary."""
    from lmforge.train.pretrain import load_for_sampling
    from lmforge.cli.config_io import load_config

    base = domains[0]
    run = tmp_path / "run"
    shutil.copytree(base, run)
    shutil.rmtree(run / "tokenizer")
    wide = "".join(chr(c) for c in range(0x100, 0x300))            # 512 characters: more than the model's rows
    train_tokenizer(TokenizerConfig(kind="char"), [wide], run / "tokenizer")
    _one_line_error(lambda: load_for_sampling(run, load_config(run / "config.json")),
                    r"tokenizer has \d+ ids but the run's model only \d+: it is not the tokenizer the model was "
                    r"trained with")


def test_experiment_names_a_missing_shakespeare_file(domains, tmp_path):
    from lmforge.cli.experiment import experiment_config, load_experiment

    cfg = experiment_config(*load_experiment(f"{EXPERIMENT}:smoke"))
    missing = tmp_path / "no" / "tinyshakespeare.txt"
    cfg = dataclasses.replace(cfg, init_from=str(domains[0]),
                              data=dataclasses.replace(cfg.data, seq_len=16,   # the base model's max_seq_len
                                                       source=SourceConfig(kind="text", path=str(missing))))
    _one_line_error(lambda: run_pretrain(cfg, tmp_path / "run"), "tinyshakespeare.txt: no such file",
                    exc=FileNotFoundError)


def test_forgetting_plot_from_sweep_points(tmp_path):
    from lmforge.cli.sweep import SweepPoint
    from lmforge.cli.sweep_plot import plot_summary

    points = []
    for i, f in enumerate(["0", "0.25", "0.5"]):
        name = f"replay_fraction={f}"
        (tmp_path / name).mkdir()
        rows = [{"step": s, "eval/perplexity": 30.0 - s - i, "eval/replay/perplexity": 20.0 + s - 3 * i}
                for s in (10, 20)]
        (tmp_path / name / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        points.append(SweepPoint(name=name, swept={"replay_fraction": f}, bindings=[],
                                 metrics={"final/val_perplexity": 10.0 + i, "final/replay_val_perplexity": 40.0 - i}))
    points.append(SweepPoint(name="replay_fraction=0.9", swept={"replay_fraction": "0.9"}, bindings=[], error="x"))
    plot_summary(points, ["replay_fraction"], ["final/replay_val_perplexity", "final/val_perplexity"],
                 tmp_path / "summary.png")
    assert (tmp_path / "forgetting.png").stat().st_size > 10_000
    # Without a replay domain, no forgetting plot.
    other = tmp_path / "other"
    other.mkdir()
    plain = [dataclasses.replace(p, metrics={"final/val_perplexity": 1.0}) for p in points[:2]]
    plot_summary(plain, ["replay_fraction"], ["final/val_perplexity"], other / "summary.png")
    assert not (other / "forgetting.png").exists()


@pytest.mark.slow
def test_smoke_variants_run_and_sweep_end_to_end(tmp_path, shared_data):
    from lmforge.cli.main import main

    base = tmp_path / "base"
    assert main(["run", f"{EXPERIMENT}:smoke_base", "steps=6", "eval_every=0", "--workdir", str(base)]) == 0
    sweep = tmp_path / "sweep"
    assert main(["sweep", f"{EXPERIMENT}:smoke", "replay_fraction=[0,0.5]", f"init_from={base}", "steps=6",
                 "--workdir", str(sweep)]) == 0
    summary = (sweep / "summary.csv").read_text()
    assert "final/replay_val_perplexity" in summary and summary.count(",ok,") == 2
    assert (sweep / "forgetting.png").is_file()
    for point in ("replay_fraction=0", "replay_fraction=0.5"):
        evals = [m for m in read_metrics(sweep / point / "metrics.jsonl") if "eval/replay/perplexity" in m]
        assert evals and all(math.isfinite(m["eval/perplexity"]) for m in evals)
        assert evals[0]["step"] == 0   # eval_on_start: both domains scored before training, the baseline
    # the runs start from the same weights: the same step-0 scores, whatever the replay fraction
    starts = [read_metrics(sweep / point / "metrics.jsonl")[0] for point in ("replay_fraction=0", "replay_fraction=0.5")]
    assert starts[0]["eval/replay/loss"] == starts[1]["eval/replay/loss"] and starts[0]["eval/loss"] == starts[1]["eval/loss"]
