"""JAX's persistent compilation cache as lmforge's commands turn it on (lmforge.train.compile_cache).

Each case runs in a fresh interpreter: the cache folder is process-wide JAX state, and the second
process must find what the first one wrote.
"""

import os
import subprocess
import sys
import textwrap

import pytest

# Compiles one small program (the threshold lowered so it always qualifies for the cache) and prints
# the folder in use and how many cache hits JAX reported.
CHILD = textwrap.dedent("""
    import jax, jax.numpy as jnp
    from lmforge.train import compile_cache
    compile_cache.MIN_COMPILE_TIME_S = 0.0
    hits = []
    jax.monitoring.register_event_listener(
        lambda event, **kw: hits.append(event) if event == "/jax/compilation_cache/cache_hits" else None)
    folder = compile_cache.use_compilation_cache()
    jax.jit(lambda x: jnp.tanh(x @ x.T).sum())(jnp.ones((8, 8))).block_until_ready()
    print(folder, len(hits))
""")


def _child(env_overrides: dict) -> tuple[str, int, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LMFORGE_COMPILATION_CACHE", "JAX_COMPILATION_CACHE_DIR")}
    env.update(env_overrides)
    proc = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    folder, hits = proc.stdout.split()[-2:]
    return folder, int(hits), proc.stderr


def test_a_second_process_reads_the_first_ones_compile_from_the_folder(tmp_path):
    cache = tmp_path / "xla"
    folder, hits, _ = _child({"LMFORGE_COMPILATION_CACHE": str(cache)})
    assert folder == str(cache) and hits == 0
    assert any(p.name.startswith("jit_") for p in cache.iterdir()), list(cache.iterdir())
    folder, hits, _ = _child({"LMFORGE_COMPILATION_CACHE": str(cache)})
    assert hits >= 1


def test_default_folder_is_under_xdg_cache_home(tmp_path):
    folder, _, _ = _child({"XDG_CACHE_HOME": str(tmp_path)})
    assert folder == str(tmp_path / "lmforge" / "xla")
    assert any((tmp_path / "lmforge" / "xla").iterdir())


def test_off_and_the_users_own_jax_folder_are_respected(tmp_path):
    folder, _, _ = _child({"LMFORGE_COMPILATION_CACHE": "off", "XDG_CACHE_HOME": str(tmp_path)})
    assert folder == "None" and not (tmp_path / "lmforge").exists()
    own = tmp_path / "mine"
    folder, _, _ = _child({"JAX_COMPILATION_CACHE_DIR": str(own), "XDG_CACHE_HOME": str(tmp_path)})
    assert folder == str(own) and not (tmp_path / "lmforge").exists()


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root may write anywhere, so a read-only folder cannot be simulated")
def test_an_unwritable_folder_leaves_the_cache_off_with_one_line(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    folder, _, err = _child({"LMFORGE_COMPILATION_CACHE": str(locked / "xla")})
    assert folder == "None"
    assert "lmforge: compilation cache off:" in err and "LMFORGE_COMPILATION_CACHE=off" in err


def test_a_file_in_the_way_leaves_the_cache_off_with_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    folder, _, err = _child({"LMFORGE_COMPILATION_CACHE": str(blocker / "xla")})
    assert folder == "None"
    line = next(l for l in err.splitlines() if l.startswith("lmforge: compilation cache off:"))
    assert str(blocker / "xla") in line
