"""The mesh config: sizes, rules, and splitting a CPU host into devices."""

import jax
import pytest

from lmforge.train.mesh import DEFAULT_RULES, MeshConfig, make_mesh


def test_mesh_config_errors():
    with pytest.raises(ValueError, match="needs 6 devices"):
        make_mesh(MeshConfig(data=3, fsdp=2, tensor=1))
    with pytest.raises(ValueError, match="unknown mesh axis"):
        MeshConfig(rules=tuple((n, "pipeline" if n == "mlp" else a) for n, a in DEFAULT_RULES))


def test_host_devices_splits_a_fresh_cpu_process_and_is_reported_when_too_late(capsys):
    import subprocess
    import sys

    from lmforge.train.mesh import use_host_devices

    with pytest.raises(ValueError, match="mesh.host_devices must be >= 0"):
        MeshConfig(host_devices=-1)
    # A fresh process (its XLA_FLAGS ask for 8 devices, as the tests' do): the config wins.
    code = ("from lmforge.train.mesh import MeshConfig, make_mesh, use_host_devices\n"
            "use_host_devices(MeshConfig(host_devices=2)); import jax\n"
            "print(len(jax.devices()), dict(make_mesh(MeshConfig()).shape)['data'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.split() == ["2", "2"], out.stderr[-2000:]
    # Here JAX already runs with 8 devices: said on stderr, devices kept.
    use_host_devices(MeshConfig(host_devices=2))
    assert "mesh.host_devices=2 ignored: JAX already started in this process with 8 CPU devices" in capsys.readouterr().err
    assert jax.device_count() == 8
    use_host_devices(MeshConfig(host_devices=8))   # the count in force: nothing to say
    assert capsys.readouterr().err == ""
