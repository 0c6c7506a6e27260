"""Wordle in the terminal: a board with coloured tiles, and a loop for a person to play a game.

Colours are ANSI escape codes: green tiles for ✓, yellow for -, grey for x. With ``color=False`` each row is the
plain tile text used in prompts (``C(x) R(✓) A(-) N(x) E(x)``), readable anywhere. `play_human` takes its input
and output functions as arguments, so it can be driven by a script or a test as well as by a keyboard.
"""

from __future__ import annotations

import random
from typing import Callable, Sequence

from rftune.envs.wordle.evaluate import GameRecord, TurnRecord
from rftune.envs.wordle.game import (
    ABSENT,
    CORRECT,
    MAX_GUESSES,
    PRESENT,
    History,
    WordleGame,
    history_records,
    render_feedback,
)
from rftune.envs.wordle.words import WordList, answer_words, word_list

_RESET = "\x1b[0m"
_TILE_STYLE = {CORRECT: "\x1b[1;97;42m", PRESENT: "\x1b[1;30;43m", ABSENT: "\x1b[1;97;100m"}


def render_tile(letter: str, symbol: str, color: bool = True) -> str:
    """One letter as a coloured tile, or as ``L(s)`` text without colour."""
    if not color:
        return f"{letter.upper()}({symbol})"
    return f"{_TILE_STYLE[symbol]} {letter.upper()} {_RESET}"


def render_board(history: History, color: bool = True) -> str:
    """The guesses so far, one row each, with coloured tiles (or plain tile text when ``color=False``)."""
    if not color:
        return "\n".join(render_feedback(guess, pattern) for guess, pattern in history)
    return "\n".join("".join(render_tile(letter, symbol) for letter, symbol in zip(guess, pattern))
                     for guess, pattern in history)


def play_human(secret: str | None = None, input_fn: Callable[[str], str] = input,
               print_fn: Callable[[str], None] = print, color: bool = True, seed: int | None = None,
               allowed: WordList | Sequence[str] | None = None, max_guesses: int = MAX_GUESSES) -> GameRecord:
    """Let a person play: ask for guesses until solved or out of guesses; returns the game's record.

    Without a `secret`, a random answer is drawn (seeded by `seed`). Input that is not an allowed 5-letter word
    is explained and asked again without using up a guess; end of input (EOF) or Ctrl-C gives up the game.
    """
    secret = secret if secret is not None else random.Random(seed).choice(answer_words().words)
    game = WordleGame(secret, allowed=word_list(allowed), max_guesses=max_guesses)
    record = GameRecord(secret=game.secret.upper())
    print_fn(f"Guess the 5-letter word in {max_guesses} tries. ✓ right spot, - elsewhere in the word, x not in it.")
    while not game.done:
        text = _ask(game, input_fn, print_fn)
        if text is None:
            break
        past = history_records(game.history)
        outcome = game.play(text)
        record.turns.append(TurnRecord(text=text, past_guess_history=past, guess=outcome.guess.upper(),
                                       feedback=render_feedback(outcome.guess, outcome.pattern), valid=True,
                                       won=outcome.won))
        print_fn(render_board(game.history, color=color))
    record.won, record.guesses_used = game.won, game.guesses_used
    print_fn(f"Solved in {game.guesses_used}!" if game.won else f"The word was {game.secret.upper()}.")
    return record


def _ask(game: WordleGame, input_fn: Callable[[str], str], print_fn: Callable[[str], None]) -> str | None:
    """Read guesses until one is valid; None when the player gives up (EOF or Ctrl-C)."""
    while True:
        try:
            text = input_fn(f"Guess {game.guesses_used + 1}/{game.max_guesses}: ").strip()
        except (EOFError, KeyboardInterrupt):
            return None
        reason = _rejection(text, game.allowed)
        if reason is None:
            return text.lower()
        print_fn(reason)


def _rejection(text: str, allowed: WordList) -> str | None:
    if len(text) != 5 or not (text.isascii() and text.isalpha()):
        return f"{text!r} is not a 5-letter word; try again."
    if text not in allowed:
        return f"{text.upper()} is not in the word list; try again."
    return None
