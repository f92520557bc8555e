"""The fixed cost of a run: start-up to the first step, and everything after the last, by phase.

    python benchmarks/fixed_cost.py             # 1 cold + 3 warm runs of shakespeare_char.py:cpu_tuned steps=20
    python benchmarks/fixed_cost.py --runs 5 --steps 50 --experiment experiments/shakespeare_char.py:cpu
    python benchmarks/fixed_cost.py --cache off   # every run compiles everything

The runs share a persistent compilation cache folder of their own (``LMFORGE_COMPILATION_CACHE``,
see ``lmforge.train.compile_cache``), empty at the start: the first run is *cold* (it compiles
every program and fills the folder), the ``--runs`` after it are *warm* (a researcher's second
run of an experiment). ``--cache off`` turns the cache off for every run instead.

Each run is a fresh process (``--child``) that runs ``lmforge run EXP steps=N --workdir <new folder>``
through ``lmforge.cli.main.console_main`` (the console script), with timers wrapped around the
runner's pieces — reading the documents, the tokenizer, the mesh, the model's init, the Trainer
(optimizer state), the data pipeline, the checkpointer, the metrics writer, the CPU peak
measurement, the first step, the evaluation, the curves plot, the checkpoint save/wait and the
sample — by replacing those functions with timing wrappers before the run starts. Nothing is timed
inside the loop: the first ``Trainer.train_step`` call is timed (waited for) and the wrapper then
puts the original method back. The parent process times the interpreter start (spawn to the
child's first line) and the exit.

Prints one JSON object: every run's phases (seconds) and milestones, the cold run's, and the median
of each over the warm runs (over all runs with ``--cache off``). ``before_first_step_s`` is spawn
-> the first step done; ``after_last_step_s`` is the end of the loop (the final checkpoint's save
call) -> the process gone; ``fixed_s`` is their sum.
"""

from __future__ import annotations

import time

T_CHILD = time.time()   # the child's first line: interpreter start-up ends here

