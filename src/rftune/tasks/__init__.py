"""Tasks: named bundles of a dataset, a prompt template, default rewards and (optionally) an environment.

A task builder takes the ``task`` section of the config (options, system prompt, folder of the config) and returns
a `Task`. ``dataset`` is the generic task for a user's JSONL/CSV/Parquet file.

Held-out rows (`task_from_config`): evaluation uses rows training never sees, decided by content, not by position
or seed. A task may bring its own (arithmetic draws problems with another seed and drops those whose expression
occurs in training); otherwise they come from ``task.eval_path`` (a file read like the training file), or a
share ``eval.split`` of the rows picked by a seeded hash of each row's content (`rftune.tasks.heldout`), so a row stays
on its side when rows are added. Either way every training row whose content equals a held-out row's is dropped
from training, and held-out rows with equal content are kept once.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from rftune.config import RewardSpec
from rftune.tasks.data import load_dataset_file
from rftune.errors import ConfigError
from rftune.tasks.heldout import prompt_key, split_by_content, without_keys
from rftune.types import Sample


@dataclass(frozen=True)
class Task:
    samples: list[Sample]
    default_rewards: list[RewardSpec] = field(default_factory=list)
    make_env: Callable[[dict], Any] | None = None  # example -> Env, for multi-turn tasks
    # name -> f(prompt, completion, example) -> float, averaged into metrics as task/<name> every step
    completion_metrics: dict[str, Callable[[Any, str, dict], float]] = field(default_factory=dict)
    eval_samples: list[Sample] = field(default_factory=list)  # held-out rows (see `task_from_config`)
    content_key: Callable[[dict], str] = prompt_key  # row -> what makes two rows the same problem
    default_split: float = 0.0  # share held out when neither task.eval_path nor eval.split is set
    correct_reward: str | None = None  # verifiable tasks: the reward whose value >= 1 marks a correct completion
    # (count, seed) -> chat conversations answering training rows step by step: the task's SFT warm-start data
    worked_examples: Callable[[int, int], list[list[dict]]] | None = None


# name -> "module:function" building the task; imported only when used.
TASKS = {
    "arithmetic": "rftune.tasks.arithmetic:build",
    "code": "rftune.tasks.code:build",
    "dataset": "rftune.tasks:build_dataset_task",
    "summarize": "rftune.tasks.summarize:build",
    "wordle": "rftune.tasks.wordle:build",
}


def check_options(task: str, options: dict, known: set[str], path: str | None = None) -> None:
    """A task's ``task.kwargs`` must be among its `known` options; a `path` given is ``task.path``, which tasks
    that make their own data pass here to refuse it."""
    unknown = sorted(set(options) - known)
    if unknown or path:
        raise ConfigError(f"task {task!r} options are {sorted(known)}; got {unknown or ['task.path']}")


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


EVAL_PATH_TASKS = ("dataset", "summarize")


def task_from_config(config) -> Task:
    """The config's task with its held-out rows: training samples never share content with `eval_samples`."""
    cfg = config.task
    task = build_task(cfg.name, cfg.kwargs, cfg.system_prompt, cfg.path, config.base_dir)
    if cfg.eval_path:
        if cfg.name not in EVAL_PATH_TASKS:
            raise ConfigError(f"task.eval_path is for the tasks {', '.join(EVAL_PATH_TASKS)}; task {cfg.name!r} "
                              "holds out its own evaluation rows")
        held_out = build_task(cfg.name, cfg.kwargs, cfg.system_prompt, cfg.eval_path, config.base_dir).samples
        training = without_keys(task.samples, {task.content_key(s.example) for s in held_out}, task.content_key)
    elif task.eval_samples:
        return task
    else:
        share = task.default_split if config.eval.split is None else config.eval.split
        if not share:
            return task
        training, held_out = split_by_content(task.samples, share, config.eval.split_seed, task.content_key)
    if not training:
        raise ConfigError(f"task {cfg.name!r}: every training row is also a held-out row; lower eval.split or use "
                          "a task.eval_path with other rows")
    return dataclasses.replace(task, samples=training,
                               eval_samples=without_keys(held_out, set(), task.content_key, keep_once=True))
