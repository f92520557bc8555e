"""Pretraining on a mixture (``data.mixture``): rows come from each source in proportion to its weight,
every source is held out and scored on its own (``eval/NAME/*``) and together (``eval/*``, every
held-out token once), the mixture resumes exactly, the config round-trips through config.json, and
bad mixtures are one-line errors before anything is trained.

Sources are texts of lower-case words over disjoint letters, so a row's source shows in its ids.
"""

import dataclasses
import json
import math
import pathlib
import random

import numpy as np
import pytest

from lmforge.cli.config_io import load_config
from lmforge.cli.launch import launch
from lmforge.data import DataConfig, MixtureSource, SourceConfig, TokenizerConfig, eval_batches, train_tokenizer
from lmforge.data.pipeline import mixture_splits, mixture_train_dataset
from lmforge.model import ModelConfig
from lmforge.train.mesh import MeshConfig
from lmforge.train.metrics import read_metrics
from lmforge.train.optim import OptimConfig
from lmforge.train.pretrain import PretrainConfig, run_pretrain, with_source_evals

LETTERS = {"ab": ["ab", "ba", "aab", "bbb"], "xy": ["xy", "yx", "xxy"], "mn": ["mn", "nm", "mmn"]}


def _words(seed: int, vocab: list[str], n: int) -> str:
    rng = random.Random(seed)
    return "\n".join(" ".join(rng.choice(vocab) for _ in range(12)) for _ in range(n))


def _files(root, n_docs=(6, 6, 6)):
    """One jsonl file per source, ``n`` documents each."""
    paths = {}
    for (letters, vocab), n in zip(LETTERS.items(), n_docs):
        paths[letters] = root / f"{letters}.jsonl"
        paths[letters].write_text("".join(json.dumps({"text": _words(10 * len(paths) + i, vocab, 6)}) + "\n"
                                          for i in range(n)))
    return paths


def _mixture(paths, weights) -> tuple[MixtureSource, ...]:
    return tuple(MixtureSource(name, SourceConfig(kind="jsonl", path=str(paths[name])), w) for name, w in weights.items())


@pytest.mark.parametrize("packing", ["pack", "windows"])
def test_rows_come_from_each_source_by_weight(tmp_path, packing):
    paths = _files(tmp_path)
    cfg = DataConfig(mixture=_mixture(paths, {"ab": 5.0, "xy": 3.0, "mn": 2.0}), seq_len=16, batch_size=10,
                     packing=packing)
    splits = mixture_splits(cfg)
    assert list(splits) == ["ab", "xy", "mn"] and all(len(val) == 1 for _, val in splits.values())
    tok = train_tokenizer(TokenizerConfig(kind="char"), [d for tr, _ in splits.values() for d in tr], tmp_path / "tok")
    ids = {name: {tok.encode(c)[0] for c in name} for name in LETTERS}
    ds = mixture_train_dataset(cfg, tok, [(name, splits[name][0], s.weight) for name, s in
                                          zip(splits, cfg.mixture)])
    it, rows = iter(ds), {name: 0 for name in LETTERS}
    for _ in range(20):
        batch = next(it)
        for targets, weights in zip(batch["targets"], batch["weights"]):
            seen = [name for name in LETTERS if set(targets[weights > 0].tolist()) & ids[name]]
            assert len(seen) == 1, f"a row holds letters of {seen}"
            rows[seen[0]] += 1
    assert rows == {"ab": 100, "xy": 60, "mn": 40}   # grain's mix is an exact interleave
    state = json.loads(json.dumps(it.get_state()))
    assert set(state["parents"]) == {"ab", "xy", "mn"}
    straight = [next(it) for _ in range(3)]
    resumed = iter(ds)
    resumed.set_state(state)
    for want in straight:
        got = next(resumed)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])


def _config(paths, **kw) -> PretrainConfig:
    return PretrainConfig(
        model=ModelConfig.gpt2(num_layers=1, num_heads=2, embed_dim=32, mlp_dim=64, max_seq_len=16, vocab_size=0),
        tokenizer=TokenizerConfig(kind="char"),
        data=DataConfig(mixture=_mixture(paths, {"ab": 3.0, "xy": 1.0}), val_fraction=0.2, seq_len=16, batch_size=8),
        optim=OptimConfig(lr=3e-3, warmup_steps=1, decay_steps=4),
        mesh=MeshConfig(data=-1), steps=4, log_every=1, eval_every=2, eval_batch_size=8, sample_prompts=(), **kw)


