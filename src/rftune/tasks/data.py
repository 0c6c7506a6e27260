"""Datasets of prompts: reading user files, normalising prompts to chat messages, and the seeded prompt stream.

A user dataset is a JSONL, CSV or Parquet file with a ``prompt`` column — either text or a list of chat messages
(``{"role", "content"}``). Every other column is passed to reward functions. Text prompts become a user message,
preceded by the task's system prompt when there is one. A malformed row raises `DataError` naming the file and
the row (1-based line number for JSONL/CSV, 0-based row index for Parquet); so does a line that is not UTF-8,
and an empty file is named as such.

`PromptStream` hands out prompts in a seeded shuffled order, epoch after epoch (or in the dataset's own order, for a
curriculum); its ``position`` (prompts consumed so far) is all it needs to resume exactly where a run stopped.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Iterable

import torch

from rftune.errors import DataError
from rftune.runtime.jsonl import jsonl_rows, text_lines
from rftune.types import Sample

ROLES = {"system", "user", "assistant", "tool"}


def to_messages(prompt: Any, system_prompt: str | None, where: str) -> list[dict]:
    """Normalise a prompt (text or messages) to chat messages, checking its shape."""
    if isinstance(prompt, str):
        if not prompt.strip():
            raise DataError(f"{where}: 'prompt' is empty")
        messages = [{"role": "user", "content": prompt}]
    elif isinstance(prompt, list) and prompt:
        for i, message in enumerate(prompt):
            if not (isinstance(message, dict) and message.get("role") in ROLES
                    and isinstance(message.get("content"), str)):
                raise DataError(f"{where}: prompt message {i} must be {{'role': one of {sorted(ROLES)}, "
                                f"'content': text}}, got {message!r}")
        messages = [dict(m) for m in prompt]
    else:
        raise DataError(f"{where}: 'prompt' must be text or a non-empty list of chat messages, got {prompt!r}")
    if system_prompt and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


def samples_from_rows(rows: Iterable[tuple[str, dict]], system_prompt: str | None = None,
                      source: str = "the dataset") -> list[Sample]:
    """Build samples from (location, row) pairs; the location names the row in error messages, `source` the
    dataset when it has no rows."""
    samples = []
    for where, row in rows:
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected an object with a 'prompt' key, got {type(row).__name__}")
        if "prompt" not in row:
            raise DataError(f"{where}: missing 'prompt' (columns: {', '.join(map(str, row)) or 'none'})")
        samples.append(Sample(prompt=to_messages(row["prompt"], system_prompt, where), example=dict(row),
                              index=len(samples), where=where))
    if not samples:
        raise DataError(f"{source} has no rows")
    return samples


def load_dataset_file(path: str | Path, system_prompt: str | None = None) -> list[Sample]:
    """Read a JSONL / CSV / Parquet file of prompts."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"dataset file not found: {path}")
    readers = {".jsonl": _jsonl_rows, ".json": _jsonl_rows, ".csv": _csv_rows, ".parquet": _parquet_rows}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"{path}: unsupported dataset format {path.suffix!r} (use .jsonl, .csv or .parquet)")
    empty = " (the file is empty)" if path.stat().st_size == 0 else ""
    return samples_from_rows(reader(path), system_prompt, source=f"{path}{empty}")


def _jsonl_rows(path: Path):
    return ((row.where, row.record) for row in jsonl_rows(path))


def _csv_rows(path: Path):
    text = "\n".join(text_lines(path))
    for number, row in enumerate(csv.DictReader(io.StringIO(text, newline="")), start=2):  # line 1: the header
        yield f"{path}:{number}", _parse_json_cells(row)


def _parse_json_cells(row: dict) -> dict:
    """CSV cells holding a JSON list (chat messages) are decoded; everything else stays text."""
    prompt = row.get("prompt")
    if isinstance(prompt, str) and prompt.lstrip().startswith("[{"):
        try:
            row["prompt"] = json.loads(prompt)
        except json.JSONDecodeError:
            pass
    return row


def _parquet_rows(path: Path):
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for unreadable files
        raise DataError(f"{path}: cannot read Parquet: {exc}") from exc
    for number, row in enumerate(table.to_pylist()):
        yield f"{path}: row {number}", row


class PromptStream:
    """Seeded, epoch-wise shuffled order over `num_samples` items (``shuffle=False``: 0, 1, 2, ... every epoch);
    resumable from `position`."""

    def __init__(self, num_samples: int, seed: int, position: int = 0, shuffle: bool = True):
        self.num_samples = num_samples
        self.seed = seed
        self.position = position
        self.shuffle = shuffle
        self._cached: tuple[int, list[int]] = (-1, [])

    def _order(self, epoch: int) -> list[int]:
        if self._cached[0] != epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._cached = (epoch, torch.randperm(self.num_samples, generator=generator).tolist())
        return self._cached[1]

    def take(self, count: int) -> list[int]:
        """The next `count` indices; advances `position`."""
        indices = []
        while len(indices) < count:
            epoch, offset = divmod(self.position, self.num_samples)
            indices.append(self._order(epoch)[offset] if self.shuffle else offset)
            self.position += 1
        return indices


class RankShard:
    """One rank's share of a global `PromptStream`: each ``take(n)`` advances the global stream by n x world and
    returns this rank's n of them (rank r gets the r-th block), so every rank agrees on the global position and the
    union over ranks is what one process would have taken."""

    def __init__(self, stream: PromptStream, rank: int, world_size: int):
        self.stream, self.rank, self.world_size = stream, rank, world_size

    @property
    def position(self) -> int:
        return self.stream.position

    def take(self, count: int) -> list[int]:
        indices = self.stream.take(count * self.world_size)
        return indices[self.rank * count:(self.rank + 1) * count]

    def next_positions(self, count: int) -> list[int]:
        """The global stream positions of the indices the next ``take(count)`` returns here."""
        first = self.stream.position + self.rank * count
        return list(range(first, first + count))
