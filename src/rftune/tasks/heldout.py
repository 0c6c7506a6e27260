"""Held-out rows by content: a seeded hash of what a row *is* decides its side, so the split does not depend on
row order, and a row keeps its side when other rows are added or removed.

A row's content key is a string (`prompt_key`: the prompt, as canonical JSON; tasks may pick another, e.g. an
arithmetic expression or a document). A row is held out when ``sha256(seed, key)`` read as a number in [0, 1) is
below the share; when that holds out nothing from a non-empty set, the row with the smallest hash is held out, so
even a tiny file has one evaluation row. Rows with equal keys are always on the same side.
"""

from __future__ import annotations

import hashlib
import json
from typing import Callable, Sequence

from rftune.types import Sample

Key = Callable[[dict], str]


def prompt_key(example: dict) -> str:
    """The row's prompt as canonical JSON (text and chat-message prompts alike)."""
    return json.dumps(example.get("prompt"), sort_keys=True, ensure_ascii=False)


def content_hash(key: str, seed: int) -> float:
    """A number in [0, 1) fixed by (seed, key)."""
    digest = hashlib.sha256(f"{seed}\0{key}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_by_content(samples: Sequence[Sample], share: float, seed: int,
                     key: Key = prompt_key) -> tuple[list[Sample], list[Sample]]:
    """(training, held out): rows whose content hash is below `share` are held out (at least one row)."""
    if not 0.0 < share < 1.0:
        raise ValueError(f"a held-out share must be between 0 and 1 (exclusive), got {share}")
    hashes = {key(s.example): content_hash(key(s.example), seed) for s in samples}
    held = {k for k, h in hashes.items() if h < share} or {min(hashes, key=hashes.get)}
    return without_keys(samples, held, key), [s for s in samples if key(s.example) in held]


def without_keys(samples: Sequence[Sample], keys: set[str], key: Key = prompt_key,
                 keep_once: bool = False) -> list[Sample]:
    """`samples` whose key is not in `keys` (with `keep_once`, equal keys only the first time), renumbered."""
    kept, seen = [], set(keys)
    for sample in samples:
        k = key(sample.example)
        if k in keys or (keep_once and k in seen):
            continue
        seen.add(k)
        kept.append(Sample(prompt=sample.prompt, example=sample.example, index=len(kept), where=sample.where))
    return kept
