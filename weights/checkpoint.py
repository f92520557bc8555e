"""Checkpoints of a run: an orbax `CheckpointManager` over `WORKDIR/checkpoints/`.

One step folder `checkpoints/<step>/` holds two items: `state` (any pytree of jax arrays: params,
optimizer state, step, RNG keys, ...) written with `StandardSave`, and `data_iter` (the grain
iterator position, `process_<i>-of-<n>.json`) written with `grain.checkpoint.CheckpointSave`;
runs without an iterator save `state` only.

Choices:
- Async saves (orbax default): `save` returns once the arrays are copied off the accelerator;
  the files are written in a background thread. `wait()` blocks until they are on disk.
- Orbax writes each step into `<step>.orbax-checkpoint-tmp` and renames it when finished. Only
  finalized integer-named folders count as steps; an unfinished tmp folder is ignored (and
  replaced by orbax if the same step is saved again).
- Corruption detection. Orbax itself notices a truncated data file or a garbled b-tree node,
  but NOT a garbled byte inside a compressed chunk (zstd is written without a checksum, so the
  array silently comes back with different values). So each save also writes a 32-bit
  fingerprint per leaf (an order-independent, sharding-independent sum of mixed bits, computed
  on device) into the step's `_CHECKPOINT_METADATA` (orbax `custom_metadata`), and restore
  recomputes it on the restored arrays. A step is *unreadable* when orbax fails to read it, its
  metadata is missing or garbled, an item is missing, or a restored leaf does not match its
  shape, dtype or fingerprint; `restore()` then prints one warning line and falls back to the
  next older step. Nothing on disk is deleted or renamed by a failed restore.
- A checkpoint that is readable but does not fit the model (a leaf's shape or dtype differs, or
  leaves are missing/extra: the user changed the model and reused the workdir) is a user error,
  not corruption: it is found by comparing the step's metadata with `abstract_state` before any
  array is read, and raises `CheckpointError` naming the leaf and both shapes. Dtypes are
  compared strictly (no silent casts: a resumed run continues bit for bit or says why not).
- Saves behind an unreadable step. Orbax refuses to save a step older than its newest one; after
  a fallback from an unreadable step N to M, the saves M < step < N are forced through so the
  resumed run's progress is kept (keep-N pruning then works by insertion order and eventually
  prunes N too). Saving step N itself is skipped with a warning while the unreadable folder is
  there.
- Pinned steps: pruning keeps the newest `keep` steps and those pinned by runs trained over them
  (`lmforge.weights.pins`).
- The fingerprints cost one jitted pass over the state and a host sync per save (small next to
  writing it), and one compile per state layout.
- Orbax/TensorStore print tracebacks and log warnings for a broken step (abandoned reads, even
  seconds later); those are silenced so that a fallback is exactly one line on stderr.
- Multi-process: every process calls `save`/`restore` (orbax coordinates the writes); when a
  restore attempt fails on any process, all processes fall back together.
- One process: orbax's replica-parallel saving (on by default off GPUs) is turned off. It splits
  each replicated array between its replicas so that several hosts share the writing; with one
  host it only adds a device slice per array and replica, each compiled on its own: the first save
  of a 2-device replicated state of the nanoGPT CPU recipe's shapes took 1.9 s with it and 1.0 s
  without (2-core CPU, 2026-11-30; 8 devices cost ~5 s a process in the tests).
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import re
import sys
import traceback
from typing import Any

import grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from lmforge.weights.orbax_quiet import absl_quiet, quiet_orbax
from lmforge.weights.pins import NewestAndPinned

__all__ = ["CheckpointError", "Checkpointer", "NoReadableCheckpoint", "fingerprints", "tree_digest"]

_STATE, _DATA_ITER = "state", "data_iter"
_META_KEY = "lmforge"  # key in orbax custom_metadata: {"fingerprints": {leaf_path: uint32}}


class CheckpointError(RuntimeError):
    """A checkpoint folder cannot be used: no readable step, or it does not fit the model."""


class NoReadableCheckpoint(CheckpointError):
    """Every candidate step of a checkpoint folder is unreadable (:func:`_no_readable`). The message names the
    folder and each step with its reason, and says nothing is changed; a caller that starts a run from the
    folder adds what to do about it (the trainer: move them aside to start from scratch), a reader
    (sample, eval, chat, convert) has nothing to add."""


def _no_readable(directory: pathlib.Path, tried: list[str]) -> NoReadableCheckpoint:
    return NoReadableCheckpoint(f"no readable checkpoint in {directory}: step(s) {'; '.join(tried)} could not be "
                                f"read (they are left as they are)")


class _Unreadable(Exception):
    """Internal: this step is corrupt or partial; try an older one."""


_ONE_HOST_HANDLER: list = []   # the handler registered by _one_host_array_handler, once


def _one_host_array_handler() -> None:
    """With one process, orbax's ``jax.Array`` handler without replica-parallel saving (module
    docstring). Registered once; a handler someone else registered is left alone."""
    handler = ocp.type_handlers.get_type_handler(jax.Array)
    if jax.process_count() > 1 or _ONE_HOST_HANDLER or type(handler) is not ocp.type_handlers.ArrayHandler:
        return
    try:   # orbax's default handler keeps per-array metadata (the dtype of PRNG key arrays) in this store
        from orbax.checkpoint._src.metadata.array_metadata_store import Store
        one_host = ocp.type_handlers.ArrayHandler(use_replica_parallel=False, array_metadata_store=Store())
    except (ImportError, TypeError):   # another orbax: keep its default handler
        return
    _ONE_HOST_HANDLER.append(one_host)
    with absl_quiet():   # orbax warns of any override ("Type handler registry ... overriding"): this one is ours
        ocp.type_handlers.register_type_handler(jax.Array, one_host, override=True)


class Checkpointer:
    """Orbax CheckpointManager over a run's `checkpoints/` folder.

    Async saves, keep the newest `keep` steps (and those pinned by runs trained over them:
    ``lmforge.weights.pins``), items 'state' (a pytree of jax arrays: params,
    opt_state, step, rng ...) and 'data_iter' (a grain iterator, via
    grain.checkpoint.CheckpointSave/Restore; may be None for runs with no iterator).
    """

    def __init__(self, directory: pathlib.Path, *, keep: int = 3, async_save: bool = True):
        if int(keep) < 1:
            raise ValueError(f"Checkpointer keep={keep}: must keep at least 1 checkpoint")
        self.directory = pathlib.Path(directory).absolute()
        self._unreadable: set[int] = set()  # steps this instance found unreadable in restore()
        _one_host_array_handler()
        registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
        registry.add(_STATE, ocp.args.StandardSave, ocp.StandardCheckpointHandler)
        registry.add(_STATE, ocp.args.StandardRestore, ocp.StandardCheckpointHandler)
        registry.add(_DATA_ITER, grain.checkpoint.CheckpointSave)
        registry.add(_DATA_ITER, grain.checkpoint.CheckpointRestore)
        options = ocp.CheckpointManagerOptions(
            preservation_policy=NewestAndPinned(int(keep), self.directory.parent),
            enable_async_checkpointing=async_save, create=True
        )
        with absl_quiet():  # orbax warns per step folder lacking _CHECKPOINT_METADATA
            self._mngr = ocp.CheckpointManager(self.directory, options=options,
                                               handler_registry=registry)

    # ----------------------------------------------------------------------------------- save
    def save(self, step: int, state, data_iter=None, *, force: bool = False) -> bool:
        """Starts saving `state` (and the iterator position) as `step`; returns whether it did.

        Returns False, writing nothing, when `step` is already on disk or (unless `force`) older
        than the newest step there. The iterator's position is read before this returns, so the
        loop may advance it at once; `state` may be donated once this returns.
        """
        step = int(step)
        _check_arrays(state)
        existing = set(self._mngr.all_steps())
        if step in existing:
            if step in self._unreadable:
                _say(f"lmforge: not saving step {step}: {self.directory / str(step)} exists and is "
                     "unreadable; move it aside to save this step again")
            return False
        newer = {s for s in existing if s > step}
        if newer and newer <= self._unreadable:
            force = True  # resuming behind unreadable steps: keep this run's progress
        args = {_STATE: ocp.args.StandardSave(state)}
        if data_iter is not None:
            args[_DATA_ITER] = grain.checkpoint.CheckpointSave(data_iter)
        meta = {_META_KEY: {"fingerprints": _fingerprints(state)}}
        saved = self._mngr.save(step, args=ocp.args.Composite(**args), force=force,
                                custom_metadata=meta)
        return bool(saved)

    # -------------------------------------------------------------------------------- queries
    def latest_step(self) -> int | None:
        """The newest finalized step on disk (not checked for readability), or None."""
        steps = self._mngr.all_steps()
        return max(steps) if steps else None

    def saved_leaves(self, key: str, *, step: int | None = None) -> set[str] | None:
        """Dotted paths of the leaves saved under ``state[key]`` at ``step`` (default: the newest step
        whose metadata reads; older steps of a run hold the same leaves, and :meth:`restore` reports
        the unreadable newer ones as it falls back); None when there is no checkpoint. Reads
        metadata only.

        Raises CheckpointError: ``step`` is not on disk, no candidate step's metadata reads, or the
        state holds no ``key``.
        """
        self.wait()
        with absl_quiet():
            self._mngr.reload()
            steps = sorted(self._mngr.all_steps(), reverse=True)
        if not steps:
            return None
        if step is not None and int(step) not in steps:
            raise CheckpointError(f"no finalized checkpoint step {step} in {self.directory} "
                                  f"(steps there: {sorted(steps)})")
        tried = []
        for s in [int(step)] if step is not None else steps:
            reason = None
            try:
                with quiet_orbax():
                    meta = self._mngr.item_metadata(s)
                tree_meta = meta[_STATE] if _STATE in meta else None
                if tree_meta is None:
                    reason = "the 'state' item or its _METADATA is missing"
            except Exception as e:  # noqa: BLE001 - any failure to read the metadata: try an older step
                reason = _short_reason(e)
            # Agree across processes (as restore does), so that all of them fall back together.
            if jax.process_count() > 1 and int(np.max(multihost_utils.process_allgather(
                    np.int32(reason is not None)))) and reason is None:
                reason = "another process could not read it"
            if reason is not None:
                tried.append((s, reason))
                continue
            tree = getattr(tree_meta, "tree", tree_meta)
            if not isinstance(tree, dict) or key not in tree:
                raise CheckpointError(f"checkpoint step {s} in {self.directory} holds no {key!r} "
                                      f"(it holds {sorted(tree) if isinstance(tree, dict) else type(tree).__name__})")
            return {p[len(key) + 1:].replace("/", ".") for p in _flat({key: tree[key]})}
        if step is not None:
            raise CheckpointError(f"checkpoint step {step} in {self.directory} is unreadable ({tried[0][1]})")
        raise _no_readable(self.directory, [f"{s} ({r})" for s, r in tried])

    def all_steps(self) -> list[int]:
        """All finalized steps on disk, oldest first."""
        return sorted(self._mngr.all_steps())

    # -------------------------------------------------------------------------------- restore
    def restore_params(self, abstract_params, *, step: int | None = None, key: str = "params"
                       ) -> tuple[int, Any] | None:
        """Restores only ``state[key]`` (the parameters: no optimizer state is read) onto the
        shardings of ``abstract_params``; ``(step, params)`` or None if there is no checkpoint.

        The other leaves of the saved state are orbax placeholders: they are never read from disk
        or placed on a device, so sampling or exporting a run needs memory for its parameters
        only. Fallback to older steps, fingerprint checks and errors are as in :meth:`restore`.
        """
        out = self.restore({key: abstract_params}, step=step, partial=True)
        return None if out is None else (out[0], out[1][key])

    def restore(self, abstract_state, data_iter=None, *, step: int | None = None, partial: bool = False
                ) -> tuple[int, Any] | None:
        """Restores `(step, state)` onto the shardings of `abstract_state`; None if no checkpoint.

        `abstract_state` is a pytree of `jax.ShapeDtypeStruct` with `.sharding` (arrays are
        also accepted and stand for their own shape, dtype and sharding); restored arrays are
        placed on those shardings, whatever the shardings at save time. `data_iter`, when given,
        is moved to the saved position in place. With `step=None` the newest readable step is
        used (unreadable newer ones are reported on one line each and skipped); with an explicit
        `step` there is no fallback. `partial=True` restores only the leaves of `abstract_state`
        (a subset of the saved tree: whole top-level entries such as `{"params": ...}`).

        Raises CheckpointError when no step is readable, or when a step does not fit
        `abstract_state` (a leaf's shape or dtype, or the set of leaves).
        """
        abstract_state = _check_abstract(abstract_state)
        self.wait()
        with absl_quiet():
            self._mngr.reload()  # see the disk as it is now, steps sorted
        available = sorted(self._mngr.all_steps(), reverse=True)
        if step is not None:
            if int(step) not in available:
                raise CheckpointError(
                    f"no finalized checkpoint step {step} in {self.directory} "
                    f"(steps there: {sorted(available) or 'none'})")
            candidates = [int(step)]
        else:
            candidates = available
        if not candidates:
            return None

        tried: list[str] = []
        for i, s in enumerate(candidates):
            try:
                state = self._restore_step(s, abstract_state, data_iter, partial)
            except _Unreadable as e:
                reason = str(e)
                self._unreadable.add(s)
                tried.append(f"{s} ({reason})")
                if i + 1 < len(candidates):
                    _say(f"lmforge: checkpoint step {s} in {self.directory} is unreadable "
                         f"({reason}); falling back to step {candidates[i + 1]}")
                continue
            return s, state
        raise _no_readable(self.directory, tried)

    def _restore_step(self, step: int, abstract_state, data_iter, partial: bool = False):
        """One attempt; raises _Unreadable (corrupt/partial) or CheckpointError (user error)."""
        error: CheckpointError | None = None
        reason: str | None = None
        expected = None
        try:
            with quiet_orbax():
                expected = self._check_fits(step, abstract_state, partial)
                if partial:   # read only these leaves of the step's state item (the same on-disk format)
                    state = ocp.Checkpointer(ocp.PyTreeCheckpointHandler()).restore(
                        self.directory / str(step) / _STATE, args=ocp.args.PyTreeRestore(
                            item=abstract_state, partial_restore=True,
                            restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_state)))
                else:
                    args = {_STATE: ocp.args.StandardRestore(abstract_state)}
                    if data_iter is not None:
                        args[_DATA_ITER] = grain.checkpoint.CheckpointRestore(data_iter)
                    state = self._mngr.restore(step, args=ocp.args.Composite(**args))[_STATE]
                _verify(state, abstract_state, expected)
        except CheckpointError as e:
            error = e
        except _Unreadable as e:
            reason = str(e)
        except Exception as e:  # noqa: BLE001 - any failure to read a step means "unreadable"
            reason = _short_reason(e)
            if any("grain" in frame.filename for frame in traceback.extract_tb(e.__traceback__)):
                reason = f"{_DATA_ITER}: {reason}"
        # Agree across processes, so that all of them fall back (or raise) together.
        status = 2 if error is not None else (1 if reason is not None else 0)
        if jax.process_count() > 1:
            all_status = multihost_utils.process_allgather(np.int32(status))
            status = int(np.max(all_status))
            if status == 1 and reason is None:
                reason = "another process could not read it"
            if status == 2 and error is None:
                error = CheckpointError(
                    f"checkpoint step {step} in {self.directory} does not fit the model "
                    "(reported by another process)")
        if status == 2:
            raise error
        if status == 1:
            raise _Unreadable(reason)
        return state

    def _check_fits(self, step: int, abstract_state, partial: bool = False) -> dict[str, int]:
        """Compares the step's metadata with `abstract_state` (with `partial`, only the leaves it
        holds); returns the saved fingerprints of those leaves."""
        try:
            meta = self._mngr.item_metadata(step)
            tree_meta = meta[_STATE] if _STATE in meta else None
        except Exception as e:  # noqa: BLE001
            raise _Unreadable(f"metadata: {_short_reason(e)}") from e
        if tree_meta is None:
            raise _Unreadable("the 'state' item or its _METADATA is missing")
        on_disk = _flat(getattr(tree_meta, "tree", tree_meta))
        wanted = _flat(abstract_state)
        missing = sorted(wanted.keys() - on_disk.keys())
        extra = [] if partial else sorted(on_disk.keys() - wanted.keys())
        where = f"checkpoint step {step} in {self.directory}"
        if missing or extra:
            raise CheckpointError(
                f"{where} does not fit the model (did the model or optimizer change since it was "
                f"written?): leaves missing from the checkpoint: {_few(missing)}; leaves in the "
                f"checkpoint but not in the model: {_few(extra)}")
        for path, want in wanted.items():
            shape, dtype = _storage_shape_dtype(want)
            have = on_disk[path]
            if tuple(have.shape) != shape or np.dtype(have.dtype) != dtype:
                raise CheckpointError(
                    f"{where} does not fit the model: leaf '{path}' is "
                    f"{np.dtype(have.dtype).name}{tuple(have.shape)} on disk but "
                    f"{dtype.name}{shape} is expected (did the model size or dtype change? use a "
                    "new --workdir, or the old config)")
        try:
            custom = self._mngr.metadata(step).custom_metadata or {}
            fingerprints = custom[_META_KEY]["fingerprints"]
        except Exception as e:  # noqa: BLE001
            raise _Unreadable("_CHECKPOINT_METADATA or its lmforge fingerprints are missing") from e
        if partial:
            fingerprints = {k: v for k, v in fingerprints.items() if k in wanted}
        if not set(fingerprints) <= set(wanted):
            raise _Unreadable("the fingerprints in _CHECKPOINT_METADATA do not match the leaves")
        return fingerprints

    # ---------------------------------------------------------------------------- lifecycle
    def wait(self) -> None:
        """Blocks until every started save is on disk."""
        self._mngr.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and releases orbax's threads."""
        self._mngr.wait_until_finished()
        self._mngr.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ------------------------------------------------------------------------------- fingerprints
