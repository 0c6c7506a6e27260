"""Players of whole Wordle games: the `Player` protocol, a random valid player, and a wrapper around a model.

A player sees the game as the list of its valid guesses so far with their feedback patterns, plus an optional
notice about its previous turn (e.g. that the reply held no valid guess), and answers with a `Move`: the word it
guesses and the raw text it produced. The information-gain solver lives in `rftune.envs.wordle.solver`.

Invalid replies are the game's business, not the player's: `rftune.envs.wordle.game.WordleGame` counts such a reply
as a used turn with no feedback, and the next prompt starts with a notice saying why it was invalid.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence, runtime_checkable

from rftune.envs.wordle.game import History, extract_guess
from rftune.envs.wordle.patterns import consistent_mask
from rftune.envs.wordle.prompts import wordle_messages
from rftune.envs.wordle.words import WordList, word_list


@dataclass(frozen=True)
class Move:
    """A player's turn: ``guess`` is the word it plays (None when its reply held none), ``text`` its raw reply."""

    guess: str | None
    text: str


@runtime_checkable
class Player(Protocol):
    """Anything that can choose the next guess from the game so far."""

    def next_guess(self, history: History, notice: str | None = None) -> Move:
        """`history`: valid (guess, pattern) pairs so far; `notice`: message about the previous turn, or None."""
        ...


def reply_text(reasoning: str, guess: str, spelled: bool = False) -> str:
    """A reply in the required format: reasoning in ``<think>``, then ``<guess>WORD</guess>`` (``spelled``:
    ``<guess>W O R D</guess>``, one letter per token)."""
    word = " ".join(guess.upper()) if spelled else guess.upper()
    return f"<think>\n{reasoning.strip()}\n</think>\n<guess>{word}</guess>"


class RandomPlayer:
    """Guesses a uniformly random allowed word.

    ``consistent=True`` (the default) draws only among allowed words that agree with all feedback so far, so every
    guess could still be the answer (the "hard mode" random baseline); ``consistent=False`` ignores the feedback.
    Seeded, so the same seed replays the same games.
    """

    def __init__(self, seed: int = 0, consistent: bool = True, allowed: WordList | Sequence[str] | None = None):
        self.rng = random.Random(seed)
        self.consistent = consistent
        self.allowed = word_list(allowed)

    def next_guess(self, history: History, notice: str | None = None) -> Move:
        pool = self._pool(history)
        guess = pool[self.rng.randrange(len(pool))]
        how = f"one of the {len(pool)} allowed words that fit the feedback" if self.consistent else "any allowed word"
        return Move(guess, reply_text(f"I pick a random word: {how}.", guess))

    def _pool(self, history: History) -> Sequence[str]:
        if not self.consistent:
            return self.allowed.words
        mask = consistent_mask(self.allowed, history)
        pool = [self.allowed[i] for i in mask.nonzero()[0]]
        if not pool:
            raise ValueError(f"no allowed word fits the feedback {history!r}")
        return pool


class OpeningPlayer:
    """Plays fixed `openings` for the first turns, then hands over to `player` (used to vary reference games)."""

    def __init__(self, player: Player, openings: Sequence[str]):
        self.player = player
        self.openings = [word.lower() for word in openings]

    def next_guess(self, history: History, notice: str | None = None) -> Move:
        turn = len(history)
        if notice is None and turn < len(self.openings):
            guess = self.openings[turn]
            return Move(guess, reply_text("I play a fixed opening word to explore the letters.", guess))
        return self.player.next_guess(history, notice)


class ModelPlayer:
    """Plays with a chat model given as ``generate(messages) -> assistant text``.

    Each turn sends the history-mode prompt (`wordle_messages`: system + one user turn listing all feedback, and the
    notice after an invalid reply) and reads the guess from the last ``<guess>...</guess>`` of the reply; a reply
    without one gives ``Move(None, text)``, which the game counts as an invalid guess.
    """

    def __init__(self, generate: Callable[[list[dict]], str], prompt_style: str = "course"):
        self.generate = generate
        self.prompt_style = prompt_style

    def next_guess(self, history: History, notice: str | None = None) -> Move:
        text = self.generate(wordle_messages(history, notice, self.prompt_style))
        if not isinstance(text, str):
            raise TypeError(f"generate() must return the reply as a string, got {type(text).__name__}")
        return Move(extract_guess(text), text)
