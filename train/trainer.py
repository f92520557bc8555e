"""The one trainer: sharded state, the jitted step, and the loop every objective runs on.

A task (pretraining here; SFT and the interrogation stages in ``lmforge.align``; the reward-model,
DPO, PPO and GRPO trainers of the open alignment issues will run on it too, as the DPO sketch in
``tests/align/test_dpo_sketch.py`` does) gives

- a pure ``loss_fn(params, frozen, batch, rng) -> (loss, metrics)`` (contract in ``step.py``),
- its model parameters (born sharded) and any frozen trees (a reference policy, a reward model),
- an iterator of batches (numpy, this process's rows; grain iterators are checkpointed with the
  run so a resume continues on the exact next batch),
- optionally an ``evaluate(trainer) -> {metric: value}`` callable (``BatchEvaluator`` scores a
  fixed list of batches with the same loss),

and the trainer does the rest: optimizer state for the trainable leaves only, one jit of the step
with explicit shardings and the state donated, and :meth:`Trainer.fit`, the loop — periodic
evaluation, ``metrics.jsonl`` + TensorBoard + a progress bar with tokens/s and MFU, async orbax
checkpoints with the data iterator's position, exact resume, SIGTERM/Ctrl-C, and the policy for
non-finite updates. A new trainer is a loss, a pipeline and an eval handed to this class, never a
copy of the loop (STYLE rule 13).

Choices:
- The loop is driven by the state's step, not by a host counter: the host counts dispatched steps
  (dispatch is asynchronous) and re-reads ``state["step"]`` at every sync point (log, eval,
  checkpoint, preemption), where updates skipped as non-finite show up as a step that did not
  advance. ``state["nonfinite"]`` counts them on the device; at each log they are reported on one
  line, and the run stops with a one-line error once more than ``max_nonfinite`` were skipped
  (0: at the first). A skipped update still consumed its batch (the data iterator's position in
  the checkpoint is the true one).
- Preemption: with one process, SIGTERM and SIGINT (Ctrl-C) set a flag the loop checks between
  steps; with several, JAX's preemption service (``jax.distributed`` installs it; SIGTERM reaches
  it) names a sync step at which every process saves — a flag per process could make them save at
  different steps. The loop then saves, waits for the checkpoint and raises :class:`Preempted`
  (the CLI exits with 128 + signal number; rerunning the same command resumes).
- Frozen trees are arguments of the step, not state: they are not donated, not in the optimizer
  and not in checkpoints (an adapter run's checkpoint holds its adapters only).
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import signal
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec
from tqdm import tqdm

from lmforge.model import DEFAULT_RULES, ModelConfig, axis_rules
from lmforge.model.paths import combine, flatten, select
from lmforge.train.curves import CurvePlotter
from lmforge.train.metrics import (MetricsWriter, ProgressBar, Throughput, mfu_peak_label, peak_flops_per_device,
                                   read_metrics)
from lmforge.train.optim import OptimConfig, make_optimizer
from lmforge.train.step import (LossFn, State, data_parallel_axes, global_batch, make_eval_step, make_train_step,
                                reduce_metrics)
from lmforge.weights import Checkpointer, write_base, write_model_config
from lmforge.weights.checkpoint import CheckpointError, NoReadableCheckpoint, tree_digest
from lmforge.weights.pins import pin_step
from lmforge.weights.load import check_base_digest, read_base


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    """The loop's settings; task configs inherit them (``lmforge run EXP.py steps=800``)."""
    steps: int = 1000
    seed: int = 0
    log_every: int = 10
    eval_every: int = 0              # 0 → evaluate only at the end
    eval_on_start: bool = False      # also evaluate the starting weights (step 0) of a fresh run (HF's eval_on_start)
    checkpoint_every: int = 0        # 0 → only at the end (and on SIGTERM / Ctrl-C)
    keep_checkpoints: int = 3
    max_nonfinite: int = 0           # non-finite updates skipped before the run stops; 0 → stop at the first
    prefetch: int = 0                # batches placed on the mesh ahead of the step by a background thread; 0 → none

    def __post_init__(self):
        if self.steps < 1 or self.log_every < 1:
            raise ValueError(f"steps and log_every must be >= 1, got steps={self.steps}, log_every={self.log_every}")
        for name in ("eval_every", "checkpoint_every", "max_nonfinite", "prefetch"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.keep_checkpoints < 1:
            raise ValueError(f"keep_checkpoints must be >= 1, got {self.keep_checkpoints}")


class Preempted(Exception):
    """The run stopped on SIGTERM / SIGINT after saving a checkpoint; rerun to resume."""

    def __init__(self, signum: int, step: int, directory: pathlib.Path):
        self.signum, self.step, self.directory = signum, step, directory
        super().__init__(f"{signal.Signals(signum).name}: saved a checkpoint at step {step} in {directory}; "
                         f"run the same command again to resume")


@dataclasses.dataclass
class FitResult:
    state: State
    step: int
    train: dict[str, float]      # the last logged training metrics
    eval: dict[str, float]       # the last evaluation
    perf: dict[str, float]       # the last throughput figures
    resumed_from: int | None


def _shardings_of(tree: Mapping, shardings: Mapping | None, what: str) -> dict:
    """``shardings`` checked against ``tree``'s structure, or the arrays' own shardings."""
    if shardings is None:
        return jax.tree.map(lambda x: x.sharding, tree)
    if jax.tree.structure(tree) != jax.tree.structure(shardings, is_leaf=lambda x: isinstance(x, NamedSharding)):
        raise ValueError(f"{what} does not have the structure of its parameter tree")
    return dict(shardings)


def _last_logged_train(path: pathlib.Path, step: int) -> dict[str, float]:
    """The ``train/...`` metrics of the last row of metrics.jsonl at or before ``step`` that has them
    ({} when there is none, or the file is not on this process)."""
    if not path.is_file():
        return {}
    rows = [r for r in read_metrics(path) if r["step"] <= step and "train/loss" in r]
    return {k: v for k, v in rows[-1].items() if k.startswith("train/")} if rows else {}


def _replicated(mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def _abstract(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


class Trainer:
    """State, optimizer and the compiled step of one run (see the module docstring).

    Args:
      loss_fn: ``loss_fn(params, frozen, batch, rng) -> (loss, metrics)``.
      params: the model's parameter tree (sharded jax arrays). The trainer takes ownership of the
        trainable leaves: its step donates them, so the caller's arrays are invalid after the first
        step (read ``trainer.params``). A trainable leaf that is also a leaf of a frozen tree (one
        loaded tree used as policy and reference) is copied, so the frozen tree stays intact.
      param_shardings: the same tree of NamedShardings (default: the arrays' own).
      frozen: other trees the loss reads (name -> tree), never trained nor donated; ``"params"``
        is reserved for the model's frozen leaves.
      frozen_shardings: their shardings (default: the arrays' own).
      optim: optimizer settings, including which parameters train (``optim.trainable``).
      loop: the loop's settings.
      mesh, rules: the device mesh and the logical-axis rules.
      model_cfg, base: written into the run folder by :meth:`fit` as ``model.json`` and, when only
        some parameters train, ``base.json`` (where the others come from), so that
        ``lmforge.weights.load_params(workdir)`` can read the run back.
      base_step: the checkpoint step of a run folder ``base`` that the frozen parameters come from
        (``LoadedModel.step``): pinned in that run (``weights.pins.pin_step``), so that its
        pruning keeps the step while this run exists, should it train on.
      per_device: with whole replicas on a pure data mesh, compute each device's gradient on its own
        rows and sum them in one all-reduce (``self.data_parallel``; ``train/step.py``). The loss
        must then be a weighted mean whose metrics are means over ``weight_sum`` (nothing
        batch-wide); False leaves every step to GSPMD. A batch whose rows per device
        ``optim.grad_accum`` does not divide runs under GSPMD either way.

    Raises:
      ValueError: a pattern of ``optim.trainable`` that matches no parameter, no trainable leaf, a
        frozen tree named ``params``, or shardings that do not match their trees.
    """

    def __init__(self, loss_fn: LossFn, *, params: dict, optim: OptimConfig, loop: LoopConfig,
                 mesh: jax.sharding.Mesh, rules=DEFAULT_RULES, param_shardings: dict | None = None,
                 frozen: Mapping | None = None, frozen_shardings: Mapping | None = None,
                 model_cfg: ModelConfig | None = None, base: str | pathlib.Path | None = None,
                 base_step: int | None = None, per_device: bool = True):
        frozen = dict(frozen or {})
        if "params" in frozen:
            raise ValueError("frozen trees may not be named 'params': that name holds the model's frozen leaves")
        param_shardings = _shardings_of(params, param_shardings, "param_shardings")
        frozen_shardings = {k: _shardings_of(v, (frozen_shardings or {}).get(k), f"frozen_shardings[{k!r}]")
                            for k, v in frozen.items()}
        if optim.trainable:
            trainable, frozen_params = select(params, optim.trainable, what="optim.trainable")
            train_sh, frozen_sh = select(param_shardings, optim.trainable, what="optim.trainable")
            if frozen_params:
                frozen["params"], frozen_shardings["params"] = frozen_params, frozen_sh
        else:
            trainable, train_sh = params, param_shardings
        if not list(flatten(trainable)):
            raise ValueError("no trainable parameter: optim.trainable selects none")
        shared = {id(x) for _, x in flatten(frozen)}
        trainable = jax.tree.map(lambda x: jnp.copy(x) if id(x) in shared else x, trainable)
        self.model_cfg, self.base, self.base_step = model_cfg, base, base_step
        self.loss_fn, self.optim, self.loop, self.mesh, self.rules = loss_fn, optim, loop, mesh, rules
        self.tx, self.schedule = make_optimizer(optim, loop.steps)
        rep = _replicated(mesh)
        # Optimizer leaves shaped like the parameters (Adam's mu, nu) take the parameters' shardings;
        # the rest (step counts) are replicated. Zeros would otherwise come out replicated.
        opt_sh = optax.tree_utils.tree_map_params(
            self.tx, lambda _, sh: sh, jax.eval_shape(self.tx.init, trainable), train_sh,
            transform_non_params=lambda _: rep)
        with jax.set_mesh(mesh):
            opt_state = jax.jit(self.tx.init, out_shardings=opt_sh)(trainable)
        zero = lambda: jax.device_put(jnp.zeros((), jnp.int32), rep)   # two buffers: both are donated
        self.state: State = {"params": trainable, "opt_state": opt_state, "step": zero(), "nonfinite": zero()}
        self.state_shardings = {"params": train_sh, "opt_state": opt_sh, "step": rep, "nonfinite": rep}
        self.frozen, self.frozen_shardings = frozen, frozen_shardings
        # Whole replicas on every device: per-device gradients and one all-reduce (step.py).
        self.data_parallel = (data_parallel_axes(mesh, rules, self.state_shardings, frozen_shardings)
                              if per_device else None)
        self._step_fn = make_train_step(loss_fn, self.tx, self.schedule, grad_accum=optim.grad_accum, rules=rules,
                                        data_parallel=self.data_parallel)
        self._eval_fn = make_eval_step(loss_fn, rules=rules, data_parallel=self.data_parallel)
        self._jitted: dict[tuple, Callable] = {}

    # ------------------------------------------------------------------------------ the step
    @property
    def params(self) -> dict:
        """The model's whole parameter tree (trainable leaves from the state, frozen ones put back)."""
        return combine(self.state["params"], self.frozen.get("params", {}))

    def num_trainable(self) -> int:
        return sum(int(np.prod(x.shape)) for _, x in flatten(self.state["params"]))

    def jitted(self, kind: str, batch: Mapping[str, jax.Array]) -> Callable:
        """The jitted ``"train"`` step ``(state, frozen, batch, rng) -> (state, metrics)`` (state donated)
        or ``"eval"`` step ``(params, frozen, batch) -> metrics`` for batches shaped like ``batch``,
        with explicit in/out shardings; ``.lower(...).compile()`` gives the compiled step and its
        memory analysis ahead of time."""
        key = (kind,) + tuple((k, v.shape, str(v.dtype)) for k, v in sorted(batch.items()))
        if key not in self._jitted:
            batch_sh = {k: v.sharding for k, v in batch.items()}
            rep = _replicated(self.mesh)
            if kind == "train":
                self._jitted[key] = jax.jit(
                    self._step_fn, in_shardings=(self.state_shardings, self.frozen_shardings, batch_sh, rep),
                    out_shardings=(self.state_shardings, rep), donate_argnums=(0,))
            else:
                self._jitted[key] = jax.jit(
                    self._eval_fn, in_shardings=(self.state_shardings["params"], self.frozen_shardings, batch_sh),
                    out_shardings=rep)
        return self._jitted[key]

    def global_batch(self, local: Mapping[str, np.ndarray]) -> dict:
        return global_batch(local, self.mesh, self.rules)

    def batches(self, dataset) -> Iterator[dict]:
        """An iterator over ``dataset`` (a ``grain.IterDataset`` of this process's numpy batches) for
        :meth:`fit`: with ``loop.prefetch`` > 0 a background thread turns the next ``prefetch``
        batches into global arrays on the mesh (:meth:`global_batch`) while the step runs (grain's
        ``ThreadPrefetchIterDataset``; the checkpointed position stays that of the batches consumed).
        Off by default: on the 2-core CPU machine the nanoGPT recipe's step was no faster with it (the
        batch's 2 ms of host work moves to a thread that competes with XLA's for the two cores;
        benchmarks/README.md); not yet measured on an accelerator. Close it (``.close()``) when done:
        it stops the thread."""
        if self.loop.prefetch:
            import grain
            dataset = grain.experimental.ThreadPrefetchIterDataset(dataset.map(self.global_batch),
                                                                   prefetch_buffer_size=self.loop.prefetch)
        return iter(dataset)

    def train_step(self, batch: Mapping[str, Any], rng: jax.Array) -> dict:
        """One update on ``batch`` (global jax arrays, or this process's numpy rows); returns the
        step's metrics (device arrays: reading them waits for the step)."""
        if not all(isinstance(v, jax.Array) for v in batch.values()):
            batch = self.global_batch(batch)
        with jax.set_mesh(self.mesh), axis_rules(self.rules):
            self.state, metrics = self.jitted("train", batch)(self.state, self.frozen, batch, rng)
        return metrics

    def eval_step(self, batch: Mapping[str, Any]) -> dict:
        """The loss's metrics on ``batch`` (no dropout), including ``weight_sum``."""
        if not all(isinstance(v, jax.Array) for v in batch.values()):
            batch = self.global_batch(batch)
        with jax.set_mesh(self.mesh), axis_rules(self.rules):
            return self.jitted("eval", batch)(self.state["params"], self.frozen, batch)

    # ------------------------------------------------------------------------------ the loop
    def fit(self, data: Iterator[Mapping[str, np.ndarray]], workdir: pathlib.Path, *,
            evaluate: Callable[[Trainer], dict[str, float]] | None = None, tokens_per_step: int | None = None,
            flops_per_token: float | None = None, peak_flops: float | None = None,
            on_eval: Callable[[int, dict], None] | None = None,
            host_metrics: Callable[[], dict[str, float]] | None = None) -> FitResult:
        """Trains until ``state["step"] == loop.steps``, resuming from ``workdir/checkpoints`` if any.

        Args:
          data: an iterator of local batches (numpy) or of global arrays (:meth:`batches` with prefetch); a
            grain iterator is checkpointed with the run.
          workdir: the run folder (``metrics.jsonl``, ``tb/``, ``checkpoints/``).
          evaluate: called at ``eval_every`` steps and at the end (and at step 0 of a fresh run with
            ``eval_on_start``); its metrics go to metrics.jsonl.
          tokens_per_step, flops_per_token: for tokens/s and MFU in the logs (optional).
          peak_flops: one device's peak FLOP/s for MFU (default: its bfloat16 peak, or on CPU a
            measured float32 matmul rate; see ``lmforge.train.metrics.peak_flops_per_device``).
          on_eval: called with (step, metrics) after each evaluation (e.g. a line on screen).
          host_metrics: called at each logged step; what it returns (metrics computed on the host since
            its last call, such as an RL rollout's rewards and lengths) is logged beside the step's.

        Raises:
          FloatingPointError: more than ``max_nonfinite`` updates were skipped as non-finite.
          Preempted: SIGTERM or SIGINT arrived; a checkpoint was saved first.
        """
        loop, workdir = self.loop, pathlib.Path(workdir)
        ckpt = Checkpointer(workdir / "checkpoints", keep=loop.keep_checkpoints)
        data_state = data if hasattr(data, "get_state") else None
        try:
            restored = ckpt.restore(_abstract(self.state), data_state)
        except NoReadableCheckpoint as e:   # resuming: what to do about it (a reader's message has no advice)
            raise CheckpointError(f"{e}; move them aside to start this run from scratch") from None
        start = int(jax.device_get(self.state["step"]))       # steps already taken with train_step
        if restored is not None:
            start, self.state = restored
            print(f"resumed from step {start} in {ckpt.directory}", flush=True)
        base_digest = self._base_digest(workdir, resuming=restored is not None)
        if jax.process_index() == 0:
            self._write_run_files(workdir, base_digest)
        rng = jax.random.key(loop.seed)
        # Rows after the checkpoint resumed from (or every row, on a fresh start) are dropped: the run
        # logs those steps again, so the file holds exactly one row per logged step.
        # (-1 on a fresh start: a step-0 evaluation of an earlier attempt is dropped too)
        writer = MetricsWriter(workdir, resume_step=start if restored is not None else -1)
        if flops_per_token and peak_flops is None:
            peak_flops = peak_flops_per_device(jax.devices()[0])
        throughput = Throughput(flops_per_token=flops_per_token or 0.0, peak_flops=peak_flops if flops_per_token else None,
                                num_devices=jax.device_count())
        bar = ProgressBar(total=loop.steps, initial=start, desc="train",
                          mfu_peak=mfu_peak_label(jax.devices()[0], peak_flops) if flops_per_token else "")
        curves = CurvePlotter(workdir, enabled=jax.process_index() == 0)   # drawn on a thread
        # A resumed run starts from the training metrics it last logged, so a run resumed at its last
        # step (which trains nothing) still reports its final loss.
        last = _last_logged_train(writer.path, start) if restored is not None else {}
        perf: dict[str, float] = {}
        evals: dict[str, float] = {}
        nonfinite_seen = int(jax.device_get(self.state["nonfinite"]))
        logged_step = last_written = start

        def run_eval(step: int) -> dict[str, float]:
            metrics = evaluate(self) if evaluate is not None else {}
            if metrics:
                writer.write(step, metrics)
                if on_eval is not None:
                    on_eval(step, metrics)
            if jax.process_index() == 0:
                curves.request()
            throughput.restart()
            return metrics

        try:
            with _Preemption() as preemption:
                step = start
                if loop.eval_on_start and restored is None and start == 0:   # the starting point, at step 0
                    run_eval(0)
                while step < loop.steps:
                    metrics = self.train_step(next(data), rng)
                    step += 1                                   # dispatched; the state's step may lag
                    log = step % loop.log_every == 0 or step == loop.steps
                    do_eval = loop.eval_every and step % loop.eval_every == 0 and step < loop.steps
                    do_ckpt = loop.checkpoint_every and step % loop.checkpoint_every == 0
                    preempted = preemption.reached(step)
                    if not (log or do_eval or do_ckpt or preempted):
                        bar.update(step, perf)
                        continue
                    fetched = jax.device_get({"m": metrics, "step": self.state["step"],
                                              "nonfinite": self.state["nonfinite"]})
                    step, nonfinite = int(fetched["step"]), int(fetched["nonfinite"])
                    if nonfinite > nonfinite_seen:
                        self._report_nonfinite(nonfinite - nonfinite_seen, nonfinite, step, ckpt)
                        nonfinite_seen = nonfinite
                    if log and step > last_written:
                        last = {k: float(v) for k, v in fetched["m"].items() if k != "train/nonfinite"}
                        last["train/nonfinite_steps"] = float(nonfinite)
                        if host_metrics is not None:
                            last.update(host_metrics())
                        # Timed here, after the fetch has waited for the step: dispatch is
                        # asynchronous, so the time between dispatches says nothing about the device.
                        # The first update after a restart (an evaluation, a checkpoint) only starts
                        # the clock: that line gets no perf/* keys rather than the previous window's.
                        fresh = (throughput.update(step, tokens_per_step * (step - logged_step))
                                 if tokens_per_step else {})
                        perf = fresh or perf   # the progress bar and FitResult keep the last measurement
                        logged_step = last_written = step
                        writer.write(step, {**last, **fresh})
                        bar.update(step, {"loss": last.get("train/loss", math.nan), **perf})
                    if do_eval and step < loop.steps:
                        evals = run_eval(step)
                    if do_ckpt or preempted:
                        ckpt.save(step, self.state, data_state, force=bool(preempted))
                        throughput.restart()
                    if preempted:
                        ckpt.wait()
                        raise Preempted(preemption.signum, step, ckpt.directory)
                bar.close()
                ckpt.save(step, self.state, data_state, force=True)
                if restored is None or start < loop.steps or not evals:
                    evals = run_eval(step)
                ckpt.wait()
        finally:
            bar.close()
            writer.close()
            ckpt.close()
            curves.close()
        return FitResult(state=self.state, step=step, train=last, eval=evals, perf=perf,
                         resumed_from=start if restored is not None else None)

    def _base_digest(self, workdir: pathlib.Path, *, resuming: bool) -> str | None:
        """The digest of the frozen parameters (``tree_digest``, on every process) when a base is named.
        A resumed run's must equal the one its base.json recorded: its checkpoint trained over those.
        Raises WeightsError if it does not."""
        if self.base is None or "params" not in self.frozen:
            return None
        digest = tree_digest(self.frozen["params"])
        record = read_base(workdir) if resuming else None
        if record is not None:
            check_base_digest(workdir, record, digest)
            if not record.get("digest") and jax.process_index() == 0:   # written before base.json held one
                print(f"lmforge: {workdir / 'base.json'} records no digest of the weights the run was trained over "
                      f"(an older run): {record['source']} as it is now is taken as those, and its digest recorded",
                      file=sys.stderr, flush=True)
        return digest

    def _write_run_files(self, workdir: pathlib.Path, base_digest: str | None) -> None:
        """model.json (and base.json when only part of the model trains): what load_params reads."""
        if self.model_cfg is not None:
            write_model_config(workdir, self.model_cfg)
        if base_digest is not None:
            write_base(workdir, self.base, base_digest)
            if self.base_step is not None and pin_step(self.base, self.base_step, by=workdir) and \
                    not (pathlib.Path(self.base) / "checkpoints" / str(self.base_step)).is_dir():
                print(f"lmforge: step {self.base_step} of {self.base}, which this run trains over, was pruned while "
                      f"the run started (the base run trains on); the run will not load once it ends: stop it, "
                      f"or keep a copy of the base's weights", file=sys.stderr, flush=True)

    def _report_nonfinite(self, new: int, total: int, step: int, ckpt: Checkpointer) -> None:
        if total > self.loop.max_nonfinite:
            ckpt.wait()
            latest = ckpt.latest_step()
            kept = (f"checkpoints up to step {latest} are intact" if latest is not None
                    else "no checkpoint was written")
            raise FloatingPointError(
                f"{total} update(s) skipped because the loss or the gradient norm was not finite (the last "
                f"before step {step + 1}); more than max_nonfinite={self.loop.max_nonfinite}; {kept}: lower "
                f"optim.lr, raise optim.warmup_steps, or allow skips with max_nonfinite=N")
        _say(f"warning: {new} non-finite update(s) skipped before step {step + 1} ({total} in all; the run "
             f"stops after {self.loop.max_nonfinite})", err=True)


class BatchEvaluator:
    """The loss's metrics over a fixed list of (global, numpy) batches, reduced by their weight.

    Every process scores its rows of each batch; ``eval/<metric>`` comes back, the mean over all
    batches weighted by ``weight_sum`` (``eval/weight_sum`` is the total). ``derive`` adds metrics
    computed from those (perplexity, bits per byte).

    A batch with fewer than ``rows`` rows (the last one of a split) is padded with all-zero rows so
    every batch compiles to one shape: the loss must give an all-zero row no weight (a zero mask or
    zero ``weights``, as every lmforge batch has for padding).
    """

    def __init__(self, batches: list[Mapping[str, np.ndarray]], *, rows: int,
                 derive: Callable[[dict[str, float]], dict[str, float]] | None = None):
        self.batches = [_pad_rows(b, rows) for b in batches]
        self.derive = derive

    def __call__(self, trainer: Trainer) -> dict[str, float]:
        p, n = jax.process_index(), jax.process_count()
        outs = []
        for b in self.batches:
            rows = next(iter(b.values())).shape[0] // n
            outs.append(trainer.eval_step({k: v[p * rows:(p + 1) * rows] for k, v in b.items()}))
        metrics = reduce_metrics(outs)
        if self.derive is not None:
            metrics.update(self.derive(metrics))
        return {f"eval/{k}": v for k, v in metrics.items()}


def _pad_rows(batch: Mapping[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
    n = next(iter(batch.values())).shape[0]
    if n == rows:
        return dict(batch)
    if n > rows:
        raise ValueError(f"eval batch has {n} rows, more than the global batch {rows}")
    return {k: np.concatenate([v, np.zeros((rows - n, *v.shape[1:]), v.dtype)]) for k, v in batch.items()}


def _say(line: str, *, err: bool = False) -> None:
    """A log line that does not break the progress bar (process 0 only); warnings go to stderr."""
    if jax.process_index() == 0:
        tqdm.write(line, file=sys.stderr if err else sys.stdout)


class _Preemption:
    """SIGTERM / SIGINT -> save and stop. One process: a flag set by our handler. Several: JAX's
    preemption sync point (its service catches SIGTERM), so every process saves at the same step."""

    def __init__(self):
        self.signum = signal.SIGTERM
        self._flag = False
        self._old: dict[int, Any] = {}

    def __enter__(self):
        if jax.process_count() > 1:
            return self      # our own handler would replace the preemption service's
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:   # not the main thread: no handler, like any library call
                pass
        return self

    def _handle(self, signum, frame):
        if self._flag and signum == signal.SIGINT:   # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self._flag, self.signum = True, signum
        if signum == signal.SIGINT:
            _say("Ctrl-C: saving a checkpoint after this step (press again to stop at once)", err=True)

    def reached(self, step: int) -> bool:
        if jax.process_count() > 1:
            return multihost_utils.reached_preemption_sync_point(step)
        return self._flag

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


__all__ = ["LoopConfig", "Trainer", "FitResult", "BatchEvaluator", "Preempted"]
