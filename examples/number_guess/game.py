"""The rules of the number-guessing game, without a model: the secret is a whole number from 1 to ``high``; each
guess is answered "higher", "lower" or "correct"; ``max_turns`` guesses at most. A reply's guess is the number in
its last ``<guess>...</guess>`` tag. `bisect_guess` is the reference player: the middle of the range that the
feedback so far leaves open (it always wins within ceil(log2(high + 1)) guesses).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

GUESS = re.compile(r"<guess>\s*(-?\d+)\s*</guess>")


def extract_guess(reply: str) -> int | None:
    """The number in the reply's last ``<guess>N</guess>``, or None when there is none."""
    found = GUESS.findall(reply)
    return int(found[-1]) if found else None


def answer(guess: int, secret: int) -> str:
    """``higher`` (the secret is above the guess), ``lower`` or ``correct``."""
    return "correct" if guess == secret else ("higher" if secret > guess else "lower")


@dataclass
class Range:
    """The numbers the feedback so far leaves open: ``low`` to ``high``, both included."""

    low: int
    high: int

    def narrowed(self, guess: int, said: str) -> "Range":
        if said == "higher":
            return Range(max(self.low, guess + 1), self.high)
        if said == "lower":
            return Range(self.low, min(self.high, guess - 1))
        return Range(guess, guess)

    def __contains__(self, number: int) -> bool:
        return self.low <= number <= self.high


def bisect_guess(open_range: Range) -> int:
    """The reference player's guess: the middle of the open range (rounded down)."""
    return (open_range.low + open_range.high) // 2
