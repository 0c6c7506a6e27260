"""Reward functions as plain callables, adapted to one calling convention, and scoring of a batch.

Two signatures are accepted, so users can bring reward functions written for other libraries:
  - per sample:  ``f(prompt, completion, example) -> float | None``
  - batched (TRL style): ``f(prompts, completions, **columns) -> list[float | None]``, where each dataset column
    arrives as a list aligned with ``completions``.
A function is treated as batched when it has a parameter named ``prompts`` or ``completions``.

``prompt`` is the sample's prompt as the dataset gave it (a string or a list of chat messages); ``completion`` is
the generated text; ``example`` is the dataset row (a dict). ``None`` means "not applicable": the value is left
out of the weighted total and of that function's mean.

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

import functools
import inspect
import math
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from rftune.runtime.counters import Counters, add_counts
from rftune.errors import RewardError

PER_SAMPLE_PARAMS = ("prompt", "completion", "example")


@dataclass(frozen=True)
class RewardFunction:
    """A reward callable with the name and weight it carries in the weighted total."""

    name: str
    fn: Callable
    weight: float = 1.0
    batched: bool = False
    kwargs: dict[str, Any] = field(default_factory=dict)


def as_reward_function(fn: Callable, name: str | None = None, weight: float = 1.0,
                       kwargs: dict[str, Any] | None = None) -> RewardFunction:
    """Wrap a user callable; `kwargs` are bound as keyword arguments on every call."""
    if isinstance(fn, RewardFunction):
        return fn
    target = fn.func if isinstance(fn, functools.partial) else fn
    params = inspect.signature(target).parameters
    batched = "prompts" in params or "completions" in params
    return RewardFunction(name=name or getattr(target, "__name__", "reward"), fn=fn, weight=float(weight),
                          batched=batched, kwargs=dict(kwargs or {}))


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
                examples: Sequence[dict], on_error: str = "raise", timeout: float | None = None) -> Scores:
    """Score every completion with every function, each call within `timeout` seconds (None: no limit); see
    `Scores`."""
    columns, stats = [], []
    for rf in reward_functions:
        columns.append(_score_one(rf, prompts, completions, examples, on_error, timeout))
        stats += [value.stats.snapshot_and_reset() for value in rf.kwargs.values()
                  if isinstance(getattr(value, "stats", None), Counters)]
    failures = {rf.name: count for rf, (_, count) in zip(reward_functions, columns)}
    values = [[math.nan if v is None else v for v in col] for col, _ in columns]
    rewards_per_func = torch.tensor(values, dtype=torch.float32).T.reshape(len(completions), len(reward_functions))
    return Scores(rewards_per_func, failures, add_counts(stats))


def score_completions(reward_functions: Sequence[RewardFunction], prompts: Sequence[Any],
                      completions: Sequence[str], examples: Sequence[dict],
                      on_error: str = "raise", timeout: float | None = None) -> tuple[torch.Tensor, dict[str, int]]:
    """`score_batch` without the counts: ``rewards_per_func`` [B, K] and the failures per function name."""
    scores = score_batch(reward_functions, prompts, completions, examples, on_error, timeout)
    return scores.rewards_per_func, scores.failures


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


def _score_one(rf: RewardFunction, prompts, completions, examples, on_error: str,
               timeout: float | None) -> tuple[list, int]:
    if rf.batched:
        return _score_batched(rf, prompts, completions, examples, on_error, timeout)
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


def _score_batched(rf: RewardFunction, prompts, completions, examples, on_error: str,
                   timeout: float | None) -> tuple[list, int]:
    columns = {key: [ex.get(key) for ex in examples] for key in examples[0] if key != "prompt"} if examples else {}
    try:
        result = list(_call(rf.fn, timeout, prompts=list(prompts), completions=list(completions), **columns,
                            **rf.kwargs))
        if len(result) != len(completions):
            raise ValueError(f"returned {len(result)} values for {len(completions)} completions")
    except Exception as exc:
        if on_error != "skip":
            raise RewardError(f"reward function {rf.name!r} failed on a batch of {len(completions)} samples "
                              f"(first prompt: {_excerpt(prompts[0])!r}): {type(exc).__name__}: {exc}") from exc
        return [None] * len(completions), len(completions)
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
