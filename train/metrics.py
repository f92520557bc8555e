"""Run metrics: `metrics.jsonl` + TensorBoard, model FLOPs, throughput/MFU and a progress bar.

Choices:
- `WORKDIR/metrics.jsonl` holds one strict-JSON object per logged step, `{"step": 100,
  "train/loss": 2.31, ...}`; every value is a float. NaN and ±inf are written as `null` (JSON has
  no NaN; `jq`, pandas and browsers read null), and `read_metrics` turns null back into NaN.
  TensorBoard event files (tensorboardX) go to `WORKDIR/tb/` and get the raw float, NaN included.
- Only process 0 writes (`jax.process_index() == 0`); elsewhere the writer does nothing.
- Resume: `MetricsWriter(workdir, resume_step=N)` drops the lines with step > N (the run
  restarts from checkpoint N and will log them again), rewriting the file atomically (temp file
  + `os.replace`), and opens TensorBoard with `purge_step=N + 1` so its curves do not fold back.
  A last line cut short by a crash is dropped in any case; otherwise `resume_step=None` appends.
- FLOPs per token = 6 N + 12 L T D (Kaplan et al. 2020, "Scaling Laws for Neural Language
  Models", sec. 2.1; PaLM, Chowdhery et al. 2022, appendix B; nanoGPT `estimate_mfu`):
  6 N for the forward + backward matmuls with N = non-embedding params + the unembedding matmul
  (V D; the embedding lookup is a gather, no FLOPs), and 12 L T D for attention scores and
  values (2 matmuls of T x D per token and layer, x 2 FLOPs, x 3 for fwd + bwd; D there is the
  attention's heads x head size, :func:`attention_dim`, which a ``head_dim`` of its own sets apart
  from ``embed_dim``). No causal halving and no remat recompute, as in PaLM: MFU is model FLOPs,
  not hardware FLOPs (MaxText halves causal attention: its MFU of a long-sequence run reads lower).
- Peak FLOP/s per device are dense (no 2:4 sparsity) datasheet numbers. float32 on NVIDIA means
  TF32 tensor cores, which XLA uses for f32 matmuls at default precision; on TPU, default
  precision runs f32 matmuls as bf16 passes, so bf16 peak. Unknown kinds give None (no MFU).
  On CPU there is no honest datasheet number: the "peak" is a measured 1024 x 1024 float32
  matmul (the fastest of 5, cached per device), so CPU MFU is relative to that, not to a datasheet,
  and the progress bar says so (`MFU 23.1% of 52.3 GFLOP/s measured`).
- Throughput ignores the first update (its interval contains compilation) and averages over a
  window of recent updates.
- The progress bar (tqdm) writes to stderr; when stderr is not a terminal (CI logs) it redraws
  at most every 10 s so logs stay small.
"""

from __future__ import annotations

import collections
import functools
import json
import math
import os
import pathlib
import re
import sys
import time
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

__all__ = [
    "MetricsWriter",
    "ProgressBar",
    "Throughput",
    "attention_dim",
    "format_postfix",
    "lm_flops_per_token",
    "model_flops_per_token",
    "peak_flops_per_device",
    "read_metrics",
]

METRICS_FILE = "metrics.jsonl"
TB_DIR = "tb"


# ------------------------------------------------------------------------------ metrics files
def _import_tensorboardx():
    """tensorboardX, imported without PyTorch: it imports torch at load time whenever torch is
    installed (2.3 s on the 2-core machine; 0.27 s without) only to accept torch tensors, and lmforge writes floats."""
    if "tensorboardX" in sys.modules or "torch" in sys.modules:
        import tensorboardX
        return tensorboardX
    sys.modules["torch"] = None   # makes `import torch` raise ImportError, which tensorboardX handles
    try:
        import tensorboardX
    finally:
        del sys.modules["torch"]
    return tensorboardX


