"""A run directory belongs to one run at a time: an exclusive lock on ``<output_dir>/.lock`` for the run's life.

The lock is the kernel's (``fcntl.flock`` on an open file), so it goes away with the process that held it, however
that process ended: a run killed with SIGKILL leaves no lock behind, only the lock file with its last holder
(pid, host, start time), which the next run reports as stale and takes over. A second run started while the first
is alive stops at once with an error naming the holder. Under torchrun rank 0 holds the lock for the whole job.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from rftune.errors import ConfigError
from rftune.runtime.atomic_io import storage_errors

LOCK_NAME = ".lock"


class RunLock:
    """Hold ``<folder>/.lock`` until `release` (or process exit)."""

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / LOCK_NAME
        with storage_errors(self.path.parent, "to the run folder (train.output_dir)"):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(self._handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(self._read())
            self._handle.close()
            raise ConfigError(f"train.output_dir {self.path.parent} is in use by another run ({holder}); wait for it "
                              "to finish or pick another train.output_dir") from None
        self.stale_holder = self._read()  # what a run that died without releasing the lock left
        self._handle.seek(0)
        self._handle.truncate()
        self._handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}))
        self._handle.flush()

    def _read(self) -> dict | None:
        self._handle.seek(0)
        try:
            return json.loads(self._handle.read() or "null")
        except json.JSONDecodeError:
            return None

    def release(self) -> None:
        if not self._handle.closed:
            self._handle.seek(0)
            self._handle.truncate()
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()


def _describe(holder: dict | None) -> str:
    if not holder:
        return "holder unknown"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    return f"pid {holder.get('pid')} on {holder.get('host')}, started {started}"


def stale_note(holder: dict | None) -> str | None:
    """The line to show when a run took over the lock of one that died (None when the lock was free)."""
    if not holder:
        return None
    return f"took over the run directory lock of a run that ended without releasing it ({_describe(holder)})"
