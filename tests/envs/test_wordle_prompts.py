"""The course-style prompt: system rules and example, user turn with feedback lines."""

import re

from rftune.envs.wordle.game import feedback, parse_feedback
from rftune.envs.wordle.prompts import SYSTEM_PROMPT, invalid_guess_notice, user_turn, wordle_messages


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
