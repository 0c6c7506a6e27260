"""Running untrusted code against tests: ``run(code, tests, limits) -> Result``, and a parallel, caching `Sandbox`.

A program (model-written Python) runs in its own process, session and fresh directory, with a scrubbed environment,
``HOME`` inside that directory, limits on CPU seconds, address space, processes, file size, open files and the
directory's size and inodes, and a system-call filter (`syscalls`, through libseccomp: no keyrings, ptrace, mounts,
namespaces, bpf, sockets but AF_UNIX); after ``timeout_s`` of wall-clock time the run ends and every process it
started is killed. Where this process may make memory cgroups (root, mostly), each run gets one, which bounds all
of the program's memory — shared memory and its files included — not one process's; the OOM killer takes programs
before the caller. Where Linux namespaces work — as root, or as any user inside a user namespace where the kernel
allows it — the program also has no network and sees no file of the machine except a read-only view of the
system's and Python's libraries. `Isolation.describe` says what holds here; see `rftune.sandbox.harness` for how,
and for why the per-test-case record cannot be forged by the program.

Tests are a `TestSuite`: ``cases`` (Python snippets, each passing when it runs without raising), optional
``setup`` (test-side helpers) and ``entry_point`` (the program's function bound to ``candidate``). Test code runs
in the harness, never in the program, and sees the world the problem defines: Python's builtins and the setup's
names as they are; from the program only the entry point and the names the tests read without defining them
(`harness.asked_names`), called with plain data (see `protocol`). A program that defines ``abs`` or the problem's
own helper changes nothing the tests see.

Outcome (`Result.status`): ``passed`` (every case passed), ``failed`` (some case failed), ``error`` (the program
does not load: syntax error, exception at import), ``timeout`` (wall clock or CPU limit), ``memory`` (the address
space limit or the run's memory cgroup bound was hit), ``crashed`` (the program's process ended or closed its pipe
before the tests were done, whatever the signal; or the sandbox itself failed). A call never raises for what a
program does.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from rftune.errors import RftuneError
from rftune.runtime.counters import Counters
from rftune.sandbox import cgroup, syscalls

HARNESS = Path(__file__).with_name("harness.py")
PROTOCOL = Path(__file__).with_name("protocol.py")
STATUSES = ("passed", "failed", "error", "timeout", "memory", "crashed")
GRACE_S = 10.0  # extra wall-clock time before the parent kills a harness that did not finish on its own
HARNESS_MB = 64  # the launcher's and harness's share of a run's memory cgroup
USER_NAMESPACE_PROCESSES = 2  # the launcher and the harness, under the program's uid in its user namespace
UID_BASE = 1_500_000  # programs and harnesses run as uids drawn from here (pairs; no account needed)


class SandboxError(RftuneError):
    """The sandbox cannot run as configured (e.g. isolation is required but not available here)."""


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 10.0  # wall clock for the whole run (loading the program and every test case)
    cpu_s: int = 5  # CPU seconds of the program's process
    memory_mb: int = 512  # address space of each of its processes; with a memory cgroup, the run's bound is
    #                       memory_mb + disk_mb + HARNESS_MB for all of them, shared memory and files included
    max_processes: int = 16  # processes the program may have at once (its own included)
    max_file_mb: int = 16  # size of any one file it writes
    disk_mb: int = 32  # total size of its directory (isolated mode), with 256 files or folders per MB
    max_open_files: int = 64


@dataclass(frozen=True)
class TestSuite:
    __test__ = False  # not a pytest class

    cases: tuple[str, ...]
    setup: str = ""
    entry_point: str | None = None


@dataclass(frozen=True)
class Result:
    status: str  # one of STATUSES
    cases: tuple[bool, ...] = ()  # per test case: passed?
    error: str = ""  # why the program did not load, the first failing case's message, or why the run ended
    seconds: float = 0.0
    case_errors: tuple[str, ...] = field(default=(), repr=False)

    @property
    def passed(self) -> int:
        return sum(self.cases)

    @property
    def total(self) -> int:
        return len(self.cases)

    @property
    def fraction(self) -> float:
        """Share of test cases passed (0.0 when the program did not load; 1.0 for a load-only run that loaded)."""
        if not self.cases:
            return float(self.status == "passed")
        return self.passed / self.total


# ------------------------------------------------------------------------------------------------ tests
def tests_from_source(source: str, entry_point: str | None = None) -> TestSuite:
    """Split test code into cases: each top-level statement that contains an ``assert`` is one case, together with
    the statements before it that do not (imports, assignments). An assert of a constant (HumanEval's
    ``assert True, "..."``) tests nothing and is not a case of its own. A module that defines ``check(candidate)``
    (HumanEval) is split inside that function, its other top-level code becoming the setup."""
    try:
        module = ast.parse(source)
    except SyntaxError as exc:
        raise SandboxError(f"test code does not parse: line {exc.lineno}: {exc.msg}") from exc
    check = next((node for node in module.body if isinstance(node, ast.FunctionDef) and node.name == "check"), None)
    if check is None:
        return TestSuite(cases=_split_cases(module.body), entry_point=entry_point)
    setup = [node for node in module.body if node is not check and not _is_check_call(node)]
    parameter = check.args.args[0].arg if check.args.args else "candidate"
    prefix = "" if parameter == "candidate" else f"{parameter} = candidate\n"
    cases = _split_cases(check.body)
    return TestSuite(cases=(prefix + cases[0],) + cases[1:] if cases else (), setup=_unparse(setup),
                     entry_point=entry_point)


def _is_check_call(node: ast.stmt) -> bool:
    return (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Name) and node.value.func.id == "check")


def _split_cases(statements: list[ast.stmt]) -> tuple[str, ...]:
    cases, pending = [], []
    for node in statements:
        pending.append(node)
        if any(isinstance(inner, ast.Assert) and not isinstance(inner.test, ast.Constant) for inner in ast.walk(node)):
            cases.append(_unparse(pending))
            pending = []
    if pending and cases:
        cases[-1] += "\n" + _unparse(pending)
    return tuple(cases)


def _unparse(nodes: list[ast.stmt]) -> str:
    return "\n".join(ast.unparse(node) for node in nodes)


# ------------------------------------------------------------------------------------------------ isolation
@functools.lru_cache(maxsize=1)
def _libseccomp_present() -> bool:
    return syscalls.load_libseccomp() is not None


@dataclass(frozen=True)
class Isolation:
    isolated: bool  # namespaces, jail and uid drop
    reason: str  # what failed, when not isolated
    syscall_filter: bool = field(default_factory=_libseccomp_present)  # seccomp filter (libseccomp)
    memory_cgroup: bool = field(default_factory=lambda: cgroup.parent() is not None)  # a memory cgroup per run
    user_namespace: bool = False  # isolated without root, inside a user namespace

    def describe(self) -> str:
        filtered = ("a system-call filter (no keyrings, ptrace, mounts, namespaces, bpf, sockets but AF_UNIX)"
                    if self.syscall_filter else f"NO system-call filter ({syscalls.MISSING})")
        memory = ("a memory cgroup per run" if self.memory_cgroup else
                  "memory limited per process (no memory cgroup can be made here)")
        if self.isolated:
            how = ("in a user namespace, without root" if self.user_namespace else "as root, with unprivileged uids")
            return (f"rftune sandbox: isolated {how}: own network, mount, PID and IPC namespaces, a read-only root "
                    f"of the system and Python libraries only, resource limits, {memory}, {filtered}")
        return (f"rftune sandbox: NOT isolated ({self.reason}): programs run with resource limits, {memory} and "
                f"{filtered} in their own session and directory, but can read every file this user can; set "
                "sandbox.require_isolation: true to refuse to run like this")


_isolation: Isolation | None = None
_isolation_lock = threading.Lock()


def detect_isolation() -> Isolation:
    """Whether the isolated mode works on this machine (checked once per process)."""
    global _isolation
    with _isolation_lock:
        if _isolation is None:
            _isolation = _probe()
        return _isolation


def _probe() -> Isolation:
    if not sys.platform.startswith("linux"):
        return Isolation(False, f"needs Linux, this is {sys.platform}")
    user_namespace = os.geteuid() != 0
    with tempfile.TemporaryDirectory(prefix="rftune-sandbox-probe-") as folder:
        try:
            done = subprocess.run([_python(), "-I", "-S", str(HARNESS), "--probe", folder]
                                  + ["--user-namespace"] * user_namespace, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return Isolation(False, f"probe failed: {exc}")
    answer = done.stdout.strip() or done.stderr.strip()[-300:]
    if answer == "ok":
        return Isolation(True, "", user_namespace=user_namespace)
    how = "unprivileged user namespaces" if user_namespace else "namespaces as root"
    return Isolation(False, f"{how} do not work here: {answer}")


def _python() -> str:
    return os.path.realpath(sys.executable)


# ------------------------------------------------------------------------------------------------ one run
def run(code: str, tests: TestSuite | Sequence[str] | str = (), limits: Limits = Limits(),
        isolation: Isolation | None = None) -> Result:
    """Run `code` against `tests` (a suite, a list of case snippets, or test source to split) in a sandbox."""
    suite = _as_suite(tests)
    try:
        isolation = isolation or detect_isolation()
        staging, group = tempfile.mkdtemp(prefix="rftune-sandbox-"), None
        try:
            if isolation.memory_cgroup and (where := cgroup.parent()) is not None:
                group = cgroup.RunCgroup(where, memory_bound_mb(limits))
            job = _job(code, suite, limits, isolation, staging, group)
            return _memory_verdict(_launch(job, limits), group, limits)
        finally:
            if group is not None:
                group.remove()
            shutil.rmtree(staging, ignore_errors=True)
    except Exception as exc:  # the sandbox's own failure is this run's status, never an exception into the trainer
        return Result("crashed", tuple([False] * len(suite.cases)), f"the sandbox failed: {type(exc).__name__}: {exc}")


def _as_suite(tests) -> TestSuite:
    if isinstance(tests, TestSuite):
        return tests
    if isinstance(tests, str):
        return tests_from_source(tests)
    return TestSuite(cases=tuple(tests))


def memory_bound_mb(limits: Limits) -> int:
    """The run's memory cgroup bound: the program's memory, its directory's files, and the harness's share."""
    return limits.memory_mb + limits.disk_mb + HARNESS_MB


def _memory_verdict(result: Result, group: cgroup.RunCgroup | None, limits: Limits) -> Result:
    """A run whose cgroup hit its bound (the kernel killed one of its processes) ended for memory."""
    if group is None or not group.oom_kills():
        return result
    return Result("memory", result.cases, f"the program passed its memory bound ({memory_bound_mb(limits)} MB for "
                  "all its processes, shared memory and files)", result.seconds, result.case_errors)


def _job(code: str, suite: TestSuite, limits: Limits, isolation: Isolation, staging: str,
         group: cgroup.RunCgroup | None) -> dict:
    uids = None
    if os.geteuid() == 0 and (isolation.isolated or _reachable_by_others(_python())):
        program_uid = UID_BASE + 2 * random.SystemRandom().randrange(100_000)
        uids = [program_uid, program_uid + 1]
        if not isolation.isolated:
            os.chown(staging, program_uid, program_uid)
    os.chmod(staging, 0o700)
    return {"code": code, "setup": suite.setup, "cases": list(suite.cases), "entry_point": suite.entry_point,
            "limits": asdict(limits), "isolate": isolation.isolated, "root": staging, "workdir": staging,
            "python": _python(), "python_prefix": os.path.realpath(sys.base_prefix),
            "protocol": PROTOCOL.read_text(), "uids": uids, "nproc_base": _process_base(uids, isolation),
            "syscall_filter": isolation.syscall_filter, "cgroup": group.procs if group else None,
            "user_namespace": isolation.user_namespace}


def _reachable_by_others(path: str) -> bool:
    """Whether another uid can execute `path` (every folder above it searchable by others): without namespaces the
    program can only change uid when it can still start the interpreter."""
    current = Path(path)
    if not os.stat(current).st_mode & 0o001:
        return False
    return all(os.stat(folder).st_mode & 0o001 for folder in current.parents)


def _process_base(uids: list[int] | None, isolation: Isolation) -> int:
    """Processes that count against the program's process limit before it starts: none under a uid of its own;
    in a user namespace the launcher and the harness (the namespace counts only its own); else every process
    of this uid."""
    if uids:
        return 0
    return USER_NAMESPACE_PROCESSES if isolation.user_namespace else _own_process_count()


def _own_process_count() -> int:
    """Processes of this uid now (RLIMIT_NPROC counts them all when the program keeps our uid)."""
    uid, count = os.getuid(), 0
    for name in os.listdir("/proc") if os.path.isdir("/proc") else ():
        try:
            count += name.isdigit() and os.stat(f"/proc/{name}").st_uid == uid
        except OSError:
            continue
    return count


def _launch(job: dict, limits: Limits) -> Result:
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    process = subprocess.Popen([job["python"], "-I", "-S", str(HARNESS)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True, env=env)
    try:
        output, _ = process.communicate(json.dumps(job).encode(), timeout=limits.timeout_s + GRACE_S)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        return Result("timeout", tuple([False] * len(job["cases"])), "the harness did not finish in time",
                      limits.timeout_s + GRACE_S)
    finally:
        _kill_group(process)
    try:
        return result_from_record(json.loads(output), len(job["cases"]))
    except (ValueError, TypeError, KeyError, IndexError):
        return Result("crashed", tuple([False] * len(job["cases"])),
                      f"the harness wrote no valid record (exit status {process.returncode})")


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


def result_from_record(record: dict, num_cases: int) -> Result:
    """The outcome of a run from the harness's record of it."""
    outcomes = record["cases"] + [{"ok": False, "error": ""}] * (num_cases - len(record["cases"]))
    cases = tuple(bool(o["ok"]) for o in outcomes)
    errors = tuple(str(o["error"]) for o in outcomes)
    kind, value = record["exit"]
    status, error = _status(record, kind, value, cases)
    if not error:
        error = next((e for e in errors if e), "")
    return Result(status, cases, error, float(record["seconds"]), errors)


