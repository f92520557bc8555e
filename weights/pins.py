"""Pinned checkpoint steps: a run keeps the steps other runs were trained over.

A run trained over part of another run's weights (a LoRA run, frozen layers: its ``base.json``
names that base run) pins the base step it was trained over in ``BASE/pins/`` (:func:`pin_step`,
one small JSON file per pinning run and record). So does a run that reads a frozen model from
another run at a step it records (a DPO, GRPO or PPO reference in ``reference.json``, PPO's reward
model in ``reward.json``: ``lmforge.align.common.load_recorded``), so that it can resume. The base run's :class:`~lmforge.weights.Checkpointer` prunes
with :class:`NewestAndPinned`, an orbax preservation policy: the newest ``keep`` steps and every
step pinned by a run that still exists and still names this one as its base (said on stderr when
one is kept beyond ``keep``). So continuing a base run no longer deletes the weights its adapters
need.

Limits: deleting the dependent run (or its base.json) releases the pin; so does moving it, until it
is resumed (resuming pins again, from where it is). A dependent pins when its training starts: a
base run pruning in the minutes between the dependent's load and that pin can still delete the
step (the dependent says so on stderr). With several processes, each reads ``pins/`` when it
prunes; orbax deletes from the primary process.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import sys

import jax

PINS_DIR = "pins"      # RUN/pins/<hash>.json: {"run": a run trained over RUN's weights, "step": the step it used}


BASE_RECORD = "base.json"


def pin_step(run: str | pathlib.Path, step: int, by: str | pathlib.Path, *, record: str = BASE_RECORD) -> bool:
    """Asks the run folder ``run`` to keep its checkpoint step ``step`` while ``by`` -- a run whose
    ``record`` file (``base.json``, ``reference.json``, ...: ``{"source": ...}``) names ``run`` -- exists
    and still names it: ``by`` was trained over, or against, that step's weights and needs them to load
    or resume (see the module docstring). One file per pinning run and record, replaced atomically (a
    later pin of the same pair moves it). Returns False, saying why on stderr, when ``run``'s folder is
    not writable (a read-only shared base: its pruning cannot be told)."""
    by = pathlib.Path(by).resolve()
    directory = pathlib.Path(run) / PINS_DIR
    key = str(by) if record == BASE_RECORD else f"{by}/{record}"   # base pins keep their old file names
    path = directory / (hashlib.sha1(key.encode()).hexdigest()[:16] + ".json")
    try:
        directory.mkdir(exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps({"run": str(by), "step": int(step), "record": record}) + "\n")
        tmp.replace(path)
    except OSError as e:
        _say(f"lmforge: could not pin step {step} of {run} for {by} ({type(e).__name__}: {e.strerror or e}); if "
             f"that run trains on, its pruning may delete the step")
        return False
    return True


def pinned_steps(run: str | pathlib.Path) -> dict[int, list[str]]:
    """{step: the runs pinning it} for the run folder ``run``: pins (:func:`pin_step`) whose run still
    exists and whose record (``base.json`` unless the pin names another) still names ``run``;
    unreadable pin files are skipped."""
    directory = pathlib.Path(run) / PINS_DIR
    if not directory.is_dir():
        return {}
    pinned: dict[int, list[str]] = {}
    here = pathlib.Path(run).resolve()
    for path in sorted(directory.glob("*.json")):
        try:
            pin = json.loads(path.read_text())
            by, step = pathlib.Path(pin["run"]), int(pin["step"])
            base = json.loads((by / pathlib.Path(pin.get("record", BASE_RECORD)).name).read_text())["source"]
        except (OSError, ValueError, KeyError, TypeError):
            continue   # a run deleted (or its base.json) releases its pin
        if pathlib.Path(base).resolve() == here:
            pinned.setdefault(step, []).append(str(by))
    return pinned


class NewestAndPinned:
    """Orbax preservation policy: the newest ``keep`` steps (orbax's ``LatestN``, by the manager's
    order) and the steps runs pinned in ``run`` (:func:`pinned_steps`, read at each pruning)."""

    def __init__(self, keep: int, run: pathlib.Path):
        self.keep, self.run, self._said = keep, run, set()

    def should_preserve(self, checkpoints, *, context=None) -> list[bool]:
        newest = [True] * len(checkpoints) if len(checkpoints) <= self.keep else \
            [False] * (len(checkpoints) - self.keep) + [True] * self.keep
        if all(newest):
            return newest
        pins = pinned_steps(self.run)
        keep = [n or c.step in pins for n, c in zip(newest, checkpoints)]
        for n, c in zip(newest, checkpoints):
            if not n and c.step in pins and c.step not in self._said:
                self._said.add(c.step)
                runs = pins[c.step]
                _say(f"lmforge: keeping checkpoint step {c.step} of {self.run} beyond the newest {self.keep}: "
                     f"{runs[0]}{f' and {len(runs) - 1} more run(s)' if len(runs) > 1 else ''} trained over it "
                     f"({self.run / PINS_DIR}; deleting such a run releases the step)")
        return keep


def _say(line: str) -> None:
    """One line on stderr, from process 0 only."""
    if jax.process_index() == 0:
        print(line, file=sys.stderr, flush=True)
