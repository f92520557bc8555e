"""Quiet reads of orbax checkpoints: what ``weights.checkpoint`` wraps a read in, so that a corrupt
step is reported on one line of lmforge's and not in orbax's, absl's or asyncio's words.

- :func:`absl_quiet`: orbax logs through absl; its warnings (a broken step, a type handler that
  lmforge overrides on purpose) would repeat lmforge's own line.
- :func:`quiet_orbax`: the same around a read, plus :func:`install_noise_filter` before it and, when
  the read fails, a garbage collection after, so abandoned coroutines are reported (and filtered) at once.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_orbax() -> Iterator[None]:
    """Silences orbax's log chatter while a possibly corrupt step is read.

    When a read fails, orbax abandons its other pending reads; Python then reports each one
    ('Exception ignored in: <coroutine ...>' with a whole TensorStore spec, or 'RuntimeError:
    Event loop is closed' when a TensorStore read finishes after orbax's event loop is gone, which
    can be seconds later, or while the failure is still unwinding: about a hundred per failed read,
    through ``sys.unraisablehook``). ``Checkpointer.restore`` reports the failure on one line, so
    before the first read a filter for exactly those two kinds of noise is installed (once, for the
    process); it used to be installed after a failure, and the reports raised before it reached
    stderr.
    """
    install_noise_filter()   # before the read: TensorStore's threads print while the failure is still unwinding
    try:
        with absl_quiet():
            yield
    except BaseException:
        # Report abandoned coroutines now, not in the middle of later output. Only a failed read leaves
        # them: a full collection costs 0.2-0.5 s in a process holding jax, and a run reads many steps.
        gc.collect()
        raise


@contextlib.contextmanager
def absl_quiet() -> Iterator[None]:
    """Orbax logs through absl; its warnings about a broken step would repeat our one line."""
    absl_logger = logging.getLogger("absl")
    old_level = absl_logger.level
    absl_logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        absl_logger.setLevel(old_level)


def install_noise_filter() -> None:
    previous = sys.unraisablehook
    if getattr(previous, "_lmforge_filter", False):
        return

    def hook(unraisable) -> None:
        exc, code = unraisable.exc_value, getattr(unraisable.object, "cr_code", None)
        if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
            return
        if code is not None and "orbax" in code.co_filename:
            return
        previous(unraisable)

    hook._lmforge_filter = True
    sys.unraisablehook = hook
