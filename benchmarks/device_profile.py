"""Where a step's device time goes: a kernel-level summary of a profiler trace, as one dict.

    from device_profile import jax_profile, torch_profile     # benchmarks/ on sys.path
    summary = jax_profile(lambda: jax.block_until_ready(step()), calls=2)
    summary = torch_profile(torch, step_and_sync, calls=2)

The summary, per step and in milliseconds:
- ``window_ms``: from the first kernel's start to the last one's end, / steps;
- ``busy_ms``: the union of the kernels' intervals (streams overlapping count once), / steps;
- ``idle_ms`` = window - busy, and ``idle_share``: the device waiting inside the window -- for the
  host to launch the next kernels, or for a host round trip (a while loop's predicate read back);
  a decode step far above its memory floor with a large idle share is launch- or host-bound;
- ``kernels_per_step`` and ``by_category``: busy time per kind of kernel (gemm, attention,
  collective, copy, sort, other), classified by kernel and HLO op names (``CATEGORIES``);
- ``top``: the kernels with the most time (name, HLO op where known, calls and ms per step).

Sources. JAX: ``jax.profiler.trace`` around ``steps`` calls, read back with
``jax.profiler.ProfileData``: on a GPU or TPU the first device's plane (one line per stream, one
event per kernel, with its ``hlo_op``; on a mesh of several devices, device 0 stands for all); on
CPU, where there is no device plane, XLA:CPU's thunk events (host events that carry an
``hlo_op``) -- that exercises the code path, it is not a GPU-like picture (thunks run on a
thread pool and nest). PyTorch: ``torch.profiler`` (Kineto, CUPTI on CUDA): the
CUDA kernel events; on CPU the leaf CPU operator events.
The traced calls run after the timed ones and are not part of any timing; tracing slows them.
"""

from __future__ import annotations

import glob
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable

# (category, pattern over "kernel name | hlo op"), first match wins.
CATEGORIES = (
    ("attention", re.compile(r"cudnn|fmha|flash|attention|splash|sdpa|_attn", re.I)),
    ("collective", re.compile(r"nccl|all-reduce|all-gather|reduce-scatter|all_reduce|all_gather|collective", re.I)),
    ("gemm", re.compile(r"gemm|cublas|cutlass|nvjet|xmma|matmul|\bdot|_dot|convolution|mm_|addmm|\bbmm", re.I)),
    ("copy", re.compile(r"memcpy|memset|\bcopy|copy_|dynamic-update-slice|dynamic_update_slice", re.I)),
    ("sort", re.compile(r"sort|radix|topk|top_k", re.I)),
)

Event = tuple[str, str, float, float]   # (kernel name, hlo op or "", start ns, duration ns)


def category(name: str, op: str = "") -> str:
    text = f"{name} | {op}"
    return next((c for c, pattern in CATEGORIES if pattern.search(text)), "other")


def _union_ns(events: list[Event]) -> float:
    total, end = 0.0, float("-inf")
    for _, _, start, duration in sorted(events, key=lambda e: e[2]):
        stop = start + duration
        if start > end:
            total += duration
        elif stop > end:
            total += stop - end
        end = max(end, stop)
    return total


def summarize(events: Iterable[Event], steps: int, *, source: str, top: int = 12) -> dict:
    """The per-step summary of kernel ``events`` covering ``steps`` calls (see the module docstring).

    Raises:
      ValueError: ``steps`` < 1.
    """
    if steps < 1:
        raise ValueError(f"summarize: steps={steps} must be >= 1")
    events = [e for e in events if e[3] >= 0]
    if not events:
        return {"source": source, "steps": steps, "error": "no kernel events in the trace"}
    window = max(s + d for _, _, s, d in events) - min(s for _, _, s, _ in events)
    busy = _union_ns(events)
    per_step = lambda ns: round(ns / steps / 1e6, 4)
    by_category: dict[str, float] = {}
    by_kernel: dict[tuple[str, str], list[float]] = {}
    for name, op, _, duration in events:
        c = category(name, op)
        by_category[c] = by_category.get(c, 0.0) + duration
        slot = by_kernel.setdefault((name, op), [0, 0.0])
        slot[0] += 1
        slot[1] += duration
    kernel_sum = sum(by_category.values())
    ranked = sorted(by_kernel.items(), key=lambda kv: -kv[1][1])[:top]
    return {
        "source": source, "steps": steps,
        "window_ms": per_step(window), "busy_ms": per_step(busy), "idle_ms": per_step(window - busy),
        "idle_share": round((window - busy) / window, 4) if window > 0 else 0.0,
        "kernels_per_step": round(len(events) / steps, 1),
        "kernel_ms": per_step(kernel_sum),   # summed over kernels: > busy_ms where streams overlap
        "by_category": {c: {"ms": per_step(ns), "share": round(ns / kernel_sum, 4) if kernel_sum else 0.0}
                        for c, ns in sorted(by_category.items(), key=lambda kv: -kv[1])},
        "top": [{"kernel": name[:120], "hlo_op": op or None, "category": category(name, op),
                 "calls_per_step": round(calls / steps, 2), "ms": per_step(ns)}
                for (name, op), (calls, ns) in ranked],
    }


