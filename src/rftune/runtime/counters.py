"""Thread-safe counters: a fixed set of named counts that worker threads add to and their owner reads.

One type serves every resource that counts its work: each judge (``judge/*``: calls, retries, failures, cache
hits, unreadable replies) and each sandbox (``sandbox/*``: runs by outcome, cache hits). The counts live on the
object that makes them; scoring takes them (`Counters.snapshot_and_reset`) and returns them with the rewards
(`rftune.rewards.base.score_batch`), and the trainer adds up a step's and logs them. No count is shared through a
module global.
"""

from __future__ import annotations

import threading
from typing import Iterable


class Counters:
    """Counts of a fixed set of keys, safe to add to from several threads."""

    def __init__(self, keys: Iterable[str]) -> None:
        self.keys = tuple(keys)
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(self.keys, 0)

    def add(self, key: str, amount: int = 1) -> None:
        if key not in self._counts:
            raise KeyError(f"unknown counter {key!r}; known: {', '.join(self.keys)}")
        with self._lock:
            self._counts[key] += amount

    def snapshot(self) -> dict[str, int]:
        """The counts so far."""
        with self._lock:
            return dict(self._counts)

    def snapshot_and_reset(self) -> dict[str, int]:
        """The counts since the last reset, then zero them."""
        with self._lock:
            counts, self._counts = self._counts, dict.fromkeys(self.keys, 0)
            return counts


def counters_of(owner, keys: Iterable[str]) -> Counters:
    """``owner.stats``; an object of the user's without one (a judge written for the `Judge` protocol) is given
    counters of these keys on first use."""
    stats = getattr(owner, "stats", None)
    if not isinstance(stats, Counters):
        stats = Counters(keys)
        owner.stats = stats
    return stats


def add_counts(parts: Iterable[dict[str, int]]) -> dict[str, int]:
    """Key-wise sums of several count dicts."""
    total: dict[str, int] = {}
    for part in parts:
        for key, value in part.items():
            total[key] = total.get(key, 0) + value
    return total
