"""Issue 26, isolation without root: the whole contract again, with the sandbox run by an unprivileged user.

The test (as root) drops to ``nobody`` with ``setpriv`` and runs a driver under the system's Python (the venv's
interpreter may sit where ``nobody`` cannot reach), which sends a battery of hostile programs through
`rftune.sandbox.run` and prints their results. Each class of issue 26 is then checked from outside: the statuses,
the host's memory during the batch, keys left behind, files the host sees, processes left over, the caller alive.
Skipped, with the reason, where the kernel forbids unprivileged user namespaces.
"""

import json
import os
import shutil
import socket
import subprocess
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
SYSTEM_PYTHON = "/usr/bin/python3"
NOBODY = 65534
DROP = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "env", "-i", f"PYTHONPATH={SRC}",
        "PATH=/usr/bin:/bin"]
LIMITS = {"timeout_s": 8, "cpu_s": 4, "memory_mb": 128, "max_processes": 8, "max_file_mb": 16, "disk_mb": 4,
          "max_open_files": 128}
DRIVER = """
import json, sys
from rftune import sandbox
from rftune.sandbox import Limits, TestSuite
jobs = json.load(sys.stdin)
isolation = sandbox.detect_isolation()
results = {}
for name, job in jobs.items():
    result = sandbox.run(job["code"], TestSuite(tuple(job["cases"])), Limits(**job["limits"]))
    results[name] = {"status": result.status, "cases": list(result.cases), "errors": list(result.case_errors),
                     "error": result.error}
print(json.dumps({"isolation": isolation.__dict__, "results": results}))
"""


def _unprivileged(jobs: dict, timeout: float = 240) -> dict:
    done = subprocess.run(DROP + [SYSTEM_PYTHON, "-c", DRIVER], input=json.dumps(jobs), capture_output=True,
                          text=True, timeout=timeout, cwd="/")
    assert done.returncode == 0, done.stderr[-2000:]  # the caller (the unprivileged trainer) is still running
    return json.loads(done.stdout)


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root to drop to another user (as a user, the other sandbox tests run this mode directly)"
    if not shutil.which("setpriv") or not os.path.exists(SYSTEM_PYTHON):
        return f"needs setpriv and {SYSTEM_PYTHON}"
    done = subprocess.run(DROP + [SYSTEM_PYTHON, "-c", "from rftune import sandbox; "
                                  "i = sandbox.detect_isolation(); print(i.user_namespace, i.reason)"],
                          capture_output=True, text=True, timeout=60, cwd="/")
    if done.returncode != 0:
        return f"the unprivileged user cannot import rftune: {done.stderr.strip()[-300:]}"
    works, _, reason = done.stdout.strip().partition(" ")
    return None if works == "True" else f"the kernel forbids unprivileged isolation here: {reason}"


WHY_NOT = _why_not()
pytestmark = pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or "")


def _job(code: str, cases: list[str], **limits) -> dict:
    return {"code": textwrap.dedent(code), "cases": cases, "limits": {**LIMITS, **limits}}


MEMORY_ATTACKS = {
    "memfd": _job("""
        import os
        def hoard():
            fds = []
            for _ in range(70):
                fd = os.memfd_create("hoard")
                for _ in range(15):
                    os.write(fd, b"x" * 1024 * 1024)
                fds.append(fd)
            return len(fds) * 15
    """, ["assert hoard() > 0"]),
    "sysv": _job("""
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        def hoard():
            return [libc.shmget(0, 100 * 1024 * 1024, 0o1600) for _ in range(10)], ctypes.get_errno()
    """, ["assert hoard() == ([-1] * 10, 1)"]),
    "inodes": _job("""
        import os
        def hoard():
            made = 0
            try:
                for index in range(2_000_000):
                    os.close(os.open(f"f{index}", os.O_CREAT | os.O_WRONLY))
                    made += 1
            except OSError:
                pass
            return made
    """, ["assert 0 < hoard() < 4 * 256"]),
}


def test_memory_attacks_take_nothing_from_the_host_without_a_cgroup(host_memory):
    with host_memory() as host:
        answer = _unprivileged(MEMORY_ATTACKS)
    print(f"\nunprivileged memory attacks: host peak used +{host.peak['used']:.0f} MB, "
          f"Shmem +{host.peak['Shmem']:.0f} MB, Slab +{host.peak['Slab']:.0f} MB")
    results = answer["results"]
    assert answer["isolation"]["user_namespace"] and not answer["isolation"]["memory_cgroup"]
    assert (results["memfd"]["status"], results["memfd"]["cases"]) == ("failed", [False])
    assert "PermissionError: [Errno 1] Operation not permitted" in results["memfd"]["error"]
    assert {name: r["status"] for name, r in results.items() if name != "memfd"} == {"sysv": "passed",
                                                                                      "inodes": "passed"}
    assert host.peak["Shmem"] < 100 and host.peak["Slab"] < 100


@pytest.fixture
def host_files():
    """A secret the unprivileged user could read on the host, a file of its own, and a tmpfs below /usr."""
    secret = Path(tempfile.mkdtemp(prefix="rftune-unprivileged-"))
    secret.chmod(0o755)
    (secret / "secret.txt").write_text("s3cret")
    (secret / "secret.txt").chmod(0o644)
    own = secret / "own"
    own.mkdir()
    os.chown(own, NOBODY, NOBODY)
    submount = Path(f"/usr/local/lib/rftune-unprivileged-{os.getpid()}")
    submount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=777", "tmpfs", str(submount)], check=True)
    try:
        yield secret, own, submount
    finally:
        subprocess.run(["umount", "-l", str(submount)], check=True)
        submount.rmdir()
        shutil.rmtree(secret)


