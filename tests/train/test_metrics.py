"""metrics.jsonl / TensorBoard writer, FLOPs formula, peak FLOP/s table, throughput, progress bar.

Tier (a): hand-computed numbers (FLOPs, throughput on synthetic clocks) and file contents.
"""

import json
import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmforge.train import metrics as metrics_lib
from lmforge.train.metrics import (MetricsWriter, ProgressBar, Throughput, format_postfix, mfu_peak_label,
                                   model_flops_per_token, peak_flops_per_device, read_metrics)


def strict_lines(path):
    """Each line parsed as strict JSON (NaN/Infinity literals rejected)."""
    def reject(name):
        raise AssertionError(f"non-standard JSON literal {name} in {path}")
    return [json.loads(line, parse_constant=reject) for line in path.read_text().splitlines()]


# ------------------------------------------------------------------------------ MetricsWriter
def test_writes_one_json_object_per_step_and_tensorboard(tmp_path):
    with MetricsWriter(tmp_path) as writer:
        writer.write(1, {"train/loss": jnp.float32(2.5), "train/lr": np.float64(1e-3)})
        writer.write(2, {"train/loss": jnp.array(2.25, jnp.bfloat16), "train/tokens": 4096})
        writer.write(3, {"train/loss": float("nan"), "train/grad_norm": jnp.inf})
    assert strict_lines(tmp_path / "metrics.jsonl") == [
        {"step": 1, "train/loss": 2.5, "train/lr": 1e-3},
        {"step": 2, "train/loss": 2.25, "train/tokens": 4096.0},
        {"step": 3, "train/loss": None, "train/grad_norm": None},  # non-finite -> null
    ]
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert records[0] == {"step": 1, "train/loss": 2.5, "train/lr": 1e-3}
    assert math.isnan(records[2]["train/loss"]) and math.isnan(records[2]["train/grad_norm"])
    events = list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 0


