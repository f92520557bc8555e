"""Multi-host start-up: ``jax.distributed.initialize`` when the config asks for it.

``enabled=True`` with no address auto-detects the cluster (TPU pods, SLURM, Open MPI);
an explicit ``coordinator_address`` / ``num_processes`` / ``process_id`` runs several processes on
one machine (how the tests check that two CPU processes train exactly like one).
"""

from __future__ import annotations

import dataclasses

import jax


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    enabled: bool = False
    coordinator_address: str = ""     # "host:port"; empty → auto-detect
    num_processes: int = 0
    process_id: int = -1
    local_device_count: int = 0       # CPU only: fake devices per process (0 → leave as is)


def initialize(cfg: DistributedConfig) -> None:
    if not cfg.enabled or _initialized():
        return
    if cfg.local_device_count:
        jax.config.update("jax_num_cpu_devices", cfg.local_device_count)
    kwargs = {}
    if cfg.coordinator_address:
        kwargs = dict(coordinator_address=cfg.coordinator_address, num_processes=cfg.num_processes,
                      process_id=cfg.process_id)
    jax.distributed.initialize(**kwargs)
    print(f"jax.distributed: process {jax.process_index()} of {jax.process_count()}, "
          f"{jax.local_device_count()} local / {jax.device_count()} global devices", flush=True)


def _initialized() -> bool:
    try:
        from jax._src import distributed as _d
        return _d.global_state.client is not None
    except (ImportError, AttributeError):
        return False


def barrier(name: str) -> None:
    """All processes wait here (no-op with one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)
