"""Reward functions as plain callables, adapted to one calling convention, and scoring of a batch.

Two signatures are accepted, so users can bring reward functions written for TRL unchanged:
  - per sample (rftune's own): ``f(prompt, completion, example) -> float | None``. ``prompt`` is the prompt as
    chat messages, ``completion`` the generated text, ``example`` the dataset row (a dict).
  - TRL's convention: every keyword argument TRL's ``GRPOTrainer`` passes, ``f(prompts, completions,
    completion_ids, trainer_state, log_extra, log_metric, **columns) -> list[float | None]``:
      ``prompts``         each row's prompt as the dataset gave it (text, or a list of chat messages)
      ``completions``     text; for a conversational dataset (its prompts are messages) a one-message list
                          ``[{"role": "assistant", "content": text}]`` per completion, as TRL passes them
      ``completion_ids``  the generated token ids of each completion, up to and including EOS
      ``trainer_state``   a `TrainerState` (``global_step``, ``max_steps``), for rewards that change over training
      ``log_extra``       ``log_extra(column, values)``: a column (one value per completion) of completions.jsonl
      ``log_metric``      ``log_metric(name, value)``: a scalar logged in the step's metrics (mean of the calls)
      every dataset column (but ``prompt``) as a list aligned with ``completions``.
    A function without ``**kwargs`` receives only the arguments it names. Coroutine functions are awaited.
A function with a parameter named after one of TRL's (``prompts``, ``completions``, ``completion_ids``) is called as
TRL calls it; so is one taking ``**kwargs`` (TRL passes every column, so its rewards take them), unless its first
parameters are ``prompt, completion, example``. Any other callable is per sample (called with those three,
positionally). ``None`` means "not applicable": the value is left out of the weighted total and of that
function's mean.

A function that raises or returns an unusable value stops scoring with a `RewardError` naming the function and
the sample, unless ``on_error="skip"``: then the value becomes ``None`` and the failure is counted.

What a function works with besides its inputs — a sandbox, a judge — arrives among its keyword arguments
(`rftune.rewards.resources`) and counts its work in its ``stats``; `score_batch` takes those counts after each
function and returns them with the rewards.

With a ``timeout`` (``rewards.timeout``) each call runs in a daemon thread and a call that has not returned in
time is such a failure, naming the function and the limit; the rest of that batch is not asked of the same
function again (each would wait as long). Python cannot stop a thread, so a call that hangs for good keeps its
thread until the process exits.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from rftune.errors import RewardError
from rftune.runtime.counters import Counters, add_counts

PER_SAMPLE_PARAMS = ("prompt", "completion", "example")
TRL_PARAMS = ("prompts", "completions", "completion_ids")


@dataclass(frozen=True)
class RewardFunction:
    """A reward callable with the name and weight it carries in the weighted total."""

    name: str
    fn: Callable
    weight: float = 1.0
    batched: bool = False
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainerState:
    """What a TRL-convention reward sees of training progress (the fields of TRL's ``TrainerState`` it uses)."""

    global_step: int = 0  # optimizer steps done (0 outside training, e.g. in `rftune eval`)
    max_steps: int = 0


@dataclass
class RewardLogs:
    """What reward functions logged through ``log_metric`` and ``log_extra`` while one batch was scored."""

    metrics: dict[str, list[float]] = field(default_factory=dict)  # name -> values of the calls
    columns: dict[str, list] = field(default_factory=dict)  # column -> one value per completion

    def log_metric(self, name: str, value: float) -> None:
        self.metrics.setdefault(name, []).append(float(value))

    def log_extra(self, column: str, values: list) -> None:
        self.columns.setdefault(column, []).extend(values)


def as_reward_function(fn: Callable, name: str | None = None, weight: float = 1.0,
                       kwargs: dict[str, Any] | None = None) -> RewardFunction:
    """Wrap a user callable; `kwargs` are bound as keyword arguments on every call."""
    if isinstance(fn, RewardFunction):
        return fn
    return RewardFunction(name=name or _callable_name(fn), fn=fn, weight=float(weight), batched=_is_trl_style(fn),
                          kwargs=dict(kwargs or {}))


def _is_trl_style(fn: Callable) -> bool:
    """Whether `fn` takes TRL's keyword arguments rather than rftune's per-sample ones (see the module docstring)."""
    params = inspect.signature(fn).parameters
    if any(name in params for name in TRL_PARAMS):
        return True
    if tuple(params)[:3] == PER_SAMPLE_PARAMS:
        return False
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _callable_name(fn: Callable) -> str:
    """A function's name; a callable object's class name (TRL's factories return such objects)."""
    target = getattr(fn, "func", fn)  # functools.partial
    return getattr(target, "__name__", None) or type(target).__name__


def unique_names(functions: Sequence[RewardFunction]) -> list[RewardFunction]:
    """The functions, a repeated name numbered from its second use (``exact_answer``, ``exact_answer_2``)."""
    seen: dict[str, int] = {}
    unique = []
    for rf in functions:
        count = seen.get(rf.name, 0)
        seen[rf.name] = count + 1
        unique.append(rf if count == 0 else RewardFunction(f"{rf.name}_{count + 1}", rf.fn, rf.weight, rf.batched,
                                                           rf.kwargs))
    return unique


@dataclass(frozen=True)
class Scores:
    """What scoring a batch gives: the values, the failures skipped per function name, and the counts of the
    sandboxes' and judges' work while scoring (``sandbox/*``, ``judge/*``)."""

    rewards_per_func: torch.Tensor  # [B, K], NaN where a function returned None or failed under on_error="skip"
    failures: dict[str, int]
    stats: dict[str, int]


def score_batch(reward_functions: Sequence[RewardFunction], prompts: Sequence[Any], completions: Sequence[str],
                examples: Sequence[dict], on_error: str = "raise", timeout: float | None = None,
                completion_ids: Sequence[list[int]] | None = None, state: TrainerState | None = None,
                logs: RewardLogs | None = None) -> Scores:
    """Score every completion with every function, each call within `timeout` seconds (None: no limit); see
    `Scores`.

    ``prompts`` are the samples' prompts as chat messages (per-sample functions get them; TRL-convention functions
    get each row's ``prompt`` as the dataset gave it), ``completion_ids`` the generated tokens of each completion,
    ``state`` the training progress and ``logs`` what the functions log (see the module docstring).
    """
    trl_arguments = None
    if any(rf.batched for rf in reward_functions):
        trl_arguments = _trl_arguments(prompts, completions, examples, completion_ids, state,
                                       logs if logs is not None else RewardLogs())
    columns, stats = [], []
    for rf in reward_functions:
        columns.append(_score_batched(rf, prompts, trl_arguments, on_error, timeout) if rf.batched
                       else _score_per_sample(rf, prompts, completions, examples, on_error, timeout))
        stats += [value.stats.snapshot_and_reset() for value in rf.kwargs.values()
                  if isinstance(getattr(value, "stats", None), Counters)]
    failures = {rf.name: count for rf, (_, count) in zip(reward_functions, columns)}
    values = [[math.nan if v is None else v for v in col] for col, _ in columns]
    rewards_per_func = torch.tensor(values, dtype=torch.float32).T.reshape(len(completions), len(reward_functions))
    return Scores(rewards_per_func, failures, add_counts(stats))


def score_completions(reward_functions: Sequence[RewardFunction], prompts: Sequence[Any],
                      completions: Sequence[str], examples: Sequence[dict], on_error: str = "raise",
                      timeout: float | None = None, **trl: Any) -> tuple[torch.Tensor, dict[str, int]]:
    """`score_batch` without the counts: ``rewards_per_func`` [B, K] and the failures per function name; `trl`:
    ``completion_ids``, ``state``, ``logs`` as there."""
    scores = score_batch(reward_functions, prompts, completions, examples, on_error, timeout, **trl)
    return scores.rewards_per_func, scores.failures


def is_conversational(prompt: Any) -> bool:
    """Whether a dataset prompt is chat messages (TRL then passes completions as messages too)."""
    return isinstance(prompt, list)


def completion_texts(completions: Sequence[Any]) -> list[str]:
    """The text of each completion, whether given as text or as TRL's ``[{"role": "assistant", "content": ...}]``."""
    return [c[-1]["content"] if isinstance(c, list) else c for c in completions]


def _trl_arguments(prompts, completions, examples, completion_ids, state, logs: RewardLogs) -> dict[str, Any]:
    """The keyword arguments TRL's GRPOTrainer passes to a reward function, for this batch."""
    given = [example.get("prompt", prompt) for example, prompt in zip(examples, prompts)]
    if given and is_conversational(given[0]):
        completions = [[{"role": "assistant", "content": text}] for text in completions]
    keys = [key for key in (examples[0] if examples else {}) if key not in ("prompt", "completion", "completion_ids")]
    columns = {key: [example.get(key) for example in examples] for key in keys}
    arguments = {"prompts": given, "completions": list(completions), **columns,
                 "trainer_state": state or TrainerState(), "log_extra": logs.log_extra, "log_metric": logs.log_metric}
    if completion_ids is not None:
        arguments["completion_ids"] = [list(ids) for ids in completion_ids]
    return arguments


def _resolved(fn: Callable, /, **kwargs):
    """``fn(**kwargs)``, awaited when it returns an awaitable (TRL accepts async reward functions)."""
    result = fn(**kwargs)
    return asyncio.run(result) if inspect.isawaitable(result) else result


def _accepted(fn: Callable, arguments: dict[str, Any]) -> dict[str, Any]:
    """All arguments for a function with ``**kwargs``; else only those it names."""
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return arguments
    return {key: value for key, value in arguments.items() if key in params}


def weighted_total(rewards_per_func: torch.Tensor, weights: Sequence[float]) -> torch.Tensor:
    """R_i = sum_k w_k r_k(i), leaving out functions that returned None (NaN). [B, K] -> [B]"""
    w = torch.tensor(list(weights), dtype=rewards_per_func.dtype)  # [K]
    return torch.nansum(rewards_per_func * w, dim=1)  # [B]


class RewardTimeout(Exception):
    """A reward call did not return within ``rewards.timeout``."""


def _call(fn: Callable, timeout: float | None, /, *args, **kwargs):
    """``fn(*args, **kwargs)``, in a daemon thread when there is a `timeout`."""
    if timeout is None:
        return fn(*args, **kwargs)
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = fn(*args, **kwargs)
        except Exception as exc:  # handed back to the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True, name="rftune-reward")
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise RewardTimeout(f"did not return within rewards.timeout={timeout:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _score_per_sample(rf: RewardFunction, prompts, completions, examples, on_error: str,
                      timeout: float | None) -> tuple[list, int]:
    values, failures = [], 0
    for i, (prompt, completion, example) in enumerate(zip(prompts, completions, examples)):
        try:
            value = _check_value(_call(rf.fn, timeout, prompt, completion, example, **rf.kwargs))
        except Exception as exc:  # a user function failed: name it and the sample
            if on_error != "skip":
                raise RewardError(_describe(rf, i, prompt, exc)) from exc
            if isinstance(exc, RewardTimeout):  # the others would wait as long: all of them count as failed
                skipped = len(completions) - len(values)
                return values + [None] * skipped, failures + skipped
            value, failures = None, failures + 1
        values.append(value)
    return values, failures


def _score_batched(rf: RewardFunction, prompts, arguments: dict[str, Any], on_error: str,
                   timeout: float | None) -> tuple[list, int]:
    size = len(arguments["completions"])
    try:
        result = list(_call(_resolved, timeout, rf.fn, **_accepted(rf.fn, arguments), **rf.kwargs))
        if len(result) != size:
            raise ValueError(f"returned {len(result)} values for {size} completions")
    except Exception as exc:
        if on_error != "skip":
            raise RewardError(f"reward function {rf.name!r} failed on a batch of {size} samples "
                              f"(first prompt: {_excerpt(prompts[0])!r}): {type(exc).__name__}: {exc}") from exc
        return [None] * size, size
    values, failures = [], 0
    for i, value in enumerate(result):
        try:
            values.append(_check_value(value))
        except Exception as exc:
            if on_error != "skip":
                raise RewardError(_describe(rf, i, prompts[i], exc)) from exc
            values.append(None)
            failures += 1
    return values, failures


def _check_value(value) -> float | None:
    if value is None:
        return None
    if isinstance(value, str) or not hasattr(value, "__float__"):
        raise TypeError(f"returned {type(value).__name__} {value!r}, expected a number or None")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"returned non-finite value {number}")
    return number


def _describe(rf: RewardFunction, index: int, prompt, exc: Exception) -> str:
    return (f"reward function {rf.name!r} failed on sample {index} (prompt: {_excerpt(prompt)!r}): "
            f"{type(exc).__name__}: {exc}")


def _excerpt(prompt, limit: int = 80) -> str:
    if isinstance(prompt, list) and prompt and isinstance(prompt[-1], dict):
        prompt = prompt[-1].get("content", "")
    text = str(prompt).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."