import argparse
import contextlib
import functools
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fixed_cost.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", default="experiments/shakespeare_char.py:cpu_tuned")
    parser.add_argument("--steps", type=int, default=20, help="training steps per run (default 20)")
    parser.add_argument("--runs", type=int, default=3,
                        help="warm runs after the cold one; medians are over these (default 3)")
    parser.add_argument("--cache", choices=("on", "off"), default="on",
                        help="on: one cold run fills a fresh compilation cache, then --runs warm ones (default)")
    parser.add_argument("--child", metavar="WORKDIR", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 1 or args.runs < 1:
        parser.error("need --steps >= 1 and --runs >= 1")
    return args


# ------------------------------------------------------------------------------ the child
class Recorder:
    def __init__(self):
        self.events: list[tuple[str, float, float]] = []

    def wrap(self, owner, name: str, phase: str, *, once: bool = False, block: bool = False):
        original = getattr(owner, name)

        @functools.wraps(original)
        def timed(*a, **kw):
            start = time.time()
            out = original(*a, **kw)
            if block:
                import jax
                jax.block_until_ready(out)
            self.events.append((phase, start, time.time()))
            if once:
                setattr(owner, name, original)     # out of the way before the next call
            return out
        setattr(owner, name, timed)

    @contextlib.contextmanager
    def span(self, phase: str):
        start = time.time()
        yield
        self.events.append((phase, start, time.time()))


def child(args) -> None:
    rec = Recorder()
    with rec.span("imports (lmforge, jax, flax, optax, orbax, grain)"):
        from lmforge.cli import main as cli
        from lmforge.infer import Sampler
        from lmforge.train import pretrain, trainer
        from lmforge.weights import Checkpointer
    rec.wrap(pretrain, "read_documents", "data: read documents")
    rec.wrap(pretrain, "prepare_tokenizer", "tokenizer (train + save)")
    rec.wrap(pretrain, "make_mesh", "mesh (JAX backend start)")
    rec.wrap(pretrain, "create_sharded", "model init (abstract trace + init)")
    rec.wrap(trainer.Trainer, "__init__", "trainer init (optimizer state)")
    rec.wrap(pretrain, "train_dataset", "data: training pipeline")
    rec.wrap(pretrain, "eval_batches", "data: validation batches")
    rec.wrap(pretrain, "peak_flops_per_device", "CPU peak FLOP/s measurement")
    rec.wrap(Checkpointer, "restore", "checkpoint: look for one to resume")
    rec.wrap(trainer.MetricsWriter, "__init__", "metrics writer (tensorboardX)")
    rec.wrap(trainer.Trainer, "train_step", "first step (compile + run)", once=True, block=True)
    rec.wrap(trainer.BatchEvaluator, "__call__", "evaluation (compile + whole split)")
    rec.wrap(trainer.CurvePlotter, "close", "plot curves: wait for the thread (matplotlib)")
    rec.wrap(Checkpointer, "save", "checkpoint: save")
    rec.wrap(Checkpointer, "wait", "checkpoint: wait")
    rec.wrap(Sampler, "__init__", "sample: sampler init")
    rec.wrap(Sampler, "complete", "sample: generate (compile + decode)")
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
        with rec.span("lmforge run (whole)"):
            status = cli.console_main(["run", args.experiment, f"steps={args.steps}", "--workdir", args.child])
    print(json.dumps({"status": status, "t_child": T_CHILD, "t_end": time.time(),
                      "events": rec.events}), flush=True)


# ------------------------------------------------------------------------------ the parent
def one_run(args, workdir: pathlib.Path, cache: str) -> dict:
    env = {**os.environ, "LMFORGE_COMPILATION_CACHE": cache}
    t_spawn = time.time()
    proc = subprocess.run([sys.executable, __file__, "--child", str(workdir), "--experiment", args.experiment,
                           "--steps", str(args.steps)], capture_output=True, text=True, cwd=ROOT, env=env)
    t_gone = time.time()
    if proc.returncode != 0:
        raise RuntimeError(f"child run failed ({proc.returncode}): {proc.stderr[-2000:]}")
    child_out = json.loads(proc.stdout.strip().splitlines()[-1])
    events = child_out["events"]
    phases: dict[str, float] = {"interpreter start": child_out["t_child"] - t_spawn}
    for phase, start, end in events:
        phases[phase] = phases.get(phase, 0.0) + end - start
    first_done = next(end for phase, _, end in events if phase.startswith("first step"))
    loop_end = min(start for phase, start, _ in events if phase == "checkpoint: save")
    phases["process exit (after main returned)"] = t_gone - child_out["t_end"]
    before = first_done - t_spawn
    after_s = t_gone - loop_end
    return {"phases": {k: round(v, 3) for k, v in phases.items()},
            "before_first_step_s": round(before, 3), "loop_s": round(loop_end - first_done, 3),
            "after_last_step_s": round(after_s, 3), "fixed_s": round(before + after_s, 3),
            "wall_s": round(t_gone - t_spawn, 3)}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        child(args)
        return 0
    runs, cold = [], None
    with tempfile.TemporaryDirectory(prefix="fixed_cost_") as tmp:
        cache = "off" if args.cache == "off" else str(pathlib.Path(tmp) / "xla")
        if args.cache == "on":
            cold = one_run(args, pathlib.Path(tmp) / "cold", cache)
            print(f"cold run: fixed {cold['fixed_s']:.1f} s, wall {cold['wall_s']:.1f} s", file=sys.stderr, flush=True)
        for i in range(args.runs):
            runs.append(one_run(args, pathlib.Path(tmp) / f"run{i}", cache))
            print(f"{'warm ' if cold else ''}run {i + 1}/{args.runs}: fixed {runs[-1]['fixed_s']:.1f} s, "
                  f"wall {runs[-1]['wall_s']:.1f} s", file=sys.stderr, flush=True)
    median = lambda key: round(statistics.median(r[key] for r in runs), 3)
    phases = sorted({p for r in runs for p in r["phases"]}, key=lambda p: -statistics.median(
        r["phases"].get(p, 0.0) for r in runs))
    print(json.dumps({
        "experiment": args.experiment, "steps": args.steps, "cache": args.cache, "cold": cold, "runs": runs,
        "median": {"before_first_step_s": median("before_first_step_s"), "loop_s": median("loop_s"),
                   "after_last_step_s": median("after_last_step_s"), "fixed_s": median("fixed_s"),
                   "wall_s": median("wall_s"),
                   "phases": {p: round(statistics.median(r["phases"].get(p, 0.0) for r in runs), 3) for p in phases}},
        "load_average": os.getloadavg(), "cpus": os.cpu_count(),
    }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
