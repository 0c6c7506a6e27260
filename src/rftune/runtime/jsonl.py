"""Reading text and JSONL files, one way for all of rftune: bytes first, so that a line that is not UTF-8 is named
(file, line, byte) rather than failing the whole file, and each record comes with where it was read (``path:line``).

Data a user wrote is read strictly: a line that is not UTF-8 or not JSON is a `DataError` naming the file and line;
blank lines are skipped. A log that rftune appends to (``log=True``) may end in a line a kill cut short anywhere,
even inside a multi-byte character: a last line without its newline that does not parse is left out (resume and
the report treat the same cut the same way). ``skip_bad`` leaves out every line that does not parse.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from rftune.errors import DataError


class JsonlRow(NamedTuple):
    where: str  # "path:line"
    raw: bytes  # the line as written, without its newline
    record: Any


def jsonl_rows(path: str | Path, log: bool = False, skip_bad: bool = False) -> Iterator[JsonlRow]:
    """The non-blank lines of `path`, parsed (see the module docstring for `log` and `skip_bad`)."""
    lines = Path(path).read_bytes().split(b"\n")
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        cut = log and number == len(lines)  # the last piece has no newline: a kill may have cut it
        try:
            record = json.loads(_decoded(raw, f"{path}:{number}"))
        except (DataError, json.JSONDecodeError) as exc:
            if cut or skip_bad:
                continue
            if isinstance(exc, DataError):
                raise
            raise DataError(f"{path}:{number}: invalid JSON: {exc.msg}") from exc
        yield JsonlRow(f"{path}:{number}", raw, record)


def read_jsonl(path: str | Path, log: bool = False, skip_bad: bool = False) -> list:
    """Every record of `path` (see `jsonl_rows`)."""
    return [row.record for row in jsonl_rows(path, log, skip_bad)]


def text_lines(path: str | Path) -> list[str]:
    """The lines of a text file; a line that is not UTF-8 is a `DataError` naming the file, line and byte."""
    return [_decoded(raw, f"{path}:{number}")
            for number, raw in enumerate(Path(path).read_bytes().split(b"\n"), start=1)]


def _decoded(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{where}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); convert "
                        "the file to UTF-8") from None