def test_resume_drops_later_steps_atomically(tmp_path):
    with MetricsWriter(tmp_path) as writer:
        for step in range(1, 6):
            writer.write(step, {"train/loss": 10.0 - step})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "train/lo')  # cut short by a crash
    with MetricsWriter(tmp_path, resume_step=3) as writer:
        writer.write(4, {"train/loss": 0.5})
    assert [r["step"] for r in strict_lines(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4]
    assert read_metrics(tmp_path / "metrics.jsonl")[-1] == {"step": 4, "train/loss": 0.5}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl", "tb"]  # no temp file


def test_no_resume_appends_and_repairs_a_cut_line(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "a": 1.0}\n{"step": 2, "a"')
    with MetricsWriter(tmp_path) as writer:
        writer.write(2, {"a": 2.0})
    assert strict_lines(tmp_path / "metrics.jsonl") == [{"step": 1, "a": 1.0},
                                                        {"step": 2, "a": 2.0}]


def test_write_rejects_bad_values(tmp_path):
    with MetricsWriter(tmp_path) as writer:
        with pytest.raises(ValueError, match="'train/logits' has shape \\(2,\\)"):
            writer.write(1, {"train/logits": np.ones(2)})
        with pytest.raises(TypeError, match="'note'"):
            writer.write(1, {"note": "hello"})
        with pytest.raises(ValueError, match="'step'"):
            writer.write(1, {"step": 3})


def test_read_metrics_names_a_bad_line_and_skips_a_cut_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "a": 1}\n{"step": 2, "a": 2}\n{"step": 3, "a"')
    assert [r["step"] for r in read_metrics(path)] == [1, 2]
    path.write_text('{"step": 1, "a": 1}\nnot json\n{"step": 3, "a": 3}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2: not a JSON object"):
        read_metrics(path)


def test_only_process_zero_writes(tmp_path, monkeypatch):
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    with MetricsWriter(tmp_path / "run") as writer:
        writer.write(1, {"train/loss": 1.0})
    assert not (tmp_path / "run").exists()
    assert ProgressBar(100).disabled


# -------------------------------------------------------------------------------------- FLOPs
def test_flops_per_token_tiny_config_by_hand():
    # L=2, D=64, T=128, V=256. Blocks: attention 4 D^2 + MLP (4x) 8 D^2 = 12 D^2 per layer.
    n_blocks = 2 * 12 * 64 * 64  # 98,304
    # 6 * (98,304 + 256 * 64) = 6 * 114,688 = 688,128; attention 12 * 2 * 128 * 64 = 196,608.
    flops = model_flops_per_token(num_params_non_embedding=n_blocks, num_layers=2, seq_len=128,
                                  embed_dim=64, vocab_size=256)
    assert flops == 688_128 + 196_608 == 884_736


def test_flops_per_token_matches_nanogpt_gpt2_small():
    # GPT-2 124M: per block c_attn 768*2304+2304, attn c_proj 768*768+768, c_fc 768*3072+3072,
    # mlp c_proj 3072*768+768, two LayerNorms 2*1536 = 7,087,872; x12 + ln_f 1536 = 85,056,000.
    block = ((768 * 2304 + 2304) + (768 * 768 + 768) + (768 * 3072 + 3072)
             + (3072 * 768 + 768) + 3072)
    non_embedding = 12 * block + 1536
    assert non_embedding == 85_056_000
    # nanoGPT estimate_mfu: N = get_num_params() = 123.65M (wte tied to lm_head, wpe excluded),
    # flops_per_token = 6 N + 12 L H Q T with L=12, H*Q=768, T=1024.
    nanogpt_n = 124_439_808 - 1024 * 768
    nanogpt = 6 * nanogpt_n + 12 * 12 * 768 * 1024
    ours = model_flops_per_token(num_params_non_embedding=non_embedding, num_layers=12,
                                 seq_len=1024, embed_dim=768, vocab_size=50257)
    assert ours == nanogpt == 855_166_464


def test_flops_per_token_rejects_nonsense():
    with pytest.raises(ValueError, match="seq_len=0"):
        model_flops_per_token(num_params_non_embedding=1, num_layers=1, seq_len=0,
                              embed_dim=1, vocab_size=1)


@pytest.mark.parametrize("kind,dtype,expected", [
    ("NVIDIA H100 80GB HBM3", "bfloat16", 989e12),
    ("NVIDIA H100 80GB HBM3", "float32", 494e12),
    ("NVIDIA H100 PCIe", jnp.bfloat16, 756e12),
    ("NVIDIA H200", "bfloat16", 989e12),
    ("NVIDIA A100-SXM4-80GB", "float32", 156e12),
    ("NVIDIA L4", "bfloat16", 121e12),
    ("NVIDIA L40S", "bfloat16", 362e12),
    ("TPU v4", "bfloat16", 275e12),
    ("TPU v5 lite", "bfloat16", 197e12),
    ("TPU v5", "float32", 459e12),
    ("TPU v6 lite", "bfloat16", 918e12),
    ("NVIDIA GeForce GTX 1080", "bfloat16", None),
])
def test_peak_flops_table(kind, dtype, expected):
    device = types.SimpleNamespace(platform="gpu" if "NVIDIA" in kind else "tpu", device_kind=kind)
    assert peak_flops_per_device(device, dtype) == expected


def test_peak_flops_cpu_is_measured_once():
    cpu = jax.devices("cpu")[0]
    first = peak_flops_per_device(cpu)
    assert first is not None and 1e8 < first < 1e14
    assert peak_flops_per_device(cpu, "float32") == first  # cached, f32 whatever the dtype
    with pytest.raises(ValueError, match="int8"):
        peak_flops_per_device(cpu, "int8")


# --------------------------------------------------------------------------------- Throughput
def test_throughput_on_synthetic_clock():
    meter = Throughput(flops_per_token=1000.0, peak_flops=4e6, num_devices=2, window=3)
    assert meter.update(1, 1000, now=100.0) == {}  # first step: compilation, ignored
    out = meter.update(2, 1000, now=100.5)
    assert out == pytest.approx({"perf/tokens_per_s": 2000.0, "perf/step_ms": 500.0,
                                 "perf/mfu": 2000.0 * 1000.0 / (4e6 * 2)})
    meter.update(3, 1000, now=101.0)
    meter.update(4, 1000, now=101.5)
    out = meter.update(5, 1000, now=103.5)  # window of 3 intervals: steps 2 -> 5, 3 s, 3000 tok
    assert out["perf/tokens_per_s"] == pytest.approx(1000.0)
    assert out["perf/step_ms"] == pytest.approx(1000.0)
    out = meter.update(9, 4000, now=105.5)  # logged every 4 steps: steps 3 -> 9 in 4.5 s
    assert out["perf/step_ms"] == pytest.approx(4500.0 / 6)
    assert out["perf/tokens_per_s"] == pytest.approx(6000 / 4.5)
    assert meter.update(3, 1000, now=200.0) == {}  # restarted (resume): starts over


def test_throughput_without_peak_has_no_mfu():
    meter = Throughput(flops_per_token=1.0, peak_flops=None, num_devices=1)
    meter.update(1, 10, now=0.0)
    assert set(meter.update(2, 10, now=1.0)) == {"perf/tokens_per_s", "perf/step_ms"}


# ------------------------------------------------------------------------------- ProgressBar
def test_format_postfix():
    postfix = {"train/loss": jnp.float32(2.3107), "perf/tokens_per_s": 41234.0,
               "perf/mfu": 0.2311, "train/lr": 3e-4, "perf/step_ms": 812.4}
    assert format_postfix(postfix) == (
        "loss 2.31 | 41.2k tok/s | MFU 23.1% | lr 0.0003 | 812 ms/step")
    assert format_postfix({"perf/tokens_per_s": 1.5e6}) == "1.5M tok/s"
    # on a CPU the MFU says what peak it is measured against (issue 13)
    assert format_postfix({"perf/mfu": 0.2311}, mfu_peak=mfu_peak_label(jax.devices("cpu")[0], 5.23e10)) == \
        "MFU 23.1% of 52.3 GFLOP/s measured"
    assert mfu_peak_label(jax.devices("cpu")[0], None) == ""


def test_progress_bar_writes_to_stderr_when_not_a_terminal(capsys):
    with ProgressBar(10, desc="train") as bar:
        assert not bar.disabled
        assert bar._bar.mininterval == 10.0  # captured stderr is not a tty: few redraws
        for step in range(1, 11):
            bar.update(step, {"train/loss": 2.31, "perf/tokens_per_s": 41200.0, "perf/mfu": 0.231})
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "10/10" in captured.err and "loss 2.31 | 41.2k tok/s | MFU 23.1%" in captured.err
    assert ProgressBar(0).disabled


def test_module_exports():
    assert set(metrics_lib.__all__) >= {"MetricsWriter", "read_metrics", "Throughput",
                                        "ProgressBar", "model_flops_per_token",
                                        "peak_flops_per_device"}


def test_tensorboard_writer_does_not_import_torch(tmp_path):
    # tensorboardX imports torch whenever it is installed (seconds of start-up); the writer keeps it out.
    import subprocess
    import sys

    code = ("import sys; from lmforge.train.metrics import MetricsWriter\n"
            f"w = MetricsWriter({str(tmp_path)!r}); w.write(1, {{'train/loss': 2.0}}); w.close()\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n"
            "import importlib.util; print(importlib.util.find_spec('torch') is not None)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert len(list((tmp_path / "tb").glob("events.out.tfevents.*"))) == 1