def test_a_run_scores_each_source_and_all_together(tmp_path):
    paths = _files(tmp_path, n_docs=(10, 5, 0))
    cfg = _config(paths)
    final = launch(cfg, tmp_path / "run")
    assert load_config(tmp_path / "run" / "config.json").data.mixture == cfg.data.mixture
    evals = [m for m in read_metrics(tmp_path / "run" / "metrics.jsonl") if "eval/loss" in m]
    assert [m["step"] for m in evals] == [2, 4]
    tok_dir = tmp_path / "run" / "tokenizer"
    from lmforge.data import load_tokenizer

    tok = load_tokenizer(tok_dir)
    for name, (_, val) in mixture_splits(cfg.data).items():   # each source's own held-out documents
        batches, _ = eval_batches(cfg.data, tok, val, batch_size=8)
        assert evals[-1][f"eval/{name}/weight_sum"] == sum(float(b["weights"].sum()) for b in batches)
    for m in evals:   # eval/* is every held-out token once
        n = {name: m[f"eval/{name}/weight_sum"] for name in ("ab", "xy")}
        assert m["eval/weight_sum"] == sum(n.values())
        want = sum(m[f"eval/{name}/loss"] * n[name] for name in n) / sum(n.values())
        assert m["eval/loss"] == pytest.approx(want, rel=1e-6)
        assert m["eval/perplexity"] == pytest.approx(math.exp(want), rel=1e-6)
        assert min(m["eval/ab/bits_per_byte"], m["eval/xy/bits_per_byte"]) <= m["eval/bits_per_byte"] \
            <= max(m["eval/ab/bits_per_byte"], m["eval/xy/bits_per_byte"])
    assert final["final/val_loss"] == evals[-1]["eval/loss"]
    assert final["final/xy_val_loss"] == evals[-1]["eval/xy/loss"]


def test_with_source_evals_combines_by_scored_tokens():
    def fixed(loss, n):
        return lambda trainer: {"eval/loss": loss, "eval/weight_sum": n, "eval/perplexity": math.exp(loss),
                                "eval/bits_per_byte": 0.0, "eval/tokens": n}
    m = with_source_evals({"a": (fixed(1.0, 30.0), 2.0), "b": (fixed(3.0, 10.0), 4.0)})(None)
    assert m["eval/loss"] == pytest.approx(1.5) and m["eval/weight_sum"] == 40.0
    # bits per byte: all nats over all bytes (30 tokens x 2 bytes + 10 x 4)
    assert m["eval/bits_per_byte"] == pytest.approx((30 * 1.0 + 10 * 3.0) / math.log(2) / 100)
    assert m["eval/b/loss"] == 3.0 and m["eval/a/tokens"] == 30.0


def test_bad_mixtures_are_one_line_errors(tmp_path):
    paths = _files(tmp_path)
    mixture = _mixture(paths, {"ab": 1.0, "xy": 1.0})
    with pytest.raises(ValueError, match="data.source and data.mixture are both set"):
        DataConfig(source=SourceConfig(kind="text", path="a.txt"), mixture=mixture)
    with pytest.raises(ValueError, match="names ab more than once"):
        DataConfig(mixture=mixture + mixture[:1])
    with pytest.raises(ValueError, match="data.mixture is a list; expected a tuple"):
        DataConfig(mixture=list(mixture))
    from lmforge.data.curate.config import CurateConfig

    with pytest.raises(ValueError, match="curate is set with data.mixture"):
        _config(paths, curate=CurateConfig())
    missing = (*mixture, MixtureSource("gone", SourceConfig(kind="jsonl", path=str(tmp_path / "gone.jsonl"))))
    cfg = dataclasses.replace(_config(paths), data=DataConfig(mixture=missing, seq_len=16, batch_size=8))
    with pytest.raises(FileNotFoundError, match=r"^data.mixture.gone.source: .*gone.jsonl: no such file"):
        run_pretrain(cfg, tmp_path / "run")
    tiny = tmp_path / "tiny.jsonl"
    tiny.write_text('{"text": "ab"}\n{"text": "ba"}\n')
    cfg = dataclasses.replace(cfg, data=DataConfig(mixture=(*mixture, MixtureSource("tiny", SourceConfig(
        kind="jsonl", path=str(tiny)))), seq_len=16, batch_size=8, val_fraction=0.5))
    with pytest.raises(ValueError, match=r"^data.mixture.tiny.source: data too small: the train split.*more text in data.mixture.tiny.source"):
        run_pretrain(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_replay_of_a_mixture_base_names_the_way(tmp_path):
    paths = _files(tmp_path)
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"data": {"source": {}, "val_fraction": 0.2, "mixture": [
        {"name": "ab", "source": {"kind": "jsonl", "path": str(paths["ab"])}, "weight": 1.0}]}}))
    cfg = dataclasses.replace(_config(paths), init_from=str(base), replay=SourceConfig(kind="jsonl", path=str(paths["ab"])))
    with pytest.raises(ValueError, match=r"trained on a mixture \(ab\).*expected replay=None"):
        cfg.check_runnable()   # before anything is written


