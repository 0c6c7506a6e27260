"""The hostile-program battery: each program tries one way out or one way to cheat; each case asserts the exact
outcome and that nothing is left behind (no sandbox process alive, no staging folder, outside files untouched).

These need the isolated mode (Linux, root); elsewhere they are skipped and `test_fallback.py` covers what the
fallback does.
"""

import glob
import os
import socket
import tempfile
import textwrap
import threading
import time

import pytest

from rftune import sandbox
from rftune.sandbox import Limits, TestSuite

pytestmark = pytest.mark.skipif(not sandbox.detect_isolation().isolated,
                                reason=f"isolated mode unavailable: {sandbox.detect_isolation().reason}")

FAST = Limits(timeout_s=5, cpu_s=2, memory_mb=256, max_processes=8, max_file_mb=2, disk_mb=4)


def sandbox_processes() -> list[int]:
    """Host PIDs of processes running as a sandbox uid under this checkout's harness (other checkouts on a shared
    machine run sandboxes of their own)."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                uid = os.stat(f"/proc/{name}").st_uid
            except OSError:
                continue
            if sandbox.UID_BASE <= uid < sandbox.UID_BASE + 200_002 and _under_our_harness(int(name)):
                found.append(int(name))
    return found


def _under_our_harness(pid: int) -> bool:
    """Whether `pid` or one of its ancestors runs this checkout's harness (gone processes count as ours)."""
    while pid > 1:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                if str(sandbox.HARNESS).encode() in handle.read():
                    return True
            with open(f"/proc/{pid}/stat") as handle:
                pid = int(handle.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            return True
    return False


def staging_folders() -> set[str]:
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "rftune-sandbox-*")))


@pytest.fixture(autouse=True)
def nothing_left_behind(tmp_path, monkeypatch):
    staging = tmp_path / "staging"  # this test's own temporary folder: others may run sandboxes on this machine
    staging.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(staging))
    yield
    assert sandbox_processes() == []
    assert staging_folders() == set()


def run(code: str, cases, limits: Limits = FAST, setup: str = "", entry_point: str | None = None):
    return sandbox.run(textwrap.dedent(code), TestSuite(tuple(cases), setup, entry_point), limits)


def test_correct_program_passes_every_case():
    result = run("""
        def add(a, b):
            return a + b
    """, ["assert add(1, 2) == 3", "assert candidate(-1, 1) == 0", "assert add('a', 'b') == 'ab'"],
        entry_point="add")
    assert (result.status, result.cases, result.error) == ("passed", (True, True, True), "")


def test_partial_credit_counts_each_case():
    result = run("""
        def sign(x):
            return 1 if x > 0 else -1
    """, ["assert sign(5) == 1", "assert sign(-2) == -1", "assert sign(0) == 0"])
    assert result.status == "failed"
    assert result.cases == (True, True, False)
    assert result.fraction == pytest.approx(2 / 3, abs=1e-12)
    assert result.error == "AssertionError"


def test_syntax_error_is_a_load_error():
    result = run("def f(:\n    pass\n", ["assert f() is None"])
    assert result.status == "error"
    assert result.cases == (False,)
    assert "SyntaxError" in result.error


def test_infinite_loop_is_stopped_by_the_cpu_limit():
    result = run("while True:\n    pass\n", ["assert True"], Limits(timeout_s=20, cpu_s=1))
    assert (result.status, result.cases) == ("timeout", (False,))
    assert result.error == "the program passed its CPU-time limit"
    assert result.seconds < 10


def test_sleeping_program_is_stopped_by_the_wall_clock():
    result = run("import time\ntime.sleep(60)\n", ["assert True"], Limits(timeout_s=1, cpu_s=5))
    assert (result.status, result.cases) == ("timeout", (False,))
    assert result.error == "the run passed its wall-clock limit"


def test_timeout_inside_a_case_keeps_the_cases_before_it():
    result = run("""
        import time
        def slow(x):
            if x:
                time.sleep(60)
            return x
    """, ["assert slow(0) == 0", "assert slow(1) == 1", "assert slow(0) == 0"], Limits(timeout_s=1))
    assert (result.status, result.cases) == ("timeout", (True, False, False))