class MetricsWriter:
    """Writes WORKDIR/metrics.jsonl and TensorBoard event files in WORKDIR/tb/ (process 0 only)."""

    def __init__(self, workdir: pathlib.Path, *, resume_step: int | None = None):
        self.workdir = pathlib.Path(workdir)
        self.path = self.workdir / METRICS_FILE
        self._active = jax.process_index() == 0
        self._file = self._tb = None
        if not self._active:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            _drop_after(self.path, None if resume_step is None else int(resume_step))
        self._file = open(self.path, "a", encoding="utf-8")
        tensorboardX = _import_tensorboardx()   # deferred: only process 0 pays for it

        purge = None if resume_step is None else int(resume_step) + 1
        self._tb = tensorboardX.SummaryWriter(logdir=str(self.workdir / TB_DIR),
                                              purge_step=purge, flush_secs=30)

    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Appends one line `{"step": step, **metrics}` (values made floats) and TB scalars."""
        if not self._active:
            return
        if self._file is None:
            raise RuntimeError(f"MetricsWriter for {self.path} is closed")
        values = {key: _to_float(key, value) for key, value in metrics.items()}
        if "step" in values:
            raise ValueError("metrics must not contain the key 'step'; it is passed as `step`")
        record = {"step": int(step)}
        record.update({k: (v if math.isfinite(v) else None) for k, v in values.items()})
        self._file.write(json.dumps(record, allow_nan=False) + "\n")
        self._file.flush()
        for key, value in values.items():
            self._tb.add_scalar(key, value, global_step=int(step))

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()
            self._tb.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._tb.close()
            self._file = self._tb = None

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_metrics(path: pathlib.Path) -> list[dict]:
    """Parses metrics.jsonl into a list of dicts; null values come back as NaN.

    A last line cut short by a crash is skipped; any other bad line is an error naming it.
    """
    path = pathlib.Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    records = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        record = _parse_line(line)
        if record is None:
            if i == last:
                continue
            raise ValueError(f"{path}:{i + 1}: not a JSON object with an integer 'step' "
                             f"({line[:60]!r}); metrics.jsonl holds one such object per line")
        records.append({k: (math.nan if v is None else v) for k, v in record.items()})
    return records


def _parse_line(line: str) -> dict | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("step"), int):
        return None
    return record


def _drop_after(path: pathlib.Path, step: int | None) -> None:
    """Keeps the lines of `path` with step <= `step` (all if None); drops a line cut short by a
    crash (no newline at the end). Rewrites atomically, and only when something changes."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    if step is None:
        kept = lines[:-1] if lines and not lines[-1].endswith("\n") else lines
    else:
        kept = [ln for ln in lines if (r := _parse_line(ln)) is not None and r["step"] <= step]
    if len(kept) == len(lines) and all(ln.endswith("\n") for ln in lines):
        return
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(ln if ln.endswith("\n") else ln + "\n" for ln in kept)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def keep_previous(path: pathlib.Path) -> pathlib.Path | None:
    """Renames an existing ``NAME.EXT`` to ``NAME.<its mtime, YYYYmmdd-HHMMSS>.EXT`` (``-2``, ``-3``, ...
    when that is taken) so a new result never replaces an earlier one (``lmforge eval``'s results, the
    samples of a run continued for more steps); returns the new path, or None when there was none."""
    import datetime

    path = pathlib.Path(path)
    if not path.is_file():
        return None
    stamp = datetime.datetime.fromtimestamp(path.stat().st_mtime).strftime("%Y%m%d-%H%M%S")
    kept, count = path.with_name(f"{path.stem}.{stamp}{path.suffix}"), 1
    while kept.exists():
        count += 1
        kept = path.with_name(f"{path.stem}.{stamp}-{count}{path.suffix}")
    path.replace(kept)
    return kept


def _to_float(key: str, value: Any) -> float:
    array = np.asarray(value)  # fetches jax arrays
    if array.size != 1:
        raise ValueError(f"metric {key!r} has shape {array.shape}; expected a scalar "
                         "(reduce it before logging)")
    if not (jnp.issubdtype(array.dtype, jnp.number) or array.dtype == np.bool_) or (
            jnp.issubdtype(array.dtype, jnp.complexfloating)):
        raise TypeError(f"metric {key!r} is {type(value).__name__} ({array.dtype}); "
                        "expected a number")
    return float(array.reshape(()))


# -------------------------------------------------------------------------------------- FLOPs
def model_flops_per_token(*, num_params_non_embedding: int, num_layers: int, seq_len: int,
                          embed_dim: int, vocab_size: int, attention_dim: int | None = None) -> float:
    """Training FLOPs per token: 6 (N + V D) + 12 L T A (see the module docstring).

    `num_params_non_embedding` counts the transformer blocks (attention, MLP, norms); the
    unembedding matmul V x D is added here, whether or not it is tied to the embedding. A is the
    width of the attention's two matmuls (QK^T and PV), heads x head size (None: ``embed_dim``, equal
    in most models but not with a ``head_dim`` of its own, as T5-3B's 32 x 128 over D 1024 or
    Gemma's; MaxText counts query heads x head_dim too).
    """
    attention_dim = embed_dim if attention_dim is None else attention_dim
    for name, value in (("num_params_non_embedding", num_params_non_embedding),
                        ("num_layers", num_layers), ("seq_len", seq_len),
                        ("embed_dim", embed_dim), ("vocab_size", vocab_size), ("attention_dim", attention_dim)):
        if int(value) < 0 or (name != "num_params_non_embedding" and int(value) == 0):
            raise ValueError(f"model_flops_per_token: {name}={value} must be positive")
    matmul_params = num_params_non_embedding + vocab_size * embed_dim
    attention = 12 * num_layers * seq_len * attention_dim
    return float(6 * matmul_params + attention)


