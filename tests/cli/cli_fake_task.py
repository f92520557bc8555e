"""A small config tree and a fake task for the CLI tests (no jax, runs in milliseconds).

Uses ``from __future__ import annotations`` on purpose: the CLI must resolve string annotations.
The tree covers every field type bindings support: int, float, str, bool, ``X | None``,
``tuple[int, ...]``, nested tuples with unions (axis rules), ``Literal``, nested and optional
nested dataclasses, and a ``__post_init__`` check.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import textwrap
from typing import Literal

from lmforge.cli import register

Rules = tuple[tuple[str, str | tuple[str, ...] | None], ...]


@dataclasses.dataclass(frozen=True)
class ModelCfg:
    family: str = "gpt2"
    num_layers: int = 2
    num_heads: int = 2
    embed_dim: int = 8
    use_bias: bool = True
    dropout: float = 0.0
    dims: tuple[int, ...] = (4, 8)

    def __post_init__(self):
        if self.embed_dim % self.num_heads:
            raise ValueError(f"model.embed_dim={self.embed_dim} is not divisible by model.num_heads={self.num_heads}")


@dataclasses.dataclass(frozen=True)
class OptimCfg:
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 0
    clip: float | None = 1.0
    schedule: Literal["cosine", "constant"] = "cosine"


@dataclasses.dataclass(frozen=True)
class SourceCfg:
    kind: str = "text"
    path: str = "data.txt"


@dataclasses.dataclass(frozen=True)
class DataCfg:
    source: SourceCfg = SourceCfg()
    extra: SourceCfg | None = None
    val_fraction: float = 0.1


@dataclasses.dataclass(frozen=True)
class MeshCfg:
    shape: tuple[int, ...] = (1,)
    rules: Rules = (("embed", None), ("mlp", ("data", "fsdp")))


@dataclasses.dataclass(frozen=True)
class FakeConfig:
    model: ModelCfg = ModelCfg()
    optim: OptimCfg = OptimCfg()
    data: DataCfg = DataCfg()
    mesh: MeshCfg = MeshCfg()
    steps: int = 10
    name: str | None = None
    fail: bool = False


def fake_runner(config: FakeConfig, workdir: pathlib.Path) -> dict[str, float]:
    """Writes a marker file and returns metrics computed from the config; fails if asked to."""
    (workdir / "ran.txt").write_text(f"{config.optim.lr}\n")
    if config.fail:
        raise RuntimeError("the fake run was told to fail")
    return {"final/loss": config.optim.lr * 10, "final/layers": float(config.model.num_layers)}


register(FakeConfig, fake_runner, "fake")

EXPERIMENT = textwrap.dedent('''
    """A fake experiment for the CLI tests."""
    import dataclasses
    from cli_fake_task import FakeConfig, ModelCfg

    VARIANTS = ("smoke", "big")

    def get_config(variant="default"):
        config = FakeConfig(steps=5)
        if variant == "big":
            config = dataclasses.replace(config, model=ModelCfg(num_layers=8))
        return config

    def sweep():
        return {"optim.lr": [1e-3, 3e-4]}
''')


def write_experiment(directory: pathlib.Path, body: str = EXPERIMENT, name: str = "fake_exp.py") -> pathlib.Path:
    path = directory / name
    path.write_text(body)
    return path


def read_json(path: pathlib.Path) -> dict:
    return json.loads(path.read_text())
