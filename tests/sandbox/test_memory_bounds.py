"""Class 3 of issue 26: a program's memory is bounded per program, not per process. Shared memory (memfd, SysV)
and a tmpfs inode flood are the three attacks that an address-space limit does not see; each tries to take about
1 GB against ``memory_mb=128`` while the host's memory is read from outside, before, during and after. The OOM
killer is pointed at the program first and the harness second, never at the caller."""

import os
import textwrap
import threading
import time

import pytest

from rftune import sandbox
from rftune.sandbox import Isolation, Limits, cgroup

BOUND = Limits(timeout_s=30, cpu_s=20, memory_mb=128, max_processes=8, max_file_mb=16, disk_mb=4,
               max_open_files=128)
MB = 1024 * 1024
FALLBACK = Isolation(False, "forced by the test")

needs_cgroup = pytest.mark.skipif(cgroup.parent() is None, reason="no memory cgroup can be made here")
needs_isolation = pytest.mark.skipif(not sandbox.detect_isolation().isolated,
                                     reason=f"isolated mode unavailable: {sandbox.detect_isolation().reason}")

MEMFD = """
import os
def hoard():
    fds, chunk = [], b"x" * MB
    for _ in range(70):  # 70 x 15 MB = 1050 MB, each file under the 16 MB file-size limit
        fd = os.memfd_create("hoard")
        for _ in range(15):
            os.write(fd, chunk)
        fds.append(fd)
    return len(fds) * 15
"""
SYSV = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
libc.shmdt.argtypes = [ctypes.c_void_p]
def hoard():
    whole = libc.shmget(0, 1024 * MB, 0o1600)  # one 1 GB segment
    taken = 0
    for _ in range(10):  # 10 x 100 MB, each attached, filled and detached (by default the segment lives on)
        segment = libc.shmget(0, 100 * MB, 0o1600)
        if segment < 0:
            break
        address = libc.shmat(segment, None, 0)
        if address in (None, ctypes.c_void_p(-1).value):
            break
        ctypes.memset(address, 1, 100 * MB)
        libc.shmdt(ctypes.c_void_p(address))
        taken += 100
    return whole >= 0, taken
"""
INODES = """
import os
def hoard():
    made = 0
    try:
        for index in range(2_000_000):  # empty files: only the kernel's inodes and dentries take memory
            os.close(os.open(f"f{index}", os.O_CREAT | os.O_WRONLY))
            made += 1
    except OSError:
        pass
    return made
"""


@pytest.fixture
def cgroup_peaks(monkeypatch):
    """The peak memory (MB) of each run's cgroup, read just before the sandbox removes it."""
    peaks = []
    remove = cgroup.RunCgroup.remove

    def record_then_remove(group):
        peaks.append(group.peak_mb())
        remove(group)

    monkeypatch.setattr(cgroup.RunCgroup, "remove", record_then_remove)
    return peaks


def _run(program: str, isolation=None):
    return sandbox.run(f"MB = {MB}\n" + textwrap.dedent(program), ["taken = hoard()\nassert False, taken"], BOUND,
                       isolation)


def _report(name, host, peaks):
    print(f"\n{name}: host peak used +{host.peak['used']:.0f} MB, Shmem +{host.peak['Shmem']:.0f} MB, "
          f"Slab +{host.peak['Slab']:.0f} MB; run cgroup peak {max(peaks or [0]):.0f} MB")


@needs_cgroup
@pytest.mark.parametrize("isolation", [pytest.param(None, id="best-mode-here"), pytest.param(FALLBACK, id="fallback")])
def test_memfd_hoard_is_stopped_at_the_runs_bound(isolation, cgroup_peaks, host_memory):
    with host_memory() as host:
        result = _run(MEMFD, isolation)
    _report("memfd", host, cgroup_peaks)
    assert result.status == "memory", result
    assert result.error == f"the program passed its memory bound ({sandbox.memory_bound_mb(BOUND)} MB for all its " \
                           "processes, shared memory and files)"
    assert max(cgroup_peaks) <= sandbox.memory_bound_mb(BOUND) + 1
    assert host.peak["Shmem"] < 400  # the attack takes over 1000 MB without the bound (others share this host)
    assert host.after["Shmem"] < 50


@pytest.mark.skipif(not sandbox.detect_isolation().isolated or sandbox.detect_isolation().user_namespace,
                    reason="needs the isolated mode as root (as a user, the filter denies SysV IPC instead: "
                           "test_unprivileged.py checks that)")
def test_sysv_shared_memory_is_capped_in_the_runs_ipc_namespace(cgroup_peaks, host_memory):
    with host_memory() as host:
        result = _run(SYSV)
    _report("SysV shm", host, cgroup_peaks)
    assert (result.status, result.cases) == ("failed", (False,))
    # no segment over shmmax (128 MB); each detached segment is destroyed at once (shm_rmid_forced), so the ten
    # 100 MB segments never lived together
    assert result.error == "AssertionError: (False, 1000)"
    assert host.peak["Shmem"] < 250
    assert host.after["Shmem"] < 50


def test_sysv_shared_memory_is_refused_without_an_ipc_namespace():
    result = _run(SYSV, FALLBACK)
    assert (result.status, result.cases) == ("failed", (False,))
    assert result.error == "AssertionError: (False, 0)"  # the system-call filter denies shmget in the fallback


@needs_isolation
def test_a_tmpfs_inode_flood_stops_at_the_inode_limit(cgroup_peaks, host_memory):
    with host_memory() as host:
        result = _run(INODES)
    _report("inode flood", host, cgroup_peaks)
    assert (result.status, result.cases) == ("failed", (False,))
    made = int(result.error.removeprefix("AssertionError: "))
    assert made < BOUND.disk_mb * 256  # the tmpfs's nr_inodes (the folder itself takes one)
    assert host.peak["Slab"] < 200  # the flood took 743 MB of slab without the limit
    assert host.after["Slab"] < 50


@needs_isolation
def test_the_oom_killer_takes_the_program_first_and_never_the_caller(find_processes):
    marker = f"rftune-oom-{os.getpid()}-{time.monotonic_ns()}"
    code = textwrap.dedent(f"""
        import os, sys, time
        def spawn():
            if os.fork() == 0:
                os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(4)", "{marker}"])
            time.sleep(3)
            return True
    """)
    done = []
    worker = threading.Thread(target=lambda: done.append(sandbox.run(code, ["assert spawn()"], BOUND)))
    worker.start()
    scores = {}
    end = time.monotonic() + 10
    while not scores and time.monotonic() < end:
        for pid in find_processes(marker):
            scores["program"] = _oom_score_adj(pid)
            harness = _parent_of(_parent_of(pid))  # program's child -> program -> harness
            scores["harness"] = _oom_score_adj(harness)
        time.sleep(0.05)
    worker.join()
    assert scores == {"program": 1000, "harness": 500}
    assert _oom_score_adj(os.getpid()) < 500
    assert done[0].status == "passed"


def _oom_score_adj(pid: int) -> int:
    with open(f"/proc/{pid}/oom_score_adj") as handle:
        return int(handle.read())


def _parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as handle:
        return int(handle.read().rsplit(")", 1)[1].split()[1])
