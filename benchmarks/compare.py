"""lmforge against PyTorch on the same device in one invocation: runs both sides, prints one JSON line.

    python benchmarks/compare.py train gpt2_small --batch-size 16 --seq-len 1024          # GPU: bf16, cuDNN
    python benchmarks/compare.py train llama_1b --batch-size 16 --seq-len 1024 --timeout-s 240
    python benchmarks/compare.py train gpt2_small --sides lmforge --lmforge-args=--scan-layers \\
        --torch-result "$(cat earlier_gpt2_small_line.json)"      # reuse a PyTorch number measured before
    python benchmarks/compare.py recipe --data .gpudata/tinyshakespeare.txt --steps 1000
    python benchmarks/compare.py train gpt2_tiny                                           # CPU: under a minute

``train``: lmforge's side is ``benchmarks/train_throughput.py PRESET --batch-size B --seq-len T
--steps S --warmup W --dtype D [--attention cudnn on GPU] [--lmforge-args ...]``; PyTorch's is
``benchmarks/torch_baseline.py PRESET`` with the same batch, sequence, steps and warmup. The line
has both sides' JSON objects (``lmforge``, ``torch``), the headline numbers side by side and
``ratio_tokens_per_s`` = lmforge / PyTorch. ``flops_match`` says whether both sides count the same
model FLOPs per token (their MFUs then differ only by speed).

``recipe``: nanoGPT's ``train_shakespeare_char`` recipe in both frameworks: ``lmforge run
experiments/shakespeare_char.py:VARIANT data.source.path=DATA steps=S optim.decay_steps=S
[eval_every=E]`` against ``benchmarks/nanogpt_reference.py --recipe VARIANT --data DATA --max-iters
S [--eval-interval E]``: whole-split validation loss and wall times of each (lmforge's whole command
and its runner's own clock; nanoGPT's training loop as it reports it, and its whole command).

Each side is a subprocess of its own (its own device memory, its own compile caches), run one after
the other, never at once. ``--timeout-s`` bounds the pair: the first side gets at most
``--first-share`` of it, the second what is left; a side that runs out is killed with its process
group and the line says so (``errors``), keeping the other side's numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from device_profile import side_by_side   # benchmarks/

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent


_LIVE: set[int] = set()   # process groups of the sides running now


def _kill_live(signum=None, frame=None):
    """Kills the sides' process groups (they run in sessions of their own, so a ``timeout`` around
    this script would not reach them), then exits if called as a signal handler."""
    for pgid in list(_LIVE):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if signum is not None:
        sys.exit(128 + signum)


def run_side(cmd: list[str], timeout: float, env: dict | None = None) -> dict:
    """Runs ``cmd`` in a process group of its own, killed with it after ``timeout`` seconds.

    Returns {"json": the last JSON object on stdout or None, "objects": every JSON object on stdout
    (also those printed before a timeout), "wall_s", "rc", "error", "cmd"}.
    """
    start = time.perf_counter()
    if timeout <= 1:
        return {"json": None, "objects": [], "wall_s": 0.0, "rc": None, "error": "no time left in the budget",
                "cmd": cmd}
    signal.signal(signal.SIGTERM, _kill_live)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env=env, start_new_session=True)   # a group of its own: compile workers die with it
    _LIVE.add(proc.pid)
    try:
        out, err = proc.communicate(timeout=timeout)
        error = None if proc.returncode == 0 else f"exit status {proc.returncode}"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        error = f"timed out after {timeout:.0f} s"
    finally:
        _LIVE.discard(proc.pid)
    wall = time.perf_counter() - start
    sys.stderr.write(err[-4000:] if err else "")
    objects = []
    for line in out.splitlines():
        if line.startswith("{"):
            try:
                objects.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    if error is None and not objects:
        error = "printed no JSON object"
    elif error and objects:
        error += f" (after printing {len(objects)} JSON object(s))"
    result = {"json": objects[-1] if objects else None, "objects": objects, "wall_s": round(wall, 2),
              "rc": proc.returncode, "error": error, "cmd": cmd}
    if error:
        result["stderr_tail"] = (err or "")[-1500:]
    return result


def side_timeouts(total: float, share: float):
    """Yields the first side's timeout, then (after it ran) the second's: what is left of ``total``."""
    start = time.perf_counter()
    yield total * share
    yield total - (time.perf_counter() - start)


def pick(d: dict | None, key: str):
    return None if d is None else d.get(key)


def ratio(a, b):
    return None if not a or not b else round(a / b, 4)


def train(args) -> dict:
    py = sys.executable
    common = ["--batch-size", str(args.batch_size), "--steps", str(args.steps), "--warmup", str(args.warmup)]
    if args.seq_len:
        common += ["--seq-len", str(args.seq_len)]
    lm_cmd = [py, str(HERE / "train_throughput.py"), args.preset, *common, *shlex.split(args.lmforge_args)]
    if args.dtype:
        lm_cmd += ["--dtype", args.dtype]
    if args.attention:
        lm_cmd += ["--attention", args.attention]
    torch_cmd = [py, str(HERE / "torch_baseline.py"), args.preset, *common, *shlex.split(args.torch_args)]
    if args.dtype:
        torch_cmd += ["--dtype", args.dtype]
    budget = side_timeouts(args.timeout_s, args.first_share if len(args.sides) == 2 else 1.0)
    lm = run_side(lm_cmd, next(budget)) if "lmforge" in args.sides else None
    if "torch" in args.sides:
        th = run_side(torch_cmd, next(budget))
    else:
        reused = _reused(args.torch_result)
        th = None if reused is None else {"json": reused, "wall_s": None, "rc": None, "error": None,
                                          "cmd": "reused from --torch-result"}
    L, T = pick(lm, "json"), pick(th, "json")
    fl, ft = pick(L, "model_flops_per_token"), pick(T, "model_flops_per_token")
    line = {
        "figure": args.figure or f"train/{args.preset}", "preset": args.preset,
        "batch": pick(L, "batch") or pick(T, "batch") or args.batch_size,
        "seq_len": pick(L, "seq_len") or pick(T, "seq_len") or args.seq_len,
        "dtype": pick(L, "dtype") or pick(T, "dtype"),
        "device": pick(L, "device_kind") or pick(T, "device_kind"),
        "ratio_tokens_per_s": ratio(pick(L, "tokens_per_s"), pick(T, "tokens_per_s")),
    }
    for key in ("tokens_per_s", "mfu", "step_ms_median", "peak_memory_bytes", "compile_s", "model_flops_per_token",
                "params"):
        line[key] = {"lmforge": pick(L, key), "torch": pick(T, key)}
    line["flops_match"] = None if not (fl and ft) else abs(fl - ft) <= 1e-9 * max(fl, ft)
    line["wall_s"] = {"lmforge": pick(lm, "wall_s"), "torch": pick(th, "wall_s")}
    profile_ms = side_by_side({"lmforge": pick(L, "profile"), "torch": pick(T, "profile")})
    if profile_ms:   # --profile-steps: device time side by side
        line["profile_ms"] = profile_ms
    _problems(line, (("lmforge", lm), ("torch", th)))
    line["lmforge"], line["torch"] = L, T
    if th is not None and th["cmd"] == "reused from --torch-result":
        line["torch_reused_from"] = args.torch_reused_from or "--torch-result"
    return line


def _problems(line: dict, sides) -> None:
    """A side without its result goes to ``errors``; one that printed it and then failed (a slow
    exit past the timeout) keeps its numbers and goes to ``notes``."""
    errors = {k: {"error": v["error"], "stderr_tail": v.get("stderr_tail", "")} for k, v in sides
              if v is not None and v["error"] and v["json"] is None}
    notes = {k: v["error"] for k, v in sides if v is not None and v["error"] and v["json"] is not None}
    if errors:
        line["errors"] = errors
    if notes:
        line["notes"] = notes


def _reused(text: str | None) -> dict | None:
    """A torch_baseline JSON object, or a compare.py line holding one under "torch"."""
    if not text:
        return None
    if os.path.isfile(text):
        text = pathlib.Path(text).read_text()
    try:
        obj = json.loads(text.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        return None
    return obj.get("torch") if "figure" in obj else obj


def recipe(args) -> dict:
    py = sys.executable
    data = pathlib.Path(args.data).resolve()
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="lmforge_recipe_"))
    lm_cmd = [py, "-m", "lmforge.cli.main", "run", f"experiments/shakespeare_char.py:{args.variant}",
              f"data.source.path={data}", "--workdir", str(workdir / "run")]
    ref_cmd = [py, str(HERE / "nanogpt_reference.py"), "--recipe", "gpu" if args.variant in ("gpu", "default") else "cpu",
               "--data", str(data)]
    if args.steps:
        lm_cmd += [f"steps={args.steps}", f"optim.decay_steps={args.steps}"]
        ref_cmd += ["--max-iters", str(args.steps)]
    if args.eval_every:
        lm_cmd += [f"eval_every={args.eval_every}"]
        ref_cmd += ["--eval-interval", str(args.eval_every)]
    lm_cmd += shlex.split(args.lmforge_args)
    ref_cmd += shlex.split(args.nanogpt_args)
    budget = side_timeouts(args.timeout_s, args.first_share)
    try:
        lm = run_side(lm_cmd, next(budget))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    ref = run_side(ref_cmd, next(budget))
    L, R = lm["json"], ref["json"]
    line = {
        "figure": args.figure or f"recipe/shakespeare_char:{args.variant}",
        "steps": args.steps or "recipe", "device": pick(R, "device"),
        "val_loss_whole_split": {"lmforge": pick(L, "final/val_loss"), "nanogpt": pick(R, "val_loss_whole_split")},
        "wall_s_command": {"lmforge": lm["wall_s"], "nanogpt": ref["wall_s"]},
        "wall_s_own_clock": {"lmforge": pick(L, "final/wall_s"), "nanogpt": pick(R, "wall_s")},
        "tokens_per_s_lmforge_logged": pick(L, "final/tokens_per_s"),
        "ms_per_iter_nanogpt": pick(R, "ms_per_iter"),
        "ratio_wall_command": ratio(ref["wall_s"], lm["wall_s"]),
    }
    _problems(line, (("lmforge", lm), ("nanogpt", ref)))
    line["lmforge"] = L
    line["nanogpt"] = None if R is None else {k: v for k, v in R.items() if k != "evals"}
    return line


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="compare.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train-step throughput: train_throughput.py vs torch_baseline.py")
    t.add_argument("preset")
    t.add_argument("--batch-size", type=int, default=8)
    t.add_argument("--seq-len", type=int, default=0, help="0: each script's default")
    t.add_argument("--steps", type=int, default=10)
    t.add_argument("--warmup", type=int, default=3)
    t.add_argument("--dtype", default=None, help="both sides; default: each script's (bf16 on GPU, f32 on CPU)")
    t.add_argument("--attention", default=None, help="lmforge's --attention (the suite passes cudnn on GPU)")
    t.add_argument("--lmforge-args", default="", help="more arguments for train_throughput.py")
    t.add_argument("--torch-args", default="", help="more arguments for torch_baseline.py")
    t.add_argument("--sides", default="lmforge,torch", help="which sides to run (comma-separated)")
    t.add_argument("--torch-result", default=None,
                   help="with --sides lmforge: a torch_baseline JSON (or a compare.py line, or a file) to compare with")
    t.add_argument("--torch-reused-from", default=None,
                   help="with --torch-result: where that PyTorch number was measured (recorded in the line)")
    t.add_argument("--figure", default=None, help="the line's figure name (default train/PRESET)")
    r = sub.add_parser("recipe", help="nanoGPT's shakespeare_char recipe: lmforge run vs nanogpt_reference.py")
    r.add_argument("--data", required=True, help="tinyshakespeare.txt")
    r.add_argument("--variant", default="gpu", help="experiments/shakespeare_char.py variant: gpu or cpu")
    r.add_argument("--steps", type=int, default=0, help="iterations for both (and the lr decay); 0: the recipe's")
    r.add_argument("--eval-every", type=int, default=0, help="evaluation interval for both; 0: each recipe's")
    r.add_argument("--lmforge-args", default="", help="more bindings for lmforge run")
    r.add_argument("--nanogpt-args", default="", help="more arguments for nanogpt_reference.py")
    r.add_argument("--figure", default=None)
    for p in (t, r):
        p.add_argument("--timeout-s", type=float, default=600.0, help="for both sides together (default 600)")
        p.add_argument("--first-share", type=float, default=0.5,
                       help="at most this share of --timeout-s goes to the first side (lmforge); default 0.5")
    args = parser.parse_args(argv)
    if args.command == "train":
        args.sides = [s.strip() for s in args.sides.split(",") if s.strip()]
        if not args.sides or set(args.sides) - {"lmforge", "torch"}:
            parser.error(f"--sides {','.join(args.sides)!r}: expected lmforge, torch or both")
    if args.command == "recipe" and not pathlib.Path(args.data).is_file():
        parser.error(f"--data {args.data}: no such file (tinyshakespeare.txt)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    line = train(args) if args.command == "train" else recipe(args)
    print(json.dumps(line), flush=True)
    return 0 if "errors" not in line else 1


if __name__ == "__main__":
    sys.exit(main())
