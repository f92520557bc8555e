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


# The `curate` extra's packages (setup.py): training, fine-tuning, sampling and serving must import
# without them. The GPU image had no phonenumbers, and a default PIIConfig built at class definition
# made `import lmforge.train.pretrain` fail there (every training figure of gpu_suite.sh, 2026-11-30).
CURATE_ONLY = ("phonenumbers", "datasketch", "ftfy", "zstandard", "py3langid", "profanity_check", "stdnum",
               "xxhash", "apache_beam")
WITHOUT_CURATE = """
import sys
for name in {blocked!r}:
    sys.modules[name] = None   # `import name` now raises ImportError
import lmforge.train.pretrain, lmforge.align, lmforge.cli.main, lmforge.data.curate
{modules}
from lmforge.data.curate import CurateConfig, PIIConfig
try:
    CurateConfig()
except ImportError as e:
    print("curate:", e)
print(CurateConfig(pii=PIIConfig(kinds=("EMAIL",))).pii.kinds)
"""


def test_entry_points_import_without_the_curate_extra():
    code = WITHOUT_CURATE.format(blocked=CURATE_ONLY, modules="\n".join(f"import {m}" for m in ENTRY_POINTS))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("curate: pii finds phone numbers with the phonenumbers package"), lines
    assert lines[1] == "('EMAIL',)"