def side_by_side(profiles: dict[str, dict | None]) -> dict | None:
    """``{side: summary or None}`` -> the headline numbers of each side's :func:`summarize`, per key:
    ``{"busy_ms": {side: ms}, ..., "by_category": {category: {side: ms}}}``; None when no side has one."""
    profiles = {side: p if p and "busy_ms" in p else {} for side, p in profiles.items()}
    if not any(profiles.values()):
        return None
    out = {key: {side: p.get(key) for side, p in profiles.items()}
           for key in ("window_ms", "busy_ms", "idle_ms", "idle_share", "kernels_per_step")}
    cats = sorted({c for p in profiles.values() for c in p.get("by_category", {})})
    out["by_category"] = {c: {side: p.get("by_category", {}).get(c, {}).get("ms") for side, p in profiles.items()}
                          for c in cats}
    return out


# ------------------------------------------------------------------------------------------- JAX
def jax_events(xplane_path: str) -> tuple[list[Event], str]:
    """Kernel events of a jax trace file and where they came from ("device" or "cpu thunks")."""
    import jax

    data = jax.profiler.ProfileData.from_file(xplane_path)
    planes = list(data.planes)
    # One device: the first accelerator plane (on a mesh of several, device 0 stands for all).
    device = sorted((p for p in planes if re.match(r"/device:(GPU|TPU|gpu|tpu)", p.name)), key=lambda p: p.name)[:1]
    events: list[Event] = []
    for plane in device:   # the streams' kernels (GPU); "XLA Ops" (TPU); never the derived module/step lines
        lines = list(plane.lines)
        chosen = ([l for l in lines if l.name.startswith("Stream")] or [l for l in lines if l.name == "XLA Ops"]
                  or [l for l in lines if not re.search(r"module|step|source|framework", l.name, re.I)])
        for line in chosen:
            for e in line.events:
                stats = dict(e.stats)
                events.append((e.name, str(stats.get("hlo_op", "")), float(e.start_ns), float(e.duration_ns)))
    if events or jax.devices()[0].platform != "cpu":   # an accelerator without device events: none
        return events, "device"
    for plane in planes:   # CPU: XLA:CPU's thunks (host events that name their HLO op)
        if not plane.name.startswith("/host"):
            continue
        for line in plane.lines:
            for e in line.events:
                stats = dict(e.stats)
                if "hlo_op" in stats and not e.name.startswith("end:"):
                    events.append((e.name, str(stats["hlo_op"]), float(e.start_ns), float(e.duration_ns)))
    return events, "cpu thunks"


def jax_profile(call: Callable[[], object], calls: int = 2, *, steps_per_call: int = 1,
                keep_dir: str | None = None) -> dict:
    """Runs ``call()`` ``calls`` times under ``jax.profiler.trace`` (``call`` must wait for its
    results) and returns :func:`summarize` of the trace per step (``steps_per_call`` steps a call: a
    decode call of N tokens is N steps); ``keep_dir`` keeps the trace there (for TensorBoard /
    xprof), else it is deleted."""
    import jax

    logdir = keep_dir or tempfile.mkdtemp(prefix="lmforge-profile-")
    try:   # a profile that fails is reported in the line, never fatal to the benchmark
        with jax.profiler.trace(logdir):
            for _ in range(calls):
                call()
        files = sorted(glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True))
        if not files:
            return {"source": "jax", "steps": calls * steps_per_call, "error": f"no .xplane.pb under {logdir}"}
        events, source = jax_events(files[-1])
        return summarize(events, calls * steps_per_call, source=f"jax.profiler, {source}")
    except Exception as e:  # noqa: BLE001
        return {"source": "jax.profiler", "error": f"{type(e).__name__}: {str(e)[:300]}"}
    finally:
        if keep_dir is None:
            shutil.rmtree(logdir, ignore_errors=True)


# --------------------------------------------------------------------------------------- PyTorch
def torch_profile(torch, call: Callable[[], object], calls: int = 2, *, steps_per_call: int = 1) -> dict:
    """Runs ``call()`` ``calls`` times under ``torch.profiler`` (``call`` must synchronize) and
    returns :func:`summarize` of its CUDA kernels (CPU: its leaf operators) per step."""
    from torch.profiler import ProfilerActivity, profile

    cuda = torch.cuda.is_available()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    try:   # a profile that fails is reported in the line, never fatal to the benchmark
        with profile(activities=activities) as prof:
            for _ in range(calls):
                call()
    except Exception as e:  # noqa: BLE001
        return {"source": "torch.profiler", "error": f"{type(e).__name__}: {str(e)[:300]}"}
    events: list[Event] = []
    for e in prof.events():
        is_kernel = e.device_type == torch.autograd.DeviceType.CUDA
        if (cuda and is_kernel) or (not cuda and not e.cpu_children):
            start, end = e.time_range.start, e.time_range.end   # microseconds
            events.append((e.name, "", 1e3 * start, 1e3 * (end - start)))
    return summarize(events, calls * steps_per_call, source="torch.profiler, " + ("cuda kernels" if cuda else "cpu leaf ops"))
