"""The Wordle task's options as users set them, in YAML and as overrides: prompt style, SFT reasoning, curriculum."""

import json

import pytest

from rftune.config import load_config
from rftune.envs.wordle.game import parse_history
from rftune.envs.wordle.patterns import consistent_words
from rftune.envs.wordle.prompts import wordle_messages
from rftune.envs.wordle.words import answer_words
from rftune.errors import ConfigError
from rftune.tasks import task_from_config
from rftune.tasks.wordle import history_training_rows, sft_training_rows
from rftune.testing import build_tiny_model
from rftune.train.sft import sft_conversations
from rftune.train.trainer import GRPOTrainer

SUMMARY_MARK = "What you know so far:"


def configs(tmp_path, yaml_text: str, overrides: list[str]):
    path = tmp_path / "wordle.yaml"
    path.write_text(yaml_text)
    base = [f"sft.output_dir={tmp_path / 'sft'}"]
    return load_config(path, base), load_config(None, base + overrides)


def test_prompt_style_summary_reaches_history_rows_through_yaml_and_override(tmp_path):
    from_yaml, from_override = configs(
        tmp_path, "task:\n  name: wordle\n  kwargs:\n    num_games: 3\n    prompt_style: summary\n",
        ["task.name=wordle", "task.kwargs.num_games=3", "task.kwargs.prompt_style=summary"])
    expected = history_training_rows(3, 0, prompt_style="summary")
    for config in (from_yaml, from_override):
        prompts = [sample.prompt for sample in task_from_config(config).samples]
        assert prompts == [row["prompt"] for row in expected]
    later = [row["prompt"][1]["content"] for row in expected if row["past_guess_history"]]
    assert later and all(SUMMARY_MARK in text for text in later)
    course = task_from_config(load_config(None, ["task.name=wordle", "task.kwargs.num_games=3"]))
    assert not any(SUMMARY_MARK in sample.prompt[1]["content"] for sample in course.samples)


def test_episode_mode_environment_answers_in_the_prompt_style(tmp_path):
    config = load_config(None, ["task.name=wordle", "task.kwargs={mode: episode, size: 2, prompt_style: summary}"])
    task = task_from_config(config)
    example = task.samples[0].example
    env = task.make_env(example)
    assert env.reset(example) == wordle_messages([], style="summary")
    step = env.step("<think>x</think><guess>CRANE</guess>" if example["secret"] != "CRANE" else "<guess>SLATE</guess>")
    assert SUMMARY_MARK in step.messages[0]["content"]


def test_sft_reasoning_known_letters_through_yaml_and_override(tmp_path):
    from_yaml, from_override = configs(
        tmp_path, "task:\n  name: wordle\n  kwargs:\n    prompt_style: summary\n"
                  "sft:\n  kwargs:\n    num_games: 4\n    reasoning: known_letters\n    spell_guess: yes\n",
        ["task.name=wordle", "task.kwargs.prompt_style=summary", "sft.kwargs.num_games=4",
         "sft.kwargs.reasoning=known_letters", "sft.kwargs.spell_guess=on"])
    expected = [row["messages"] for row in sft_training_rows(4, prompt_style="summary", reasoning="known_letters",
                                                             spell_guess=True)]
    assert sft_conversations(from_yaml) == sft_conversations(from_override) == expected
    assert "Words that fit" not in str(expected)  # the solver's candidate lists are gone
    assert all(" ".join(m[2]["content"].split("<guess>")[1][:5].replace(" ", "")) in m[2]["content"]
               for m in expected)  # the guesses are spelled


def answers_left(row) -> int:
    return len(consistent_words(answer_words(), parse_history(row["past_guess_history"])))


def test_curriculum_late_first_through_yaml_and_override(tmp_path):
    from_yaml, from_override = configs(
        tmp_path, "task:\n  name: wordle\n  kwargs:\n    num_games: 6\n    curriculum: late_first\n"
                  "train:\n  shuffle: no\n",
        ["task.name=wordle", "task.kwargs.num_games=6", "task.kwargs.curriculum=late_first", "train.shuffle=off"])
    shuffled = history_training_rows(6, 0)
    for config in (from_yaml, from_override):
        assert config.train.shuffle is False
        task = task_from_config(config)
        rows = [sample.example for sample in task.samples]
        assert task.ordered and len(rows) == len(shuffled)
        assert sorted(map(json.dumps, rows)) == sorted(json.dumps({k: r[k] for k in rows[0]}) for r in shuffled)
        left = [answers_left(row) for row in rows]
        assert left == sorted(left) and left[0] == 1  # a solved position first ...
        openings = sum(not row["past_guess_history"] for row in shuffled)
        assert left[-openings:] == [len(answer_words().words)] * openings  # ... the openings last
    plain = task_from_config(load_config(None, ["task.name=wordle", "task.kwargs.num_games=6",
                                                "task.kwargs.curriculum=no"]))
    assert not plain.ordered


def test_a_curriculum_is_trained_in_its_order_and_refused_under_shuffling(tmp_path):
    model = build_tiny_model(tmp_path / "model", context=4096)  # the Wordle prompts, one token per character
    overrides = [f"model.name_or_path={model}", "task.name=wordle", "task.kwargs.num_games=3",
                 "task.kwargs.curriculum=late_first", "generation.num_generations=2", "generation.max_new_tokens=4",
                 "train.batch_size=2", "train.max_steps=3",
                 f"train.output_dir={tmp_path / 'run'}"]
    with pytest.raises(ConfigError, match="curriculum order, which a shuffled prompt order would undo; set "
                                          "train.shuffle: false"):
        GRPOTrainer(load_config(None, overrides), progress=False)
    trainer = GRPOTrainer(load_config(None, overrides + ["train.shuffle=false"]), progress=False)
    trainer.train()
    logged = [json.loads(line) for line in (tmp_path / "run" / "completions.jsonl").read_text().splitlines()]
    expected = [sample.prompt for sample in task_from_config(trainer.config).samples[:3]]
    assert [row["prompt"] for row in logged[::2]] == expected


@pytest.mark.parametrize("overrides, message", [
    (["task.kwargs.prompt_style=short"], "task.kwargs.prompt_style: must be one of course, summary, got 'short'"),
    (["task.kwargs.prompt_style=no"], "task.kwargs.prompt_style: must be one of course, summary, got False"),
    (["sft.kwargs.reasoning=words"], "sft.kwargs.reasoning: must be one of solver, known_letters, got 'words'"),
    (["sft.kwargs.spell_guess=maybe"], "sft.kwargs.spell_guess: must be true or false, got 'maybe'"),
    (["task.kwargs.curriculum=hard_first"], "task.kwargs.curriculum: must be one of none, late_first, got "
                                            "'hard_first'"),
    (["task.kwargs.mode=episode", "task.kwargs.curriculum=late_first"],
     "task.kwargs.curriculum: orders history-mode rows; mode 'episode' has none to order"),
])
def test_bad_values_name_the_key(tmp_path, overrides, message):
    config = load_config(None, ["task.name=wordle", "task.kwargs.num_games=2", f"sft.output_dir={tmp_path}"]
                         + overrides)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        sft_conversations(config) if overrides[0].startswith("sft") else task_from_config(config)
