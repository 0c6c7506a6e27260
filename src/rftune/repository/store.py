"""The model repository's store: an SQLite index of versions plus their files kept once each by content hash.

Layout under the repository folder::

    index.sqlite               versions, per-name counters, tags, eval results (WAL journal)
    blobs/sha256/ab/cdef...    every stored file, named by the sha256 of its bytes (read-only)
    trees/<tree hash>/         a version's folder rebuilt from hard links to its blobs, made on first use

A version is a folder (a PEFT adapter or full weights) described by its *manifest*, ``{relative path: {sha256,
size}}``; the tree hash is the sha256 of that manifest. Registering writes the blobs first (each atomically, see
`rftune.runtime.atomic_io`) and the index row last, in one ``BEGIN IMMEDIATE`` transaction that also draws the next
version number from the name's counter: two processes registering at once serialise on the lock (busy timeout
60 s) and get distinct numbers, and a kill before the commit leaves only unreferenced blobs, never a row that
points at missing files. Version numbers are never reused, even after ``rm``. Blobs deleted by hand, or changed
(a blob whose bytes no longer hash to its name, even at the same size), make their versions *broken*: listed as
such, refused when loaded or exported, never a crash; `Repository.problems` names them (``rftune models verify``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rftune.config import NAME_PATTERN
from rftune.errors import RepositoryError
from rftune.runtime.atomic_io import MANIFEST_NAME, file_sha256, replace_dir, storage_errors, write_bytes_atomic

_NAME = re.compile(rf"^{NAME_PATTERN}$")
_REFERENCE = re.compile(rf"^(?P<name>{NAME_PATTERN})@(?P<selector>[^/\\@]*)$")
_BUSY_TIMEOUT_MS = 60_000
_SCHEMA = """
CREATE TABLE names (name TEXT PRIMARY KEY, next_version INTEGER NOT NULL);
CREATE TABLE versions (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    kind TEXT NOT NULL,            -- 'adapter' (PEFT) or 'full' (complete weights)
    parent_id INTEGER REFERENCES versions(id),
    tree TEXT NOT NULL,            -- sha256 of the manifest
    manifest TEXT NOT NULL,        -- JSON {relative path: {sha256, size}}
    info TEXT NOT NULL,            -- JSON: stage, base model, config, data, rewards, metrics, run folder, times
    created_at TEXT NOT NULL,
    UNIQUE (name, version)
);
CREATE TABLE tags (name TEXT NOT NULL, tag TEXT NOT NULL, version_id INTEGER NOT NULL REFERENCES versions(id),
                   PRIMARY KEY (name, tag));
CREATE TABLE evals (id INTEGER PRIMARY KEY, version_id INTEGER NOT NULL REFERENCES versions(id),
                    created_at TEXT NOT NULL, result TEXT NOT NULL);