def test_fork_bomb_is_capped_by_the_process_limit_then_killed():
    counted = run("""
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
    """, ["assert spawn() == 7"], Limits(timeout_s=5, max_processes=8))
    assert (counted.status, counted.cases) == ("passed", (True,))  # 8 processes: the program and 7 children

    bomb = run("""
        import os
        while True:
            try:
                os.fork()
            except OSError:
                pass
    """, ["assert True"], Limits(timeout_s=3, cpu_s=1, max_processes=8))
    assert (bomb.status, bomb.cases) == ("timeout", (False,))


def test_memory_bomb_hits_the_address_space_limit():
    at_load = run("hog = bytearray(2 * 1024 ** 3)\n", ["assert True"])
    assert (at_load.status, at_load.cases) == ("memory", (False,))
    assert "MemoryError" in at_load.error

    in_case = run("""
        def grow():
            return len(b"x" * (1024 ** 3))
    """, ["assert grow() > 0", "assert 1 + 1 == 2"])
    assert (in_case.status, in_case.cases) == ("memory", (False, True))


def test_huge_file_is_stopped_by_the_file_size_limit():
    result = run("""
        def write():
            with open("big.bin", "wb") as handle:
                for _ in range(100):
                    handle.write(b"x" * 1024 * 1024)
            return True
    """, ["assert write()"], Limits(timeout_s=5, max_file_mb=2))
    assert (result.status, result.cases) == ("failed", (False,))  # Python ignores SIGXFSZ: the write fails
    assert result.error == "the program raised OSError: [Errno 27] File too large"


def test_filling_the_directory_stops_at_its_size_limit():
    result = run("""
        import errno, os
        def fill():
            written = 0
            try:
                for index in range(100):
                    with open(f"part{index}", "wb") as handle:
                        handle.write(b"x" * 1024 * 1024)
                    written += 1
            except OSError as exc:
                return written, exc.errno, os.getcwd(), os.environ["HOME"]
            return written, 0, os.getcwd(), os.environ["HOME"]
    """, ["written, code, cwd, home = fill()\nassert (written, code) == (4, 28)\nassert cwd == home == '/sandbox'"],
        Limits(timeout_s=5, max_file_mb=2, disk_mb=4))
    assert (result.status, result.cases) == ("passed", (True,))


def test_detached_sleeping_child_is_dead_afterwards(find_processes):
    marker = f"rftune-detached-{os.getpid()}-{time.monotonic_ns()}"
    code = f"""
        import os, sys, time
        def detach():
            if os.fork() == 0:
                os.setsid()
                if os.fork() == 0:
                    os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(60)", "{marker}"])
                os._exit(0)
            time.sleep(2)
            return True
    """
    seen = []
    worker = threading.Thread(target=lambda: seen.append(run(code, ["assert detach()"])))
    worker.start()
    assert _wait_for(lambda: find_processes(marker)), "the detached child never started"
    worker.join()
    assert (seen[0].status, seen[0].cases) == ("passed", (True,))
    assert find_processes(marker) == []


