"""Classes 4 and 6 of issue 26: the program's system calls pass a seccomp filter (libseccomp) that denies keyrings,
tracing, mounts, namespaces, bpf/perf, kernel administration and every socket family but AF_UNIX — in the isolated
mode and in the fallback. Checked from outside: the program's process is filtered (``/proc/PID/status``), the
caller's own key is intact and no key is left behind (``/proc/key-users``)."""

import ctypes
import errno
import os
import platform
import textwrap
import threading
import time

import pytest

from rftune import sandbox
from rftune.sandbox import Isolation, Limits

pytestmark = [
    pytest.mark.skipif(platform.machine() != "x86_64", reason="the hostile programs use x86-64 system-call numbers"),
    pytest.mark.skipif(not sandbox.detect_isolation().syscall_filter, reason="libseccomp is not installed"),
]

FAST = Limits(timeout_s=8, cpu_s=2, memory_mb=256, max_processes=8, max_file_mb=2, disk_mb=4)
MODES = [pytest.param(None, id="best-mode-here"), pytest.param(Isolation(False, "forced by the test"), id="fallback")]
KEY_SPEC_SESSION, KEY_SPEC_USER = -3, -4
KEYCTL_GET_KEYRING_ID, KEYCTL_UPDATE, KEYCTL_READ, KEYCTL_INVALIDATE = 0, 2, 11, 21
# name: (x86-64 number, arguments, errno the filter answers); each would succeed, or fail otherwise, without it
CALLS = {
    "add_key": (248, '(b"user", b"left-behind", b"x", 1, {session})', errno.EPERM),
    "request_key": (249, '(b"user", b"anything", None, {session})', errno.EPERM),
    "keyctl": (250, "(0, {session}, 1)", errno.EPERM),
    "ptrace": (101, "(0, 0, 0, 0)", errno.EPERM),
    "process_vm_readv": (310, "(os.getpid(), 0, 0, 0, 0, 0)", errno.EPERM),
    "unshare": (272, "(0,)", errno.EPERM),
    "setns": (308, "(0, 0)", errno.EPERM),
    "clone_newuser": (56, "(0x10000000 | 17, 0, 0, 0, 0)", errno.EPERM),
    "clone_newnet": (56, "(0x40000000 | 17, 0, 0, 0, 0)", errno.EPERM),
    "clone3": (435, "(0, 0)", errno.ENOSYS),
    "mount": (165, '(b"none", b"/tmp", b"tmpfs", 0, 0)', errno.EPERM),
    "fsopen": (430, '(b"tmpfs", 0)', errno.EPERM),
    "open_tree": (428, '(-100, b"/", 0)', errno.EPERM),
    "bpf": (321, "(0, 0, 0)", errno.EPERM),
    "perf_event_open": (298, "(0, 0, -1, -1, 0)", errno.EPERM),
    "userfaultfd": (323, "(0,)", errno.EPERM),
    "io_uring_setup": (425, "(1, 0)", errno.EPERM),
    "init_module": (175, "(0, 0, 0)", errno.EPERM),
    "reboot": (169, "(0, 0, 0, 0)", errno.EPERM),
    "clock_settime": (227, "(0, 0)", errno.EPERM),
    "swapon": (167, '(b"/x", 0)', errno.EPERM),
    "socket_inet": (41, "(2, 1, 0)", errno.EAFNOSUPPORT),
    "socket_inet6": (41, "(10, 2, 0)", errno.EAFNOSUPPORT),
    "socket_netlink": (41, "(16, 3, 0)", errno.EAFNOSUPPORT),
    "socket_packet": (41, "(17, 3, 0)", errno.EAFNOSUPPORT),
    "socket_vsock": (41, "(40, 1, 0)", errno.EAFNOSUPPORT),
    "socketpair_inet": (53, "(2, 1, 0, 0)", errno.EAFNOSUPPORT),
}
PROBE = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def call(number, *args):
    ctypes.set_errno(0)
    result = libc.syscall(number, *args)
    if result == 0 and number == 56:  # a clone that went through: the child leaves at once
        os._exit(0)
    return 0 if result >= 0 else ctypes.get_errno()
def outcomes():
    return {%s}
def unix_socket_works():
    import socket
    left, right = socket.socketpair()
    left.sendall(b"ok")
    return right.recv(2)
