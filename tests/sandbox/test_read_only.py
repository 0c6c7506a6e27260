"""Class 5 of issue 26: every view of the host in the program's root is read-only, nosuid and nodev all the way
down — a mount below ``/usr`` or the Python installation included. Checked from outside: the host sees no file the
program tried to write, and the program's own mount table (``/proc/PID/mountinfo``) has no writable, suid or
device-capable view but its own ``/sandbox`` and the three device nodes."""

import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from rftune import sandbox
from rftune.sandbox import Limits

pytestmark = pytest.mark.skipif(not sandbox.detect_isolation().isolated,
                                reason=f"isolated mode unavailable: {sandbox.detect_isolation().reason}")

FAST = Limits(timeout_s=8, cpu_s=2, memory_mb=256, max_processes=8, max_file_mb=2, disk_mb=4)


@pytest.fixture(params=["/usr/local/lib", os.path.realpath(sys.base_prefix) + "/lib"], ids=["usr", "python"])
def host_submount(request):
    """A writable tmpfs mounted on the host below /usr or the Python installation."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs on the host needs root")
    folder = os.path.join(request.param, f"rftune-submount-{os.getpid()}")
    os.makedirs(folder)
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", folder], check=True)
        try:
            yield folder
        finally:
            subprocess.run(["umount", "-l", folder], check=True)
    finally:
        os.rmdir(folder)


def test_a_submount_is_read_only_inside(host_submount):
    code = textwrap.dedent(f"""
        import os
        def plant():
            with open(os.path.join({host_submount!r}, "planted.py"), "w") as handle:
                handle.write("print('owned')")
            return True
        def visible():
            return os.path.isdir({host_submount!r})
    """)
    result = sandbox.run(code, ["assert visible()", "assert plant()"], FAST)
    assert (result.status, result.cases) == ("failed", (True, False))
    assert "Read-only file system" in result.case_errors[1]
    assert os.listdir(host_submount) == []  # the host sees nothing


def _mounts_of(pid: int) -> list[tuple[str, set[str]]]:
    with open(f"/proc/{pid}/mountinfo") as handle:
        return [(line.split()[4], set(line.split()[5].split(","))) for line in handle]


def test_every_view_is_read_only_nosuid_nodev_seen_from_outside(host_submount):
    marker = f"rftune-mounts-{os.getpid()}-{time.monotonic_ns()}"
    code = textwrap.dedent(f"""
        import os, sys, time
        def spawn():
            if os.fork() == 0:
                os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(4)", "{marker}"])
            time.sleep(3)
            return True
    """)
    done = []
    worker = threading.Thread(target=lambda: done.append(sandbox.run(code, ["assert spawn()"], FAST)))
    worker.start()
    mounts, end = [], time.monotonic() + 10
    while not mounts and time.monotonic() < end:
        for name in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{name}/cmdline", "rb") as handle:
                    if marker.encode() in handle.read():
                        mounts = _mounts_of(int(name))
            except OSError:
                continue
        time.sleep(0.05)
    worker.join()
    assert done[0].status == "passed"
    points = [point for point, _ in mounts]
    assert "/usr" in points and host_submount in points  # the submount is in the view...
    for point, options in mounts:
        if point == "/sandbox":
            assert {"rw", "nosuid", "nodev"} <= options
        elif point not in ("/dev/null", "/dev/zero", "/dev/urandom"):  # three device nodes, bound one by one
            assert {"ro", "nosuid", "nodev"} <= options, (point, options)  # ...and locked down like the rest