"""


@dataclass(frozen=True)
class Version:
    """One registered version, as the index holds it."""

    id: int
    name: str
    version: int
    kind: str
    parent_id: int | None
    tree: str
    manifest: dict[str, dict[str, Any]]
    info: dict[str, Any]
    created_at: str

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


def now() -> str:
    """The current UTC time in ISO 8601, to the second (the repository's timestamps)."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def is_reference(text: str | None) -> bool:
    """Whether `text` reads as ``NAME@SELECTOR`` (and is not an existing file or folder of that name)."""
    return bool(text) and _REFERENCE.match(text) is not None and not Path(text).exists()


def check_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise RepositoryError(f"model name {name!r}: use letters, digits, '.', '_' or '-', starting with a letter "
                              "or digit")
    return name


def manifest_of(folder: str | Path) -> dict[str, dict[str, Any]]:
    """``{relative path: {sha256, size}}`` of every file under `folder`; staging leftovers ``.tmp-*`` and the
    folder's own ``manifest.json`` (the repository keeps this manifest in its index instead) are left out."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RepositoryError(f"{folder}: not a folder")
    entries = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and rel != MANIFEST_NAME and not any(part.startswith(".tmp-") for part in rel.split("/")):
            entries[rel] = {"sha256": file_sha256(path), "size": path.stat().st_size}
    if not entries:
        raise RepositoryError(f"{folder}: no files to register")
    return entries


def tree_hash(manifest: dict[str, dict[str, Any]]) -> str:
    listing = {rel: entry["sha256"] for rel, entry in manifest.items()}
    return hashlib.sha256(json.dumps(listing, sort_keys=True).encode()).hexdigest()


class Repository:
    """The repository rooted at `root` (created on first write)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.index_path = self.root / "index.sqlite"

    # ---------------------------------------------------------------------------------------------- index
    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        self.root.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.index_path, timeout=_BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        try:
            db.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            db.execute("PRAGMA foreign_keys = ON")
            if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")
            self._ensure_schema(db)
            yield db
        except sqlite3.DatabaseError as exc:
            raise RepositoryError(f"model repository index {self.index_path}: {exc}") from exc
        finally:
            db.close()

    @staticmethod
    def _ensure_schema(db: sqlite3.Connection) -> None:
        if db.execute("PRAGMA user_version").fetchone()[0] == 1:
            return
        with _transaction(db):
            if db.execute("PRAGMA user_version").fetchone()[0] == 0:  # another process may have made it meanwhile
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute("PRAGMA user_version = 1")

    def versions(self, name: str | None = None) -> list[Version]:
        """All versions (of `name`), oldest first."""
        if not self.index_path.exists():
            return []
        where, params = ("WHERE name = ?", (name,)) if name else ("", ())
        with self._connect() as db:
            rows = db.execute(f"SELECT * FROM versions {where} ORDER BY name, version", params).fetchall()
        return [_version(row) for row in rows]

    def get(self, version_id: int) -> Version | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM versions WHERE id = ?", (version_id,)).fetchone()
        return _version(row) if row else None

    def tags(self, version: Version) -> list[str]:
        with self._connect() as db:
            rows = db.execute("SELECT tag FROM tags WHERE version_id = ? ORDER BY tag", (version.id,)).fetchall()
        return [tag for (tag,) in rows]

    def evals(self, version: Version) -> list[dict[str, Any]]:
        """Eval results attached to `version`, oldest first."""
        with self._connect() as db:
            rows = db.execute("SELECT created_at, result FROM evals WHERE version_id = ? ORDER BY id",
                              (version.id,)).fetchall()
        return [{"created_at": created, **json.loads(result)} for created, result in rows]

    def children(self, version: Version) -> list[Version]:
        return [v for v in self.versions() if v.parent_id == version.id]

    def lineage(self, version: Version) -> list[Version]:
        """`version`, its parent, the parent's parent, ... (back to a version trained from the base model)."""
        chain = [version]
        while chain[-1].parent_id is not None and len(chain) < 1000:
            parent = self.get(chain[-1].parent_id)
            if parent is None:
                break
            chain.append(parent)
        return chain

    def find_by_tree(self, tree: str, prefer_name: str | None = None) -> Version | None:
        """The newest version whose files are exactly `tree` (one of `prefer_name` first)."""
        matches = [v for v in self.versions() if v.tree == tree]
        preferred = [v for v in matches if v.name == prefer_name]
        return (preferred or matches or [None])[-1]

    # ---------------------------------------------------------------------------------------- references
    def resolve(self, reference: str) -> Version:
        """The version `reference` (``NAME@V``, ``NAME@TAG`` or ``NAME@latest``) names; errors list what exists."""
        match = _REFERENCE.match(reference or "")
        if not match:
            raise RepositoryError(f"{reference!r} is not a model reference (NAME@VERSION, NAME@TAG or NAME@latest)")
        name, selector = match["name"], match["selector"]
        versions = self.versions(name)
        if not versions:
            raise RepositoryError(f"no model named {name!r} in the repository {self.root}; "
                                  f"{self._names_summary()}")
        tags = self._tag_map(name)
        choices = _choices(name, versions, tags)
        if not selector:
            raise RepositoryError(f"{reference!r} names no version; {choices}")
        if selector == "latest":
            return versions[-1]
        if selector.isdigit():
            found = [v for v in versions if v.version == int(selector)]
            if found:
                return found[0]
            raise RepositoryError(f"{name} has no version {selector}; {choices}")
        if selector in tags:
            return next(v for v in versions if v.id == tags[selector])
        raise RepositoryError(f"{name} has no tag {selector!r}; {choices}")

    def _tag_map(self, name: str) -> dict[str, int]:
        with self._connect() as db:
            return dict(db.execute("SELECT tag, version_id FROM tags WHERE name = ?", (name,)).fetchall())

    def _names_summary(self) -> str:
        versions = self.versions()
        if not versions:
            return "the repository is empty (finished `rftune train` and `rftune sft` runs register versions)"
        names: dict[str, list[int]] = {}
        for v in versions:
            names.setdefault(v.name, []).append(v.version)
        listed = ", ".join(f"{n} (versions {_ranges(numbers)})" for n, numbers in names.items())
        return f"it has: {listed}"

    # ------------------------------------------------------------------------------------------- writing
    def register(self, name: str, folder: str | Path, *, kind: str, info: dict[str, Any],
                 parent_id: int | None = None) -> Version:
        """Store `folder`'s files, then add the version row under the next number of `name`; returns it."""
        check_name(name)
        if kind not in ("adapter", "full"):
            raise RepositoryError(f"version kind must be 'adapter' or 'full', got {kind!r}")
        manifest = manifest_of(folder)
        with storage_errors(self.root, "to the model repository"):
            self._store_blobs(folder, manifest)
        with self._connect() as db, _transaction(db):
            self._store_blobs(folder, manifest, only_missing=True)  # a concurrent `rm` may have removed shared ones
            row = db.execute("SELECT next_version FROM names WHERE name = ?", (name,)).fetchone()
            number = row[0] if row else 1
            db.execute("INSERT INTO names (name, next_version) VALUES (?, ?) ON CONFLICT (name) "
                       "DO UPDATE SET next_version = excluded.next_version", (name, number + 1))
            cursor = db.execute(
                "INSERT INTO versions (name, version, kind, parent_id, tree, manifest, info, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (name, number, kind, parent_id, tree_hash(manifest), json.dumps(manifest, sort_keys=True),
                 json.dumps(info, sort_keys=True, default=str), now()))
            version_id = cursor.lastrowid
        return self.get(version_id)

    def _store_blobs(self, folder: str | Path, manifest: dict[str, dict[str, Any]], only_missing: bool = False):
        for rel, entry in manifest.items():
            blob = self.blob_path(entry["sha256"])
            if blob.is_file() and (only_missing or blob.stat().st_size == entry["size"]):
                continue
            data = (Path(folder) / rel).read_bytes()
            if hashlib.sha256(data).hexdigest() != entry["sha256"]:
                raise RepositoryError(f"{Path(folder) / rel} changed while it was being registered")
            write_bytes_atomic(blob, data)
            blob.chmod(0o444)

    def tag(self, version: Version, tag: str) -> None:
        """Point `tag` of the version's name at `version` (moving it from another version)."""
        if not _NAME.match(tag) or tag.isdigit() or tag == "latest":
            raise RepositoryError(f"tag {tag!r}: use letters, digits, '.', '_' or '-', not a number or 'latest'")
        with self._connect() as db, _transaction(db):
            db.execute("INSERT INTO tags (name, tag, version_id) VALUES (?, ?, ?) ON CONFLICT (name, tag) "
                       "DO UPDATE SET version_id = excluded.version_id", (version.name, tag, version.id))

    def attach_eval(self, version: Version, result: dict[str, Any]) -> None:
        with self._connect() as db, _transaction(db):
            db.execute("INSERT INTO evals (version_id, created_at, result) VALUES (?, ?, ?)",
                       (version.id, now(), json.dumps(result, sort_keys=True, default=str)))

    def remove(self, version: Version, force: bool = False) -> list[Version]:
        """Delete `version` (its tags, evals, and files no other version uses); returns the orphaned children.

        Refused while another version derives from it, unless `force` (the children then keep their recorded
        parent reference but no link).
        """
        children = self.children(version)
        if children and not force:
            raise RepositoryError(f"{version.ref} is the parent of {', '.join(c.ref for c in children)}; "
                                  "remove those first or pass --force")
        with self._connect() as db, _transaction(db):
            db.execute("UPDATE versions SET parent_id = NULL WHERE parent_id = ?", (version.id,))
            for table in ("tags", "evals"):
                db.execute(f"DELETE FROM {table} WHERE version_id = ?", (version.id,))
            db.execute("DELETE FROM versions WHERE id = ?", (version.id,))
            self._collect_garbage(db, version)  # under the lock: no registration can reuse a blob meanwhile
        return children

    def _collect_garbage(self, db: sqlite3.Connection, removed: Version) -> None:
        kept_blobs, kept_trees = set(), set()
        for tree, manifest in db.execute("SELECT tree, manifest FROM versions"):
            kept_trees.add(tree)
            kept_blobs.update(entry["sha256"] for entry in json.loads(manifest).values())
        for entry in removed.manifest.values():
            if entry["sha256"] not in kept_blobs:
                self.blob_path(entry["sha256"]).unlink(missing_ok=True)
        if removed.tree not in kept_trees:
            shutil.rmtree(self.root / "trees" / removed.tree, ignore_errors=True)

    # --------------------------------------------------------------------------------------------- files
    def blob_path(self, sha256: str) -> Path:
        return self.root / "blobs" / "sha256" / sha256[:2] / sha256[2:]

    def missing_files(self, version: Version) -> list[str]:
        """The version's files whose blobs are gone or of the wrong size (empty = present)."""
        missing = []
        for rel, entry in version.manifest.items():
            blob = self.blob_path(entry["sha256"])
            if not blob.is_file() or blob.stat().st_size != entry["size"]:
                missing.append(rel)
        return missing

    def damaged_files(self, version: Version) -> list[str]:
        """The version's files whose blobs are present but no longer hash to their sha256."""
        missing = set(self.missing_files(version))
        return [rel for rel, entry in version.manifest.items()
                if rel not in missing and file_sha256(self.blob_path(entry["sha256"])) != entry["sha256"]]

    def problems(self, version: Version) -> str | None:
        """What is wrong with the version's stored files (None: every file verifies)."""
        missing = self.missing_files(version)
        if missing:
            return f"{len(missing)} file(s) missing ({', '.join(missing)})"
        damaged = self.damaged_files(version)
        if damaged:
            return f"{len(damaged)} file(s) damaged, not matching their sha256 ({', '.join(damaged)})"
        return None

    def checkout(self, version: Version) -> Path:
        """A folder holding the version's files (hard links to the blobs, each verified against its sha256),
        built atomically on first use."""
        missing = self.missing_files(version)
        if missing:
            raise RepositoryError(f"{version.ref} is broken: its stored files {', '.join(missing)} are missing "
                                  f"from {self.root / 'blobs'}; remove it with `rftune models rm {version.ref}`")
        damaged = self.damaged_files(version)
        if damaged:
            raise RepositoryError(f"{version.ref} is broken: its stored files {', '.join(damaged)} in "
                                  f"{self.root / 'blobs'} do not match their sha256 (damaged); remove it with "
                                  f"`rftune models rm {version.ref}`")
        folder = self.root / "trees" / version.tree
        if all((folder / rel).is_file() and os.path.samefile(folder / rel, self.blob_path(entry["sha256"]))
               for rel, entry in version.manifest.items()):
            return folder
        staging = folder.with_name(f".tmp-{version.tree}-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        for rel, entry in version.manifest.items():
            target = staging / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            _link_or_copy(self.blob_path(entry["sha256"]), target)
        return replace_dir(staging, folder)


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` (the write lock, waiting up to the busy timeout) ... ``COMMIT``, rolled back on error."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not allowed
        shutil.copyfile(source, target)


def _version(row: tuple) -> Version:
    vid, name, number, kind, parent_id, tree, manifest, info, created_at = row
    return Version(vid, name, number, kind, parent_id, tree, json.loads(manifest), json.loads(info), created_at)


def _choices(name: str, versions: list[Version], tags: dict[str, int]) -> str:
    text = f"{name} has versions {_ranges([v.version for v in versions])}"
    by_id = {v.id: v.version for v in versions}
    if tags:
        text += ", tags " + ", ".join(f"{tag} (@{by_id[vid]})" for tag, vid in sorted(tags.items()))
    return text + f"; or use {name}@latest"


def _ranges(numbers: list[int]) -> str:
    """[1, 2, 3, 5] -> '1-3, 5'."""
    spans: list[list[int]] = []
    for n in sorted(numbers):
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)
