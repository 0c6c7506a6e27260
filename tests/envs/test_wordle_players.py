"""Random and model players, and the opening wrapper."""

import pytest

from rftune.envs.wordle.evaluate import play_game
from rftune.envs.wordle.game import feedback, has_required_format
from rftune.envs.wordle.players import ModelPlayer, Move, OpeningPlayer, Player, RandomPlayer
from rftune.envs.wordle.words import allowed_words


def test_players_satisfy_the_protocol():
    assert isinstance(RandomPlayer(), Player)
    assert isinstance(ModelPlayer(lambda messages: ""), Player)


def test_random_consistent_player_plays_legal_consistent_games():
    allowed = allowed_words()
    for seed in range(3):
        record = play_game(RandomPlayer(seed=seed), "crane")
        assert all(turn.valid for turn in record.turns)
        assert record.guesses_used == len(record.turns) <= 6
        history = []
        for turn in record.turns:
            guess = turn.guess.lower()
            assert guess in allowed
            assert all(feedback(prev, guess) == pattern for prev, pattern in history)  # could be the secret
            assert has_required_format(turn.text)
            history.append((guess, feedback(guess, "crane")))


def test_random_player_is_reproducible_and_any_mode_ignores_feedback():
    games = [[t.guess for t in play_game(RandomPlayer(seed=seed), "crane").turns] for seed in (7, 7, 8)]
    assert games[0] == games[1] and games[0] != games[2]
    player = RandomPlayer(seed=1, consistent=False, allowed=["crane", "slate"])
    guesses = {player.next_guess([("crane", "✓✓✓✓✓")]).guess for _ in range(20)}
    assert guesses == {"crane", "slate"}  # slate is inconsistent with the feedback but still drawn


def test_random_player_with_impossible_feedback_says_so():
    with pytest.raises(ValueError, match="no allowed word fits"):
        RandomPlayer(allowed=["crane", "slate"]).next_guess([("crane", "xxxxx"), ("slate", "xxxxx")])


def test_model_player_builds_the_prompt_and_parses_the_reply():
    seen = []

    def generate(messages):
        seen.append(messages)
        return "<think>R is second.</think>\n<guess>Bring</guess>"

    move = ModelPlayer(generate).next_guess([("crane", "x✓xxx")], notice="NOTICE")
    assert move == Move("Bring", "<think>R is second.</think>\n<guess>Bring</guess>")
    system, user = seen[0]
    assert system["role"] == "system" and user["role"] == "user"
    assert user["content"].startswith("NOTICE") and "Guess 1: CRANE → Feedback: C(x) R(✓)" in user["content"]


def test_model_player_with_malformed_replies_loses_turns_and_is_told():
    replies = iter(["I think it is crane", "<guess>cr</guess>", "<think>ok</think><guess>crane</guess>"])
    prompts = []

    def generate(messages):
        prompts.append(messages[-1]["content"])
        return next(replies)

    record = play_game(ModelPlayer(generate), "crane")
    assert [t.valid for t in record.turns] == [False, False, True]
    assert [t.guess for t in record.turns] == [None, "CR", "CRANE"]
    assert record.won and record.guesses_used == 3
    assert "no guess found" in prompts[1] and "5 guesses left" in prompts[1]
    assert "'cr' is not a 5-letter word" in prompts[2] and "4 guesses left" in prompts[2]


def test_model_player_requires_text():
    with pytest.raises(TypeError, match="string"):
        ModelPlayer(lambda messages: None).next_guess([])


def test_opening_player_plays_openings_then_hands_over():
    inner = RandomPlayer(seed=0, allowed=["crane", "slate", "trace"])
    player = OpeningPlayer(inner, ["SLATE"])
    assert player.next_guess([]).guess == "slate"
    assert player.next_guess([("slate", "xx✓x✓")]).guess == "crane"  # the only word that fits
