"""Loading experiment files by path and picking variants; the task registry."""

import pytest
from cli_fake_task import EXPERIMENT, FakeConfig, fake_runner, write_experiment

from lmforge.cli import ConfigError, experiment_config, load_experiment, register, registry, task_for
from lmforge.cli.experiment import split_spec


def test_variants(tmp_path):
    path = write_experiment(tmp_path)
    module, variant = load_experiment(str(path))
    assert variant == "default" and experiment_config(module, variant) == FakeConfig(steps=5)
    module, variant = load_experiment(f"{path}:big")
    assert experiment_config(module, variant).model.num_layers == 8


def test_unknown_variant_lists_variants_and_nearest(tmp_path):
    path = write_experiment(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_experiment(f"{path}:smok")
    assert str(info.value) == f"experiment {path} has no variant 'smok'; its variants: default, smoke, big — did you mean 'smoke'?"


def test_missing_file_and_bad_experiments(tmp_path):
    with pytest.raises(ConfigError, match="experiment file '.*nope.py' not found"):
        load_experiment(str(tmp_path / "nope.py:smoke"))
    path = write_experiment(tmp_path, "VARIANTS = ('smoke',)\n", name="no_get.py")
    with pytest.raises(ConfigError, match="defines no get_config"):
        load_experiment(str(path))
    path = write_experiment(tmp_path, "def get_config(variant='default'):\n    return {}\n", name="no_variants.py")
    with pytest.raises(ConfigError, match="must define VARIANTS"):
        load_experiment(str(path))
    path = write_experiment(tmp_path, "VARIANTS = ('smoke',)\ndef get_config(variant='default'):\n    return {}\n",
                            name="dict_config.py")
    module, variant = load_experiment(str(path))
    with pytest.raises(ConfigError, match=r"get_config\('default'\) returned dict \{"):
        experiment_config(module, variant)


def test_split_spec():
    assert split_spec("a/b.py") == (split_spec("a/b.py")[0], "default")
    assert split_spec("a/b.py:smoke")[1] == "smoke"
    with pytest.raises(ConfigError, match="names no variant"):
        split_spec("a/b.py:")


def test_experiment_with_its_own_future_annotations_dataclass(tmp_path):
    body = EXPERIMENT.replace('"""A fake experiment for the CLI tests."""',
                              '"""x"""\nfrom __future__ import annotations\n@__import__("dataclasses").dataclass(frozen=True)\n'
                              'class Local:\n    n: int | None = 1\n')
    module, _ = load_experiment(str(write_experiment(tmp_path, body, name="local_cls.py")))
    from lmforge.cli import apply_bindings
    assert apply_bindings(module.Local(), ["n=None"]).n is None  # string annotations resolve


def test_registry(monkeypatch):
    monkeypatch.setattr(registry, "BUILTIN_TASKS", ())  # keep the real task packages out of this test
    monkeypatch.setattr(registry, "_builtins_loaded", False)
    assert task_for(FakeConfig()).runner is fake_runner
    register(FakeConfig, fake_runner, "fake")  # the same pair again is a no-op
    with pytest.raises(ValueError, match="already registered"):
        register(FakeConfig, lambda c, w: {}, "other")

    class Unregistered:
        pass

    with pytest.raises(TypeError):
        register(Unregistered, fake_runner)
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class Orphan:
        x: int = 0

    with pytest.raises(ConfigError, match=r"no task runs a .*Orphan config; .*fake \(FakeConfig\)"):
        task_for(Orphan())


def test_builtin_tasks_load_lazily(monkeypatch, tmp_path):
    (tmp_path / "fake_builtin_task.py").write_text(
        "import dataclasses\n@dataclasses.dataclass(frozen=True)\nclass BuiltinConfig:\n    x: int = 0\n"
        "def run_builtin(config, workdir):\n    return {'x': config.x}\n")
    (tmp_path / "broken_builtin_task.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_TASKS", dict(registry._TASKS))
    monkeypatch.setattr(registry, "BUILTIN_TASKS", (
        ("not_written_yet", "no_such_task_module_xyz", "C", "run"),  # skipped: the module does not exist
        ("builtin", "fake_builtin_task", "BuiltinConfig", "run_builtin"),
    ))
    monkeypatch.setattr(registry, "_builtins_loaded", False)
    import fake_builtin_task
    assert registry.task_for(fake_builtin_task.BuiltinConfig()).name == "builtin"
    assert fake_builtin_task.BuiltinConfig in registry.tasks()

    monkeypatch.setattr(registry, "BUILTIN_TASKS", (("broken", "broken_builtin_task", "C", "run"),))
    monkeypatch.setattr(registry, "_builtins_loaded", False)
    with pytest.raises(ModuleNotFoundError, match="no_such_dependency_xyz"):  # a broken task is a bug: loud
        registry.tasks()


def _shipped_experiments():
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[2] / "experiments"
    return sorted(p for p in root.rglob("*.py") if not p.name.startswith("_"))


@pytest.mark.parametrize("path", _shipped_experiments(), ids=lambda p: p.stem)
def test_every_shipped_variant_builds_its_config(path):
    # Config only (nothing trains): an experiment file that rots fails here, not in a user's run.
    module, _ = load_experiment(str(path))
    assert "smoke" in module.VARIANTS
    for variant in dict.fromkeys(("default", *module.VARIANTS)):
        experiment_config(module, variant)


def test_shakespeare_cpu_tuned_changes_only_the_schedule():
    import dataclasses
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[2] / "experiments" / "shakespeare_char.py"
    module, _ = load_experiment(f"{path}:cpu_tuned")
    cpu, tuned = module.get_config("cpu"), module.get_config("cpu_tuned")
    assert (cpu.model, cpu.data, cpu.mesh) == (tuned.model, tuned.data, tuned.mesh)
    assert (cpu.optim.lr, cpu.steps, tuned.optim.lr, tuned.steps) == (1e-3, 2000, 4e-3, 1400)
    assert dataclasses.replace(tuned.optim, lr=cpu.optim.lr, min_lr=cpu.optim.min_lr,
                               decay_steps=cpu.optim.decay_steps) == cpu.optim
    assert cpu.mesh.host_devices == 2 and (cpu.model.num_layers, cpu.data.batch_size, cpu.data.seq_len) == (4, 12, 64)


def test_a_config_that_config_json_cannot_give_back_is_refused_at_load(tmp_path):
    """A value of the wrong type (ints where the field says str) ran once and then could never be
    resumed, continued or evaluated: its config.json did not read back. It is refused up front."""
    body = ("import dataclasses\n"
            "VARIANTS = ('default',)\n"
            "@dataclasses.dataclass(frozen=True)\n"
            "class Cfg:\n"
            "    options: tuple[tuple[str, str], ...] = ()\n"
            "def get_config(variant='default'):\n"
            "    return Cfg(options=(('min_ops', 2),))\n")
    path = write_experiment(tmp_path, body, name="bad_types.py")
    module, variant = load_experiment(str(path))
    with pytest.raises(ConfigError, match=r"bad_types.py: get_config\('default'\): config key 'options' expects "
                                          r"tuple\[tuple\[str, str\], ...\], got \[\['min_ops', 2\]\] \(a value that "
                                          r"config.json could not give back"):
        experiment_config(module, variant)


def test_every_shipped_experiment_variant_reads_back_from_config_json():
    import pathlib

    from lmforge.cli.config_io import from_json, to_json

    root = pathlib.Path(__file__).resolve().parents[2] / "experiments"
    checked = 0
    for path in sorted(root.rglob("*.py")):
        module, _ = load_experiment(str(path))
        for variant in module.VARIANTS:
            config = experiment_config(module, variant)
            assert from_json(type(config), to_json(config)) == config, f"{path}:{variant}"
            checked += 1
    assert checked > 20
