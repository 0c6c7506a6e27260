"""The example task outside the package (`examples/number_guess`): its game, environment, rewards, SFT traces and
evaluation by hand-derived values, and `rftune train` + `rftune eval` on it by name through the CLI."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from examples.number_guess.env import NumberGuessEnv
from examples.number_guess.game import Range, answer, extract_guess
from examples.number_guess.rewards import guess_consistent, guess_format, guess_won
from examples.number_guess.task import bisect_game, bisect_traces, make_task, play_bisect, split_numbers, summary_row
from rftune.errors import ConfigError
from rftune.train.sft import load_chat_jsonl

ROOT = Path(__file__).resolve().parents[1]


def test_rules_and_the_open_range():
    assert extract_guess("I think <guess>12</guess> no, <guess> 40 </guess>") == 40 and extract_guess("40") is None
    assert [answer(30, 40), answer(50, 40), answer(40, 40)] == ["higher", "lower", "correct"]
    assert Range(1, 100).narrowed(50, "lower") == Range(1, 49) and Range(1, 49).narrowed(25, "higher") == Range(26, 49)


def test_env_answers_each_guess_and_ends_on_the_right_one():
    env = NumberGuessEnv(high=100, max_turns=3)
    assert env.reset({"secret": 25})[1] == {"role": "user", "content": "Make your first guess."}
    first = env.step("<guess>50</guess>")
    assert first.messages == [{"role": "user", "content": "Lower. 2 guesses left."}] and not first.done
    assert first.info == {"secret": 25, "guess": 50, "valid": True, "won": False, "turn": 1, "open_low": 1,
                          "open_high": 100}
    second = env.step("<guess>250</guess>")  # out of range: invalid, uses a turn
    assert second.info["valid"] is False and second.info["guess"] is None
    assert second.messages[0]["content"] == "Reply with a number from 1 to 100 as <guess>N</guess>. 1 guesses left."
    last = env.step("<guess>25</guess>")
    assert last.done and last.messages == [] and last.info["won"] and last.info["open_high"] == 49


def test_rewards_read_the_episode_turns():
    infos = [{"valid": True, "guess": 50, "won": False, "open_low": 1, "open_high": 100},
             {"valid": True, "guess": 75, "won": False, "open_low": 1, "open_high": 49},  # ignores "lower"
             {"valid": False, "guess": None, "won": False, "open_low": 1, "open_high": 49},
             {"valid": True, "guess": 25, "won": True, "open_low": 1, "open_high": 49}]
    example = {"episode": {"turns": [{"completion": "", "info": info} for info in infos]}}
    assert guess_won(None, "", example) == 1.0
    assert guess_format(None, "", example) == 3 / 4
    assert guess_consistent(None, "", example) == 2 / 4


def test_bisect_games_traces_and_the_summary_row():
    assert bisect_game(25, 100, 7) == [{"role": "assistant", "content": "<guess>50</guess>"},
                                       {"role": "user", "content": "Lower. 6 guesses left."},
                                       {"role": "assistant", "content": "<guess>25</guess>"}]
    games = [play_bisect(50, 100, 7), play_bisect(25, 100, 7)]  # 1 guess, then 2
    assert summary_row("bisect", games) == {"player": "bisect", "games": 2, "won": 1.0, "guesses": 1.5,
                                            "invalid": 0.0}
    training, held_out = split_numbers(100)
    assert len(held_out) == 20 and set(training).isdisjoint(held_out) and len(training) == 80
    traces = bisect_traces(100, 7, {"num_games": 5}, seed=0)
    assert len(traces) == 5 and all(t[-1]["role"] == "assistant" for t in traces)
    assert {int(t[-1]["content"][7:-8]) for t in traces} <= set(training)  # each trace ends on its secret


def test_task_options_are_checked():
    task = make_task({"size": 6, "high": 40}, None, None, ".")
    assert len(task.samples) == 6 and all(s.example["secret"] in split_numbers(40)[0] for s in task.samples)
    with pytest.raises(ConfigError, match=r"task.kwargs: the number-guessing task takes .*; got \['hihg'\]"):
        make_task({"hihg": 3}, None, None, ".")
    with pytest.raises(ConfigError, match="sft.kwargs.num_games: must be a whole number >= 1, got 0"):
        task.sft_traces({"num_games": 0}, 0)


def rftune(*args):
    """The installed console script (not ``python -m``), from the repository's root, as the README says."""
    command = [str(Path(sys.executable).parent / "rftune"), *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=900,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})


def test_train_and_eval_the_example_task_by_name_through_the_cli(tiny_model_dir, tmp_path):
    overrides = [f"model.name_or_path={tiny_model_dir}", f"train.output_dir={tmp_path / 'run'}",
                 f"sft.output_dir={tmp_path / 'run' / 'sft'}", "sft.kwargs.num_games=4", "sft.epochs=1",
                 "train.max_steps=2", "train.threads=1", "task.kwargs.size=8", "generation.max_new_tokens=6",
                 "eval.max_new_tokens=6"]
    trained = rftune("train", "examples/number_guess/config.yaml", *overrides)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert len(load_chat_jsonl(tmp_path / "run" / "sft" / "traces.jsonl")) == 4
    steps = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == [1, 2] and "rewards/guess_won/mean" in steps[-1]
    evaluated = rftune("eval", "examples/number_guess/config.yaml", *overrides, "--games", "2")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert [row["player"] for row in report["rows"]] == ["base", "sft", "sft+grpo", "bisect"]
    assert len(report["secrets"]) == 2 and set(report["secrets"]) <= set(split_numbers(100)[1])
    assert report["rows"][-1]["won"] == 1.0 and "bisect" in evaluated.stdout
    page = rftune("report", str(tmp_path / "run"))
    assert page.returncode == 0, page.stderr[-3000:]
    assert "(the task's own evaluation)" in (tmp_path / "run" / "report.html").read_text()
    bad = rftune("eval", "examples/number_guess/config.yaml", *overrides, "--games", "21")
    assert bad.returncode == 2 and "error: eval.kwargs.num_games: at most 20" in bad.stderr
    assert "Traceback" not in bad.stderr
