"""The sandbox's API around the runs: splitting tests into cases, the value codec, parallel runs and the cache,
the fallback mode, and refusing to run unisolated when isolation is required."""

import math
import os
import time

import pytest

from rftune import sandbox
from rftune.sandbox import Isolation, Limits, Sandbox, SandboxError, protocol
from rftune.sandbox import tests_from_source as split_tests

ADD = "def add(a, b):\n    return a + b\n"

HUMANEVAL_STYLE = '''
METADATA = {"author": "x"}


def check(candidate):
    assert True, "a constant assert is not a case"
    assert candidate(1, 2) == 3
    import math
    value = math.floor(2.5)
    assert candidate(value, 1) == 3
    for a in range(3):
        assert candidate(a, 0) == a
    print("done")
'''


def test_check_function_is_split_into_cases_with_their_setup_lines():
    suite = split_tests(HUMANEVAL_STYLE, entry_point="add")
    assert suite.entry_point == "add"
    assert suite.setup == "METADATA = {'author': 'x'}"
    assert suite.cases == ("assert True, 'a constant assert is not a case'\nassert candidate(1, 2) == 3",
                           "import math\nvalue = math.floor(2.5)\nassert candidate(value, 1) == 3",
                           "for a in range(3):\n    assert candidate(a, 0) == a\nprint('done')")


def test_top_level_asserts_are_cases_and_a_renamed_parameter_is_bound():
    assert split_tests("x = 2\nassert add(x, 1) == 3\nassert add(0, 0) == 0\n").cases == \
        ("x = 2\nassert add(x, 1) == 3", "assert add(0, 0) == 0")
    suite = split_tests("def check(f):\n    assert f(1, 1) == 2\n", entry_point="add")
    assert suite.cases == ("f = candidate\nassert f(1, 1) == 2",)
    with pytest.raises(SandboxError, match="line 1"):
        split_tests("assert (")


def test_plain_values_cross_unchanged_and_others_are_refused():
    value = [None, True, 3, -2.5, math.inf, "é", b"\x00\xff", 1 + 2j, (1, (2,)), {"k": [1], (1, 2): {3}},
             frozenset({4}), set()]
    assert protocol.decode(protocol.encode(value)) == value
    assert type(protocol.decode(protocol.encode((1,)))) is tuple
    with pytest.raises(protocol.ProtocolError, match="plain data only"):
        protocol.encode(object())
    with pytest.raises(protocol.ProtocolError, match="unknown value tag"):
        protocol.decode({"x": [1]})
    with pytest.raises(protocol.ProtocolError, match="malformed"):
        protocol.decode({"t": [1], "s": [2]})


def test_humaneval_style_suite_runs_and_counts_each_case():
    result = sandbox.run(ADD, split_tests(HUMANEVAL_STYLE, entry_point="add"))
    assert (result.status, result.cases) == ("passed", (True, True, True))
    wrong = sandbox.run("def add(a, b):\n    return a + b if a else -1\n",
                        split_tests(HUMANEVAL_STYLE, entry_point="add"))
    assert (wrong.status, wrong.cases) == ("failed", (True, True, False))


def test_identical_jobs_run_once_and_repeats_come_from_the_cache():
    box = Sandbox(Limits(timeout_s=5), workers=2)
    first = box.run_many([(ADD, ["assert add(1, 1) == 2"]), (ADD, ["assert add(1, 1) == 2"]),
                          (ADD, ["assert add(1, 1) == 3"])])
    assert [r.status for r in first] == ["passed", "passed", "failed"]
    assert box.stats.snapshot_and_reset() == {
        "sandbox/runs": 2, "sandbox/cache_hits": 1, "sandbox/passed": 1, "sandbox/failed": 1, "sandbox/error": 0,
        "sandbox/timeout": 0, "sandbox/memory": 0, "sandbox/crashed": 0}
    again = box.run_many([(ADD, ["assert add(1, 1) == 3"])])
    assert again == [first[2]]
    counts = box.stats.snapshot_and_reset()
    assert (counts["sandbox/runs"], counts["sandbox/cache_hits"]) == (0, 1)


def test_a_timeout_does_not_hold_up_the_other_programs():
    box = Sandbox(Limits(timeout_s=3), workers=3)
    sleeper = "import time\ntime.sleep(60)\n"
    start = time.monotonic()
    results = box.run_many([(sleeper, ["assert True"]), (sleeper + "#2", ["assert True"]),
                            (ADD, ["assert add(2, 2) == 4"])])
    elapsed = time.monotonic() - start
    assert [r.status for r in results] == ["timeout", "timeout", "passed"]
    assert results[2].seconds < 3
    assert elapsed < 2 * 3  # the two sleepers ran side by side, not one after the other


FALLBACK = Isolation(False, "forced by the test")


def test_fallback_mode_runs_tests_and_kills_detached_children():
    code = """
import os, time
def detach():
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            with open("pid.tmp", "w") as handle:
                handle.write(str(os.getpid()))
            os.rename("pid.tmp", "pid")
            time.sleep(60)
        os._exit(0)
    while not os.path.exists("pid"):
        time.sleep(0.01)
    return int(open("pid").read()), os.getcwd() == os.environ["HOME"]
"""
    result = sandbox.run(code, ["pid, at_home = detach()\nassert at_home\nassert pid < 0, pid"], Limits(timeout_s=5),
                         isolation=FALLBACK)
    assert (result.status, result.cases) == ("failed", (False,))
    pid = int(result.error.removeprefix("AssertionError: "))  # the detached child's pid, as the test saw it
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)

    assert sandbox.run("import os\nos._exit(3)\n", ["assert True"], isolation=FALLBACK).error == \
        "the program ended before the tests were done (exited with status 3)"
    assert sandbox.run("while True:\n    pass\n", ["assert True"], Limits(cpu_s=1),
                       isolation=FALLBACK).status == "timeout"


def test_require_isolation_refuses_an_unisolated_machine(monkeypatch, capsys):
    monkeypatch.setattr(sandbox, "_isolation", FALLBACK)
    monkeypatch.setattr(sandbox, "_described", None)
    with pytest.raises(SandboxError, match="require_isolation is true but .*forced by the test"):
        sandbox.configure(require_isolation=True)
    box = sandbox.configure(require_isolation=False, timeout_s=2.0)
    assert box.limits.timeout_s == 2.0 and not box.isolation.isolated
    assert "NOT isolated (forced by the test)" in capsys.readouterr().err
    sandbox.configure()
    assert capsys.readouterr().err == ""  # said once


@pytest.mark.skipif(os.geteuid() == 0, reason="checks what a non-root user gets (test_unprivileged.py drops to one)")
def test_non_root_user_is_isolated_in_a_user_namespace_or_told_why_not():
    found = sandbox._probe()
    assert found.user_namespace == found.isolated
    assert found.isolated or found.reason.startswith("unprivileged user namespaces do not work here: ")
