"""Evaluation by playing: batched games, the table and JSON report, held-out secrets, per-game values and their
intervals and paired differences (worked out by hand), the slow default-model run."""

import json
import re

import pytest

from rftune.envs.wordle.evaluate import FIGURES, GameRecord, TurnRecord, summarize_games, summary_and_values
from rftune.envs.wordle.model_eval import evaluate_models, game_intervals, play_games_batched, report_table
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
    assert report["intervals"]["solver"]["solved"] == {"estimate": {"mean": 1.0, "low": 1.0, "high": 1.0, "n": 3},
                                                       "difference": {"mean": 1.0, "low": 1.0, "high": 1.0, "n": 3}}
    assert report["intervals"]["tiny"]["solved"]["difference"] is None
    assert set(report["intervals"]["random"]) == set(FIGURES)
    # tiny solved nothing: no average guesses, so no difference of the solver's against it, with the reason
    assert report["intervals"]["tiny"]["avg_guesses"]["estimate"] is None
    assert report["intervals"]["solver"]["avg_guesses"]["difference"] is None
    assert report["intervals"]["solver"]["avg_guesses"]["reason"].startswith("0 games solved by both solver and tiny")
    assert report["game_values"]["tiny"]["solved"] == [0.0, 0.0, 0.0]
    assert "1.000 [1.000, 1.000]" in table and "+1.000 [+1.000, +1.000]" in table
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


def reply(word):
    return f"<think>t</think>\n<guess>{word}</guess>"


def turn(text, history=(), valid=True, won=False):
    return TurnRecord(text=text, past_guess_history=[list(pair) for pair in history], guess=None, feedback=None,
                      valid=valid, won=won)


def game(secret, *turns):
    won = any(t.won for t in turns)
    return GameRecord(secret=secret, turns=list(turns), won=won, guesses_used=len(turns))


def win(word, history=()):
    return turn(reply(word), history, won=True)


NO_TAG = turn("no tag", valid=False)  # invalid, badly formatted, no guess: every reward 0
CRANE_MISSED = [["CRANE", "C(x) R(x) A(x) N(x) E(x)"]]
SECRETS = ["CRANE", "SLATE", "PLUMB", "TASTE"]  # the same four held-out games, in the same order, for every player


def hand_built_games():
    """Three players on the same four games. Feedback reward by hand: a first guess (no history) 0.1; no guess 0;
    PLUMB after CRANE came back all x: none of its letters is known, 5 x 0.05 = 0.25."""
    return {
        "base": [game("CRANE", win("crane")),                               # solved in 1
                 game("SLATE", NO_TAG, win("slate")),                       # solved in 2, one invalid turn
                 game("PLUMB", *[NO_TAG] * 6), game("TASTE", *[NO_TAG] * 6)],  # lost
        "tuned": [game("CRANE", win("crane")), game("SLATE", win("slate")),
                  game("PLUMB", turn(reply("crane")), win("plumb", CRANE_MISSED)),  # solved in 2
                  game("TASTE", *[NO_TAG] * 6)],
        "weak": [game("CRANE", win("crane")), *(game(s, *[NO_TAG] * 6) for s in SECRETS[1:])],
    }


def hand_built_report(players, resamples=2000):
    report = {"rows": [summarize_games(name, games) for name, games in players.items()],
              "game_values": {name: summary_and_values(name, games)[1] for name, games in players.items()}}
    report["intervals"] = game_intervals(report, resamples, seed=0)
    return report


def test_game_values_by_hand():
    players = hand_built_games()
    base, tuned = (summary_and_values(name, players[name])[1] for name in ("base", "tuned"))
    assert list(base) == list(FIGURES)
    assert base["solved"] == [1.0, 1.0, 0.0, 0.0] and tuned["solved"] == [1.0, 1.0, 1.0, 0.0]
    assert base["avg_guesses"] == [1.0, 2.0, None, None] and tuned["avg_guesses"] == [1.0, 1.0, 2.0, None]
    assert base["invalid_rate"] == [0.0, 0.5, 1.0, 1.0] and tuned["invalid_rate"] == [0.0, 0.0, 0.0, 1.0]
    assert base["format_error_rate"] == [0.0, 0.5, 1.0, 1.0]
    assert base["wordle_feedback"] == pytest.approx([0.1, 0.05, 0.0, 0.0], abs=1e-12)
    assert tuned["wordle_feedback"] == pytest.approx([0.1, 0.1, (0.1 + 0.25) / 2, 0.0], abs=1e-12)
    assert base["wordle_win"] == [1.0, 0.5, 0.0, 0.0] and tuned["wordle_win"] == [1.0, 1.0, 0.5, 0.0]
    # the summary row's feedback is over all 15 turns (0.1 + 0.1 over 15), the per-game mean over 4 games
    assert summarize_games("base", players["base"])["wordle_feedback"] == pytest.approx(0.2 / 15, abs=1e-12)
    assert sum(base["wordle_feedback"]) / 4 == pytest.approx(0.0375, abs=1e-12)
    assert summary_and_values("base", players["base"])[0] == summarize_games("base", players["base"])


