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
    with open("/proc/self/mountinfo") as mountinfo, open("/proc/self/cgroup") as membership:
        found = candidates(mountinfo.read(), membership.read())
    usable = []
    for candidate in found:
        if candidate.version == 2:
            try:
                enabled = (candidate.path / "cgroup.subtree_control").read_text().split()
            except OSError:
                continue
            if "memory" not in enabled:
                continue
        usable.append(candidate)
    return sorted(usable, key=lambda candidate: -candidate.version)  # version 2 first where it has the controller


def candidates(mountinfo: str, membership: str) -> list[Parent]:
    """This process's own cgroups that could hold a memory controller, from ``/proc/self/mountinfo`` and
    ``/proc/self/cgroup``: its version 2 group, and its group in a version 1 ``memory`` hierarchy."""
    mounts = {}  # "2" or "memory" -> (mount point, mount root)
    for line in mountinfo.splitlines():
        fields = line.split()
        separator = fields.index("-")
        fstype, options = fields[separator + 1], fields[separator + 3]
        if fstype == "cgroup2":
            mounts.setdefault("2", (fields[4], fields[3]))
        elif fstype == "cgroup" and "memory" in options.split(","):
            mounts.setdefault("memory", (fields[4], fields[3]))
    found = []
    for line in membership.splitlines():
        hierarchy, controllers, path = line.split(":", 2)
        key = "2" if hierarchy == "0" else ("memory" if "memory" in controllers.split(",") else None)
        if key not in mounts:
            continue
        mount_point, mount_root = mounts[key]
        if path == mount_root or path.startswith(mount_root.rstrip("/") + "/"):
            found.append(Parent(Path(mount_point) / os.path.relpath(path, mount_root), 2 if key == "2" else 1))
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
