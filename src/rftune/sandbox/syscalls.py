"""The program's system-call filter (seccomp), built with libseccomp through ctypes.

Standard library only, like the harness that imports it (``python -I -S`` sees no site-packages): the filter is
compiled by Debian's ``libseccomp2`` (``libseccomp.so.2``), never written as BPF here. `load_libseccomp` opens the
library once, before the harness chroots; `confine` runs in the program's process just before it execs the
interpreter, after its limits and uid are set, and is inherited by everything the program starts.

Everything is allowed except what no test program needs; those calls fail with an error (the program sees an
``OSError``, and a test that needed the call fails), so the harness's record stays intact:
  keyrings        add_key, request_key, keyctl (so a program can neither read the caller's keys nor leave any);
  tracing         ptrace, process_vm_readv/writev, pidfd_getfd, kcmp;
  mounts          mount, umount2, pivot_root, chroot and the new mount API (fsopen, fsmount, move_mount, ...);
  namespaces      unshare, setns, and clone with any ``CLONE_NEW*`` flag (clone3, whose flags a filter cannot
                  read, reports ENOSYS so that the C library falls back to clone);
  kernel          bpf, perf_event_open, userfaultfd, io_uring, module loading, kexec, reboot, swap, clock and
                  time setting, accounting, quotas, syslog, port I/O, file handles;
  sockets         every family but ``AF_UNIX`` (so no ``AF_INET``/``AF_INET6``, ``AF_NETLINK``, ``AF_PACKET``,
                  ``AF_VSOCK``, ...), for ``socket`` and ``socketpair``;
  unbounded IPC   SysV shared memory, semaphores and message queues and POSIX message queues, where the program
                  has no IPC namespace with limits that the sandbox set (the fallback: they would be the host's
                  and outlive the program; a user namespace: an unprivileged user cannot set the limits);
  unbounded memory  memfd_create, where the run has no memory cgroup to count its pages.
System calls of another architecture's ABI (i386, x32 on x86-64) kill the calling thread (libseccomp's default).
"""

import ctypes
import errno

ACT_ALLOW = 0x7FFF0000
CMP_NE, CMP_MASKED_EQ = 1, 7
AF_UNIX = 1
MISSING = "libseccomp is not installed (Debian: apt-get install libseccomp2)"
DENIED = (
    "add_key", "request_key", "keyctl",
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp",
    "mount", "umount2", "pivot_root", "chroot", "fsopen", "fsconfig", "fsmount", "fspick", "move_mount",
    "open_tree", "open_tree_attr", "mount_setattr",
    "unshare", "setns",
    "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "reboot", "swapon", "swapoff",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "acct", "quotactl", "quotactl_fd", "syslog",
    "iopl", "ioperm", "name_to_handle_at", "open_by_handle_at", "lookup_dcookie", "vhangup",
)
SHARED_IPC = ("shmget", "shmat", "shmctl", "msgget", "msgsnd", "msgctl", "semget", "semop", "semtimedop", "semctl",
              "mq_open", "mq_unlink", "mq_timedsend", "mq_notify", "mq_getsetattr")
NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)


class ArgCompare(ctypes.Structure):
    """libseccomp's ``struct scmp_arg_cmp``."""

    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


def _errno_action(number):
    return 0x00050000 | number  # SCMP_ACT_ERRNO


def load_libseccomp():
    """libseccomp, or None where it is not installed (`MISSING` says so)."""
    try:
        library = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    except OSError:
        return None
    library.seccomp_init.restype = ctypes.c_void_p
    library.seccomp_init.argtypes = [ctypes.c_uint32]
    library.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                               ctypes.POINTER(ArgCompare)]
    library.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    library.seccomp_load.argtypes = [ctypes.c_void_p]
    library.seccomp_release.argtypes = [ctypes.c_void_p]
    return library


def number(library, name):
    """The native system-call number of `name`, or None where this libseccomp does not know it."""
    found = library.seccomp_syscall_resolve_name(name.encode())
    return found if found >= 0 else None


def _add(library, context, action, name, *compares):
    found = number(library, name)
    if found is None:
        return
    array = (ArgCompare * max(len(compares), 1))(*compares)
    result = library.seccomp_rule_add_array(context, action, found, len(compares), array)
    if result != 0:
        raise OSError(-result, f"seccomp rule for {name}: {errno.errorcode.get(-result, result)}")


def confine(library, ipc_bounded, memory_cgroup):
    """Load the filter into the calling process (and what it starts). Without an IPC namespace whose limits the
    sandbox set (`ipc_bounded`), SysV IPC and POSIX message queues are denied too; without a memory cgroup
    (`memory_cgroup`), so is memfd_create (its memory would be counted nowhere)."""
    context = library.seccomp_init(ACT_ALLOW)
    if not context:
        raise OSError(errno.ENOMEM, "seccomp_init failed")
    try:
        for name in DENIED + (() if ipc_bounded else SHARED_IPC) + (() if memory_cgroup else ("memfd_create",)):
            _add(library, context, _errno_action(errno.EPERM), name)
        for flag in NAMESPACE_FLAGS:
            _add(library, context, _errno_action(errno.EPERM), "clone", ArgCompare(0, CMP_MASKED_EQ, flag, flag))
        _add(library, context, _errno_action(errno.ENOSYS), "clone3")
        for name in ("socket", "socketpair"):
            _add(library, context, _errno_action(errno.EAFNOSUPPORT), name, ArgCompare(0, CMP_NE, AF_UNIX, 0))
        result = library.seccomp_load(context)
        if result != 0:
            raise OSError(-result, f"seccomp_load: {errno.errorcode.get(-result, result)}")
    finally:
        library.seccomp_release(context)