def _listener():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    accepted, stop = [], threading.Event()

    def loop():
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=loop)
    thread.start()
    return server, accepted, stop, thread


def _key_users() -> set[int]:
    with open("/proc/key-users") as handle:
        return {int(line.split(":")[0]) for line in handle}


def test_the_battery_as_an_unprivileged_user(host_files, find_processes):
    secret, own, submount = host_files
    server, accepted, stop, thread = _listener()
    port = server.getsockname()[1]
    marker = f"rftune-unprivileged-detached-{os.getpid()}-{time.monotonic_ns()}"
    keys_before = _key_users()
    jobs = {
        "correct": _job("def add(a, b):\n    return a + b\n", ["assert add(1, 2) == 3"]),
        "signal": _job("import os, signal\nos.kill(os.getpid(), signal.SIGRTMIN + 2)\n", ["assert True"]),
        "redefined_builtins": _job("""
            def dist(a, b):
                return 0.5
            def abs(*args):
                return 0
        """, ["assert abs(dist(1, 3) - 2) < 1e-9"]),
        "keys": _job("""
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
            def leave_keys():
                out = []
                for ring in (-3, -4):
                    ctypes.set_errno(0)
                    out.append((libc.syscall(248, b"user", b"left", b"x", 1, ring), ctypes.get_errno()))
                return out
        """, ["assert leave_keys() == [(-1, 1), (-1, 1)]"]),
        "write_below_usr": _job(f"""
            def plant():
                open({str(submount / 'planted.py')!r}, "w").write("owned")
        """, ["plant()"]),
        "filter": _job("""
            import ctypes, socket
            libc = ctypes.CDLL(None, use_errno=True)
            def call(number, *args):
                ctypes.set_errno(0)
                return libc.syscall(number, *args), ctypes.get_errno()
            def denied():
                return {"unshare": call(272, 0), "keyctl": call(250, 0, -3, 1), "ptrace": call(101, 0, 0, 0, 0),
                        "mount": call(165, b"none", b"/sandbox", b"tmpfs", 0, 0), "bpf": call(321, 0, 0, 0),
                        "clone_newuser": call(56, 0x10000000 | 17, 0, 0, 0, 0), "socket_inet": call(41, 2, 1, 0),
                        "socket_vsock": call(41, 40, 1, 0)}
            def unix():
                left, right = socket.socketpair()
                left.sendall(b"ok")
                return right.recv(2)
        """, ["assert denied() == {'unshare': (-1, 1), 'keyctl': (-1, 1), 'ptrace': (-1, 1), 'mount': (-1, 1), "
              "'bpf': (-1, 1), 'clone_newuser': (-1, 1), 'socket_inet': (-1, 97), 'socket_vsock': (-1, 97)}",
              "assert unix() == b'ok'"]),
        "files": _job(f"""
            import os
            def secret():
                return open({str(secret / 'secret.txt')!r}).read()
            def own():
                open({str(own / 'planted')!r}, "w").write("x")
            def root():
                return sorted(os.listdir("/"))
        """, ["secret()", "own()",
              "assert root() == ['bin', 'dev', 'lib', 'lib64', 'sandbox', 'sbin', 'usr'], root()"]),
        "network": _job(f"""
            import socket
            def connect():
                socket.create_connection(("127.0.0.1", {port}), timeout=2).close()
        """, ["connect()"]),
        "fork_count": _job("""
            import os, time
            def spawn():
                made = 0
                for _ in range(100):
                    try:
                        pid = os.fork()
                    except OSError:
                        break
                    if pid == 0:
                        time.sleep(60)
                        os._exit(0)
                    made += 1
                return made
        """, ["assert spawn() == 7"]),
        "detached": _job(f"""
            import os, sys, time
            def detach():
                if os.fork() == 0:
                    os.setsid()
                    if os.fork() == 0:
                        os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(60)", "{marker}"])
                    os._exit(0)
                time.sleep(1)
                return True
        """, ["assert detach()"]),
        "sleeper": _job("import time\ntime.sleep(60)\n", ["assert True"], timeout_s=1),
        "signal_harness": _job("""
            import os, signal
            def attack():  # the harness is PID 1 here, under the same uid
                for number in (signal.SIGINT, signal.SIGTERM, signal.SIGSTOP, signal.SIGKILL):
                    os.kill(1, number)
                return True
        """, ["assert attack()", "assert attack()"]),
    }
    try:
        results = _unprivileged(jobs)["results"]
    finally:
        stop.set()
        thread.join()
        server.close()
    outcome = {name: (r["status"], r["cases"]) for name, r in results.items()}
    assert outcome == {
        "correct": ("passed", [True]), "signal": ("crashed", [False]), "redefined_builtins": ("failed", [False]),
        "keys": ("passed", [True]), "write_below_usr": ("failed", [False]), "filter": ("passed", [True, True]),
        "files": ("failed", [False, False, True]), "network": ("failed", [False]), "fork_count": ("passed", [True]),
        "detached": ("passed", [True]), "sleeper": ("timeout", [False]), "signal_harness": ("passed", [True, True]),
    }, {name: r["error"] for name, r in results.items()}
    assert "Read-only file system" in results["write_below_usr"]["error"]
    assert "FileNotFoundError" in results["files"]["errors"][0]
    assert "FileNotFoundError" in results["files"]["errors"][1]
    assert "Address family not supported by protocol" in results["network"]["error"]
    # from outside: nothing written, no connection, no key, no process left
    assert os.listdir(submount) == [] and os.listdir(own) == []
    assert accepted == []
    assert NOBODY not in _key_users() - keys_before
    assert find_processes(marker) == []
    assert subprocess.run(["pgrep", "-u", str(NOBODY)], capture_output=True).stdout == b""
