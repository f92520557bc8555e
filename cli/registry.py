"""The task registry: which runner trains a given top-level config type.

An experiment's ``get_config()`` returns, say, a ``PretrainConfig``; the CLI looks up the runner
registered for that type and calls ``runner(config, workdir) -> {final metric: value}``. The config
type *is* the task, so an experiment never names its task twice (no ``task="pretrain"`` string that
could disagree with the config it returns).

This is the only registry, and it sits at the edge (DESIGN.md "Registries only at the edge"):
library code calls runners directly. Built-in tasks are imported lazily, the first time a lookup
misses, so ``import lmforge.cli`` stays cheap and a task package that does not exist yet (or is
broken) only matters to the runs that need it. Tests register their own tasks with
:func:`register`.
"""

from __future__ import annotations

import dataclasses
import importlib
import pathlib
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from .errors import ConfigError

Runner = Callable[[Any, pathlib.Path], Mapping[str, float]]

# (task name, module, config class, runner function); one line per built-in task.
BUILTIN_TASKS: tuple[tuple[str, str, str, str], ...] = (
    ("pretrain", "lmforge.train.pretrain", "PretrainConfig", "run_pretrain"),
    ("sft", "lmforge.align.sft", "SFTConfig", "run_sft"),
    ("dpo", "lmforge.align.dpo", "DPOConfig", "run_dpo"),
    ("reward", "lmforge.align.reward", "RewardConfig", "run_reward"),
    ("grpo", "lmforge.align.grpo", "GRPOConfig", "run_grpo"),
    ("ppo", "lmforge.align.ppo", "PPOConfig", "run_ppo"),
    ("interrogation", "lmforge.align.interrogation", "InterrogationConfig", "run_interrogation"),
    ("constitutional", "lmforge.align.cai_privacy", "CAIConfig", "run_cai"),
    ("constitutional_files", "lmforge.align.cai_files", "CAIFilesConfig", "run_cai_files"),
    ("rag", "lmforge.align.rag", "RAGConfig", "run_rag"),
    ("curate", "lmforge.data.curate", "CurateConfig", "run_curate"),
)


class Task(NamedTuple):
    name: str
    config_type: type
    runner: Runner


_TASKS: dict[type, Task] = {}
_builtins_loaded = False


def register(config_type: type, runner: Runner, name: str | None = None) -> Task:
    """Registers ``runner`` for configs of exactly ``config_type``; re-registering the same pair is a no-op."""
    if not (isinstance(config_type, type) and dataclasses.is_dataclass(config_type)):
        raise TypeError(f"register needs a config dataclass type, got {config_type!r}")
    task = Task(name or config_type.__name__, config_type, runner)
    existing = _TASKS.get(config_type)
    if existing is not None and existing.runner is not runner:
        raise ValueError(f"{config_type.__qualname__} is already registered to task {existing.name!r}")
    _TASKS[config_type] = task
    return task


def tasks() -> dict[type, Task]:
    """All tasks, the built-in ones imported on first call: ``{config type: Task}``."""
    _load_builtins()
    return dict(_TASKS)


def task_for(config: Any) -> Task:
    """The task registered for ``type(config)``; a ConfigError lists the known tasks if none is."""
    task = _TASKS.get(type(config))
    if task is None:
        _load_builtins()
        task = _TASKS.get(type(config))
    if task is None:
        known = ", ".join(f"{t.name} ({t.config_type.__qualname__})" for t in _TASKS.values()) or "none"
        raise ConfigError(f"no task runs a {type(config).__module__}.{type(config).__qualname__} config; "
                          f"get_config() must return one of the registered task configs: {known}")
    return task


def _load_builtins() -> None:
    """Imports each built-in task module; a module not written yet is skipped, a broken one raises."""
    global _builtins_loaded
    if _builtins_loaded:
        return
    for name, module_name, config_name, runner_name in BUILTIN_TASKS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name is not None and module_name.startswith(e.name):
                continue  # the task's package is not installed / not written yet
            raise
        register(getattr(module, config_name), getattr(module, runner_name), name)
    _builtins_loaded = True
