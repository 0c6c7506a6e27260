"""A memory cgroup for each sandbox run, where this process may make one (as root on most Linux machines).

An address-space limit bounds one process's mappings; it does not see shared memory that is never mapped
(``memfd_create``, SysV segments), the pages of files in a tmpfs, or the kernel's memory for their inodes. A memory
cgroup counts all of these for every process of the run, so a program's bound is per program. Both cgroup
versions exist in the wild: version 2 (one hierarchy; used where the ``memory`` controller is enabled for the
caller's children) and version 1 (a ``memory`` hierarchy of its own). Without either, `parent` is None and the run
has only its other limits (see the README's isolation table).

The parent process makes the group (`RunCgroup.create`), the sandbox's launcher joins it before it starts anything
(so the harness and the program are in it from their first page), and after the run the parent reads how many
processes the kernel's OOM killer ended in it, kills whatever is left and removes it.
"""

from __future__ import annotations

import functools
import os
import secrets
import signal
import time
from dataclasses import dataclass
from pathlib import Path

MB = 1024 * 1024


@dataclass(frozen=True)
class Parent:
    path: Path  # the caller's own cgroup in the hierarchy that has the memory controller
    version: int


@functools.lru_cache(maxsize=1)
def parent() -> Parent | None:
    """Where this process can make memory cgroups, or None (checked once, by making and removing one)."""
    if not os.path.exists("/proc/self/cgroup"):
        return None
    for candidate in _candidates():
        probe = candidate.path / f"rftune-sandbox-probe-{secrets.token_hex(4)}"
        try:
            probe.mkdir()
            probe.rmdir()
        except OSError:
            continue
        return candidate
    return None


def _candidates() -> list[Parent]:
    mounts = {}  # "2" or a v1 controller -> (mount point, mount root)
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            fields = line.split()
            fstype, options = fields[fields.index("-") + 1], fields[fields.index("-") + 3]
            if fstype == "cgroup2":
                mounts.setdefault("2", (fields[4], fields[3]))
            elif fstype == "cgroup" and "memory" in options.split(","):
                mounts.setdefault("memory", (fields[4], fields[3]))
    found = []
    with open("/proc/self/cgroup") as handle:
        for line in handle:
            hierarchy, controllers, path = line.rstrip("\n").split(":", 2)
            key = "2" if hierarchy == "0" else ("memory" if "memory" in controllers.split(",") else None)
            if key not in mounts:
                continue
            mount_point, mount_root = mounts[key]
            relative = os.path.relpath(path, mount_root) if path.startswith(mount_root) else None
            if relative is None:
                continue
            own = Path(mount_point) / relative
            if key == "2":
                try:
                    enabled = (own / "cgroup.subtree_control").read_text().split()
                except OSError:
                    continue
                if "memory" in enabled:
                    found.insert(0, Parent(own, 2))  # version 2 first where it has the controller
            else:
                found.append(Parent(own, 1))
    return found


class RunCgroup:
    """One run's memory cgroup: a bound on the memory of all its processes (no swap beyond it)."""

    def __init__(self, where: Parent, limit_mb: int) -> None:
        self.version = where.version
        self.path = where.path / f"rftune-sandbox-{secrets.token_hex(8)}"
        self.path.mkdir()
        limit = str(limit_mb * MB)
        try:
            if self.version == 2:
                self._write("memory.max", limit)
                self._write("memory.swap.max", "0", optional=True)
            else:
                self._write("memory.limit_in_bytes", limit)
                self._write("memory.memsw.limit_in_bytes", limit, optional=True)  # after the memory limit
        except OSError:
            self.remove()
            raise
        self.procs = str(self.path / "cgroup.procs")

    def _write(self, name: str, value: str, optional: bool = False) -> None:
        try:
            (self.path / name).write_text(value)
        except FileNotFoundError:
            if not optional:
                raise

    def oom_kills(self) -> int:
        """Processes of this run that the kernel's OOM killer ended (the run passed its memory bound)."""
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        try:
            for line in (self.path / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except OSError:
            pass
        return 0

    def peak_mb(self) -> float:
        """The most memory the run held at once."""
        name = "memory.peak" if self.version == 2 else "memory.max_usage_in_bytes"
        try:
            return int((self.path / name).read_text()) / MB
        except (OSError, ValueError):
            return 0.0

    def remove(self) -> None:
        """Kill every process still in the group, then remove it (give up quietly after two seconds)."""
        end = time.monotonic() + 2.0
        while True:
            try:
                pids = [int(pid) for pid in (self.path / "cgroup.procs").read_text().split()]
            except OSError:
                pids = []
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                if time.monotonic() > end:
                    return
                time.sleep(0.01)
