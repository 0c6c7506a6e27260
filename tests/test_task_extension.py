"""The task is the one extension point: a user's task by ``package.module:factory``, the task's own SFT data with its
options under ``sft.kwargs``, its own evaluation options under ``eval.kwargs``, and the moved config keys that still
work with a warning naming the new key."""

import warnings

import pytest

from rftune.config import load_config
from rftune.errors import ConfigError
from rftune.tasks import DeferredSamples, Task, build_task
from rftune.tasks.wordle import sft_training_rows
from rftune.train.sft import sft_conversations, sft_data


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_moved_keys_still_work_through_yaml_with_a_warning_naming_the_new_key(tmp_path):
    path = write(tmp_path, "sft:\n  num_games: 7\n  detour_share: 0.2\neval:\n  num_games: 3\n  sampled: true\n")
    with pytest.warns(FutureWarning) as caught:
        config = load_config(path)
    assert sorted(str(w.message) for w in caught) == [
        "config key eval.num_games is deprecated; use eval.kwargs.num_games",
        "config key eval.sampled is deprecated; use eval.kwargs.sampled",
        "config key sft.detour_share is deprecated; use sft.kwargs.detour_share",
        "config key sft.num_games is deprecated; use sft.kwargs.num_games"]
    assert config.sft.kwargs == {"num_games": 7, "detour_share": 0.2}
    assert config.eval.kwargs == {"num_games": 3, "sampled": True}


def test_moved_keys_still_work_as_overrides_and_the_new_keys_without_a_warning(tmp_path):
    with pytest.warns(FutureWarning, match=r"sft.num_games is deprecated; use sft.kwargs.num_games"):
        assert load_config(None, ["sft.num_games=4"]).sft.kwargs == {"num_games": 4}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_config(None, ["sft.kwargs.num_games=4", "eval.kwargs.sampled=true"]).eval.kwargs == {
            "sampled": True}
        config = load_config(write(tmp_path, "sft:\n  kwargs:\n    detour_share: 0.5\neval:\n  kwargs:\n"
                                             "    num_games: 3\n"))
        assert config.sft.kwargs == {"detour_share": 0.5} and config.eval.kwargs == {"num_games": 3}
    with pytest.raises(ConfigError, match=r"sft.num_games and sft.kwargs.num_games are both set; keep "
                                          r"sft.kwargs.num_games"):
        load_config(None, ["sft.kwargs.num_games=4", "sft.num_games=5"])


def test_wordle_sft_traces_take_their_options_from_sft_kwargs_old_key_or_new(tmp_path):
    wordle = ["task.name=wordle", "task.kwargs={num_games: 2}"]
    new = load_config(write(tmp_path, "sft:\n  kwargs:\n    num_games: 3\n    detour_share: 0.5\n"),
                      wordle + [f"sft.output_dir={tmp_path / 'new'}"])
    with pytest.warns(FutureWarning):
        old = load_config(None, wordle + ["sft.num_games=3", "sft.detour_share=0.5", f"sft.output_dir={tmp_path}"])
    expected = [row["messages"] for row in sft_training_rows(3, 0, detour_share=0.5)]
    assert sft_data(new) == sft_data(old) == "task"
    assert sft_conversations(new) == sft_conversations(old) == expected
    assert (tmp_path / "new" / "traces.jsonl").read_text().count("\n") == len(expected)
    with pytest.raises(ConfigError, match=r"sft.kwargs: task 'wordle' takes \['detour_share', 'num_games', "
                                          r"'reasoning', 'spell_guess'\]; got \['num_game'\]"):
        sft_conversations(load_config(None, wordle + ["sft.kwargs.num_game=3"]))
    with pytest.raises(ConfigError, match="sft.kwargs.detour_share: must be a number between 0 and 0.9, got 0.95"):
        sft_conversations(load_config(None, wordle + ["sft.kwargs.detour_share=0.95"]))


def test_sft_kwargs_with_worked_examples_or_a_file_is_an_error(tmp_path):
    arithmetic = ["task.kwargs={size: 20, eval_size: 10}", "sft.kwargs.num_games=3"]
    with pytest.raises(ConfigError, match="sft.kwargs: task 'arithmetic' takes no SFT options"):
        sft_conversations(load_config(None, arithmetic))
    with pytest.raises(ConfigError, match="sft.kwargs: options of the task's own SFT data, but sft.data is the file"):
        sft_conversations(load_config(None, arithmetic + ["sft.data=chats.jsonl"]))


def test_deferred_samples_are_made_once_on_first_use():
    made = []
    samples = DeferredSamples(lambda: made.append(1) or ["a", "b", "c"])
    assert made == []
    assert len(samples) == 3 and samples[1] == "b" and list(samples) == ["a", "b", "c"] and made == [1]


def test_a_user_task_is_named_module_colon_factory(tmp_path, monkeypatch):
    (tmp_path / "my_tasks.py").write_text(
        "from rftune.tasks import Task\n"
        "from rftune.types import Sample\n"
        "def make(options, system_prompt, path, base_dir):\n"
        "    return Task(samples=[Sample(prompt='hi', example={'n': options['n']}, index=0)])\n"
        "def broken(options, system_prompt, path, base_dir):\n"
        "    return 'not a task'\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", [p for p in __import__("sys").path if p not in ("", str(tmp_path))])
    task = build_task("my_tasks:make", {"n": 3})
    assert isinstance(task, Task) and task.samples[0].example == {"n": 3}
    with pytest.raises(ConfigError, match="task.name: my_tasks:broken returned str, not a rftune.tasks.Task"):
        build_task("my_tasks:broken", {})
    with pytest.raises(ConfigError, match="task.name: module 'my_tasks' has no callable named 'nope'"):
        build_task("my_tasks:nope", {})
    with pytest.raises(ConfigError, match="task.name: cannot import 'no_such_tasks_xyz'"):
        build_task("no_such_tasks_xyz:make", {})
