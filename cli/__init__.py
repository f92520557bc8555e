"""lmforge.cli — the edge: load an experiment, apply bindings, run, sweep, and the task registry.

Nothing in lmforge imports this package; it imports the task packages lazily, when a run needs
them (see ``registry.py``).
"""

from .bindings import (apply_bindings, axis_bindings, config_keys, diff, flatten, non_default,
                       parse_sweep, split_binding, split_sweep)
from .config_io import from_json, load_config, to_json
from .errors import ConfigError
from .experiment import experiment_config, experiment_sweep, load_experiment
from .launch import default_workdir, launch, write_config
from .registry import Task, register, task_for, tasks
from .sweep import SweepPoint, run_sweep

__all__ = [
    "ConfigError",
    "SweepPoint",
    "Task",
    "apply_bindings",
    "axis_bindings",
    "config_keys",
    "default_workdir",
    "diff",
    "experiment_config",
    "experiment_sweep",
    "flatten",
    "from_json",
    "launch",
    "load_config",
    "load_experiment",
    "non_default",
    "parse_sweep",
    "register",
    "run_sweep",
    "split_binding",
    "split_sweep",
    "task_for",
    "tasks",
    "to_json",
    "write_config",
]
