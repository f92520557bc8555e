"""config.json: round trip, class recorded, strict on unknown keys, lenient on missing ones."""

import json

import pytest
from cli_fake_task import FakeConfig, ModelCfg

from lmforge.cli import ConfigError, apply_bindings, from_json, load_config, to_json


def test_round_trip_equal():
    config = apply_bindings(FakeConfig(), ["mesh.rules=(('embed', ('data', 'fsdp')), ('mlp', None))",
                                           "optim.clip=None", "model.dims=(3,)", "name=x", "optim.lr=1e300"])
    text = to_json(config)
    data = json.loads(text)
    assert data["__class__"] == "cli_fake_task.FakeConfig"
    assert data["mesh"]["rules"] == [["embed", ["data", "fsdp"]], ["mlp", None]]  # tuples as lists
    assert list(data) == sorted(data)
    assert from_json(FakeConfig, text) == config


def test_load_config_imports_the_recorded_class(tmp_path):
    config = FakeConfig(steps=3)
    (tmp_path / "config.json").write_text(to_json(config))
    assert load_config(tmp_path / "config.json") == config


def test_unknown_key_in_file_names_file_and_key():
    data = json.loads(to_json(FakeConfig()))
    data["optim"]["learning_rate"] = 0.1
    with pytest.raises(ConfigError) as info:
        from_json(FakeConfig, json.dumps(data), source="run/config.json")
    assert str(info.value) == "run/config.json: unknown config key 'optim.learning_rate' — did you mean 'optim.lr'?"


def test_wrong_type_in_file():
    data = json.loads(to_json(FakeConfig()))
    data["model"]["num_layers"] = "two"
    with pytest.raises(ConfigError, match=r"^c.json: config key 'model.num_layers' expects int, got 'two'$"):
        from_json(FakeConfig, json.dumps(data), source="c.json")


def test_missing_key_takes_the_default():
    data = json.loads(to_json(FakeConfig(steps=4)))
    del data["model"]["dropout"]
    assert from_json(FakeConfig, json.dumps(data)) == FakeConfig(steps=4)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="is not valid JSON"):
        from_json(FakeConfig, "{", source="x.json")
    with pytest.raises(ConfigError, match="holds a cli_fake_task.FakeConfig config, not a cli_fake_task.ModelCfg"):
        from_json(ModelCfg, to_json(FakeConfig()))
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"__class__": "no_such_module.Config"}))
    with pytest.raises(ConfigError, match="cannot be imported"):
        load_config(path)
    with pytest.raises(ConfigError, match="no config file"):
        load_config(tmp_path / "missing.json")


def test_non_finite_numbers_in_a_file_are_refused():
    data = json.loads(to_json(FakeConfig()))
    data["optim"]["lr"] = float("nan")
    with pytest.raises(ConfigError, match=r"^c.json: config key 'optim.lr' must be a finite number, got nan$"):
        from_json(FakeConfig, json.dumps(data), source="c.json")
