"""Tasks: the one extension point. A task bundles a dataset, a prompt template and default rewards, and optionally
an environment (multi-turn episodes), its own SFT data (worked examples or generated traces) and its own evaluation
(a scorer for `rftune eval`, e.g. playing whole games). The core asks the task for each of these and never branches
on a task's name.

A task builder takes the ``task`` section of the config (options, system prompt, file, folder of the config) and
returns a `Task`. ``task.name`` is a built-in task (`TASKS`) or a user's factory named ``package.module:factory``,
imported from the current folder as ``python -m`` would (so ``examples.number_guess.task:make_task`` works from the
repository's root) or from ``PYTHONPATH``. ``dataset`` is the generic task for a user's JSONL/CSV/Parquet file.

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
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from rftune.config import RewardSpec
from rftune.errors import ConfigError
from rftune.tasks.data import load_dataset_file
from rftune.tasks.heldout import prompt_key, split_by_content, without_keys
from rftune.types import Sample


class DeferredSamples(Sequence):
    """A task's samples, made on first use: for rows that are costly to make (e.g. from generated games), so that
    asking a task for its SFT data or its evaluation does not make its training rows."""

    def __init__(self, make: Callable[[], list[Sample]]) -> None:
        self._make, self._samples = make, None

    def _rows(self) -> list[Sample]:
        if self._samples is None:
            self._samples = self._make()
        return self._samples

    def __getitem__(self, index):
        return self._rows()[index]

    def __len__(self) -> int:
        return len(self._rows())


@dataclass(frozen=True)
class Task:
    samples: Sequence[Sample]  # a list, or `DeferredSamples`
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
    # (sft.kwargs, seed) -> generated chat conversations (e.g. a solver's games): the task's SFT data, with its own
    # options; used instead of `worked_examples` when set
    sft_traces: Callable[[dict, int], list[list[dict]]] | None = None
    # the task's own `rftune eval` (e.g. playing whole games) instead of scoring held-out rows; see `EvalRequest`
    evaluator: Callable[["EvalRequest"], "EvalOutcome"] | None = None
    ordered: bool = False  # the rows are a curriculum: training takes them in this order (needs train.shuffle false)


@dataclass(frozen=True)
class EvalRequest:
    """What `rftune eval` hands a task's own evaluation: who plays, with which settings."""

    players: dict[str, tuple[str, str | None]]  # player name -> (model, adapter folder or None), in table order
    options: dict  # eval.kwargs, with the command line's --games (num_games) and --sampled (sampled) applied
    params: Any  # `rftune.rollout.generation.SamplingParams` of evaluation (eval.max_new_tokens, generation's)
    seed: int  # eval.seed: which held-out rows, and the sampling seeds
    batch_size: int  # eval.batch_size
    bootstrap: int  # eval.bootstrap: resamples of the 95% intervals
    dtype: str  # model.dtype
    device: Any  # the torch device
    config: Any = None  # the run's Config: its generation.constraint applies to every player's model


@dataclass(frozen=True)
class EvalOutcome:
    """A task's evaluation result: the report written to eval.json (with ``rows``, its list of summary rows, which
    `rftune report` shows), the table printed, each player's summary row by name (attached to repository versions),
    and whether replies were sampled."""

    report: dict
    table: str
    rows: dict[str, dict]
    sampled: bool = False


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
# game -> "module:function" playing it for `rftune play GAME` (function(args) -> exit status); imported when used.
GAMES = {"wordle": "rftune.envs.wordle.play:play"}


def game_player(game: str) -> Callable:
    """The function that plays `game` for `rftune play`."""
    module_name, _, function = GAMES[game].partition(":")
    return getattr(importlib.import_module(module_name), function)


def build_dataset_task(options: dict, system_prompt: str | None, path: str | None, base_dir: str) -> Task:
    """A user file of prompts; rewards must come from the config."""
    if options:
        raise ConfigError(f"task 'dataset' takes no task.kwargs, got {sorted(options)}")
    if not path:
        raise ConfigError("task.name=dataset needs task.path (a .jsonl, .csv or .parquet file), or the rows passed "
                          "in code (GRPOTrainer(config, dataset=rows))")
    file = Path(path)
    if not file.is_absolute() and not file.exists():
        file = Path(base_dir) / file
    return Task(samples=load_dataset_file(file, system_prompt))


def build_task(name: str, options: dict, system_prompt: str | None = None, path: str | None = None,
               base_dir: str = ".") -> Task:
    """Look up and build a task by name: a built-in one, or a user's ``package.module:factory``."""
    builder = _user_factory(name) if ":" in name else _builtin(name)
    task = builder(dict(options), system_prompt, path, base_dir)
    if not isinstance(task, Task):
        raise ConfigError(f"task.name: {name} returned {type(task).__name__}, not a rftune.tasks.Task")
    return task


def _builtin(name: str) -> Callable:
    if name not in TASKS:
        close = difflib.get_close_matches(name, TASKS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; known tasks: {', '.join(sorted(TASKS))}"
        raise ConfigError(f"task.name: unknown task {name!r}{hint}, or name your own as package.module:factory")
    module_name, _, function = TASKS[name].partition(":")
    return getattr(importlib.import_module(module_name), function)


def _user_factory(name: str) -> Callable:
    """The factory ``package.module:factory``, its module imported with the current folder on the path (as
    ``python -m`` puts it there)."""
    module_name, _, function = name.partition(":")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"task.name: cannot import {module_name!r} ({exc}); run from the folder holding the "
                          "package or put that folder on PYTHONPATH") from exc
    factory = getattr(module, function, None)
    if not callable(factory):
        raise ConfigError(f"task.name: module {module_name!r} has no callable named {function!r}")
    return factory


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