def _digest(x: jax.Array) -> jax.Array:
    """A uint32 digest of x's bits and positions: an integer sum, so independent of sharding.

    Every step of the per-element mix is a bijection of the element's bits, so a change to any
    single element always changes the digest.
    """
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    if jnp.iscomplexobj(x):
        x = jnp.stack([x.real, x.imag], axis=-1)
    if x.dtype == jnp.bool_:
        bits = x.astype(jnp.uint32)
    else:
        info = jnp.finfo if jnp.issubdtype(x.dtype, jnp.floating) else jnp.iinfo
        width = info(x.dtype).bits
        if width < 8:  # int4, float4 ...: float32 holds them exactly
            x, width = x.astype(jnp.float32), 32
        utype = {8: jnp.uint8, 16: jnp.uint16, 32: jnp.uint32, 64: jnp.uint32}[width]
        bits = jax.lax.bitcast_convert_type(x, utype).astype(jnp.uint32)  # 64-bit: (..., 2)
    index = jnp.zeros(bits.shape, jnp.uint32)
    stride = 1
    for dim in reversed(range(bits.ndim)):
        iota = jax.lax.broadcasted_iota(jnp.uint32, bits.shape, dim)
        index = index + iota * jnp.uint32(stride % 2**32)
        stride *= bits.shape[dim]
    h = bits ^ (index * jnp.uint32(0x9E3779B9))
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    return jnp.sum(h, dtype=jnp.uint32)