"""


def _program() -> str:
    entries = ", ".join(f"{name!r}: call({number}, *{args.format(session=KEY_SPEC_SESSION)})"
                        for name, (number, args, _) in CALLS.items())
    return PROBE % entries


@pytest.mark.parametrize("isolation", MODES)
def test_denied_system_calls_fail_and_unix_sockets_still_work(isolation):
    result = sandbox.run(_program(), ["got = outcomes()", "assert unix_socket_works() == b'ok'"], FAST, isolation)
    assert (result.status, result.cases) == ("passed", (True, True)), result.error
    checked = sandbox.run(_program(), [f"assert outcomes() == {({n: e for n, (_, _, e) in CALLS.items()})!r}"],
                          FAST, isolation)
    assert (checked.status, checked.cases) == ("passed", (True,)), checked.error


def _status_of(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as handle:
        return dict(line.rstrip("\n").split(":\t", 1) for line in handle if ":\t" in line)


@pytest.mark.parametrize("isolation", MODES)
def test_the_filter_is_on_the_programs_processes_seen_from_outside(isolation, find_processes):
    marker = f"rftune-filter-{os.getpid()}-{time.monotonic_ns()}"
    code = textwrap.dedent(f"""
        import os, sys, time
        def spawn():
            child = os.fork()
            if child == 0:
                os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(4)", "{marker}"])
            time.sleep(3)
            return True
    """)
    seen = []
    worker = threading.Thread(target=lambda: seen.append(sandbox.run(code, ["assert spawn()"], FAST, isolation)))
    worker.start()
    pids = []
    end = time.monotonic() + 8
    while not pids and time.monotonic() < end:
        pids = find_processes(marker)
        time.sleep(0.05)
    status = _status_of(pids[0]) if pids else {}
    worker.join()
    assert pids, "the program's child never started"
    assert (status["Seccomp"], status["NoNewPrivs"]) == ("2", "1")  # filter mode, no privilege gain
    assert seen[0].status == "passed"


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _keyctl(*args) -> int:
    result = _libc.syscall(250, *args)
    if result < 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return result


def _key_users() -> dict[str, str]:
    with open("/proc/key-users") as handle:
        return {line.split(":")[0].strip(): line.split(":", 1)[1].strip() for line in handle}


@pytest.fixture
def callers_key():
    """A key in this process's session keyring, as a user's SSH login or service would have."""
    payload = b"caller's secret"
    key = _libc.syscall(248, b"user", f"rftune-test-{os.getpid()}".encode(), payload, len(payload),
                        KEY_SPEC_SESSION)
    if key < 0:
        pytest.skip(f"this kernel gives no session keyring here: {os.strerror(ctypes.get_errno())}")
    yield key, payload
    _keyctl(KEYCTL_INVALIDATE, key)


def _read_key(key: int) -> bytes:
    buffer = ctypes.create_string_buffer(256)
    size = _keyctl(KEYCTL_READ, key, buffer, len(buffer))
    return buffer.raw[:size]


@pytest.mark.parametrize("isolation", MODES)
def test_keyrings_are_out_of_reach(isolation, callers_key):
    key, payload = callers_key
    marker = f"rftune-left-behind-{os.getpid()}-{time.monotonic_ns()}"
    before = _key_users()
    code = textwrap.dedent(f"""
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        def attempt(*args):
            ctypes.set_errno(0)
            return libc.syscall(*args), ctypes.get_errno()
        def read_callers_key():
            buffer = ctypes.create_string_buffer(256)
            return attempt(250, {KEYCTL_READ}, {key}, buffer, 256)
        def rewrite_callers_key():
            return attempt(250, {KEYCTL_UPDATE}, {key}, b"forged", 6)
        def leave_keys():
            return [attempt(248, b"user", b"{marker}", b"x", 1, ring) for ring in ({KEY_SPEC_SESSION}, {KEY_SPEC_USER})]
    """)
    result = sandbox.run(code, ["assert read_callers_key() == (-1, 1)", "assert rewrite_callers_key() == (-1, 1)",
                                "assert leave_keys() == [(-1, 1), (-1, 1)]"], FAST, isolation)
    assert (result.status, result.cases) == ("passed", (True, True, True)), result.error
    assert _read_key(key) == payload
    after = _key_users()
    new_uids = {int(uid) for uid in set(after) - set(before)}
    assert not {uid for uid in new_uids if sandbox.UID_BASE <= uid < sandbox.UID_BASE + 200_002}  # none of ours
    with open("/proc/keys") as handle:
        keys = handle.read()
    assert f"rftune-test-{os.getpid()}" in keys  # this uid's keys are listed here...
    assert marker not in keys  # ...and the program left none
