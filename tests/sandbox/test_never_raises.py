"""Class 1 of issue 26: whatever a program does, and whatever goes wrong in the sandbox itself, a call returns a
`Result` with a status; nothing raises into the trainer, and one program never spoils the others of its batch."""

import signal
import subprocess

import pytest

from rftune import sandbox
from rftune.rewards.code import code_tests
from rftune.sandbox import Isolation, Limits, Sandbox

FAST = Limits(timeout_s=5, cpu_s=2, memory_mb=256, max_processes=8, max_file_mb=2, disk_mb=4)
MODES = [pytest.param(None, id="best-mode-here"), pytest.param(Isolation(False, "forced by the test"), id="fallback")]
ADD = "def add(a, b):\n    return a + b\n"


@pytest.mark.parametrize("isolation", MODES)
@pytest.mark.parametrize("number", [signal.SIGRTMIN, signal.SIGRTMIN + 3, signal.SIGRTMAX])
def test_a_real_time_signal_is_a_crash_status(isolation, number):
    at_load = sandbox.run(f"import os\nos.kill(os.getpid(), {number})\n", ["assert True"], FAST, isolation)
    assert (at_load.status, at_load.cases) == ("crashed", (False,))
    assert at_load.error == f"the program ended before the tests were done (killed by signal {number})" or \
        at_load.error == f"the program ended before the tests were done (killed by {signal.Signals(number).name})"

    in_case = sandbox.run(f"import os\ndef add(a, b):\n    os.kill(os.getpid(), {number})\n",
                          ["assert 1 + 1 == 2", "assert add(1, 2) == 3"], FAST, isolation)
    assert (in_case.status, in_case.cases) == ("crashed", (True, False))


def test_a_hostile_program_leaves_its_batch_and_the_reward_intact():
    box = Sandbox(FAST, workers=2)
    killer = "import os, signal\nos.kill(os.getpid(), signal.SIGRTMIN + 5)\n"
    results = box.run_many([(killer, ["assert add(1, 2) == 3"]), (ADD, ["assert add(1, 2) == 3"])])
    assert [r.status for r in results] == ["crashed", "passed"]

    tests = ["assert add(1, 2) == 3"]
    completions = [f"```python\n{killer}```", f"```python\n{ADD}```"]
    assert code_tests(["p", "p"], completions, tests=[tests, tests]) == [0.0, 1.0]


def test_a_harness_that_cannot_start_is_a_crash_status(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    result = sandbox.run(ADD, ["assert add(1, 2) == 3", "assert add(0, 0) == 0"], FAST)
    assert (result.status, result.cases) == ("crashed", (False, False))
    assert result.error == "the sandbox failed: OSError: [Errno 24] Too many open files"


def test_a_harness_that_writes_no_record_is_a_crash_status(monkeypatch, tmp_path):
    monkeypatch.setattr(sandbox, "HARNESS", tmp_path / "missing-harness.py")
    result = sandbox.run(ADD, ["assert add(1, 2) == 3"], FAST)
    assert (result.status, result.cases) == ("crashed", (False,))
    assert result.error == "the harness wrote no valid record (exit status 2)"
