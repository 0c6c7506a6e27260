"""A persistent SQLite cache of judge replies (and of other judge-made artefacts such as quizzes).

Entries are keyed by a SHA-256 hash of ``(namespace, judge cache_identity, payload)``, where the payload is the
full prompt (all chat messages) for replies, or e.g. the document and quiz settings for quizzes. Only the hash
and the value are stored: no prompt text, no endpoint address, no API key.

One connection is shared by all threads behind a lock; WAL mode lets several processes use the same file.
``path=":memory:"`` keeps a process-local cache. `CachedJudge` wraps any judge: replies found in the cache cost
no request; only replies (never failures) are stored.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from rftune.errors import ConfigError
from rftune.judges.base import Messages, judge_counters

_SCHEMA = "CREATE TABLE IF NOT EXISTS entries (key TEXT PRIMARY KEY, value TEXT NOT NULL, created REAL NOT NULL)"


def cache_key(namespace: str, identity: str, payload: Any) -> str:
    """A stable hash of what determines a cached value."""
    text = json.dumps([namespace, identity, payload], sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class JudgeCache:
    """A key-value store of JSON values in one SQLite file, safe to share between threads."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
            if self.path != ":memory:":
                self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(_SCHEMA)
            self._db.commit()
        except sqlite3.Error as exc:
            raise ConfigError(f"judge cache_path {self.path!r} cannot be used as an SQLite cache: {exc}") from exc
        self._lock = threading.Lock()

    def get(self, key: str) -> Any | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM entries WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, key: str, value: Any) -> None:
        text = json.dumps(value, ensure_ascii=False)
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO entries (key, value, created) VALUES (?, ?, ?)",
                             (key, text, time.time()))
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM entries").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()


class CachedJudge:
    """A judge whose replies are looked up in, and stored to, a `JudgeCache` first."""

    NAMESPACE = "reply"

    def __init__(self, judge, cache: JudgeCache) -> None:
        self.judge = judge
        self.cache = cache
        self.cache_identity = judge.cache_identity
        self.stats = judge_counters(judge)  # one set of counts: the wrapped judge's calls and this cache's hits

    def complete(self, messages: Messages) -> str | None:
        return self.complete_many([messages])[0]

    def complete_many(self, batch: Sequence[Messages]) -> list[str | None]:
        keys = [cache_key(self.NAMESPACE, self.cache_identity, messages) for messages in batch]
        replies: list[str | None] = [self.cache.get(key) for key in keys]
        missing: dict[str, Messages] = {}  # key -> messages, each distinct prompt asked once
        for key, messages, reply in zip(keys, batch, replies):
            if reply is None:
                missing.setdefault(key, messages)
        self.stats.add("judge/cache_hits", sum(reply is not None for reply in replies))
        fresh = dict(zip(missing, self.judge.complete_many(list(missing.values()))))
        for key, reply in fresh.items():
            if reply is not None:
                self.cache.put(key, reply)
        return [reply if reply is not None else fresh[key] for key, reply in zip(keys, replies)]
