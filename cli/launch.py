"""Start one run: check the run folder, write ``config.json``, call the task's runner.

``lmforge run`` and every point of ``lmforge sweep`` go through :func:`launch`, so the run folder
conventions (DESIGN.md "Configs and experiments") hold for both.

Re-running into an existing folder resumes it (the runner picks up its latest checkpoint), but
only with the same config (or a larger ``steps``, below): if ``config.json`` is there and differs
while the folder holds a checkpoint (its own, or a stage's in a subfolder), the run is refused
with the differing keys, before anything is written. Comparison is between configs, not between
file texts, so a field added to a dataclass since the folder was written (missing from the old
file, hence at its default) does not block a resume. What a run needs beyond its config (an
``init_from`` that names weights: ``check_runnable``) is checked before anything is written too,
except for a finished run of the same config, which needs nothing.

A finished run (``final.json``: the final metrics, written when its runner returns) is not run
again: ``launch`` says so and returns them, leaving the folder as it is. A resume may change how the
model computes (``COMPUTE_KEYS``: ``model.attention``, ``model.remat``), which rewrites config.json
and says so on stderr. It continues only when asked
for more steps: a config that differs in ``steps`` alone (greater than before) continues from the
latest checkpoint. Its learning-rate schedule is kept as it was: ``optim.decay_steps=0`` meant "the
run's steps", so it is pinned to the old ``steps`` (the cosine has ended; the rate stays at
``min_lr``); bind ``optim.decay_steps`` too to stretch the decay instead. A resume or continuation
whose runner fails before it saves a checkpoint (none of the old ones is readable, a data error)
puts config.json and final.json back as they were: a failed start leaves the folder as it found it.

A folder with no checkpoint (``checkpoints/`` absent, or holding no finalized integer step folder)
locks nothing: a run that failed before its first save (a wrong data path, a batch that does not
divide the mesh) is retried with the corrected command in the same ``--workdir``. Its config.json
is rewritten, and whatever else the failed attempt left there (a tokenizer trained on the wrong
data, curated shards of other thresholds) is moved into ``replaced-<time>/`` inside it, so the new
run reuses nothing the old config made and nothing is deleted; stderr says so.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import pathlib
import sys
from collections.abc import Mapping
from typing import Any

from .bindings import diff
from .config_io import CLASS_KEY, class_path, from_json, to_json
from .errors import ConfigError
from .registry import task_for
from .typecheck import nonfinite_keys

CONFIG_FILE = "config.json"
FINAL_FILE = "final.json"
CHECKPOINT_DIR = "checkpoints"
CONTINUE_KEYS = {"steps", "optim.decay_steps"}
# How the same model computes the same function (the attention kernel, what the backward pass
# recomputes): a resume may change them, e.g. a run begun on GPUs with flash attention continued on
# TPUs with splash.
COMPUTE_KEYS = {"model.attention", "model.remat"}
RUNS_ROOT = pathlib.Path("runs")


def default_workdir(experiment: str | os.PathLike, variant: str, *, suffix: str = "",
                    now: datetime.datetime | None = None) -> pathlib.Path:
    """``runs/<exp-stem>-<variant>[-suffix]-<YYYYmmdd-HHMMSS>`` under the current directory."""
    stamp = (now or datetime.datetime.now()).strftime("%Y%m%d-%H%M%S")
    parts = [pathlib.Path(experiment).stem, variant, *([suffix] if suffix else []), stamp]
    return RUNS_ROOT / "-".join(parts)


def checkpoint_steps(workdir: str | os.PathLike) -> list[int]:
    """The finalized checkpoint steps of a run folder, sorted: integer-named folders under
    ``checkpoints/`` (orbax renames ``<step>.orbax-checkpoint-tmp-*`` to ``<step>`` when a save is done)."""
    directory = pathlib.Path(workdir) / CHECKPOINT_DIR
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit() and p.is_dir())


def _results(workdir: pathlib.Path) -> str:
    """What binds a run folder to its config, in words ("" when nothing does): its checkpoints, or
    those of its stages (a task that runs stages in subfolders, as interrogation does)."""
    steps = checkpoint_steps(workdir)
    if steps:
        return f"checkpoints (steps {_steps(steps)})"
    staged = sorted(d.name for d in workdir.iterdir() if d.is_dir() and checkpoint_steps(d))
    return f"stages with checkpoints ({', '.join(staged)})" if staged else ""


def write_config(config: Any, workdir: pathlib.Path) -> bool:
    """Writes ``workdir/config.json``; returns True when resuming a folder with the same config.

    Raises ConfigError, leaving the folder untouched, if it already holds a different config and a
    checkpoint, or is a non-empty folder that is not a run folder. A different config in a folder
    without a checkpoint replaces the old one (see the module docstring).
    """
    bad = nonfinite_keys(config)
    if bad:
        raise ConfigError(f"config key {bad[0]!r} is {_short(_leaf(config, bad[0]))}; expected a finite number"
                          + (f" (also {', '.join(bad[1:4])})" if len(bad) > 1 else ""))
    path = workdir / CONFIG_FILE
    text = to_json(config)
    if path.exists():
        changed = _changes(config, path)
        if not changed:
            return True
        compute = {k: v for k, v in changed.items() if k in COMPUTE_KEYS}
        if compute and checkpoint_steps(workdir):
            changed = {k: v for k, v in changed.items() if k not in COMPUTE_KEYS}
            if not changed or _is_continuation(changed):
                print(f"lmforge: resuming {workdir} with " + "; ".join(
                    f"{k}: {_short(a)} → {_short(b)}" for k, (a, b) in compute.items()), file=sys.stderr, flush=True)
                if not changed:
                    _write_atomic(path, text)
                    return True
        if _is_continuation(changed) and checkpoint_steps(workdir):
            old_steps, new_steps = changed["steps"]
            (workdir / FINAL_FILE).unlink(missing_ok=True)
            _write_atomic(path, text)
            print(f"lmforge: continuing {workdir} from step {checkpoint_steps(workdir)[-1]} to steps={new_steps} "
                  f"(was {old_steps})", file=sys.stderr, flush=True)
            return True
        held = _results(workdir)
        if held:
            shown = [f"{k}: {_short(a)} → {_short(b)}" for k, (a, b) in list(changed.items())[:6]]
            more = f" and {len(changed) - 6} more" if len(changed) > 6 else ""
            raise ConfigError(f"{path} holds a different config ({'; '.join(shown)}{more}) and {held}; refusing "
                              f"to resume into it — pick a new --workdir or repeat the original bindings")
        _replace_attempt(workdir, changed)
        _write_atomic(path, text)
        return False
    if workdir.exists() and (not workdir.is_dir() or any(workdir.iterdir())):
        # Not a run folder (no config.json) but not empty either: a typo'd --workdir pointing at
        # a data or source folder must not get a run written into it.
        raise ConfigError(f"--workdir {workdir} exists and is not a run folder (it has no {CONFIG_FILE}); "
                          f"give a new or empty folder")
    workdir.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, text)
    return False


def launch(config: Any, workdir: str | os.PathLike) -> dict[str, float]:
    """Runs ``config`` in ``workdir`` through its registered task; returns the final metrics
    (written to ``workdir/final.json``). A finished run with the same config is not run again."""
    workdir = pathlib.Path(workdir)
    task = task_for(config)  # an unknown task fails before anything is written
    if not finished_run(config, workdir):
        check_runnable(config, workdir)   # so does a missing init_from (a finished run needs no weights)
    config = continuation(config, workdir)
    before = _resume_files(workdir)
    resuming = write_config(config, workdir)
    final = workdir / FINAL_FILE
    if resuming and final.is_file():
        longer = (" To train it longer, run it again with a larger steps=" if any(
            f.name == "steps" for f in dataclasses.fields(config)) else "")
        print(f"lmforge: {workdir} is a finished run ({final}); nothing to do.{longer}", file=sys.stderr, flush=True)
        return json.loads(final.read_text())
    try:
        metrics = task.runner(config, workdir)
    except BaseException:
        _put_back(workdir, before)
        raise
    if not isinstance(metrics, Mapping):
        raise TypeError(f"task {task.name!r} runner returned {type(metrics).__name__}; "
                        f"it must return a dict of final metrics")
    metrics = {str(k): _number(v) for k, v in metrics.items()}
    _write_atomic(final, strict_json(metrics, indent=2) + "\n")
    return metrics


def finished_run(config: Any, workdir: pathlib.Path) -> bool:
    """``workdir`` holds a finished run (``final.json``) of this very config: launching it does nothing."""
    path = pathlib.Path(workdir) / CONFIG_FILE
    if not (path.is_file() and (pathlib.Path(workdir) / FINAL_FILE).is_file()):
        return False
    try:
        return not _changes(config, path)
    except ConfigError:
        return False


def check_runnable(config: Any, workdir: pathlib.Path | None = None) -> None:
    """``config.check_runnable(workdir)`` when its class has one: what a run in ``workdir`` needs beyond
    a valid config (an ``init_from`` that names weights, unless the run resumes from its own
    checkpoints), and a ``mesh`` that fits the devices, checked before a workdir is written. Raises ValueError."""
    check = getattr(config, "check_runnable", None)
    if callable(check):
        check(workdir)
    _check_mesh(config)


def _check_mesh(config: Any) -> None:
    """A config's ``mesh`` (an ``lmforge.train.mesh.MeshConfig``) fits the devices there are, before curation,
    a tokenizer or config.json is written (``check_devices``; a multi-process run is checked when it starts)."""
    mesh_module = sys.modules.get("lmforge.train.mesh")   # imported already if the config holds a MeshConfig
    mesh = getattr(config, "mesh", None)
    if mesh_module is None or not isinstance(mesh, mesh_module.MeshConfig):
        return
    distributed = getattr(config, "distributed", None)
    mesh_module.check_devices(mesh, distributed_enabled=bool(getattr(distributed, "enabled", False)))


def continuation(config: Any, workdir: pathlib.Path) -> Any:
    """``config`` with ``optim.decay_steps`` pinned to the old run's steps when it continues a run
    for more steps with ``optim.decay_steps=0`` (see the module docstring), or kept at the value a
    continuation pinned it to when the run's command is given again (to resume it, or to continue it
    once more); else ``config``."""
    path = workdir / CONFIG_FILE
    optim = getattr(config, "optim", None)
    if not path.is_file() or optim is None or not hasattr(optim, "decay_steps") or not checkpoint_steps(workdir):
        return config
    try:
        changed = _changes(config, path)
    except ConfigError:
        return config
    pinned = changed.get("optim.decay_steps", (0, None))[0]
    if pinned and not optim.decay_steps:   # a run continued before: its decay_steps=0 was pinned then
        rest = {k: v for k, v in changed.items() if k != "optim.decay_steps"}
        if not rest or _is_continuation(rest):
            print(f"lmforge: optim.decay_steps=0 keeps {pinned}, the value {path} holds (a continuation pins 0 to "
                  f"the old steps)", file=sys.stderr, flush=True)
            return dataclasses.replace(config, optim=dataclasses.replace(optim, decay_steps=pinned))
    if not _is_continuation(changed) or "optim.decay_steps" in changed or optim.decay_steps:
        return config
    old_steps = changed["steps"][0]
    print(f"lmforge: optim.decay_steps=0 meant the old run's steps: pinned to {old_steps}, so the schedule keeps "
          f"the shape it had; bind optim.decay_steps to stretch the decay", file=sys.stderr, flush=True)
    return dataclasses.replace(config, optim=dataclasses.replace(optim, decay_steps=old_steps))


def _is_continuation(changed: dict[str, tuple[Any, Any]]) -> bool:
    if "steps" not in changed or not set(changed) <= CONTINUE_KEYS:
        return False
    old, new = changed["steps"]
    return isinstance(old, int) and isinstance(new, int) and new > old


def strict_json(value: Any, **kw) -> str:
    """JSON with non-finite floats as null (JSON has no NaN or Infinity; strict parsers reject them)."""
    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v
    return json.dumps(clean(value), allow_nan=False, **kw)


def _changes(config: Any, path: pathlib.Path) -> dict[str, tuple[Any, Any]]:
    """The keys in which ``config`` differs from the one at ``path``; ConfigError if that is no
    lmforge config or one of another task (never replaced, checkpoint or not)."""
    text = path.read_text()
    try:
        recorded = json.loads(text).get(CLASS_KEY)
    except (json.JSONDecodeError, AttributeError):
        raise ConfigError(f"{path} exists but is not a config written by lmforge; "
                          f"refusing to overwrite it — pick a new --workdir") from None
    if recorded != class_path(type(config)):
        raise ConfigError(f"{path} is a {recorded} run, this is a {class_path(type(config))} run; "
                          f"pick a new --workdir")
    return diff(from_json(type(config), text, source=str(path)), config)


def _resume_files(workdir: pathlib.Path) -> tuple[list[int], dict[str, bytes]] | None:
    """What a resume (or continuation) of ``workdir`` may change before its runner restores a checkpoint:
    its checkpoint steps and the bytes of config.json and final.json (None: not a folder with checkpoints)."""
    steps = checkpoint_steps(workdir)
    if not steps or not (workdir / CONFIG_FILE).is_file():
        return None
    return steps, {name: (workdir / name).read_bytes() for name in (CONFIG_FILE, FINAL_FILE)
                   if (workdir / name).is_file()}


def _put_back(workdir: pathlib.Path, before: tuple[list[int], dict[str, bytes]] | None) -> None:
    """After a resume whose runner failed before saving a checkpoint (e.g. none was readable), puts
    config.json and final.json back as they were, so a failed start leaves the folder as it found it
    (the finished run is still finished, and its own command still resumes it). A run that saved a
    checkpoint since has moved on: its folder is left as it is."""
    if before is None or checkpoint_steps(workdir) != before[0]:
        return
    files = before[1]
    changed = [name for name in (CONFIG_FILE, FINAL_FILE) if name in files
               and (not (workdir / name).is_file() or (workdir / name).read_bytes() != files[name])]
    for name in changed:
        tmp = workdir / f".{name}.tmp"
        tmp.write_bytes(files[name])
        os.replace(tmp, workdir / name)
    if changed:
        print(f"lmforge: {workdir} is left as it was ({' and '.join(changed)} put back): the run stopped before "
              f"saving a checkpoint", file=sys.stderr, flush=True)


def _replace_attempt(workdir: pathlib.Path, changed: dict[str, tuple[Any, Any]]) -> None:
    """Moves what an earlier attempt with another config left in ``workdir`` (all but config.json)
    into ``workdir/replaced-<time>/`` and says so on stderr."""
    keys = ", ".join(list(changed)[:4]) + (f" and {len(changed) - 4} more" if len(changed) > 4 else "")
    left = sorted(p for p in workdir.iterdir() if p.name != CONFIG_FILE and not p.name.startswith("replaced-"))
    moved = ""
    if left:
        aside = workdir / f"replaced-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S-%f')}"
        aside.mkdir()
        for p in left:
            os.replace(p, aside / p.name)
        moved = f"; what the earlier attempt left ({', '.join(p.name for p in left[:4])}" \
                f"{', …' if len(left) > 4 else ''}) is moved to {aside.name}/"
    print(f"lmforge: {workdir / CONFIG_FILE} held a different config ({keys}) but no checkpoint; "
          f"rewriting it for this run{moved}", file=sys.stderr, flush=True)


def _write_atomic(path: pathlib.Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written config.json


def _steps(steps: list[int]) -> str:
    return ", ".join(map(str, steps)) if len(steps) <= 3 else f"{steps[0]} … {steps[-1]}"


def _leaf(config: Any, key: str) -> Any:
    value = config
    for part in key.replace("[", ".[").split("."):
        value = value[int(part[1:-1])] if part.startswith("[") else getattr(value, part)
    return value


def _short(value: Any, limit: int = 40) -> str:
    text = "(absent)" if value is dataclasses.MISSING else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _number(value: Any) -> Any:
    """Final metrics as plain floats where they are numbers (jax/numpy scalars included)."""
    if isinstance(value, (bool, str)):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return value
