"""Writes that a crash or a kill cannot leave half done: the one place rftune writes files atomically.

A file is written under a temporary name in its own folder, flushed to disk, then renamed over the target
(`os.replace` is atomic on POSIX), and the folder entry is flushed too. A folder (a checkpoint, an adapter) is
built under a staging name, flushed, and swapped into place by `replace_dir`: a reader sees the old folder or the
new one, never a mix. Leftover staging names (``.tmp-*``) of a killed writer are the caller's to remove.

A folder that must be checked later (a checkpoint, an adapter, a model) gets a *manifest* written last:
``manifest.json``, ``{relative path: {size, sha256}}`` of every other file. `verify_folder` re-reads the files and
names each one that is missing, of another size or another content; a folder without its manifest is one whose
writer did not finish. `storage_errors` turns a failed write (disk full, read-only folder) into a `StorageError`
naming the folder and its free space.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from rftune.errors import StorageError

MANIFEST_NAME = "manifest.json"


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


def write_folder(final: str | Path, fill: Callable[[Path], None], what: str) -> Path:
    """Build folder `final` atomically: `fill(staging)` writes its files, the manifest goes in last, and the folder
    is swapped into place. A write that fails (disk full, read-only) removes the staging folder and raises a
    `StorageError` naming `what` and `final`; an older `final` stays as it was."""
    final = Path(final)
    staging = final.with_name(f".tmp-{final.name}-{os.getpid()}")
    try:
        with storage_errors(final, what):
            final.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(staging, ignore_errors=True)
            fill(staging)
            write_manifest(staging)
            replace_dir(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
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


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: str | Path) -> dict[str, dict]:
    """Write ``<folder>/manifest.json`` describing every other file in `folder`; call it after the last file."""
    folder = Path(folder)
    entries = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and rel != MANIFEST_NAME and not path.name.startswith(".tmp-"):
            entries[rel] = {"size": path.stat().st_size, "sha256": file_sha256(path)}
    write_text_atomic(folder / MANIFEST_NAME, json.dumps(entries, indent=1, sort_keys=True))
    return entries


def verify_folder(folder: str | Path) -> list[str]:
    """What is wrong with `folder` against its manifest, one phrase per problem (empty: every file verifies)."""
    folder = Path(folder)
    try:
        entries = json.loads((folder / MANIFEST_NAME).read_bytes())
    except FileNotFoundError:
        return [f"no {MANIFEST_NAME} (its writer did not finish)"]
    except (OSError, ValueError) as exc:
        return [f"{MANIFEST_NAME} is unreadable ({exc})"]
    problems = []
    for rel, entry in entries.items():
        path = folder / rel
        if not path.is_file():
            problems.append(f"{rel} is missing")
        elif path.stat().st_size != entry["size"]:
            problems.append(f"{rel} has {path.stat().st_size} bytes, {entry['size']} were written")
        elif file_sha256(path) != entry["sha256"]:
            problems.append(f"{rel} does not match its sha256 (damaged after it was written)")
    return problems


def free_space(path: str | Path) -> str:
    """Free space on the file system holding `path` (or its nearest existing parent), e.g. '12.3 MB'."""
    free = _free_bytes(path)
    if free < 1000:
        return f"{free} bytes"
    for unit in ("KB", "MB", "GB"):
        free /= 1000
        if free < 1000 or unit == "GB":
            break
    return f"{free:.1f} {unit}"


def _free_bytes(path: str | Path) -> int:
    path = Path(path).absolute()
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


WRITE_ERRORS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
                errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
                errno.EPERM: "permission denied", errno.EEXIST: "a file is in the way where a folder is needed",
                errno.ENOTDIR: "a file is in the way where a folder is needed"}


@contextlib.contextmanager
def storage_errors(target: str | Path, what: str):
    """Re-raise a failed write under `target` as a `StorageError` naming `what`, the cause and the free space.

    torch.save reports a full disk as a RuntimeError from its zip writer (``inline_container``, ``iostream
    error``, "file write failed"); those are read as one too.
    """
    try:
        yield
    except OSError as exc:
        if exc.errno not in WRITE_ERRORS:
            raise
        raise StorageError(_write_failure(target, what, WRITE_ERRORS[exc.errno])) from exc
    except RuntimeError as exc:
        if not any(sign in str(exc) for sign in ("inline_container", "iostream error", "write failed")):
            raise
        full = _free_bytes(target) < 1_000_000
        raise StorageError(_write_failure(target, what, "the disk is full" if full else f"a write failed ({exc})")) \
            from exc


def _write_failure(target: str | Path, what: str, cause: str) -> str:
    return f"cannot write {what} {target}: {cause}; {free_space(target)} free there"
