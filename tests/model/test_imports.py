"""flax.nnx is imported without IPython, whichever lmforge package a script imports first
(model/__init__.py: ~0.3 s of every command's start-up), and IPython stays importable after."""

import subprocess
import sys

import pytest

ENTRY_POINTS = ("lmforge.model", "lmforge.infer", "lmforge.eval", "lmforge.weights", "lmforge.train",
                "lmforge.serve")
PROBE = """
import sys
import {module}
import flax.nnx
loaded = sys.modules.get("IPython") is not None
import IPython   # a later import still works
print(loaded, IPython.__name__)
"""


def test_no_package_imports_ipython_through_flax():
    pytest.importorskip("IPython", reason="IPython is not installed: nothing to keep out")
    procs = {m: subprocess.Popen([sys.executable, "-c", PROBE.format(module=m)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for m in ENTRY_POINTS}
    for module, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{module}: {err[-2000:]}"
        assert out.split() == ["False", "IPython"], f"import {module} imported IPython: {out}"
