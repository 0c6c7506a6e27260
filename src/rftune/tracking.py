"""What a run leaves behind while it trains: metrics.jsonl, completions.jsonl and a live progress line.

Both JSONL files get one flushed line per record. On resume they are first cut back to the checkpoint's step,
so records of steps that will be redone are not duplicated.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, TextIO

from rftune.atomic_io import write_text_atomic


class JsonlLog:
    """Append-only JSONL file of records that carry a ``step`` field."""

    def __init__(self, path: str | Path, keep_through_step: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if keep_through_step is not None and self.path.exists():
            self._truncate(keep_through_step)
        self._handle = self.path.open("a", encoding="utf-8")

    def _truncate(self, last_step: int) -> None:
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a kill
                continue
            if record.get("step", 0) <= last_step:
                kept.append(line)
        write_text_atomic(self.path, "".join(f"{line}\n" for line in kept))

    def write(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            self._handle.write(json.dumps(record, ensure_ascii=False, default=_jsonable) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


def read_jsonl(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def format_progress(metrics: dict[str, float], max_steps: int) -> str:
    """One line: step, reward mean, KL, completion length, seconds per step."""
    def number(key, fmt):
        value = metrics.get(key)
        return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)

    return (f"step {metrics['step']}/{max_steps} | reward {number('reward/mean', '.3f')} "
            f"± {number('reward/std', '.3f')} | kl {number('kl', '.4f')} | len {number('completion_len/mean', '.1f')} "
            f"| {number('time/step', '.1f')} s/step")


def print_progress(metrics: dict[str, float], max_steps: int, stream: TextIO | None = None) -> None:
    """One progress line to `stream` (default: the current sys.stderr, looked up at each call)."""
    print(format_progress(metrics, max_steps), file=stream or sys.stderr, flush=True)