def _status(record: dict, kind: str, value, cases: tuple[bool, ...]) -> tuple[str, str]:
    if record["timeout"]:
        return "timeout", "the run passed its wall-clock limit"
    if kind == "signal" and value in (signal.SIGXCPU, signal.SIGKILL):
        return "timeout", "the program passed its CPU-time limit"
    if record["memory"]:
        return "memory", record["load_error"] or "the program hit its memory limit"
    if record["protocol_error"]:
        return "crashed", record["protocol_error"]
    if record["gone"]:
        how = f"killed by {_signal_name(value)}" if kind == "signal" else f"exited with status {value}"
        return "crashed", f"the program ended before the tests were done ({how})"
    if not record["loaded"]:
        return "error", record["load_error"]
    return ("passed" if all(cases) else "failed"), ""


def _signal_name(number: int) -> str:
    """``SIGKILL`` for a signal Python names; ``signal 37`` for one it does not (real-time signals)."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


# ------------------------------------------------------------------------------------------------ many runs
SANDBOX_KEYS = ("sandbox/runs", "sandbox/cache_hits") + tuple(f"sandbox/{status}" for status in STATUSES)


class Sandbox:
    """Runs many programs in parallel (at most `workers` at once), caching results by (code, tests, limits).

    ``stats`` counts its fresh runs by status and the requests served without a run of their own (cached, or the
    same job earlier in the batch); whoever scores with it takes them (`rftune.rewards.base.score_batch`)."""

    def __init__(self, limits: Limits = Limits(), workers: int = 4, cache_size: int = 4096,
                 isolation: Isolation | None = None) -> None:
        self.limits, self.workers, self.cache_size = limits, workers, cache_size
        self.isolation = isolation or detect_isolation()
        self.stats = Counters(SANDBOX_KEYS)
        self._cache: OrderedDict[str, Result] = OrderedDict()
        self._lock = threading.Lock()

    def run(self, code: str, tests: TestSuite | Sequence[str] | str = ()) -> Result:
        return self.run_many([(code, tests)])[0]

    def run_many(self, jobs: Sequence[tuple[str, TestSuite | Sequence[str] | str]]) -> list[Result]:
        """Results in input order; identical jobs and cached ones run once."""
        keyed = [(self._key(code, suite), code, suite) for code, suite in ((c, _as_suite(t)) for c, t in jobs)]
        results = {key: hit for key in {k for k, _, _ in keyed} if (hit := self._cached(key)) is not None}
        todo = {key: (code, suite) for key, code, suite in keyed if key not in results}
        self.stats.add("sandbox/cache_hits", len(keyed) - len(todo))  # served without a run of their own
        if todo:
            with ThreadPoolExecutor(max_workers=min(self.workers, len(todo))) as pool:
                fresh = dict(zip(todo, pool.map(lambda job: run(*job, self.limits, self.isolation), todo.values())))
            for key, result in fresh.items():
                self._store(key, result)
                self.stats.add("sandbox/runs")
                self.stats.add(f"sandbox/{result.status}")
            results.update(fresh)
        return [results[key] for key, _, _ in keyed]

    def _key(self, code: str, suite: TestSuite) -> str:
        payload = json.dumps([code, suite.setup, list(suite.cases), suite.entry_point, asdict(self.limits)])
        return hashlib.sha256(payload.encode()).hexdigest()

    def _cached(self, key: str) -> Result | None:
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            return None

    def _store(self, key: str, result: Result) -> None:
        with self._lock:
            self._cache[key] = result
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)


_described: Isolation | None = None  # the isolation `configure` last described on stderr (said once)
_default: Sandbox | None = None  # `default_sandbox`, for calls of the code rewards that bring no sandbox


def configure(require_isolation: bool = False, workers: int = 4, cache_size: int = 4096,
              **limits) -> Sandbox:
    """A new sandbox with these settings (the config's ``sandbox`` section); says once what it isolates here.

    Raises `SandboxError` when ``require_isolation`` is set and the isolated mode does not work here.
    """
    global _described
    isolation = detect_isolation()
    if require_isolation and not isolation.isolated:
        raise SandboxError(f"sandbox.require_isolation is true but this machine cannot isolate programs: "
                           f"{isolation.reason}")
    if _described != isolation:
        print(isolation.describe(), file=sys.stderr)
        _described = isolation
    return Sandbox(Limits(**limits), workers, cache_size, isolation)


def default_sandbox() -> Sandbox:
    """A sandbox with the default settings, made on first use, for calling the code rewards without one (the
    trainer and `rftune eval` pass their own)."""
    global _default
    if _default is None:
        _default = configure()
    return _default
