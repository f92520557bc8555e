"""JAX's persistent compilation cache for lmforge's commands: a program compiled once is read back
from disk by every later process that compiles the same program on the same kind of device.

``lmforge run`` / ``sweep`` / ``sample`` / ``chat`` / ``eval`` call :func:`use_compilation_cache`
before their first compile. The folder is, in order: ``$LMFORGE_COMPILATION_CACHE`` (``off`` turns
the cache off), JAX's own ``$JAX_COMPILATION_CACHE_DIR`` / ``jax_compilation_cache_dir`` when the user
set one (left as it is), else ``$XDG_CACHE_HOME/lmforge/xla`` (``~/.cache/lmforge/xla``). JAX keys an
entry by the program's HLO, the compile options, the XLA flags, the backend and jax's version, so a
changed model, mesh or jax never reads a stale entry; a corrupt or unreadable entry is recompiled
(JAX logs a warning). MaxText (``jax_cache_dir``) and T5X do the same.

Measured (2-core CPU, jax 0.10.2, 2026-11-30, ``benchmarks/fixed_cost.py``): see
``benchmarks/README.md`` for the cold and warm fixed cost of ``shakespeare_char.py:cpu_tuned``.
"""

from __future__ import annotations

import os
import pathlib
import sys

ENV = "LMFORGE_COMPILATION_CACHE"
# Every program gets an entry, the eager ops' small ones too: a run of shakespeare_char.py:cpu_tuned
# compiles 17 programs under 0.1 s (convert_element_type, broadcast_in_dim, the PRNG seed, ...) in
# 0.25-0.30 s together, and reads them back in ~0.03 s (2-core CPU, jax 0.10.2).
MIN_COMPILE_TIME_S = 0.0


def default_dir() -> pathlib.Path:
    """``$XDG_CACHE_HOME/lmforge/xla``, or ``~/.cache/lmforge/xla`` without ``XDG_CACHE_HOME``."""
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "lmforge" / "xla"


def use_compilation_cache() -> str | None:
    """Turns JAX's persistent compilation cache on for this process (module docstring); returns the
    folder in use, or None when it is off. Safe to call again and after JAX has started.

    An unusable folder (not creatable or not writable) prints one line on stderr and leaves the cache
    off: a cache must never stop a run.
    """
    import jax

    choice = os.environ.get(ENV, "").strip()
    if choice.lower() in ("off", "0", "false", "no", "none"):
        return None
    current = jax.config.jax_compilation_cache_dir
    if not choice and current:
        return current   # the user's own JAX setting wins
    folder = pathlib.Path(choice).expanduser() if choice else default_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK):
            raise PermissionError(f"{folder} is not writable")
    except OSError as e:
        print(f"lmforge: compilation cache off: {folder}: {e.strerror or e} (set {ENV}=DIR or {ENV}=off)",
              file=sys.stderr, flush=True)
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_TIME_S)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return str(folder)