def _digest_all(xs: list[jax.Array]) -> jax.Array:
    return jnp.stack([_digest(x) for x in xs])  # (len(xs),) uint32


def _host_digest(x: np.ndarray) -> int:
    """:func:`_digest` in numpy, bit for bit (uint32 arithmetic wraps alike): the same bits, the
    same mix, the element's row-major index, a wrapping uint32 sum."""
    if x.dtype == np.bool_:
        bits = x.astype(np.uint32)
    else:
        width = x.dtype.itemsize * 8
        utype = {8: np.uint8, 16: np.uint16, 32: np.uint32, 64: np.uint32}[width]
        # 64-bit: the two 32-bit words of each element, low word first (jax's bitcast, little-endian)
        bits = np.ascontiguousarray(x).view(utype).astype(np.uint32)
    index = np.arange(bits.size, dtype=np.uint64).astype(np.uint32)
    h = bits.reshape(-1) ^ (index * np.uint32(0x9E3779B9))
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    return int(h.sum(dtype=np.uint32))


# States up to this many elements (the nanoGPT CPU model's: 2.4M) are digested in numpy when they
# live on CPU devices of this process: tracing, lowering and loading `_digest_all` for its 111 leaves
# took 0.37 s of the run's first save (jax.monitoring durations); numpy takes 0.02-0.03 s
# (benchmarks/README.md, fixed cost).
HOST_DIGEST_MAX_ELEMENTS = 2**25


