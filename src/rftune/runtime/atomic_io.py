"""Writes that a crash or a kill cannot leave half done: the one place rftune writes files atomically.

A file is written under a temporary name in its own folder, flushed to disk, then renamed over the target
(`os.replace` is atomic on POSIX), and the folder entry is flushed too. A folder (a checkpoint, an adapter) is
built under a staging name, flushed, and swapped into place by `replace_dir`: a reader sees the old folder or the
new one, never a mix. Leftover staging names (``.tmp-*``) of a killed writer are the caller's to remove.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` so that the file holds either its old content or all of `data`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".tmp-{path.name}-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """`write_bytes_atomic` for UTF-8 text."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def replace_dir(staging: str | Path, final: str | Path) -> Path:
    """Move the finished folder `staging` to `final`, replacing an older `final`, after flushing it to disk."""
    staging, final = Path(staging), Path(final)
    fsync_tree(staging)
    retired = final.with_name(f".tmp-retired-{final.name}-{os.getpid()}")
    if final.exists():
        os.replace(final, retired)  # the old folder steps aside in one rename; the new one takes its name in one more
    os.replace(staging, final)
    fsync_dir(final.parent)
    shutil.rmtree(retired, ignore_errors=True)
    return final


def fsync_tree(folder: str | Path) -> None:
    """Flush every file and folder entry under `folder` to disk."""
    folder = Path(folder)
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    for path in [folder, *[p for p in folder.rglob("*") if p.is_dir()]]:
        fsync_dir(path)


def fsync_dir(folder: str | Path) -> None:
    """Flush a folder's entries (a rename inside it) to disk."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