def test_intervals_and_paired_differences_by_hand():
    intervals = hand_built_report(hand_built_games())["intervals"]
    base, tuned, weak = intervals["base"], intervals["tuned"], intervals["weak"]
    assert set(base) == set(tuned) == set(FIGURES)
    assert all(base[f]["difference"] is None and base[f]["reason"].startswith("the baseline") for f in FIGURES)
    # means of the per-game values, and of the per-game differences tuned - base
    expected = {"solved": (0.75, 0.25, 4), "invalid_rate": (0.25, -0.375, 4),
                "wordle_feedback": (0.09375, 0.05625, 4), "wordle_win": (0.625, 0.25, 4)}
    for figure, (mean, difference, n) in expected.items():
        assert tuned[figure]["estimate"]["mean"] == pytest.approx(mean, abs=1e-12)
        assert tuned[figure]["estimate"]["n"] == tuned[figure]["difference"]["n"] == n
        assert tuned[figure]["difference"]["mean"] == pytest.approx(difference, abs=1e-12)
    assert base["solved"]["estimate"]["mean"] == 0.5 and base["wordle_feedback"]["estimate"]["mean"] == \
        pytest.approx(0.0375, abs=1e-12)
    # average guesses: over solved games (base 1, 2; tuned 1, 1, 2); the difference over the two both solved
    assert base["avg_guesses"]["estimate"]["mean"] == 1.5 and base["avg_guesses"]["estimate"]["n"] == 2
    assert tuned["avg_guesses"]["estimate"]["mean"] == pytest.approx(4 / 3)
    assert tuned["avg_guesses"]["estimate"]["n"] == 3
    assert tuned["avg_guesses"]["difference"]["mean"] == -0.5 and tuned["avg_guesses"]["difference"]["n"] == 2
    # weak solved only CRANE, which base solved too: one pair is not enough for a difference
    assert weak["avg_guesses"]["estimate"] == {"mean": 1.0, "low": 1.0, "high": 1.0, "n": 1}
    assert weak["avg_guesses"]["difference"] is None
    assert weak["avg_guesses"]["reason"] == "1 game solved by both weak and base; a paired difference needs 2"
    assert weak["solved"]["difference"]["mean"] == -0.25
    # every interval holds its mean
    for figures in intervals.values():
        for entry in figures.values():
            for value in (entry["estimate"], entry["difference"]):
                if value is not None:
                    assert value["low"] <= value["mean"] <= value["high"]


def test_intervals_collapse_when_all_games_are_equal():
    # four games of the same secret, played the same way by each player (the rewards of a turn depend on the secret)
    players = {"base": [game("PLUMB", *[NO_TAG] * 6) for _ in range(4)],
               "solver": [game("PLUMB", turn(reply("crane")), win("plumb", CRANE_MISSED)) for _ in range(4)]}
    intervals = hand_built_report(players)["intervals"]
    for name, figures in intervals.items():
        for figure, entry in figures.items():
            for value in (entry["estimate"], entry["difference"]):
                if value is not None:
                    assert value["low"] == value["mean"] == value["high"], (name, figure)
    assert intervals["solver"]["solved"]["difference"] == {"mean": 1.0, "low": 1.0, "high": 1.0, "n": 4}
    assert intervals["solver"]["invalid_rate"]["difference"]["mean"] == -1.0


def test_differences_are_paired_game_by_game():
    # games of very different difficulty, the second player better by exactly 0.25 on each: paired, the interval of
    # the difference has no width; unpaired (each player's games resampled apart) it would be as wide as the spread
    base = [-2.5, 0.0, 1.0, -1.0, 0.5, -2.0, 0.75, -0.25]
    report = {"rows": [{"player": "base"}, {"player": "tuned"}],
              "game_values": {"base": {"wordle_feedback": base},
                              "tuned": {"wordle_feedback": [v + 0.25 for v in base]}}}
    tuned = game_intervals(report, resamples=2000, seed=0)["tuned"]["wordle_feedback"]
    assert tuned["difference"] == {"mean": 0.25, "low": 0.25, "high": 0.25, "n": 8}
    assert tuned["estimate"]["high"] - tuned["estimate"]["low"] > 1.0  # each player's own mean is uncertain


def test_report_table_prints_intervals_and_differences():
    report = hand_built_report(hand_built_games())
    table = report_table(report)
    lines = table.splitlines()
    assert all(len(line) < 160 for line in lines)
    assert lines[0] == "models see the course prompts; unconstrained"
    assert lines[1].split()[:3] == ["player", "solved", "avg"] and "2/4" in lines[3]  # then the game table
    start = lines.index(next(line for line in lines if line.startswith("per-game means")))
    block = lines[start + 2:]
    assert block[0].split()[:3] == ["player", "solved", "avg"]
    assert block[2].startswith("base") and "0.500 [" in block[2] and "1.500 [" in block[2]
    diffs = lines[lines.index(next(line for line in lines if line.startswith("paired differences against base"))):]
    tuned = next(line for line in diffs if line.startswith("tuned"))
    assert "+0.250 [" in tuned and "-0.500 [-1.000, +0.000]" in tuned
    weak = next(line for line in diffs if line.startswith("weak"))
    assert weak.split()[1:5] == ["-0.250", "[-0.750,", "+0.000]", "-"]  # solved, then no average-guess difference
    assert "  avg guesses of weak: 1 game solved by both weak and base; a paired difference needs 2" in lines
    # every figure is in all three tables; the rewards in a block of their own, as one line would be too wide
    headers = [re.split(r" {2,}", line) for line in lines if line.startswith("player")]
    assert [h[1] for h in headers] == ["solved", "solved", "format", "solved", "format"]
    for title in ("avg guesses", "invalid", "format err", "format", "feedback", "guess value", "win", "partial"):
        assert sum(title in h for h in headers) == 3, title
