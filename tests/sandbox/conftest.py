"""Helpers that look at the host from outside the sandbox: its memory over a block, and its processes."""

import os
import threading
import time

import pytest

MB = 1024 * 1024


def _meminfo() -> dict[str, int]:
    with open("/proc/meminfo") as handle:
        return {line.split(":")[0]: int(line.split()[1]) * 1024 for line in handle}


class HostMemory:
    """Peaks of the host's used memory, shared memory and kernel slab (MB) over a ``with`` block, relative to
    before it, and where shared memory and slab stand just after it."""

    def __init__(self) -> None:
        self.before = _meminfo()
        self.peak = dict.fromkeys(("used", "Shmem", "Slab"), 0.0)
        self.after: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample)

    def _sample(self) -> None:
        while not self._stop.is_set():
            now = _meminfo()
            deltas = {"used": (self.before["MemAvailable"] - now["MemAvailable"]) / MB,
                      "Shmem": (now["Shmem"] - self.before["Shmem"]) / MB,
                      "Slab": (now["Slab"] - self.before["Slab"]) / MB}
            for key, value in deltas.items():
                self.peak[key] = max(self.peak[key], value)
            time.sleep(0.02)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        time.sleep(0.5)
        after = _meminfo()
        self.after = {key: (after[key] - self.before[key]) / MB for key in ("Shmem", "Slab")}


def processes_with(text: str) -> list[int]:
    """Host PIDs of the processes whose command line holds `text`."""
    found = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{name}/cmdline", "rb") as handle:
                if text.encode() in handle.read():
                    found.append(int(name))
        except OSError:
            continue
    return found


@pytest.fixture
def host_memory():
    """`HostMemory`, to measure a block: ``with host_memory() as host: ...``."""
    return HostMemory


@pytest.fixture
def find_processes():
    """`processes_with`: host PIDs of the processes whose command line holds a marker."""
    return processes_with