def _on_host(leaves: list[jax.Array]) -> bool:
    """Whether digesting `leaves` in numpy is cheaper: CPU arrays this process holds whole, few."""
    if sum(leaf.size for leaf in leaves) > HOST_DIGEST_MAX_ELEMENTS:
        return False
    for leaf in leaves:
        if not leaf.is_fully_addressable or any(d.platform != "cpu" for d in leaf.sharding.device_set):
            return False
        if not jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key) and (
                jnp.iscomplexobj(leaf) or (leaf.dtype != jnp.bool_ and leaf.dtype.itemsize * 8 < 8)):
            return False   # complex and sub-byte types: the device path's conversions
    return True


_DIGEST_JITS: dict[Any, Any] = {}  # replicated output sharding -> jitted _digest_all


def _fingerprints(tree) -> dict[str, int]:
    """{leaf path: uint32 digest} for every array leaf of `tree`, computed where the leaves live.

    One jitted call (so one compile per state layout) per set of devices the leaves live on; the
    digests come back replicated, so every process can read them. Small states on CPU devices of
    this process are digested in numpy instead (:data:`HOST_DIGEST_MAX_ELEMENTS`), to the same values.
    """
    flat = {path: jnp.asarray(leaf) for path, leaf in _flat(tree).items()}
    if _on_host(list(flat.values())):
        return {path: _host_digest(np.asarray(jax.device_get(
            jax.random.key_data(leaf) if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key) else leaf)))
            for path, leaf in flat.items()}
    groups: dict[tuple, dict[str, jax.Array]] = {}
    for path, leaf in flat.items():
        devices = getattr(leaf.sharding, "_device_assignment", None) or sorted(
            leaf.sharding.device_set, key=lambda d: d.id)
        groups.setdefault(tuple(d.id for d in devices), {})[path] = leaf
    digests: dict[str, int] = {}
    for leaves in groups.values():
        sharding = next(iter(leaves.values())).sharding
        if isinstance(sharding, jax.sharding.NamedSharding):
            out = jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec())
        else:
            out = sharding if isinstance(sharding, jax.sharding.SingleDeviceSharding) else None
        if out not in _DIGEST_JITS:
            _DIGEST_JITS[out] = jax.jit(_digest_all, out_shardings=out)
        values = np.asarray(jax.device_get(_DIGEST_JITS[out](list(leaves.values()))))
        digests.update(zip(leaves, (int(v) for v in values)))
    return digests


