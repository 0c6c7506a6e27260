"""Wordle as a multi-turn environment (implements `rftune.envs.base.Env`).

An episode is one game. `reset` takes a row with a ``secret`` (and optionally a ``past_guess_history`` to start
mid-game, e.g. a history-mode dataset row) and returns the system + user prompt. Each `step` reads the guess from
the last ``<guess>...</guess>`` of the model's reply and plays it:

- a valid guess gets feedback; unless the game is over, the environment answers with a new user turn that lists
  the whole updated history (the same text a history-mode prompt has, so both modes train the same skill);
- an invalid reply (no guess tag, not 5 letters, not an allowed word) still uses up a turn; the next user turn
  starts with a notice saying why, followed by the unchanged history;
- the episode ends on a win or when the 6 guesses are used (``max_turns``, counting guesses replayed from a
  ``past_guess_history``); then no messages are returned.

The ``info`` of each step is a valid history-mode reward example for that turn (see `rftune.envs.wordle.rewards`):
``secret``, ``past_guess_history`` (before this guess, course format), ``guess`` (uppercase text from the guess
tag, None when there was none), ``feedback`` (tile text, None when invalid), ``valid``, ``won``, plus ``turn``
(1-based) and ``error`` (why the guess was invalid, else None).
"""

from __future__ import annotations

from typing import Sequence

from rftune.envs.base import StepResult
from rftune.envs.wordle.game import (
    MAX_GUESSES,
    WordleGame,
    extract_guess,
    feedback,
    history_records,
    parse_history,
    render_feedback,
)
from rftune.envs.wordle.prompts import invalid_guess_notice, user_turn, wordle_messages
from rftune.envs.wordle.words import WordList, word_list


class WordleEnv:
    """One Wordle game per episode; see the module docstring for the turn protocol."""

    def __init__(self, allowed: WordList | Sequence[str] | None = None, max_turns: int = MAX_GUESSES,
                 prompt_style: str = "course"):
        self.allowed = word_list(allowed)
        self.max_turns = max_turns
        self.prompt_style = prompt_style  # `rftune.envs.wordle.prompts.PROMPT_STYLES`
        self._game: WordleGame | None = None

    @property
    def game(self) -> WordleGame:
        if self._game is None:
            raise ValueError("WordleEnv.step() called before reset()")
        return self._game

    def reset(self, example: dict) -> list[dict]:
        if "secret" not in example:
            raise ValueError(f"a Wordle example needs a 'secret' word; got keys {sorted(example)}")
        self._game = WordleGame(example["secret"], allowed=self.allowed, max_guesses=self.max_turns)
        for guess, pattern in parse_history(example.get("past_guess_history")):
            self._replay(guess, pattern)
        return wordle_messages(self._game.history, style=self.prompt_style)

    def _replay(self, guess: str, pattern: str) -> None:
        expected = feedback(guess, self._game.secret)
        if expected != pattern:
            raise ValueError(f"past_guess_history says {render_feedback(guess, pattern)} for {guess.upper()}, but "
                             f"against secret {self._game.secret.upper()} it is {render_feedback(guess, expected)}")
        if self._game.done:
            raise ValueError(f"past_guess_history already ends the game for secret {self._game.secret.upper()}")
        self._game.play(guess)

    def step(self, completion: str) -> StepResult:
        game = self.game
        past = history_records(game.history)
        raw_guess = extract_guess(completion)
        outcome = game.play(raw_guess)
        info = {
            "secret": game.secret.upper(),
            "past_guess_history": past,
            "guess": raw_guess.upper() if raw_guess is not None else None,
            "feedback": render_feedback(outcome.guess, outcome.pattern) if outcome.valid else None,
            "valid": outcome.valid,
            "won": outcome.won,
            "turn": game.guesses_used,
            "error": outcome.error,
        }
        if game.done:
            return StepResult(messages=[], done=True, info=info)
        notice = None if outcome.valid else invalid_guess_notice(outcome.error, game.guesses_left)
        message = {"role": "user", "content": user_turn(game.history, notice, self.prompt_style)}
        return StepResult(messages=[message], done=False, info=info)
