"""benchmarks/train_throughput.py, kv_cache.py, fixed_cost.py and cpu_step.py run and print one JSON object with the documented keys;
device_profile.py's summary of kernel events."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "train_throughput.py"
# One CPU device (quick), with conftest's compile-speed flags (XLA takes a flag's last value).
ONE_DEVICE_FLAGS = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=1".strip()
KEYS = {"preset", "params", "batch", "seq_len", "dtype", "attention", "mesh", "device_kind", "num_devices",
        "compile_s", "step_ms_median", "step_ms_p90", "tokens_per_s", "mfu", "peak_memory_bytes", "jax"}


def run(*args):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ONE_DEVICE_FLAGS}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_gpt2_tiny_prints_one_json_object():
    proc = run("gpt2_tiny", "--steps", "2", "--warmup", "1", "--seq-len", "64", "--profile-steps", "1")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert KEYS <= set(result)
    assert result["preset"] == "gpt2_tiny" and result["params"] == 124672
    assert (result["batch"], result["seq_len"], result["dtype"]) == (8, 64, "float32")
    assert result["mesh"] == {"data": 1, "fsdp": 1, "expert": 1, "tensor": 1} and result["num_devices"] == 1
    assert result["step_ms_p90"] >= result["step_ms_median"] > 0 and result["compile_s"] > 0
    assert result["tokens_per_s"] > 0 and result["mfu"] > 0 and result["peak_memory_bytes"] > 0
    profile = result["profile"]   # one traced step, XLA:CPU's thunks
    assert profile["source"] == "jax.profiler, cpu thunks" and profile["steps"] == 1
    assert 0 < profile["busy_ms"] <= profile["window_ms"] and profile["kernels_per_step"] > 10
    assert "gemm" in profile["by_category"] and profile["top"][0]["ms"] >= profile["top"][-1]["ms"]


def test_device_profile_summary_counts_overlaps_once_and_the_gaps_as_idle():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import device_profile
    finally:
        sys.path.remove(str(SCRIPT.parent))
    ms = 1e6   # ns
    events = [("sm90_xmma_gemm_bf16", "custom-call.1", 0, 4 * ms),            # two streams overlapping:
              ("loop_add_fusion", "add.2", 2 * ms, 4 * ms),                   # busy 0..6
              ("cudnn_generated_fort_native_sdpa", "", 8 * ms, 2 * ms),       # idle 6..8
              ("nccl_AllReduce_RING_LL", "all-reduce.3", 10 * ms, 1 * ms),
              ("loop_add_fusion", "add.2", 11 * ms, 1 * ms)]                  # window 0..12
    s = device_profile.summarize(events, steps=2, source="test")
    assert (s["window_ms"], s["busy_ms"], s["idle_ms"], s["kernels_per_step"]) == (6.0, 5.0, 1.0, 2.5)
    assert s["idle_share"] == round(2 / 12, 4) and s["kernel_ms"] == 6.0
    assert {c: v["ms"] for c, v in s["by_category"].items()} == {
        "gemm": 2.0, "other": 2.5, "attention": 1.0, "collective": 0.5}
    assert s["top"][0] == {"kernel": "loop_add_fusion", "hlo_op": "add.2", "category": "other",
                           "calls_per_step": 1.0, "ms": 2.5}
    assert device_profile.summarize([], steps=1, source="test")["error"] == "no kernel events in the trace"
    with pytest.raises(ValueError, match="steps=0"):
        device_profile.summarize(events, steps=0, source="test")


def test_bad_arguments_are_one_line_errors():
    proc = run("gpt2_tiny", "--seq-len", "999")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == "train_throughput.py: error: --seq-len 999 exceeds gpt2_tiny's max_seq_len=128"


def test_kv_cache_reports_decode_time_per_buffer_length():
    script = SCRIPT.with_name("kv_cache.py")
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ONE_DEVICE_FLAGS}
    proc = subprocess.run([sys.executable, str(script), "--lengths", "48,96", "--batch-size", "2", "--prompt-len", "8",
                           "--new-tokens", "8", "--repeats", "1"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert [r["length"] for r in result["rows"]] == [48, 96]
    assert result["rows"][1]["cache_mb"] == pytest.approx(2 * result["rows"][0]["cache_mb"], rel=0.05)
    assert all(r["ms_per_step"] > 0 and r["cache_read_gb_per_s"] > 0 for r in result["rows"])
    bad = subprocess.run([sys.executable, str(script), "--lengths", "8"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "--prompt-len + --new-tokens" in bad.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_fixed_cost_reports_a_cold_and_a_warm_run_by_phase(shared_data):
    """benchmarks/fixed_cost.py on the smoke recipe: the warm run reads the cold run's compiles back."""
    script = SCRIPT.with_name("fixed_cost.py")
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ONE_DEVICE_FLAGS}
    proc = subprocess.run([sys.executable, str(script), "--experiment", "experiments/shakespeare_char.py:smoke",
                           "--steps", "2", "--runs", "1"], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    cold, (warm,) = result["cold"], result["runs"]
    for run_ in (cold, warm):
        assert run_["fixed_s"] == pytest.approx(run_["before_first_step_s"] + run_["after_last_step_s"], abs=2e-3)
        assert {"imports (lmforge, jax, flax, optax, orbax, grain)", "first step (compile + run)",
                "evaluation (compile + whole split)", "checkpoint: save"} <= set(run_["phases"])
    # the first step's compile is read back from the cache: faster than compiling it
    assert warm["phases"]["first step (compile + run)"] < cold["phases"]["first step (compile + run)"]


@pytest.mark.slow
def test_cpu_step_alternates_sides_and_reports_ratios(shared_data):
    """benchmarks/cpu_step.py, one short round of both lmforge sides (PyTorch when installed)."""
    script = SCRIPT.with_name("cpu_step.py")
    sides = "lmforge,gspmd" + (",torch" if _has_torch() else "")
    proc = subprocess.run([sys.executable, str(script), "--rounds", "1", "--steps", "3", "--warmup", "1",
                           "--sides", sides, "--data", str(shared_data / "tinyshakespeare.txt")],
                          capture_output=True, text=True, env={**os.environ, "XLA_FLAGS": ONE_DEVICE_FLAGS}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert [list(r) for r in result["rounds"]] == [sides.split(",")]
    assert all(v > 0 for v in result["median_ms"].values())
    assert result["ratio_gspmd_over_lmforge"] > 0
    bad = subprocess.run([sys.executable, str(script), "--sides", "lmforge,jax"], capture_output=True, text=True)
    assert bad.returncode == 2 and "need --sides from" in bad.stderr.strip().splitlines()[-1]


def _has_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True
