"""Rewards of the number-guessing game, read from the episode's turns (``example["episode"]["turns"]``, each with
the environment's ``info``; see `examples.number_guess.env`). Each is in [0, 1]:

``guess_won``        1.0 when the game was won, else 0.0;
``guess_format``     share of the replies that hold a valid guess;
``guess_consistent`` share of the replies whose guess lies in the range the earlier feedback left open (so a
                     guess that ignores "higher"/"lower" earns nothing).
"""

from __future__ import annotations


def _turns(example: dict) -> list[dict]:
    return [turn["info"] for turn in example["episode"]["turns"]]


def guess_won(prompt, completion: str, example: dict) -> float:
    return float(any(info["won"] for info in _turns(example)))


def guess_format(prompt, completion: str, example: dict) -> float:
    turns = _turns(example)
    return sum(info["valid"] for info in turns) / len(turns)


def guess_consistent(prompt, completion: str, example: dict) -> float:
    turns = _turns(example)
    return sum(info["valid"] and info["open_low"] <= info["guess"] <= info["open_high"] for info in turns) / len(turns)
