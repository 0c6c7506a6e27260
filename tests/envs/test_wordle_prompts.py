"""The course-style prompt: system rules and example, user turn with feedback lines."""

import re

import pytest

from rftune.envs.wordle.game import feedback, letter_facts, parse_feedback
from rftune.envs.wordle.prompts import (
    SYSTEM_PROMPT,
    invalid_guess_notice,
    known_letters,
    user_turn,
    wordle_messages,
)


def test_system_prompt_states_symbols_and_format():
    for text in ("✓", " - ", " x ", "<think>", "</think>", "<guess>", "</guess>", "6 guesses"):
        assert text in SYSTEM_PROMPT


def test_worked_example_in_system_prompt_is_correct_feedback():
    secret = re.search(r"secret word: (\w+)", SYSTEM_PROMPT).group(1)
    lines = re.findall(r"Guess \d: (\w+) → Feedback: (.+)", SYSTEM_PROMPT)
    assert len(lines) == 3
    for guess, text in lines:
        assert parse_feedback(text) == (guess.lower(), feedback(guess, secret))


def test_user_turn_lists_history_one_line_per_guess():
    text = user_turn([("slate", "xxxx✓"), ("crane", "x✓-xx")])
    assert "Guess 1: SLATE → Feedback: S(x) L(x) A(x) T(x) E(✓)\n" in text
    assert text.endswith("Guess 2: CRANE → Feedback: C(x) R(✓) A(-) N(x) E(x)")
    assert "new 5-letter word guess" in text


def test_first_turn_and_notice():
    assert user_turn([]) == "Make your first 5-letter word guess."
    notice = invalid_guess_notice("ZZZZZ is not in the list of allowed words", 4)
    assert "ZZZZZ is not in the list" in notice and "4 guesses left" in notice
    assert "1 guess left" in invalid_guess_notice("x", 1)
    assert user_turn([], notice).startswith(notice)


def test_wordle_messages_are_system_then_user():
    messages = wordle_messages([("crane", "x✓-xx")])
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"] == SYSTEM_PROMPT
    assert "Guess 1: CRANE" in messages[1]["content"]


def test_letter_facts_read_placed_elsewhere_and_absent_letters_off_the_feedback():
    # secret BRICK: TRAIN -> T(x) R(✓) A(x) I(-) N(x); PRICE -> P(x) R(✓) I(✓) C(✓) E(x)
    history = [("train", feedback("train", "brick")), ("price", feedback("price", "brick"))]
    placed, elsewhere, absent = letter_facts(history)
    assert placed == [None, "r", "i", "c", None]
    assert elsewhere == {}  # I was marked - in TRAIN, and PRICE placed it: one copy, placed
    assert absent == ["a", "e", "n", "p", "t"]


def test_letter_facts_keep_a_second_copy_and_never_call_a_present_letter_absent():
    # secret ABBEY: BABES -> B(-) A(-) B(✓) E(✓) S(x); CRANE -> C(x) R(x) A(-) N(x) E(-)
    history = [("babes", feedback("babes", "abbey")), ("crane", feedback("crane", "abbey"))]
    assert [pattern for _, pattern in history] == ["--✓✓x", "xx-x-"]
    placed, elsewhere, absent = letter_facts(history)
    assert placed == [None, None, "b", "e", None]
    assert elsewhere == {"b": {0}, "a": {1, 2}}  # BABES shows two Bs, one placed; E's - in CRANE is the placed E
    assert absent == ["c", "n", "r", "s"]


def test_known_letters_and_the_summary_prompt_style():
    history = [("babes", "--✓✓x"), ("crane", "xx-x-")]
    assert known_letters(history) == ["Placed letters: _ _ B E _",
                                      "In the word, not placed yet: B (not 1st), A (not 2nd or 3rd)",
                                      "Not in the word: C N R S"]
    assert known_letters([]) == []
    course, summary = user_turn(history), user_turn(history, style="summary")
    assert summary == course + "\n\nWhat you know so far:\n" + "\n".join(known_letters(history))
    assert user_turn([], style="summary") == user_turn([])  # nothing known before the first guess
    notice = invalid_guess_notice("no guess found", 4)
    assert user_turn(history, notice, "summary").startswith(notice)
    assert wordle_messages(history, style="summary")[1]["content"] == summary
    with pytest.raises(ValueError, match="prompt style must be one of course, summary; got 'short'"):
        user_turn(history, style="short")
