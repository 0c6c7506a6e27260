"""The sandbox's child side: builds the jail, starts the program in it, runs the tests, writes the only record.

Run as ``python -I -S harness.py`` (standard library only) with a job on stdin; the record of the run goes to
stdout as one JSON object. ``--probe FOLDER [--user-namespace]`` checks whether the isolated mode works here and
prints what failed.

Isolated mode (Linux; as root, or as any user inside a new user namespace where the kernel allows that):
  launcher   joins the run's memory cgroup (where the parent made one), unshares mount, network, PID, IPC and UTS
             namespaces (without root: a user namespace too, mapping only its own uid and gid), bounds SysV shared
             memory and message queues in the new IPC namespace (as root), forks, waits; its stdout is the record
             pipe.
  harness    PID 1 of the new PID namespace (so when it ends the kernel kills every process left in it, detached
             ones too, and the program cannot signal it to death). It mounts a fresh root: binds of /usr and the
             Python installation that are read-only, nosuid and nodev all the way down (mount_setattr with
             AT_RECURSIVE: a mount below them too), three device nodes, and a tmpfs at /sandbox for the program,
             limited in size and inodes; nothing else of the machine's files is in it. It forks the program, then
             chroots itself and (as root) drops to its own unprivileged uid.
  program    in its own session, chrooted, cwd and HOME /sandbox, a scrubbed environment, resource limits, no new
             privileges, the OOM killer's first choice, a second unprivileged uid (without root: the user's own uid
             in the user namespace, with every capability lost at exec), and the system-call filter (`syscalls`);
             it holds only the two pipe ends of the call protocol.
The network namespace has only a loopback interface that is down, and the filter allows no socket family but
AF_UNIX: no connection leaves it.

Why the record cannot be forged: pass/fail is decided here, in the harness, by running each test case's source;
the program never receives a test or an expected value — the tests' calls of its functions travel over a pipe as
plain data (`protocol`), so frame inspection, patched builtins or ``SystemExit`` act only in the program's own
process. The tests see Python's builtins and their setup's names as they are, and take from the program only the
names the problem asks for (`asked_names`). The record goes out on a descriptor the program never inherits; the
program can neither trace the harness (another uid as root, fewer capabilities in a user namespace, and the filter)
nor kill it (PID 1 of its namespace); exit codes and printed text are not read at all.

Fallback mode (no namespaces): the same two processes, without the jail: the program runs in a fresh directory in
its own session with the same resource limits and the same filter (so no network, no keyrings, no host SysV IPC);
a child-subreaper harness kills every descendant at the end. The program can then read every file its uid can.
"""

import ast
import builtins
import ctypes
import json
import os
import resource
import select
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import protocol  # noqa: E402  (standard-library-only sibling, also the program side's source)
import syscalls  # noqa: E402  (standard-library-only sibling: the seccomp filter, through libseccomp)

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x20000, 0x4000000, \
    0x8000000, 0x10000000, 0x20000000, 0x40000000
NAMESPACES = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS
MS_NOSUID, MS_NODEV, MS_BIND, MS_REC, MS_PRIVATE = 2, 4, 4096, 16384, 1 << 18
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV, AT_RECURSIVE, AT_FDCWD = 1, 2, 4, 0x8000, -100
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 36, 38
PROGRAM_FDS = (3, 4)  # the program reads calls on 3 and writes replies on 4
DEVICES = ("null", "zero", "urandom")
MB = 1024 * 1024
PAGE = os.sysconf("SC_PAGE_SIZE")
INODES_PER_MB = 256  # files and folders the program may make in /sandbox, per MB of its size
HARNESS_OOM_SCORE, PROGRAM_OOM_SCORE = 500, 1000  # the OOM killer takes the program first, the trainer last
_libc = ctypes.CDLL(None, use_errno=True)
LIBSECCOMP = syscalls.load_libseccomp()  # opened before any chroot; None where it is not installed


class Deadline(BaseException):
    """The run's wall-clock time is up (a BaseException, so test code's ``except Exception`` cannot hide it)."""


class ProgramGone(BaseException):
    """The program's process ended or closed its pipe before answering."""


class RemoteError(Exception):
    """The program's function raised; carries the exception's type name."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind


def _check(result, what):
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(source, target, fstype, flags, data=None):
    _check(_libc.mount(source and source.encode(), target.encode(), fstype and fstype.encode(), flags,
                       data and data.encode()), f"mount {target}")


def _prctl(option, value):
    _check(_libc.prctl(option, value, 0, 0, 0), f"prctl {option}")


# ------------------------------------------------------------------------------------------------ the jail
class MountAttr(ctypes.Structure):
    """The kernel's ``struct mount_attr`` (mount_setattr(2), Linux 5.12)."""

    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64), ("propagation", ctypes.c_uint64),
                ("userns_fd", ctypes.c_uint64)]


