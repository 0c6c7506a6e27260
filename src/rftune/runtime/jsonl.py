"""Reading JSONL files, one way for all of rftune: blank lines are skipped and each record comes with where it was
read (``path:line``). Data a user wrote is read strictly: a line that is not JSON is a `DataError` naming the
file and line. A log that rftune appends to may end in a line cut short by a kill; ``skip_broken`` leaves such
lines out."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from rftune.errors import DataError


class JsonlRow(NamedTuple):
    where: str  # "path:line"
    text: str  # the line as written, without its newline
    record: Any


def jsonl_rows(path: str | Path, skip_broken: bool = False) -> Iterator[JsonlRow]:
    """The non-blank lines of `path`, parsed."""
    with Path(path).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            text = line.rstrip("\n")
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as exc:
                if skip_broken:
                    continue
                raise DataError(f"{path}:{number}: invalid JSON: {exc.msg}") from exc
            yield JsonlRow(f"{path}:{number}", text, record)


def read_jsonl(path: str | Path, skip_broken: bool = False) -> list:
    """Every record of `path`."""
    return [row.record for row in jsonl_rows(path, skip_broken)]
