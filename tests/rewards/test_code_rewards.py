"""Code rewards: extraction of code from completions, the sandbox-backed test rewards, and the ruff penalty."""

import pytest

from rftune import sandbox
from rftune.rewards import resolve_reward
from rftune.rewards.code import code_lint, code_passes, code_runs, code_tests, extract_code, program_source

ADD_TESTS = "assert add(1, 2) == 3\nassert add(0, 0) == 0\nassert add(-1, -1) == -2\nassert add(2, 2) == 4\n"


@pytest.mark.parametrize("completion, code", [
    ("Here:\n```python\ndef f():\n    return 1\n```\nDone.", "def f():\n    return 1"),
    ("```py\nx = 1\n```", "x = 1"),
    ("```\nx = 2\n```", "x = 2"),
    ("```bash\nls\n```\n```python\ny = 3\n```", "y = 3"),  # the first Python (or untagged) block
    ("```python\ndef f():\n    return", "def f():\n    return"),  # left open (truncated): to the end
    ("\ndef g():\n    return 2\n\n", "def g():\n    return 2"),  # no fence: the whole text
    ("```python\nfirst = 1\n```\n```python\nsecond = 2\n```", "first = 1"),
])
def test_extract_code(completion, code):
    assert extract_code(completion) == code


def test_program_source_puts_the_prefix_first():
    prefix = "import math\n\ndef area(r):\n    \"\"\"Area.\"\"\"\n"
    assert program_source("    return math.pi * r * r\n", prefix) == prefix + "    return math.pi * r * r\n"
    assert program_source("```python\nx = 1\n```") == "x = 1\n"


def completions_for(*bodies):
    return [f"```python\ndef add(a, b):\n    {body}\n```" for body in bodies]


def test_code_tests_partial_credit_and_code_passes():
    completions = completions_for("return a + b", "return a + b if a > 0 else 0", "return a - b", "syntax error(")
    tests = [ADD_TESTS] * 4
    prompts = ["p"] * 4
    # a + b if a > 0 else 0: add(1,2)=3 ok, add(0,0)=0 ok, add(-1,-1)=0 wrong, add(2,2)=4 ok
    assert code_tests(prompts, completions, tests) == [1.0, 0.75, 0.25, 0.0]  # a - b: only add(0, 0) == 0
    assert code_passes(prompts, completions, tests) == [1.0, 0.0, 0.0, 0.0]
    assert code_runs(prompts, completions) == [1.0, 1.0, 1.0, 0.0]


def test_rows_without_tests_get_none_and_entry_point_binds_candidate():
    completions = completions_for("return a + b", "return a + b")
    tests = ["assert candidate(2, 3) == 5", None]
    assert code_tests(["p", "p"], completions, tests, entry_point=["add", None]) == [1.0, None]


def test_second_reward_on_the_same_programs_is_served_from_the_cache():
    completions = completions_for("return a * 1 + b")
    box = sandbox.Sandbox()
    code_tests(["p"], completions, [ADD_TESTS], sandbox=box)
    code_passes(["p"], completions, [ADD_TESTS], sandbox=box)
    counts = box.stats.snapshot_and_reset()
    assert (counts["sandbox/runs"], counts["sandbox/cache_hits"], counts["sandbox/passed"]) == (1, 1, 1)


def test_code_lint_counts_ruff_findings_per_line():
    clean = "```python\ndef add(a, b):\n    return a + b\n```"
    unused = "```python\nimport os\nimport sys\n\n\ndef add(a, b):\n    return a + b\n```"  # 2 x F401, 4 lines
    broken = "```python\ndef add(a, b:\n```"  # one invalid-syntax finding over 1 line
    assert code_lint(["p"] * 4, [clean, unused, broken, ""]) == [0.0, -0.5, -1.0, -1.0]
    assert code_lint(["p"], [unused], select=["E"]) == [0.0]
    assert code_lint(["p"], [unused], floor=-0.25) == [-0.25]


def test_rewards_are_registered_as_built_ins():
    for name, function in [("code_tests", code_tests), ("code_passes", code_passes), ("code_runs", code_runs),
                           ("code_lint", code_lint)]:
        assert resolve_reward(name) is function
