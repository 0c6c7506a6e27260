"""Evaluation by playing: batched games, the table and JSON report, held-out secrets, the slow default-model run."""

import json

import pytest

from rftune.envs.wordle.model_eval import evaluate_models, play_games_batched, report_table
from rftune.evaluation.evaluate import write_report
from rftune.tasks.wordle import held_out_secrets, history_training_rows, split_answers


def test_held_out_secrets_are_disjoint_from_training_and_seeded():
    train, test = split_answers()
    assert len(test) == 315 and len(train) + len(test) == 2315 and not set(train) & set(test)
    assert held_out_secrets(5, seed=3) == held_out_secrets(5, seed=3)
    assert set(held_out_secrets(50)) <= set(test)
    assert all(row["secret"].lower() not in set(test) for row in history_training_rows(30, seed=0))


def test_batched_games_match_one_by_one_play():
    secrets = held_out_secrets(3)
    calls = []

    def generate(conversations):  # a scripted "model": always the same two replies, then the secret
        calls.append(len(conversations))
        return ["<think>try</think>\n<guess>crane</guess>" if "Guess 1" not in c[1]["content"] else "no tag"
                for c in conversations]

    games = play_games_batched(generate, secrets)
    assert calls == [3] * 6  # all games advance together, one call per turn
    for game in games:
        assert game.guesses_used == 6 and [t.valid for t in game.turns] == [True] + [False] * 5
        assert game.turns[1].error.startswith("no guess found")


def test_eval_table_and_report_with_tiny_model(tiny_model_dir, tmp_path):
    secrets = held_out_secrets(3, seed=1)
    report = evaluate_models({"tiny": (tiny_model_dir, None)}, secrets, max_new_tokens=4, progress=False)
    assert [row["player"] for row in report["rows"]] == ["tiny", "solver", "random"]
    assert all(row["games"] == 3 for row in report["rows"])
    assert report["rows"][0]["solved"] == 0 and report["rows"][0]["format_error_rate"] == 1.0
    assert report["rows"][1]["solved"] == 3
    assert all([g["secret"] for g in games] == [s.upper() for s in secrets] for games in report["games"].values())
    table = report_table(report)
    assert "tiny" in table and "solver" in table and "0/3" in table
    # solver 3/3 against tiny 0/3 on the same secrets: +1 on every game, an interval of no width
    assert report["intervals"]["solver"] == {"solved": {"mean": 1.0, "low": 1.0, "high": 1.0, "n": 3},
                                             "difference": {"mean": 1.0, "low": 1.0, "high": 1.0, "n": 3}}
    assert report["intervals"]["tiny"]["difference"] is None
    assert "solver: 1.000 [1.000, 1.000]  difference +1.000 [+1.000, +1.000]" in table
    path = write_report(report, tmp_path / "eval.json")
    assert json.loads(path.read_text())["secrets"] == [s.upper() for s in secrets]


@pytest.mark.slow
def test_default_model_plays_two_games():
    import torch

    torch.set_num_threads(2)
    report = evaluate_models({"base": ("smollm2-135m-instruct", None)}, held_out_secrets(2), max_new_tokens=48,
                             reference_players=False, progress=False)
    (row,) = report["rows"]
    assert row["games"] == 2 and 0.0 <= row["invalid_rate"] <= 1.0
    assert all(len(game["turns"]) >= 1 for game in report["games"]["base"])
