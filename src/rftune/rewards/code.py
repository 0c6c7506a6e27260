"""Execution rewards for code: tests run in the sandbox (`rftune.sandbox`), plus a real linter (ruff).

All are batched (``f(prompts, completions, **columns)``) so a step's programs run in parallel in the sandbox,
whose cache makes a second reward on the same (code, tests) free. The sandbox is the ``sandbox`` argument: the
trainer (and `rftune eval`) pass the one they built from the config's ``sandbox`` section; a direct call without
one uses `rftune.sandbox.default_sandbox`. Dataset columns used:
  ``tests``        test code (each top-level statement holding an ``assert`` — or, in a HumanEval
                   ``check(candidate)``, each such statement of its body — is one case) or a list of case snippets;
  ``entry_point``  optional: the program's function that the tests call ``candidate``;
  ``code_prefix``  optional: code put before the completion's code (e.g. HumanEval's prompt, holding imports,
                   helpers and the signature, so that a completion may give just the body). Its definitions
                   (`problem_definitions`) also open the tests' setup: the tests use the problem's helpers, never
                   a program's redefinition of them.

Rewards: ``code_tests`` share of test cases passed (partial credit); ``code_passes`` 1.0 when every case passed;
``code_runs`` 1.0 when the program loads (parses and runs its top level) without error; ``code_lint``
``max(-violations / lines, floor)`` from ruff over the completion's code (0 = clean; no code at all = floor).
A row without ``tests`` gets None (not applicable) from the test rewards.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Sequence

from rftune import sandbox
from rftune.errors import ConfigError
from rftune.rewards.registry import register_reward
from rftune.sandbox import TestSuite, default_sandbox

FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
PYTHON_TAGS = {"", "python", "py", "python3"}


def extract_code(completion: str) -> str:
    """The code in a completion: the first fenced block tagged ``python``/``py``/``python3`` or untagged (a fence
    left open, as in a truncated completion, runs to the end of the text); with no such block, the whole text.
    Surrounding blank lines are removed."""
    for match in FENCE.finditer(completion):
        if match.group(1).lower() in PYTHON_TAGS:
            return match.group(2).strip("\n")
    return completion.strip("\n")


def program_source(completion: str, code_prefix: str | None = None) -> str:
    """What the sandbox runs: the row's code prefix (if any), then the completion's code."""
    code = extract_code(completion)
    return f"{code_prefix.rstrip()}\n{code}\n" if code_prefix else code + "\n"


def suite_for(tests, entry_point: str | None, code_prefix: str | None = None) -> sandbox.TestSuite:
    """A row's ``tests`` (source text or a list of case snippets) as a test suite; the definitions of the row's
    ``code_prefix`` (`problem_definitions`) go first in its setup, so the tests use the problem's own helpers."""
    if isinstance(tests, str):
        suite = sandbox.tests_from_source(tests, entry_point)
    elif isinstance(tests, (list, tuple)) and all(isinstance(case, str) for case in tests):
        suite = sandbox.TestSuite(tuple(tests), entry_point=entry_point)
    else:
        raise ValueError(f"'tests' must be test code or a list of test-case snippets, got {type(tests).__name__}")
    definitions = problem_definitions(code_prefix, entry_point)
    if not definitions:
        return suite
    return sandbox.TestSuite(suite.cases, f"{definitions}\n{suite.setup}".strip("\n"), suite.entry_point)


DEFINITIONS = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Assign,
               ast.AnnAssign)


def problem_definitions(code_prefix: str | None, entry_point: str | None) -> str:
    """What the problem itself defines in its code prefix — top-level imports, functions, classes and assignments,
    except the function it asks for — as source for the tests' side. A program may redefine these names in its own
    process, but the tests keep the problem's versions (a HumanEval prompt's ``encode_cyclic``, ``poly``, ...)."""
    if not code_prefix:
        return ""
    try:
        module = ast.parse(code_prefix)
    except SyntaxError:
        return ""
    kept = [node for node in module.body if isinstance(node, DEFINITIONS)
            and not (isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == entry_point)]
    return "\n".join(ast.unparse(node) for node in kept)