def lm_flops_per_token(model_cfg, seq_len: int, num_params: int | None = None) -> float:
    """Training FLOPs per token of a language model: :func:`model_flops_per_token` with N the
    parameters of the layers (attention, MLP — the active experts of an MoE —, norms, encoder and
    decoder stacks), embeddings and the unembedding excluded (the unembedding is added there once).

    Decoder-only configs are counted from the config; other families need ``num_params`` (the
    built model's total), from which the token table and an untied unembedding are taken out. A
    reward model (``num_labels > 0``) has its score head in place of the unembedding: 6 N + 12 L T A.
    A is the attention's heads x head size (:func:`attention_dim`).
    """
    if model_cfg.num_labels:   # a reward model: a score head (in its parameters), no unembedding
        return float(6 * model_cfg.num_params(embeddings=False, active=True)
                     + 12 * model_cfg.num_layers * seq_len * attention_dim(model_cfg))
    vd = model_cfg.vocab_size * model_cfg.embed_dim
    untied = 0 if model_cfg.tie_embeddings else vd
    if model_cfg.architecture == "decoder":
        blocks = model_cfg.num_params(embeddings=False, active=True) - untied
    elif num_params is None:
        raise ValueError(f"lm_flops_per_token: model.family={model_cfg.family!r} needs num_params (the built model's)")
    else:
        blocks = num_params - vd - untied
    return model_flops_per_token(num_params_non_embedding=blocks, num_layers=model_cfg.num_layers, seq_len=seq_len,
                                 embed_dim=model_cfg.embed_dim, vocab_size=model_cfg.vocab_size,
                                 attention_dim=attention_dim(model_cfg))


def attention_dim(model_cfg) -> int:
    """The width of a model's attention matmuls: query heads x head size (``embed_dim`` unless the
    config sets ``head_dim`` apart from it)."""
    return model_cfg.num_heads * model_cfg.dims_per_head


# Dense peak FLOP/s per jax device: (regex on device_kind.lower(), bf16/fp16, float32).
# NVIDIA: datasheets (H100/H200/A100/L4/L40S/A10), without 2:4 sparsity; float32 = TF32.
# TPU: cloud.google.com/tpu/docs system architecture pages, per chip; v2/v3 jax devices are
# single TensorCores (2 per chip), hence half the chip number.
_PEAKS: tuple[tuple[str, float, float], ...] = (
    (r"h[18]00.*pcie", 756e12, 378e12),
    (r"h100 nvl", 835e12, 418e12),
    (r"h100|h800|h200", 989e12, 494e12),  # SXM; H200 and GH200 have the same Hopper peak
    (r"a100|a800", 312e12, 156e12),
    (r"\bl40s\b", 362e12, 183e12),
    (r"\bl4\b", 121e12, 60e12),
    (r"\ba10\b", 125e12, 62.5e12),
    (r"tpu v6 lite|tpu v6e|trillium", 918e12, 918e12),
    (r"tpu v5 lite|tpu v5e", 197e12, 197e12),
    (r"tpu v5p|tpu v5\b", 459e12, 459e12),
    (r"tpu v4", 275e12, 275e12),
    (r"tpu v3", 61.5e12, 61.5e12),
    (r"tpu v2", 22.5e12, 22.5e12),
)


def peak_flops_per_device(device=None, dtype="bfloat16") -> float | None:
    """Peak dense matmul FLOP/s of one device, or None for an unknown device kind.

    On CPU: a measured float32 matmul rate (any `dtype`), cached per device: the fastest of a few
    1024^3 matmuls, since a peak is the best the device does (a median taken while other processes
    share the cores understates it, and the MFU against it can read above 100%).
    """
    name = jnp.dtype(dtype).name
    if name not in ("bfloat16", "float16", "float32"):
        raise ValueError(f"peak_flops_per_device: dtype {name!r}; expected bfloat16, float16 "
                         "or float32")
    device = jax.devices()[0] if device is None else device
    if device.platform == "cpu":
        return _measured_cpu_flops(device)
    kind = device.device_kind.lower()
    for pattern, half, single in _PEAKS:
        if re.search(pattern, kind):
            return single if name == "float32" else half
    return None


def mfu_peak_label(device, peak_flops: float | None) -> str:
    """What a CPU's MFU is measured against (``"52.3 GFLOP/s measured"``); "" on accelerators, whose
    peak is the datasheet's."""
    if peak_flops is None or device.platform != "cpu":
        return ""
    value = _si(peak_flops)
    value = f"{value[:-1]} {value[-1]}" if value[-1].isalpha() else f"{value} "
    return f"{value}FLOP/s measured"