def test_experiment_sweeps_one_sources_weight_by_name(tmp_path):
    """``data.mixture.code.weight=[1,3]`` through ``lmforge sweep``: a binding addresses an item by its name."""
    from lmforge.cli.main import main

    experiment = pathlib.Path(__file__).resolve().parents[2] / "experiments" / "data" / "mixture_pretrain.py"
    assert main(["sweep", f"{experiment}:smoke", "data.mixture.code.weight=[1,3]", "steps=2", "eval_every=0",
                 "--workdir", str(tmp_path)]) == 0
    summary = (tmp_path / "summary.csv").read_text()
    assert "final/code_val_loss" in summary and "final/docs_val_loss" in summary and summary.count(",ok,") == 2
    weights = {s.name: s.weight for s in load_config(tmp_path / "data.mixture.code.weight=3" / "config.json").data.mixture}
    assert weights == {"docs": 3.0, "code": 3.0}


def test_no_held_out_split_trains_without_evaluation(tmp_path, capsys):
    """``data.val_fraction=0`` (a mixture or one source): every document trains, no evaluation runs (it
    used to fail with KeyError 'loss' at the first evaluation)."""
    paths = _files(tmp_path)
    for data in (DataConfig(mixture=_mixture(paths, {"ab": 1.0, "xy": 1.0}), val_fraction=0.0, seq_len=16, batch_size=8),
                 DataConfig(source=SourceConfig(kind="jsonl", path=str(paths["ab"])), val_fraction=0.0, seq_len=16,
                            batch_size=8)):
        run = tmp_path / f"run{len(data.mixture)}"
        final = run_pretrain(dataclasses.replace(_config(paths), data=data, steps=2, eval_on_start=True), run)
        assert final["final/step"] == 2 and not any("val" in k for k in final)
        assert not any("eval/loss" in m for m in read_metrics(run / "metrics.jsonl"))
        assert "evaluation: none (data.val_fraction=0" in capsys.readouterr().out
    with pytest.raises(ValueError, match="replay is set with data.val_fraction=0"):
        dataclasses.replace(_config(paths), data=data, init_from=str(tmp_path), replay=data.source)


def test_a_killed_mixture_run_resumes_as_the_straight_run(tmp_path):
    """Stopped at step 2 and resumed to 4, a mixture run trains on the rows the straight run did (the
    mixed iterator's state is in the checkpoint): the same losses, bit for bit; curves.png draws the sources."""
    paths = _files(tmp_path)
    cfg = _config(paths, checkpoint_every=2)
    run_pretrain(cfg, tmp_path / "straight")
    run_pretrain(dataclasses.replace(cfg, steps=2), tmp_path / "resumed")
    run_pretrain(cfg, tmp_path / "resumed")
    losses = [{m["step"]: m["train/loss"] for m in read_metrics(tmp_path / run / "metrics.jsonl") if "train/loss" in m}
              for run in ("straight", "resumed")]
    assert losses[0] == losses[1] and set(losses[0]) == {1, 2, 3, 4}
    from lmforge.train.curves import plot_curves

    assert plot_curves(tmp_path / "straight").stat().st_size > 1000


def test_a_changed_weight_is_named_when_a_resume_is_refused(tmp_path):
    from lmforge.cli.bindings import diff

    paths = _files(tmp_path)
    cfg = _config(paths)
    other = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, mixture=_mixture(paths, {"ab": 3.0, "xy": 2.0})))
    assert diff(cfg, other) == {"data.mixture.xy.weight": (1.0, 2.0)}
