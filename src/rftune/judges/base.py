"""The judge protocol, batched completion with bounded concurrency, and each judge's counters.

A judge turns chat messages into a reply: ``complete(messages) -> str | None`` and the batched
``complete_many(batch) -> list[str | None]`` (replies in input order). ``None`` means the judge could not answer
(timeouts, server errors, retries exhausted); rewards turn it into a ``None`` reward, never a silent zero.

Every judge has a ``cache_identity``: a string naming the model and the sampling settings that shape its
replies. The cache keys replies by it, so two judges with the same identity share cached replies.

Every judge counts its work in its own `rftune.runtime.counters.Counters` (``judge.stats``, see `judge_counters`):
prompts sent to a backend (``judge/calls``), extra attempts after a timeout or server error (``judge/retries``),
prompts that ended without a reply (``judge/failures``), replies served from the cache (``judge/cache_hits``) and
replies a
reward could not parse (``judge/parse_failures``). Scoring takes them with the rewards; the trainer logs a step's.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Protocol, Sequence, runtime_checkable

from rftune.runtime.counters import Counters, counters_of

Messages = list[dict]


@runtime_checkable
class Judge(Protocol):
    """Anything that answers chat messages; see the module docstring."""

    cache_identity: str

    def complete(self, messages: Messages) -> str | None: ...

    def complete_many(self, batch: Sequence[Messages]) -> list[str | None]: ...


JUDGE_KEYS = ("judge/calls", "judge/retries", "judge/failures", "judge/cache_hits", "judge/parse_failures")


def judge_counters(judge=None) -> Counters:
    """The counters of `judge` (given to a judge object of the user's on first use), or new ones when None."""
    return Counters(JUDGE_KEYS) if judge is None else counters_of(judge, JUDGE_KEYS)


JudgeStats = judge_counters  # the old name of a judge's counters (``JudgeStats()``: new ones)


def complete_concurrently(complete: Callable[[Messages], str | None], batch: Sequence[Messages],
                          concurrency: int) -> list[str | None]:
    """Run ``complete`` over ``batch`` with at most ``concurrency`` requests in flight; results in input order."""
    if not batch:
        return []
    workers = max(1, min(concurrency, len(batch)))
    if workers == 1:
        return [complete(messages) for messages in batch]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rftune-judge") as pool:
        return list(pool.map(complete, batch))
