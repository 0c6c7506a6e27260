"""Held-out evaluation of every task: splits by content, the players' report (figures equal the rows' values,
paired differences, pass@k), the CLI, and the errors a user can make."""

import json

import pytest
import yaml

from rftune.cli import main
from rftune.config import config_from_dict
from rftune.errors import ConfigError
from rftune.evaluation.stats import pass_at_k
from rftune.tasks import task_from_config
from rftune.tasks.arithmetic import problem_key
from rftune.tasks.heldout import content_hash

REWARDS = '''
def first_char_odd(prompt, completion, example):
    return float(ord(completion[0]) % 2) if completion else 0.0
'''


def test_arithmetic_held_out_problems_never_occur_in_training():
    config = config_from_dict({"task": {"name": "arithmetic", "kwargs": {"size": 400, "eval_size": 300}}})
    task = task_from_config(config)
    training = {problem_key(s.example) for s in task.samples}
    held_out = [problem_key(s.example) for s in task.eval_samples]
    assert held_out and not set(held_out) & training  # by the expression ...
    assert not {s.example["question"] for s in task.eval_samples} & {s.example["question"] for s in task.samples}
    assert len(set(held_out)) == len(held_out)  # ... and each expression once
    assert len(task.samples) == 400 and task.correct_reward == "exact_answer"
    assert [s.index for s in task.eval_samples] == list(range(len(held_out)))
    assert held_out == [problem_key(s.example) for s in task_from_config(config).eval_samples]  # stable


def write_rows(path, prompts):
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    return path


def dataset_config(tmp_path, **task):
    return config_from_dict({"task": {"name": "dataset", "path": str(tmp_path / "rows.jsonl"), **task},
                             "eval": {"split": 0.3, "split_seed": 7}, "base_dir": str(tmp_path)})


def test_split_by_content_hash_is_stable_when_rows_are_added(tmp_path):
    prompts = [f"question {i}" for i in range(40)]
    write_rows(tmp_path / "rows.jsonl", prompts + ["question 3"])  # a repeat of a row stays on its side
    task = task_from_config(dataset_config(tmp_path))
    held = [s.example["prompt"] for s in task.eval_samples]
    expected = [p for p in prompts if content_hash(json.dumps(p), 7) < 0.3]
    assert held == expected and 0 < len(held) < 40
    assert not set(held) & {s.example["prompt"] for s in task.samples}
    assert len(task.samples) == 41 - len(held) - ("question 3" in held)
    write_rows(tmp_path / "rows.jsonl", [f"new {i}" for i in range(20)] + prompts)
    grown = task_from_config(dataset_config(tmp_path))
    assert [p for p in (s.example["prompt"] for s in grown.eval_samples) if p.startswith("question")] == held


def test_eval_path_rows_are_left_out_of_training(tmp_path):
    write_rows(tmp_path / "rows.jsonl", ["a", "b", "c"])
    write_rows(tmp_path / "held.jsonl", ["b", "d", "d"])
    config = config_from_dict({"task": {"name": "dataset", "path": "rows.jsonl", "eval_path": "held.jsonl"},
                               "base_dir": str(tmp_path)})
    task = task_from_config(config)
    assert [s.example["prompt"] for s in task.samples] == ["a", "c"]
    assert [s.example["prompt"] for s in task.eval_samples] == ["b", "d"]


def test_summarize_holds_out_whole_documents():
    task = task_from_config(config_from_dict({"task": {"name": "summarize"}}))
    held = {s.example["document"] for s in task.eval_samples}
    assert held and not held & {s.example["document"] for s in task.samples}
    assert len(held) + len(task.samples) == 12


def eval_config(tmp_path, tiny_model_dir, **eval_section):
    (tmp_path / "my_rewards.py").write_text(REWARDS)
    write_rows(tmp_path / "rows.jsonl", [f"Say {i}" for i in range(30)])
    config = {"model": {"name_or_path": tiny_model_dir}, "train": {"output_dir": str(tmp_path / "run")},
              "generation": {"max_new_tokens": 3},
              "task": {"name": "dataset", "path": "rows.jsonl"},
              "rewards": {"functions": [{"name": "my_rewards.py:first_char_odd"},
                                        {"name": "format_regex", "weight": 0.5, "kwargs": {"pattern": "x.*"}}]},
              "eval": {"split": 0.3, "num_rows": 5, "num_samples": 4, "batch_size": 3,
                       "correct_reward": "first_char_odd", **eval_section}}
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_eval_report_figures_are_the_rows_values(tiny_model_dir, tmp_path, capsys):
    path = eval_config(tmp_path, tiny_model_dir)
    assert main(["eval", str(path), "--variant", "task.system_prompt=Be brief.", "--model", tiny_model_dir]) == 0
    out = capsys.readouterr().out
    assert "dataset: 5 held-out rows" in out and "variant1 - base" in out
    assert "variant1: the base model with task.system_prompt=Be brief.\n" in out
    report = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert [p["player"] for p in report["players"]] == ["base", tiny_model_dir, "variant1"]
    assert report["players"][2]["variant"] == "task.system_prompt=Be brief." and report["players"][0]["variant"] is None
    assert report["rows"] == 5 and len(report["row_keys"]) == 5
    base, same, variant = (report["per_row"][p["player"]]["metrics"] for p in report["players"])
    assert base == same  # the same model on the same rows with the same seeds gives the same values
    assert report["players"][1]["difference"]["reward"] == {"mean": 0.0, "low": 0.0, "high": 0.0, "n": 5}
    for player in report["players"]:
        values = report["per_row"][player["player"]]["metrics"]
        assert set(values) == {"accuracy", "pass@1", "pass@2", "pass@4", "mean@4", "reward@4", "reward", "length",
                               "rewards/first_char_odd", "rewards/format_regex"}
        for metric, column in values.items():
            assert len(column) == 5
            assert player["metrics"][metric]["mean"] == pytest.approx(sum(column) / 5, abs=1e-9)
            assert player["metrics"][metric]["low"] <= player["metrics"][metric]["mean"] <= \
                player["metrics"][metric]["high"]
        assert values["accuracy"] == [float(v >= 1) for v in values["rewards/first_char_odd"]]
        assert values["reward"] == pytest.approx([a + 0.5 * b for a, b in zip(values["rewards/first_char_odd"],
                                                                               values["rewards/format_regex"])])
        for row, share in enumerate(values["mean@4"]):
            correct = round(share * 4)
            assert [values[f"pass@{k}"][row] for k in (1, 2, 4)] == pytest.approx(
                [pass_at_k(4, correct, k) for k in (1, 2, 4)])
    difference = report["players"][2]["difference"]["reward"]
    assert difference["mean"] == pytest.approx(sum(v - b for v, b in zip(variant["reward"], base["reward"])) / 5)


