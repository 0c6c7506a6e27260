"""Tasks: named bundles of a dataset, a prompt template, default rewards and (optionally) an environment.

A task builder takes the ``task`` section of the config (options, system prompt, folder of the config) and returns
a `Task`. ``dataset`` is the generic task for a user's JSONL/CSV/Parquet file.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from rftune.config import RewardSpec
from rftune.data import load_dataset_file
from rftune.errors import ConfigError
from rftune.types import Sample


@dataclass(frozen=True)
class Task:
    samples: list[Sample]
    default_rewards: list[RewardSpec] = field(default_factory=list)
    make_env: Callable[[dict], Any] | None = None  # example -> Env, for multi-turn tasks
    # name -> f(prompt, completion, example) -> float, averaged into metrics as task/<name> every step
    completion_metrics: dict[str, Callable[[Any, str, dict], float]] = field(default_factory=dict)


# name -> "module:function" building the task; imported only when used.
TASKS = {
    "arithmetic": "rftune.tasks.arithmetic:build",
    "code": "rftune.tasks.code:build",
    "dataset": "rftune.tasks:build_dataset_task",
    "summarize": "rftune.tasks.summarize:build",
    "wordle": "rftune.tasks.wordle:build",
}


def build_dataset_task(options: dict, system_prompt: str | None, path: str | None, base_dir: str) -> Task:
    """A user file of prompts; rewards must come from the config."""
    if options:
        raise ConfigError(f"task 'dataset' takes no task.kwargs, got {sorted(options)}")
    file = Path(path)
    if not file.is_absolute() and not file.exists():
        file = Path(base_dir) / file
    return Task(samples=load_dataset_file(file, system_prompt))


def build_task(name: str, options: dict, system_prompt: str | None = None, path: str | None = None,
               base_dir: str = ".") -> Task:
    """Look up and build a task by name."""
    if name not in TASKS:
        close = difflib.get_close_matches(name, TASKS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; known tasks: {', '.join(sorted(TASKS))}"
        raise ConfigError(f"task.name: unknown task {name!r}{hint}")
    module_name, _, function = TASKS[name].partition(":")
    builder = getattr(importlib.import_module(module_name), function)
    return builder(dict(options), system_prompt, path, base_dir)