def _wait_for(condition, seconds: float = 10.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_no_connection_reaches_a_loopback_server():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    accepted = []

    def accept_loop(stop):
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    stop = threading.Event()
    thread = threading.Thread(target=accept_loop, args=(stop,))
    thread.start()
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()  # the server works from outside
        assert _wait_for(lambda: len(accepted) == 1)
        result = run(f"""
            import socket
            def connect():
                socket.create_connection(("127.0.0.1", {port}), timeout=2).close()
                return "connected"
        """, ['assert connect() == "connected"'])
        time.sleep(0.3)
    finally:
        stop.set()
        thread.join()
        server.close()
    assert (result.status, result.cases) == ("failed", (False,))
    assert "Address family not supported by protocol" in result.error  # the system-call filter
    assert len(accepted) == 1


def test_files_outside_the_sandbox_can_be_neither_read_nor_deleted(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret")
    result = run(f"""
        import os
        def read():
            return open({str(secret)!r}).read()
        def delete():
            os.remove({str(secret)!r})
            return True
        def listing():
            return sorted(os.listdir("/"))
    """, ["assert read() == 's3cret'", "assert delete()", "assert 'work' in listing() or 'home' in listing()"])
    assert (result.status, result.cases) == ("failed", (False, False, False))
    assert "FileNotFoundError" in result.case_errors[0] and "FileNotFoundError" in result.case_errors[1]
    assert secret.read_text() == "s3cret"


def test_exiting_before_the_tests_scores_nothing():
    hard = run("import os\nos._exit(0)\n", ["assert True", "assert True"])
    assert (hard.status, hard.cases) == ("crashed", (False, False))
    assert hard.error == "the program ended before the tests were done (exited with status 0)"

    soft = run("import sys\nsys.exit(0)\n", ["assert True"])
    assert (soft.status, soft.cases) == ("error", (False,))
    assert soft.error == "SystemExit: 0"


def test_system_exit_inside_a_test_fails_only_that_case():
    result = run("""
        def f(x):
            if x == 2:
                raise SystemExit(0)
            return x
    """, ["assert f(1) == 1", "assert f(2) == 2", "assert f(3) == 3"])
    assert (result.status, result.cases) == ("failed", (True, False, True))
    assert "SystemExit" in result.case_errors[1]


def test_printed_or_written_fake_results_do_not_count():
    fake = '{"loaded": true, "load_error": "", "cases": [{"ok": true, "error": ""}], "memory": false}'
    printed = run("""
        import sys
        print("PASS")
        print("all tests passed", file=sys.stderr)
        def f():
            return 0
    """, ["assert f() == 1"])
    assert (printed.status, printed.cases) == ("failed", (False,))

    written = run(f"""
        import os
        for fd in range(1024):
            try:
                os.write(fd, b{fake!r})
            except OSError:
                pass
        def f():
            return 0
    """, ["assert f() == 1"])
    assert (written.status, written.cases) == ("crashed", (False,))
    assert written.error.startswith("the program broke the call protocol: frame of")


def test_monkeypatching_the_harness_or_assert_helpers_does_not_score():
    result = run("""
        import builtins, sys
        builtins.AssertionError = type("Harmless", (Exception,), {})
        sys.modules["__main__"]._failure = lambda exc: {"ok": True, "value": True}
        def check_equal(a, b):
            return None
        def f():
            raise ValueError("no idea")
    """, ["check_equal(f(), 2)", "assert f() == 2"],
        setup="def check_equal(a, b):\n    assert a == b, (a, b)\n")
    assert (result.status, result.cases) == ("failed", (False, False))
    assert result.case_errors == ("AssertionError: (True, 2)", "AssertionError")


FRAME_CHEAT = """
import gc, sys
def answer(x):
    frame = sys._getframe(1)
    while frame is not None:
        for const in frame.f_code.co_consts:
            if type(const) is int and const > 1000:
                return const
        frame = frame.f_back
    for thing in gc.get_objects():
        if type(thing).__name__ == "code":
            for const in thing.co_consts:
                if type(const) is int and const > 1000:
                    return const
    return -1
"""


def test_reading_hidden_tests_does_not_work():
    namespace: dict = {}
    exec(FRAME_CHEAT, namespace)
    exec(compile("assert answer(3) == 12345", "<in-process test>", "exec"), namespace)  # the cheat is real

    result = run(FRAME_CHEAT + """
import os
def from_files():
    for folder, folders, files in os.walk("/"):
        if folder == "/":  # skip the read-only system and Python libraries
            folders[:] = [name for name in folders if name not in ("usr", "root")]
        for name in files:
            try:
                if b"12345" in open(os.path.join(folder, name), "rb").read(1 << 20):
                    return os.path.join(folder, name)
            except OSError:
                pass
    return None
""", ["assert answer(3) == 12345", "assert from_files() is not None"], Limits(timeout_s=20, cpu_s=10))
    assert result.cases == (False, False)
    assert result.case_errors[0] == "AssertionError"


def test_unplain_return_values_are_refused():
    result = run("""
        class AlwaysEqual:
            def __eq__(self, other):
                return True
        def f():
            return AlwaysEqual()
    """, ["assert f() == 42"])
    assert (result.status, result.cases) == ("failed", (False,))
    assert "plain data only" in result.error
