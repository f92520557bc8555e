"""The device mesh and the logical-axis rules table, both from the experiment config.

Mesh axes: ``data`` (pure data parallel: parameters replicated), ``fsdp`` (data parallel with
parameters, gradients and optimizer state sharded: ZeRO-3), ``expert`` (expert parallel: MoE
experts split over it; everywhere else it is one more data-parallel axis, as in MaxText and
GShard, so no device idles outside the expert layers), ``tensor`` (Megatron-style model parallel
over heads / MLP / vocab). The batch is split over ``data`` × ``fsdp`` × ``expert``. ``tensor``
is the innermost axis (neighbouring devices: fastest links), ``expert`` next to it.

A size of -1 on one axis means "all remaining devices". The mesh uses ``AxisType.Auto`` (classic
GSPMD propagation between our explicit constraints), because jax >= 0.10 defaults to Explicit.

``host_devices`` splits a CPU host into that many XLA devices (``jax_num_cpu_devices``) before
JAX starts. XLA's CPU runtime runs one step's operations one after another, so a small model on
one device keeps one core busy; two devices on a 2-core machine run the two halves of a
data-parallel batch at once (the nanoGPT CPU recipe's step: 1.25x faster, see
``experiments/shakespeare_char.py``; the quickstart's larger ops gained nothing). It only takes effect before the first JAX computation of
the process; later it is reported and ignored, and the mesh uses the devices there are.
"""

from __future__ import annotations

import dataclasses
import math
import sys

import jax
import numpy as np
from jax.sharding import AxisType

from lmforge.model.sharding import DEFAULT_RULES, MESH_AXES, Rules, check_rules

@dataclasses.dataclass(frozen=True)
class MeshConfig:
    data: int = -1
    fsdp: int = 1
    tensor: int = 1
    expert: int = 1
    rules: tuple[tuple[str, str | tuple[str, ...] | None], ...] = DEFAULT_RULES
    host_devices: int = 0       # > 0: split a CPU host into this many devices (before JAX starts)
    # Pure data parallelism: each device's gradient on its own rows, one all-reduce (train/step.py);
    # false: GSPMD partitions every step (a loss with batch-wide statistics needs that).
    per_device_step: bool = True

    def __post_init__(self):
        sizes = (self.data, self.fsdp, self.expert, self.tensor)
        if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
            raise ValueError(f"mesh: sizes (data, fsdp, expert, tensor) = {sizes}; use positive sizes and at most one -1")
        if self.host_devices < 0:
            raise ValueError(f"mesh.host_devices must be >= 0 (0: leave the CPU devices as they are), "
                             f"got {self.host_devices}")
        check_rules(self.rules)
        for name, axes in self.rules:
            for axis in ((axes,) if isinstance(axes, str) else tuple(axes or ())):
                if axis not in MESH_AXES:
                    raise ValueError(f"mesh.rules: logical axis {name!r} maps to unknown mesh axis {axis!r}; "
                                     f"mesh axes are {MESH_AXES}")


def use_host_devices(cfg: MeshConfig) -> None:
    """Apply ``cfg.host_devices`` if JAX has not started yet (it does not start JAX itself, so
    ``jax.distributed.initialize`` may still follow).

    Too late (a computation already ran in this process) with a different count: says so on stderr
    and keeps the devices there are, so a config meant for a fresh process still runs in tests.
    """
    if cfg.host_devices:
        try:
            jax.config.update("jax_num_cpu_devices", cfg.host_devices)
        except RuntimeError:   # backends already initialized
            have = len(jax.devices("cpu"))
            if have != cfg.host_devices:
                print(f"mesh.host_devices={cfg.host_devices} ignored: JAX already started in this process with "
                      f"{have} CPU devices", file=sys.stderr, flush=True)


def mesh_shape(cfg: MeshConfig, num_devices: int) -> tuple[int, int, int, int]:
    """(data, fsdp, expert, tensor) on ``num_devices`` devices, the -1 axis taking the rest.
    Raises ValueError naming the fixed axes when they do not fit the devices."""
    names = ("data", "fsdp", "expert", "tensor")
    sizes = [cfg.data, cfg.fsdp, cfg.expert, cfg.tensor]
    known = math.prod(s for s in sizes if s != -1)
    fixed = ", ".join(f"mesh.{n}={s}" for n, s in zip(names, sizes) if s not in (1, -1))
    if -1 in sizes:
        if num_devices % known:
            raise ValueError(f"{fixed}: the fixed mesh axes need a multiple of {known} devices; there are "
                             f"{num_devices} (mesh.{names[sizes.index(-1)]}=-1 takes the rest)")
        sizes[sizes.index(-1)] = num_devices // known
    if math.prod(sizes) != num_devices:
        raise ValueError(f"{fixed or 'mesh'}: the mesh needs {known} devices (no axis is -1); there are "
                         f"{num_devices}")
    return tuple(sizes)


def check_devices(cfg: MeshConfig, distributed_enabled: bool = False) -> None:
    """The mesh fits this process's devices (:func:`mesh_shape`), checked before a run writes anything.
    Applies ``cfg.host_devices`` first (:func:`use_host_devices`), so it starts JAX with the devices the
    run will have. A multi-process run is not checked here: its devices are known only after
    ``jax.distributed.initialize``, which must come before JAX starts. Raises ValueError."""
    if distributed_enabled:
        return
    use_host_devices(cfg)
    mesh_shape(cfg, jax.device_count())


def make_mesh(cfg: MeshConfig, devices=None) -> jax.sharding.Mesh:
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(cfg, len(devices))
    if devices == list(jax.devices()):
        return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))
    return jax.sharding.Mesh(np.array(devices).reshape(shape), MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def batch_axes_size(mesh: jax.sharding.Mesh) -> int:
    """How many ways the batch is split (data × fsdp × expert; a mesh without ``expert``: data × fsdp)."""
    return mesh.shape["data"] * mesh.shape["fsdp"] * dict(mesh.shape).get("expert", 1)
