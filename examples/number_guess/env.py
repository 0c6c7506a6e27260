"""The number-guessing game as a multi-turn environment (the `rftune.envs.Env` protocol: ``max_turns``, `reset`,
`step`). An episode is one game against the row's ``secret``.

`step` reads the reply's guess; a valid guess (a number from 1 to ``high``) is answered "Higher." or "Lower." with
the guesses left, an invalid reply is told how to reply; either uses up a turn. The episode ends on the right guess
or after ``max_turns`` replies. Each step's ``info``: ``secret``, ``guess`` (None when the reply had none or it was
out of range), ``valid``, ``won``, ``turn`` (1-based), ``open_low``/``open_high`` (the range the feedback before
this guess left open; a guess inside it uses the feedback).
"""

from __future__ import annotations

from examples.number_guess.game import Range, answer, extract_guess
from rftune.envs import StepResult

SYSTEM = ("We play a guessing game. I have picked a whole number from 1 to {high}. You have {turns} guesses. After "
          "each guess I say whether my number is higher or lower. Reply with your guess only, as <guess>N</guess>.")


def opening(high: int, max_turns: int) -> list[dict]:
    """The conversation's opening messages."""
    return [{"role": "system", "content": SYSTEM.format(high=high, turns=max_turns)},
            {"role": "user", "content": "Make your first guess."}]


def reply_to(said: str | None, left: int, high: int) -> str:
    """The environment's user turn after a guess that did not win (`said` None: the reply had no valid guess)."""
    if said is None:
        return f"Reply with a number from 1 to {high} as <guess>N</guess>. {left} guesses left."
    return f"{said.capitalize()}. {left} guesses left."


class NumberGuessEnv:
    """One game per episode; see the module docstring."""

    def __init__(self, high: int = 100, max_turns: int = 7) -> None:
        self.high, self.max_turns = high, max_turns
        self.secret, self.turn, self.open = 0, 0, Range(1, high)

    def reset(self, example: dict) -> list[dict]:
        self.secret, self.turn, self.open = int(example["secret"]), 0, Range(1, self.high)
        return opening(self.high, self.max_turns)

    def step(self, completion: str) -> StepResult:
        self.turn += 1
        guess = extract_guess(completion)
        valid = guess is not None and 1 <= guess <= self.high
        said = answer(guess, self.secret) if valid else None
        info = {"secret": self.secret, "guess": guess if valid else None, "valid": valid, "won": said == "correct",
                "turn": self.turn, "open_low": self.open.low, "open_high": self.open.high}
        if valid:
            self.open = self.open.narrowed(guess, said)
        left = self.max_turns - self.turn
        if said == "correct" or left == 0:
            return StepResult(messages=[], done=True, info=info)
        return StepResult(messages=[{"role": "user", "content": reply_to(said, left, self.high)}], done=False,
                          info=info)
