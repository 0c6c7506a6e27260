"""Playing games for evaluation: records, per-player summaries, the table, seeded secrets."""

import json

import pytest

from rftune.envs.wordle.evaluate import evaluate_players, format_table, play_game, seeded_secrets
from rftune.envs.wordle.players import ModelPlayer, Move


class Scripted:
    """A player that replays fixed replies, reading the guess from the text like a model would."""

    def __init__(self, replies):
        self.replies = list(replies)

    def next_guess(self, history, notice=None):
        text = self.replies[len(history) if notice is None else -1]
        return ModelPlayer(lambda messages: text).next_guess(history, notice)


def reply(word):
    return f"<think>t</think>\n<guess>{word}</guess>"


def test_play_game_records_every_turn():
    record = play_game(Scripted([reply("babes"), reply("abbey")]), "abbey")
    assert record.secret == "ABBEY" and record.won and record.guesses_used == 2
    first, second = record.turns
    assert first.feedback == "B(-) A(-) B(✓) E(✓) S(x)" and first.past_guess_history == []
    assert second.past_guess_history == [["BABES", "B(-) A(-) B(✓) E(✓) S(x)"]] and second.won
    assert json.loads(json.dumps(record.to_dict()))["turns"][0]["guess"] == "BABES"


def test_seeded_secrets_are_deterministic_distinct_answers():
    secrets = seeded_secrets(10, seed=3)
    assert secrets == seeded_secrets(10, seed=3) != seeded_secrets(10, seed=4)
    assert len(set(secrets)) == 10
    with pytest.raises(ValueError, match="between 1 and 2315"):
        seeded_secrets(0)


def test_evaluate_players_summaries_by_hand():
    class Bad:  # never gives a tag: every turn invalid and badly formatted
        def next_guess(self, history, notice=None):
            return Move(None, "CRANE")

    secrets = ["abbey", "crane"]
    rows = evaluate_players({"scripted": Scripted([reply("babes"), reply("abbey"), "oops"]), "bad": Bad()}, secrets)
    scripted, bad = rows
    # abbey: BABES, ABBEY, won in 2. crane: BABES, ABBEY, then the invalid "oops" four times: lost. 8 turns.
    assert scripted["solved"] == 1 and scripted["solved_of"] == "1/2" and scripted["avg_guesses"] == 2.0
    assert scripted["invalid_rate"] == pytest.approx(4 / 8) and scripted["format_error_rate"] == pytest.approx(4 / 8)
    assert scripted["wordle_win"] == pytest.approx(1 / 8)
    assert bad["solved"] == 0 and bad["avg_guesses"] is None
    assert bad["invalid_rate"] == 1.0 and bad["format_error_rate"] == 1.0 and bad["wordle_format"] == 0.0
    assert json.loads(json.dumps(rows)) == rows


def test_format_table_aligns_columns():
    rows = [{"player": "solver", "solved_of": "20/20", "avg_guesses": 3.4, "invalid_rate": 0.0,
             "format_error_rate": 0.0, "wordle_format": 1.0, "wordle_feedback": 0.31, "wordle_guess_value": 0.5,
             "wordle_win": 0.3, "wordle_partial_credit": 0.5},
            {"player": "base model", "solved_of": "0/20", "avg_guesses": None, "invalid_rate": 0.25}]
    lines = format_table(rows).splitlines()
    assert lines[0].split()[:3] == ["player", "solved", "avg"]
    assert len({len(line) for line in lines[:3]}) == 1  # header, rule and full row have the same width
    assert lines[2].startswith("solver ") and "20/20" in lines[2] and "3.40" in lines[2]
    assert lines[3].startswith("base model") and "25.0%" in lines[3] and " - " in lines[3]