def _lock_down(target, recursive):
    """Make the mount at `target` read-only, nosuid and nodev — with `recursive`, every mount below it too (a
    remount would change only the top one)."""
    attributes = MountAttr(MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, 0, 0, 0)
    _check(_libc.syscall(syscalls.number(LIBSECCOMP, "mount_setattr"), AT_FDCWD, target.encode(),
                         AT_RECURSIVE if recursive else 0, ctypes.byref(attributes), ctypes.sizeof(attributes)),
           f"mount_setattr {target}")


def _bind_read_only(source, target):
    os.makedirs(target, exist_ok=True)
    _mount(source, target, None, MS_BIND | MS_REC)
    _lock_down(target, recursive=True)


def build_root(root, python_prefix, disk_mb, program_uid):
    """Mount the program's whole visible file system under `root` (in a private mount namespace)."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,nr_inodes=256,mode=755")
    for top in ("/bin", "/lib", "/lib64", "/sbin"):
        if os.path.islink(top):
            os.symlink(os.readlink(top), root + top)
        elif os.path.isdir(top):
            _bind_read_only(top, root + top)
    _bind_read_only("/usr", root + "/usr")
    if not python_prefix.startswith("/usr/"):
        _bind_read_only(python_prefix, root + python_prefix)
    os.makedirs(root + "/dev")
    for name in DEVICES:
        open(f"{root}/dev/{name}", "w").close()
        _mount(f"/dev/{name}", f"{root}/dev/{name}", None, MS_BIND)
    os.makedirs(root + "/sandbox")
    _mount("tmpfs", root + "/sandbox", "tmpfs", MS_NOSUID | MS_NODEV,
           f"size={disk_mb}m,nr_inodes={disk_mb * INODES_PER_MB},mode=700,uid={program_uid},gid={program_uid}")
    _lock_down(root, recursive=False)  # the root itself; /sandbox (a mount of its own) stays writable


def limit_ipc(memory_mb):
    """Bound SysV shared memory and message queues in this (new) IPC namespace, whose defaults are nearly
    unlimited; segments go away with the last process attached to them."""
    for name, value in (("kernel/shmmax", memory_mb * MB), ("kernel/shmall", memory_mb * MB // PAGE),
                        ("kernel/shmmni", 16), ("kernel/shm_rmid_forced", 1), ("kernel/msgmni", 16),
                        ("fs/mqueue/queues_max", 16)):
        with open(f"/proc/sys/{name}", "w") as handle:
            handle.write(str(value))


def raise_oom_score(score):
    """Make the kernel's OOM killer take this process (and what it starts) before the trainer; raising the score
    needs no privilege, and it is never lowered below what the caller had."""
    try:
        with open("/proc/self/oom_score_adj", "r+") as handle:
            if int(handle.read()) < score:
                handle.seek(0)
                handle.write(str(score))
    except OSError:
        pass


def _drop_to(uid):
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)


def set_limits(limits, processes):
    """Resource limits of the calling process (inherited by what it starts)."""
    cpu = int(limits["cpu_s"])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))  # SIGXCPU at the soft limit, SIGKILL one second later
    resource.setrlimit(resource.RLIMIT_AS, (limits["memory_mb"] * MB,) * 2)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["max_file_mb"] * MB,) * 2)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits["max_open_files"],) * 2)
    resource.setrlimit(resource.RLIMIT_NPROC, (processes,) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


# ------------------------------------------------------------------------------------------------ the program
def start_program(job, root, calls_read, replies_write):
    """Fork the program: jail, limits and uid, then exec a bare interpreter running `protocol.serve`."""
    pid = os.fork()
    if pid:
        return pid
    try:
        os.setsid()
        os.dup2(calls_read, 100)
        os.dup2(replies_write, 101)
        for target, source in zip(PROGRAM_FDS, (100, 101)):
            os.dup2(source, target)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.closerange(max(PROGRAM_FDS) + 1, 65536)
        home = "/sandbox" if root else job["workdir"]
        raise_oom_score(PROGRAM_OOM_SCORE)
        if root:
            os.chroot(root)
        os.chdir(home)
        uid = job["uids"][0] if job["uids"] else None
        set_limits(job["limits"], job["limits"]["max_processes"] + (0 if uid is not None else job["nproc_base"]))
        if uid is not None:
            _drop_to(uid)
        else:
            _prctl(PR_SET_NO_NEW_PRIVS, 1)
        if job["syscall_filter"]:
            syscalls.confine(LIBSECCOMP, ipc_bounded=bool(root) and not job["user_namespace"],
                             memory_cgroup=bool(job["cgroup"]))
        env = {"HOME": home, "TMPDIR": home, "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
        source = job["protocol"] + f"\nserve({PROGRAM_FDS[0]}, {PROGRAM_FDS[1]})\n"
        os.execve(job["python"], [job["python"], "-I", "-S", "-c", source], env)
    finally:
        os._exit(127)


def program_exit(pid, grace_s=0.5):
    """How the program ended: ("exit", code) / ("signal", number), or ("running", None) after `grace_s`."""
    end = time.monotonic() + grace_s
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            if os.WIFSIGNALED(status):
                return "signal", os.WTERMSIG(status)
            return "exit", os.WEXITSTATUS(status)
        if time.monotonic() > end:
            return "running", None
        time.sleep(0.01)


# ------------------------------------------------------------------------------------------------ the tests
class Channel:
    """The harness's end of the call protocol, with the run's deadline on every read."""

    def __init__(self, calls_write, replies_read, deadline):
        self.calls_write, self.replies_read, self.deadline = calls_write, replies_read, deadline

    def _wait(self, fd):
        left = self.deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise Deadline()

    def request(self, message):
        try:
            protocol.send(self.calls_write, message)
        except (BrokenPipeError, OSError):
            raise ProgramGone() from None
        try:
            reply = protocol.receive(self.replies_read, self._wait)
        except protocol.ProtocolError as exc:
            raise ProgramGone(f"the program broke the call protocol: {exc}") from None
        if reply is None:
            raise ProgramGone()
        return reply


class Remote:
    """A program function as the tests see it: arguments go over as plain data, the plain result comes back."""

    def __init__(self, channel, name):
        self.channel, self.name = channel, name

    def __call__(self, *args, **kwargs):
        reply = self.channel.request({"call": self.name, "args": protocol.encode(list(args)),
                                      "kwargs": protocol.encode(kwargs)})
        if reply.get("ok") is True:
            return protocol.decode(reply.get("value"))
        raise RemoteError(str(reply.get("type")), str(reply.get("error"))[:2000])

    def __repr__(self):
        return f"<program function {self.name}>"


def _describe(exc):
    if isinstance(exc, RemoteError):
        return f"the program raised {exc}"
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text[:2000]


def asked_names(job):
    """The names the tests take from the program: the entry point, and every other name the tests read but neither
    define themselves (setup, cases: assignments, imports, functions, arguments) nor find among Python's builtins.
    So a program that defines ``abs`` or the prompt's own helper (which the code rewards put in the setup) changes
    nothing the tests see."""
    read, bound = set(), set(dir(builtins))
    for source in [job["setup"], *job["cases"]]:
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue  # that case fails when it runs
        for node in ast.walk(tree):
            if isinstance(node, ast.Name):
                (read if isinstance(node.ctx, ast.Load) else bound).add(node.id)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                bound.add(node.name)
            elif isinstance(node, ast.alias):
                bound.add((node.asname or node.name).split(".")[0])
            elif isinstance(node, ast.arg):
                bound.add(node.arg)
            elif isinstance(node, ast.ExceptHandler) and node.name:
                bound.add(node.name)
    if job["entry_point"]:
        bound.add("candidate")
        read.add(job["entry_point"])
        bound.discard(job["entry_point"])
    return read - bound


def run_cases(channel, job, record):
    """Load the program, then run each case; fill `record` in place (so a deadline keeps what was done)."""
    reply = channel.request({"code": job["code"]})
    if reply.get("ok") is not True:
        record["load_error"] = f"{reply.get('error')}"[:2000]
        record["memory"] = reply.get("type") == "MemoryError"
        return
    record["loaded"] = True
    names = reply.get("names") if isinstance(reply.get("names"), list) else []
    namespace = {"__name__": "__tests__"}
    namespace.update({name: Remote(channel, name) for name in asked_names(job) if name in names})
    if job["entry_point"]:
        namespace["candidate"] = Remote(channel, job["entry_point"])
    try:
        exec(compile(job["setup"], "<test setup>", "exec"), namespace)
    except (Deadline, ProgramGone):
        raise
    except BaseException as exc:
        record["setup_error"] = _describe(exc)
    for index, case in enumerate(job["cases"]):
        outcome = {"ok": False, "error": record.get("setup_error", "")}
        record["cases"].append(outcome)
        if "setup_error" in record:
            continue
        try:
            exec(compile(case, f"<test case {index}>", "exec"), namespace)
            outcome.update(ok=True, error="")
        except (Deadline, ProgramGone):
            raise
        except BaseException as exc:  # a failing assert, a program exception, a SystemExit from the tests
            outcome["error"] = _describe(exc)
            record["memory"] |= isinstance(exc, MemoryError) or getattr(exc, "kind", "") == "MemoryError"


def run_harness(job, root, results_fd):
    """Start the program, run the tests against it, write the record; returns when the record is written."""
    calls_read, calls_write = os.pipe()
    replies_read, replies_write = os.pipe()
    pid = start_program(job, root, calls_read, replies_write)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as PID 1 it gets only the signals it handles: then none
    os.close(calls_read)
    os.close(replies_write)
    if root:
        os.chroot(root)
        os.chdir("/")
        set_limits({**job["limits"], "memory_mb": job["limits"]["memory_mb"] + 1024}, 1)
        if job["uids"]:
            _drop_to(job["uids"][1])
    record = {"loaded": False, "load_error": "", "cases": [], "memory": False, "timeout": False, "gone": False,
              "protocol_error": ""}
    start = time.monotonic()
    try:
        run_cases(Channel(calls_write, replies_read, start + job["limits"]["timeout_s"]), job, record)
    except Deadline:
        record["timeout"] = True
    except ProgramGone as exc:
        record["gone"] = True
        record["protocol_error"] = str(exc)
    record["seconds"] = time.monotonic() - start
    os.close(calls_write)
    record["exit"] = program_exit(pid, grace_s=0.5 if record["gone"] else 0.05)
    _write_all(results_fd, json.dumps(record).encode())
    return pid


def _write_all(fd, data):
    while data:
        data = data[os.write(fd, data):]


# ------------------------------------------------------------------------------------------------ the two modes
def _children_of(pid):
    children = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                children.append(int(name))
    return children


def kill_descendants():
    """Fallback mode: this process is a child subreaper, so every orphan lands here; kill until none is left."""
    me = os.getpid()
    for _ in range(1000):
        children = _children_of(me)
        if not children:
            return
        for child in children:
            for kill in (os.killpg, os.kill):
                try:
                    kill(child, signal.SIGKILL)
                except OSError:
                    pass
        time.sleep(0.005)
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            pass


def enter_namespaces(user_namespace):
    """Unshare the mount, network, PID, IPC and UTS namespaces — as an unprivileged user inside a new user
    namespace, where this process keeps its own uid and gid (the only ones it may map) and gains the capabilities
    to build the jail, which the program loses when it execs."""
    uid, gid = os.getuid(), os.getgid()
    _check(_libc.unshare(NAMESPACES | (CLONE_NEWUSER if user_namespace else 0)), "unshare")
    if user_namespace:
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as handle:
                handle.write(text)


def isolated(job, results_fd):
    enter_namespaces(job["user_namespace"])
    if not job["user_namespace"]:  # an unprivileged user may not set them; the filter denies SysV IPC instead
        limit_ipc(job["limits"]["memory_mb"])
    pid = os.fork()
    if pid == 0:  # PID 1 of the new namespace; dies with the launcher
        try:
            _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            program_uid = job["uids"][0] if job["uids"] else os.getuid()
            build_root(job["root"], job["python_prefix"], job["limits"]["disk_mb"], program_uid)
            run_harness(job, job["root"], results_fd)
        finally:
            os._exit(0)
    os.close(results_fd)
    os.waitpid(pid, 0)  # returns once the namespace is empty: its PID 1 exits last


def fallback(job, results_fd):
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    try:
        program = run_harness(job, None, results_fd)
        try:
            os.killpg(program, signal.SIGKILL)
        except OSError:
            pass
    finally:
        kill_descendants()


def probe(folder, user_namespace):
    """Print "ok" when the isolated mode works here, else the first failure."""
    try:
        enter_namespaces(user_namespace)
        if not user_namespace:
            limit_ipc(64)
        pid = os.fork()
        if pid == 0:
            try:
                _mount(None, "/", None, MS_REC | MS_PRIVATE)
                _mount("tmpfs", folder, "tmpfs", 0, "size=1m")
                _lock_down(folder, recursive=True)
                if not user_namespace:
                    os.setgroups([])
                if LIBSECCOMP is None:
                    raise OSError(syscalls.MISSING)
                syscalls.confine(LIBSECCOMP, ipc_bounded=False, memory_cgroup=False)
                code = 0
            except OSError as exc:
                print(exc, flush=True)
                code = 1
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        if os.WEXITSTATUS(status) == 0:
            print("ok")
    except OSError as exc:
        print(exc)


def main():
    if sys.argv[1:2] == ["--probe"]:
        probe(sys.argv[2], sys.argv[3:4] == ["--user-namespace"])
        return
    job = json.loads(sys.stdin.buffer.read())
    if job["cgroup"]:  # the run's memory cgroup, joined before anything of the run exists
        with open(job["cgroup"], "w") as handle:
            handle.write(str(os.getpid()))
    raise_oom_score(HARNESS_OOM_SCORE)
    results_fd = os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):
        os.dup2(null, fd)
    (isolated if job["isolate"] else fallback)(job, results_fd)


if __name__ == "__main__":
    main()
