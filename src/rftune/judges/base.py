"""The judge protocol, batched completion with bounded concurrency, and the judge counters the trainer logs.

A judge turns chat messages into a reply: ``complete(messages) -> str | None`` and the batched
``complete_many(batch) -> list[str | None]`` (replies in input order). ``None`` means the judge could not answer
(timeouts, server errors, retries exhausted); rewards turn it into a ``None`` reward, never a silent zero.

Every judge has a ``cache_identity``: a string naming the model and the sampling settings that shape its
replies. The cache keys replies by it, so two judges with the same identity share cached replies.

`JUDGE_STATS` counts, for the whole process, prompts sent to a backend (``judge/calls``), extra attempts after a
timeout or server error (``judge/retries``), prompts that ended without a reply (``judge/failures``), replies
served from the cache (``judge/cache_hits``) and replies a reward could not parse (``judge/parse_failures``).
The trainer reads and clears them once per step with ``snapshot_and_reset()``.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Protocol, Sequence, runtime_checkable

Messages = list[dict]


@runtime_checkable
class Judge(Protocol):
    """Anything that answers chat messages; see the module docstring."""

    cache_identity: str

    def complete(self, messages: Messages) -> str | None: ...

    def complete_many(self, batch: Sequence[Messages]) -> list[str | None]: ...


class JudgeStats:
    """Thread-safe counters of judge activity, read and cleared once per training step."""

    KEYS = ("judge/calls", "judge/retries", "judge/failures", "judge/cache_hits", "judge/parse_failures")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(self.KEYS, 0)

    def add(self, key: str, amount: int = 1) -> None:
        if key not in self._counts:
            raise KeyError(f"unknown judge counter {key!r}; known: {', '.join(self.KEYS)}")
        with self._lock:
            self._counts[key] += amount

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def snapshot_and_reset(self) -> dict[str, int]:
        """The counts since the last reset, then zero them."""
        with self._lock:
            counts, self._counts = self._counts, dict.fromkeys(self.KEYS, 0)
            return counts


JUDGE_STATS = JudgeStats()


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
