"""scripts/wordle_own_states.py: a model's own games become history rows the dataset task and the rewards read."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from rftune.config import load_config
from rftune.envs.wordle.evaluate import GameRecord, TurnRecord
from rftune.envs.wordle.game import parse_history
from rftune.envs.wordle.prompts import wordle_messages
from rftune.envs.wordle.rewards import wordle_feedback
from rftune.tasks import task_from_config

SCRIPT = Path(__file__).parents[2] / "scripts" / "wordle_own_states.py"
SPEC = importlib.util.spec_from_file_location("wordle_own_states", SCRIPT)
own_states = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(own_states)

CRANE = ["CRANE", "C(x) R(x) A(✓) N(x) E(✓)"]  # against SHAME
SHADE = ["SHADE", "S(✓) H(✓) A(✓) D(x) E(✓)"]
SECRETS = ["SHAME", "SHAKE", "SHALE", "SHARE", "SHAVE", "SHAPE"]  # six games; the first and the sixth keep the opening


def game_dict(secret, *histories):
    turns = [TurnRecord(text="t", past_guess_history=[list(p) for p in past], guess=None, feedback=None,
                        valid=True, won=False) for past in histories]
    return GameRecord(secret=secret, turns=turns, won=False, guesses_used=len(turns)).to_dict()


def test_every_later_turn_becomes_a_row_and_the_opening_one_game_in_five(tmp_path):
    games = [game_dict(secret, [], [CRANE], [CRANE, SHADE]) for secret in SECRETS]
    rows = own_states.own_state_rows(games, "summary")
    assert len(rows) == 6 * 2 + 2  # games 0 and 5 keep their opening
    assert [row["secret"] for row in rows if not row["past_guess_history"]] == ["SHAME", "SHAPE"]
    assert rows[2] == {"prompt": wordle_messages(parse_history([CRANE, SHADE]), style="summary"), "secret": "SHAME",
                       "past_guess_history": [CRANE, SHADE]}
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    task = task_from_config(load_config(None, ["task.name=dataset", f"task.path={path}"]))
    example = task.samples[2].example
    assert task.samples[2].prompt == rows[2]["prompt"]
    # SHAME against S H A _ E: keeps 4 placed letters (+0.2 each), M is new (+0.05)
    assert wordle_feedback(None, "<think>t</think>\n<guess>SHAME</guess>", example) == pytest.approx(0.85)


SCORE_BY_NAME = """
import sys
from rftune.config import RewardSpec
from rftune.rewards.registry import reward_functions
from rftune.tasks.data import load_dataset_file
(sample,) = load_dataset_file(sys.argv[1])
(feedback,) = reward_functions([RewardSpec("wordle_feedback")])
print(feedback.fn(sample.prompt, "<think>t</think>\\n<guess>SHAME</guess>", sample.example))
"""


def test_the_wordle_rewards_are_known_by_name_without_the_wordle_task(tmp_path):
    """A fresh process that never builds the Wordle task (a dataset of Wordle rows) still finds them by name."""
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(own_states.own_state_rows([game_dict("SHAME", [CRANE, SHADE])], "summary")[0]) + "\n")
    result = subprocess.run([sys.executable, "-c", SCORE_BY_NAME, str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) == pytest.approx(0.85)