def fingerprints(tree) -> dict[str, int]:
    """{leaf path: uint32 digest of its bits}, independent of sharding: what checkpoints record, and
    what adapter folders record of their base."""
    return _fingerprints(tree)


def tree_digest(tree) -> str:
    """16 hex digits over every leaf's path and bits (sha256 of the sorted :func:`fingerprints`),
    independent of sharding and process: what adapter folders and ``base.json`` record of a base.
    Every process must call it (it is a collective over the leaves' devices)."""
    digests = fingerprints(jax.tree.map(jnp.asarray, tree))
    return hashlib.sha256(json.dumps(sorted(digests.items())).encode()).hexdigest()[:16]


def _verify(state, abstract_state, expected: dict[str, int]) -> None:
    """Raises _Unreadable if restored leaves differ from their abstract shape/dtype or digest."""
    got, wanted = _flat(state), _flat(abstract_state)
    for path, want in wanted.items():
        leaf = got.get(path)
        if leaf is None or leaf.shape != want.shape or leaf.dtype != want.dtype:
            raise _Unreadable(f"leaf '{path}' came back as {getattr(leaf, 'dtype', None)}"
                              f"{getattr(leaf, 'shape', None)}, not {want.dtype}{want.shape}")
    actual = _fingerprints(state)
    for path, digest in expected.items():
        if actual[path] != int(digest):
            raise _Unreadable(f"leaf '{path}' does not match its fingerprint (data garbled)")