@functools.lru_cache(maxsize=None)
def _measured_cpu_flops(device, n: int = 1024, repeats: int = 5) -> float:
    a = jax.device_put(jnp.ones((n, n), jnp.float32), device)
    matmul = jax.jit(jnp.matmul)
    matmul(a, a).block_until_ready()  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, a).block_until_ready()
        times.append(time.perf_counter() - start)
    return 2 * n**3 / min(times)


# --------------------------------------------------------------------------------- throughput
class Throughput:
    """Running tokens/s, step ms and MFU over a window of recent steps.

    Call `update(step, tokens)` after a step (or a few) with the tokens processed since the
    previous call, summed over all devices and processes. The first call only starts the clock:
    its interval contains compilation. A step that does not increase (a restart) starts over.
    """

    def __init__(self, *, flops_per_token: float, peak_flops: float | None, num_devices: int,
                 window: int = 20):
        if window < 1 or num_devices < 1:
            raise ValueError(f"Throughput: window={window} and num_devices={num_devices} "
                             "must be >= 1")
        self.flops_per_token = float(flops_per_token)
        self.peak_flops = peak_flops
        self.num_devices = int(num_devices)
        self._events: collections.deque = collections.deque(maxlen=window + 1)

    def restart(self) -> None:
        """Forget the window (after an evaluation or a checkpoint, whose time is not training)."""
        self._events.clear()

    def update(self, step: int, tokens: int, now: float | None = None) -> dict[str, float]:
        """{"perf/tokens_per_s", "perf/step_ms", "perf/mfu"} (MFU when the peak is known)."""
        now = time.perf_counter() if now is None else float(now)
        if self._events and step <= self._events[-1][0]:
            self._events.clear()
        self._events.append((int(step), now, int(tokens)))
        (first_step, first_time, _), (last_step, last_time, _) = self._events[0], self._events[-1]
        elapsed = last_time - first_time
        if len(self._events) < 2 or elapsed <= 0:
            return {}
        tokens_in_window = sum(t for _, _, t in list(self._events)[1:])
        tokens_per_s = tokens_in_window / elapsed
        out = {"perf/tokens_per_s": tokens_per_s,
               "perf/step_ms": 1000.0 * elapsed / (last_step - first_step)}
        if self.peak_flops:
            out["perf/mfu"] = tokens_per_s * self.flops_per_token / (
                self.peak_flops * self.num_devices)
        return out


# ------------------------------------------------------------------------------- progress bar
class ProgressBar:
    """tqdm on stderr, off on processes other than 0 and when `total` is 0.

    `update(step, postfix)` moves the bar to `step` and shows e.g.
    `loss 2.31 | 41.2k tok/s | MFU 23.1%`.
    """

    def __init__(self, total: int, *, initial: int = 0, desc: str | None = None, mfu_peak: str = ""):
        self.mfu_peak = mfu_peak   # what the MFU is measured against, shown after it (e.g. on CPU)
        interactive = sys.stderr.isatty()
        self._bar = tqdm.tqdm(
            total=total, initial=initial, desc=desc, unit="step", file=sys.stderr,
            disable=jax.process_index() != 0 or not total,
            mininterval=0.5 if interactive else 10.0, maxinterval=10.0 if interactive else 60.0,
            dynamic_ncols=interactive, ascii=not interactive, smoothing=0.1)

    @property
    def disabled(self) -> bool:
        return self._bar.disable

    def update(self, step: int, postfix: Mapping[str, Any] | None = None) -> None:
        if self._bar.disable:
            return
        if postfix:
            self._bar.set_postfix_str(format_postfix(postfix, mfu_peak=self.mfu_peak), refresh=False)
        self._bar.update(int(step) - self._bar.n)

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def format_postfix(metrics: Mapping[str, Any], *, mfu_peak: str = "") -> str:
    """`{"train/loss": 2.3107, "perf/tokens_per_s": 41234., "perf/mfu": .2311}` ->
    `loss 2.31 | 41.2k tok/s | MFU 23.1%`; other keys show their last name part, 3 digits.
    ``mfu_peak`` follows the MFU: `MFU 23.1% of 52.3 GFLOP/s measured` on a CPU."""
    parts = []
    for key, value in metrics.items():
        x = float(np.asarray(value))
        if key.endswith("tokens_per_s"):
            parts.append(f"{_si(x)} tok/s")
        elif key.endswith("mfu"):
            parts.append(f"MFU {100 * x:.1f}%" + (f" of {mfu_peak}" if mfu_peak else ""))
        elif key.endswith("step_ms"):
            parts.append(f"{x:.0f} ms/step")
        else:
            parts.append(f"{key.rsplit('/', 1)[-1]} {x:.3g}")
    return " | ".join(parts)


def _si(x: float) -> str:
    for factor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= factor:
            return f"{x / factor:.3g}{suffix}"
    return f"{x:.3g}"
