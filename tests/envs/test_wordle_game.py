"""Wordle rules: feedback (hand cases and properties), text forms, guess extraction, one game's state."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rftune.envs.wordle.game import (
    WordleGame,
    extract_guess,
    feedback,
    has_required_format,
    history_records,
    parse_feedback,
    parse_history,
    render_feedback,
)

words = st.text(alphabet="abcdeor", min_size=5, max_size=5)  # small alphabet: many repeated letters


@pytest.mark.parametrize("guess, secret, expected", [
    ("babes", "abbey", "--✓✓x"),   # the design's example
    ("eerie", "speed", "--xxx"),   # two E in the secret: first two E elsewhere, third E absent
    ("speed", "abide", "xx-x-"),   # one E in the secret: only the first E gets "-"
    ("eerie", "crane", "xx-x✓"),   # the exact E is matched first, so the earlier E's are absent
    ("crane", "crane", "✓✓✓✓✓"),
    ("sissy", "hello", "xxxxx"),
])
def test_feedback_hand_checked_cases(guess, secret, expected):
    assert feedback(guess, secret) == expected


def test_feedback_rejects_bad_words_naming_them():
    with pytest.raises(ValueError, match="secret.*'abc'"):
        feedback("crane", "abc")
    with pytest.raises(ValueError, match="guess.*'cran3'"):
        feedback("cran3", "crane")


@given(words)
def test_guessing_the_secret_gives_all_correct(word):
    assert feedback(word, word) == "✓✓✓✓✓"


@given(words, words)
def test_correct_marks_exactly_where_letters_match(guess, secret):
    pattern = feedback(guess, secret)
    assert [p == "✓" for p in pattern] == [g == s for g, s in zip(guess, secret)]


@given(words, words)
def test_marked_copies_never_exceed_copies_in_secret(guess, secret):
    pattern = feedback(guess, secret)
    for letter in set(guess):
        marked = sum(1 for g, p in zip(guess, pattern) if g == letter and p != "x")
        assert marked == min(guess.count(letter), secret.count(letter))


def test_render_and_parse_feedback_round_trip():
    text = render_feedback("crane", "x✓-xx")
    assert text == "C(x) R(✓) A(-) N(x) E(x)"
    assert parse_feedback(text) == ("crane", "x✓-xx")
    assert parse_feedback("  c(x)  r(✓) a(-) n(x) e(x) ") == ("crane", "x✓-xx")


@pytest.mark.parametrize("bad", ["C(x) R(✓) A(-) N(x)", "C(?) R(✓) A(-) N(x) E(x)", "CRANE", ""])
def test_parse_feedback_rejects_malformed_text(bad):
    with pytest.raises(ValueError, match="cannot parse Wordle feedback"):
        parse_feedback(bad)


def test_render_feedback_rejects_bad_patterns():
    with pytest.raises(ValueError, match="5 symbols"):
        render_feedback("crane", "x✓-x")


def test_parse_history_accepts_lists_json_and_python_literals():
    expected = [("crane", "x✓-xx"), ("slate", "xxxxx")]
    pairs = [["CRANE", "C(x) R(✓) A(-) N(x) E(x)"], ["slate", "xxxxx"]]
    assert parse_history(pairs) == expected
    assert parse_history('[["CRANE", "C(x) R(✓) A(-) N(x) E(x)"], ["slate", "xxxxx"]]') == expected
    assert parse_history("[('CRANE', 'C(x) R(✓) A(-) N(x) E(x)'), ('slate', 'xxxxx')]") == expected
    assert parse_history(None) == parse_history("") == parse_history("[]") == []
    assert history_records(expected) == [["CRANE", "C(x) R(✓) A(-) N(x) E(x)"], ["SLATE", "S(x) L(x) A(x) T(x) E(x)"]]


@pytest.mark.parametrize("bad, message", [
    ("not a list {", "neither JSON nor a Python literal"),
    ('{"a": 1}', "list of \\[guess, feedback\\] pairs"),
    ([["crane"]], "pair"),
    ([["crane", "S(x) L(x) A(x) T(x) E(x)"]], "do not spell the guess"),
])
def test_parse_history_errors_say_what_is_wrong(bad, message):
    with pytest.raises(ValueError, match=message):
        parse_history(bad)


def test_extract_guess_takes_the_last_tag():
    assert extract_guess("<think>maybe <guess>slate</guess>?</think><guess> Crane </guess>") == "Crane"
    assert extract_guess("no tag here") is None
    assert extract_guess("<GUESS>abc</GUESS>") == "abc"


def test_a_guess_spelled_letter_by_letter_is_read_as_the_word():
    assert extract_guess("<think>x</think><guess> S P L I T </guess>") == "SPLIT"
    assert extract_guess("<guess>s p l i t</guess>") == "split"
    # anything else spaced stays as written, so the game names it as not a 5-letter word
    for text in ("S  P L I T", "SP L I T", "C R A N E!"):
        assert extract_guess(f"<guess>{text}</guess>") == text
    game = WordleGame("split")
    assert game.play(extract_guess("<guess>S P L I T S</guess>")).error == "'SPLITS' is not a 5-letter word"
    assert game.play(extract_guess("<guess>S P L I T</guess>")).won


@pytest.mark.parametrize("reply, ok", [
    ("<think>reasoning</think>\n<guess>CRANE</guess>", True),
    ("  <think>\nmulti\nline\n</think>   <guess>CRANE</guess>\n", True),
    ("<guess>CRANE</guess>", False),
    ("<think>a</think><guess>CRANE</guess> trailing words", False),
    ("<think>a<think>b</think><guess>CRANE</guess>", False),
    ("<think>a</think>between<guess>CRANE</guess>", False),
    ("<think>a</think><guess>CRANE</guess><guess>SLATE</guess>", False),
])
def test_required_format(reply, ok):
    assert has_required_format(reply) is ok


def test_required_format_with_prefilled_think():
    assert has_required_format("reasoning</think>\n<guess>CRANE</guess>", prefilled_think=True)
    assert not has_required_format("reasoning</think>\n<guess>CRANE</guess>")


def test_game_counts_invalid_guesses_as_turns_without_feedback():
    game = WordleGame("crane")
    assert game.play(None).error.startswith("no guess")
    assert "not a 5-letter word" in game.play("cat").error
    outcome = game.play("zzzzz")
    assert not outcome.valid and "not in the list of allowed words" in outcome.error
    assert game.history == [] and game.guesses_used == 3 and game.guesses_left == 3
    outcome = game.play("SLATE")
    assert outcome.valid and outcome.pattern == "xx✓x✓" and game.history == [("slate", "xx✓x✓")]
    assert game.play("crane").won and game.done and game.guesses_used == 5
    with pytest.raises(ValueError, match="over"):
        game.play("slate")


def test_game_ends_after_six_guesses():
    game = WordleGame("crane")
    for _ in range(6):
        assert not game.done
        game.play("slate")
    assert game.done and not game.won


def test_game_rejects_a_secret_that_cannot_be_guessed():
    with pytest.raises(ValueError, match="secret must be 5 letters.*'toolong'"):
        WordleGame("toolong")
    with pytest.raises(ValueError, match="'zzzzz' is not in the allowed word list"):
        WordleGame("zzzzz")