# ------------------------------------------------------------------------------------ helpers
def _flat(tree) -> dict[str, Any]:
    """{'a/b/0/c': leaf} for array-like leaves, with keys as orbax stores them on disk."""
    serialized = ocp.tree.serialize_tree(tree, keep_empty_nodes=True)
    flat = ocp.tree.to_flat_dict(serialized)
    return {"/".join(str(k) for k in path): leaf for path, leaf in flat.items()
            if leaf is not None and hasattr(leaf, "shape") and hasattr(leaf, "dtype")}


def _storage_shape_dtype(leaf) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype as orbax stores `leaf`: typed PRNG keys are stored as their key data."""
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        data = jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(leaf.shape, leaf.dtype))
        return tuple(data.shape), np.dtype(data.dtype)
    return tuple(leaf.shape), np.dtype(leaf.dtype)


def _check_arrays(state) -> None:
    """`state` must hold jax arrays only: numpy/Python numbers would be stored as 64-bit."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        if not isinstance(leaf, jax.Array):
            raise TypeError(
                f"Checkpointer.save: state leaf {jax.tree_util.keystr(path)} is "
                f"{type(leaf).__name__}; expected a jax.Array (wrap it with jnp.asarray, or keep "
                "it out of the checkpointed state)")


def _check_abstract(abstract_state):
    """Arrays become ShapeDtypeStructs; every leaf must carry a sharding."""
    def one(path, leaf):
        if isinstance(leaf, jax.Array):
            return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=leaf.sharding)
        if not isinstance(leaf, jax.ShapeDtypeStruct) or leaf.sharding is None:
            raise TypeError(
                f"restore(abstract_state=...): leaf {jax.tree_util.keystr(path)} is "
                f"{type(leaf).__name__} {leaf!r:.80}; expected a jax.ShapeDtypeStruct with a "
                ".sharding (e.g. from jax.eval_shape plus the state's NamedShardings)")
        return leaf
    return jax.tree_util.tree_map_with_path(one, abstract_state)


def _few(items: list[str], n: int = 4) -> str:
    if not items:
        return "none"
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def _short_reason(exc: BaseException) -> str:
    """The innermost cause of `exc`, on one short line (tensorstore specs cut off)."""
    seen = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    for e in reversed(seen):  # innermost first, skipping empty messages
        text = str(e.args[0] if isinstance(e, KeyError) and e.args else e).strip()
        if text:
            break
    else:
        return type(seen[0]).__name__
    text = re.sub(r' in OCDBT database at local file "[^"]*"', "", text.splitlines()[0])
    for cut in (" [tensorstore_spec", " See full TensorStore details", "tensorstore_spec="):
        text = text.split(cut)[0]
    text = text.rstrip(" .:")
    if len(text) > 160:
        text = text[:157] + "..."
    return f"{type(e).__name__}: {text}"


def _say(line: str) -> None:
    """One warning line on stderr, from process 0 only."""
    if jax.process_index() == 0:
        print(line, file=sys.stderr, flush=True)