def run_tests(completions: Sequence[str], tests: Sequence, entry_point: Sequence | None = None,
              code_prefix: Sequence | None = None, box: sandbox.Sandbox | None = None) -> list[sandbox.Result | None]:
    """Sandbox results for each completion against its row's tests (None where the row has no tests)."""
    count = len(completions)
    entry_point, code_prefix = entry_point or [None] * count, code_prefix or [None] * count
    rows = [i for i in range(count) if tests[i] is not None]
    jobs = [(program_source(completions[i], code_prefix[i]), suite_for(tests[i], entry_point[i], code_prefix[i]))
            for i in rows]
    results: list[sandbox.Result | None] = [None] * count
    for i, result in zip(rows, (box or default_sandbox()).run_many(jobs)):
        results[i] = result
    return results


@register_reward("code_tests")
def code_tests(prompts, completions, tests, entry_point=None, code_prefix=None, sandbox=None,
               **columns) -> list[float | None]:
    """Share of the row's test cases the completion's program passes (each case counted separately)."""
    return [None if r is None else r.fraction for r in run_tests(completions, tests, entry_point, code_prefix, sandbox)]


@register_reward("code_passes")
def code_passes(prompts, completions, tests, entry_point=None, code_prefix=None, sandbox=None,
                **columns) -> list[float | None]:
    """1.0 when the program passes every test case of its row, else 0.0."""
    return [None if r is None else float(r.status == "passed" and r.total > 0)
            for r in run_tests(completions, tests, entry_point, code_prefix, sandbox)]


@register_reward("code_runs")
def code_runs(prompts, completions, code_prefix=None, sandbox=None, **columns) -> list[float]:
    """1.0 when the program parses and its top level runs without error (no tests are run), else 0.0."""
    prefixes = code_prefix or [None] * len(completions)
    jobs = [(program_source(c, p), TestSuite(())) for c, p in zip(completions, prefixes)]
    return [float(r.status == "passed") for r in (sandbox or default_sandbox()).run_many(jobs)]


@register_reward("code_lint")
def code_lint(prompts, completions, select: Sequence[str] | None = None, floor: float = -1.0,
              **columns) -> list[float]:
    """``max(-violations / lines, floor)`` per completion, counting ruff's findings (syntax errors included) over
    the completion's code's non-blank lines; ``select`` picks ruff rules (default: ruff's defaults)."""
    codes = [extract_code(c) for c in completions]
    violations = lint_violations(codes, select)
    values = []
    for code, found in zip(codes, violations):
        lines = sum(1 for line in code.splitlines() if line.strip())
        values.append(floor if lines == 0 else max(-found / lines, floor))
    return values


def lint_violations(codes: Sequence[str], select: Sequence[str] | None = None) -> list[int]:
    """Number of ruff findings in each code text (one ruff process for the whole batch)."""
    ruff = _ruff_binary()
    with tempfile.TemporaryDirectory(prefix="rftune-lint-") as folder:
        paths = [Path(folder) / f"completion_{i}.py" for i in range(len(codes))]
        for path, code in zip(paths, codes):
            path.write_text(code + "\n")
        command = [ruff, "check", "--isolated", "--no-cache", "--exit-zero", "--output-format", "json"]
        if select:
            command += ["--select", ",".join(select)]
        done = subprocess.run(command + [str(p) for p in paths], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"ruff failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")
        counts = dict.fromkeys((path.resolve() for path in paths), 0)
        for finding in json.loads(done.stdout or "[]"):
            counts[Path(finding["filename"]).resolve()] += 1
    return [counts[path.resolve()] for path in paths]


def _ruff_binary() -> str:
    try:
        from ruff.__main__ import find_ruff_bin
    except ImportError as exc:
        raise ConfigError("the code_lint reward needs ruff: pip install 'rftune[code]'") from exc
    return str(find_ruff_bin())


for _reward in (code_tests, code_passes, code_runs):
    _reward.uses_sandbox = True  # the trainer passes these the sandbox it built from the config's `sandbox` section
