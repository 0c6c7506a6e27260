"""Every built-in task checks its task.kwargs the same way (`rftune.tasks.check_options`)."""

import pytest

from rftune.errors import ConfigError
from rftune.tasks import build_task, check_options


@pytest.mark.parametrize("name", ["arithmetic", "code", "summarize", "wordle"])
def test_an_unknown_option_names_the_task_and_its_options(name):
    with pytest.raises(ConfigError, match=rf"^task '{name}' options are \[.*\]; got \['colour'\]$"):
        build_task(name, {"colour": "red"})


@pytest.mark.parametrize("name", ["arithmetic", "wordle"])
def test_tasks_that_make_their_own_data_refuse_a_path(name):
    with pytest.raises(ConfigError, match=rf"^task '{name}' options are .*; got \['task.path'\]$"):
        build_task(name, {}, path="rows.jsonl")


def test_known_options_pass():
    check_options("t", {"size": 3}, {"size", "seed"})
    with pytest.raises(ConfigError, match=r"^task 't' options are \['seed', 'size'\]; got \['sise'\]$"):
        check_options("t", {"sise": 3}, {"size", "seed"})