def test_eval_errors_say_what_to_change(tiny_model_dir, tmp_path, capsys):
    path = eval_config(tmp_path, tiny_model_dir, split=None)
    assert main(["eval", str(path)]) == 2
    assert "has no held-out rows: set task.eval_path" in capsys.readouterr().err
    path = eval_config(tmp_path, tiny_model_dir, correct_reward="nope")
    assert main(["eval", str(path)]) == 2
    assert "eval.correct_reward: 'nope' is not one of the reward functions" in capsys.readouterr().err
    path = eval_config(tmp_path, tiny_model_dir)
    assert main(["eval", str(path), "--variant", "eval.split_seed=3"]) == 2
    assert "its overrides change the held-out rows" in capsys.readouterr().err
    assert main(["eval", str(path), "--games", "3"]) == 2
    assert "--games, --sampled and eval.kwargs are for tasks with an evaluation of their own" in capsys.readouterr().err
    assert main(["eval", str(path), "task.eval_path=rows.jsonl", "task.name=arithmetic", "task.path=null"]) == 2
    assert "task.eval_path is for the tasks dataset, summarize" in capsys.readouterr().err


def test_sft_data_has_no_wordle_default_outside_the_wordle_task():
    from rftune.train.sft import sft_data

    assert sft_data(config_from_dict({"task": {"name": "wordle"}})) == "task"  # the Wordle task's solver traces
    assert sft_data(config_from_dict({"sft": {"enabled": True}})) == "task"  # arithmetic's worked examples
    word_problems = {"name": "arithmetic", "kwargs": {"dataset": "gsm_symbolic", "size": 10, "eval_size": 10}}
    assert sft_data(config_from_dict({"sft": {"enabled": True}, "task": word_problems})) == "task"  # own solutions
    three_terms = {"name": "arithmetic", "kwargs": {"config": {"min_terms": 3, "max_terms": 3}, "size": 10,
                                                     "eval_size": 10}}
    with pytest.raises(ConfigError, match="task .arithmetic. has no generated SFT data; set sft.data"):
        sft_data(config_from_dict({"sft": {"enabled": True}, "task": three_terms}))


def test_training_evaluates_the_held_out_subset_every_eval_steps(tiny_model_dir, tmp_path, capsys):
    path = eval_config(tmp_path, tiny_model_dir, num_samples=2)
    config = yaml.safe_load(path.read_text())
    config["generation"].update(num_generations=2)
    config["train"].update(max_steps=2, batch_size=2, save_steps=0, eval_steps=1, eval_before_train=True,
                           learning_rate=0.05)
    config["lora"] = {"r": 2, "alpha": 4}
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path)]) == 0
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "eval/reward" in r]
    assert [r["step"] for r in records] == [0, 1, 1, 2, 2] and [r["step"] for r in evals] == [0, 1, 2]
    assert set(evals[0]) == {"step", "eval/accuracy", "eval/pass@1", "eval/pass@2", "eval/mean@2", "eval/reward@2",
                             "eval/reward", "eval/length", "eval/rewards/first_char_odd",
                             "eval/rewards/format_regex"}
    # the last record is what `rftune eval` measures for the final adapter on the same rows and seeds
    assert main(["eval", str(path), "--no-base", "--adapter", str(tmp_path / "run" / "final")]) == 0
    (player,) = json.loads((tmp_path / "run" / "eval.json").read_text())["players"]
    for metric, value in player["metrics"].items():
        assert evals[-1][f"eval/{metric}"] == pytest.approx(value["mean"], abs=1e-6), metric


def test_eval_steps_without_held_out_rows_fails_at_start(tiny_model_dir, tmp_path):
    from rftune.train.trainer import GRPOTrainer

    config = config_from_dict({"model": {"name_or_path": tiny_model_dir}, "train": {
        "output_dir": str(tmp_path / "run"), "eval_steps": 1, "batch_size": 8}})
    with pytest.raises(ConfigError, match="train.eval_steps: task 'arithmetic' has no held-out rows here"):
        GRPOTrainer(config, reward_funcs=[lambda prompt, completion, example: 1.0], dataset=[{"prompt": "Hi"}])
