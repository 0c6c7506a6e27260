"""An information-gain Wordle solver that also explains its choices in the required reply format.

Candidates are the answer-list words consistent with all feedback so far (the allowed list when no answer fits,
e.g. for a custom secret). With one or two candidates the solver guesses a candidate. Otherwise it plays the
allowed word whose feedback over the candidates has the highest entropy (expected information, in bits), breaking
ties in favour of words that could be the answer, then by list order. In ``hard_mode`` it only plays candidates
(the game's hard mode: every guess keeps the ✓ letters, moves the - letters and avoids the x letters), which
costs a little information but makes every move one the feedback reward scores well and one a small model can
imitate (the guess is the first word of the candidates it lists, before their count). Choices are cached per
candidate set, so the opening (computed once from the whole answer list) and common positions cost nothing after
the first game.

Each move's text is a short ``<think>`` explanation (what the feedback says, how many words remain, why this guess)
followed by ``<guess>WORD</guess>``: the SFT traces in `rftune.envs.wordle.datasets` are these replies.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from rftune.envs.wordle.game import History, letter_facts
from rftune.envs.wordle.patterns import (
    consistent_mask,
    expected_information,
    information_from_sizes,
    partition_sizes,
    pattern_codes,
)
from rftune.envs.wordle.players import Move, reply_text
from rftune.envs.wordle.prompts import ordinal_positions
from rftune.envs.wordle.words import WordList, answer_words, word_list

EXAMPLES = 4  # remaining candidates named in the explanation


@dataclass(frozen=True)
class Choice:
    """A solver decision: the guess, the candidates it was chosen for, and how it splits them."""

    guess: str
    candidates: tuple[str, ...]
    bits: float
    groups: int
    largest_group: int


class InfoGainSolver:
    """Greedy expected-information solver over the official (or given) answer and allowed lists."""

    def __init__(self, answers: WordList | Sequence[str] | None = None,
                 allowed: WordList | Sequence[str] | None = None, hard_mode: bool = False):
        self.answers = word_list(answers, default=answer_words())
        self.allowed = word_list(allowed)
        self.hard_mode = hard_mode
        missing = [w for w in self.answers if w not in self.allowed]
        if missing:
            raise ValueError(f"answer words missing from the allowed list: {', '.join(missing[:5])}")

    def candidates(self, history: History) -> tuple[str, ...]:
        """Answer words consistent with `history` (allowed words when no answer is)."""
        for pool in (self.answers, self.allowed):
            mask = consistent_mask(pool, history)
            if mask.any():
                return tuple(pool[i] for i in np.flatnonzero(mask))
        raise ValueError(f"no allowed word is consistent with the feedback {history!r}")

    def choose(self, history: History) -> Choice:
        """The guess for this position, with the numbers that justify it."""
        return _best_choice(self.allowed, self.candidates(history), self.hard_mode)

    def next_guess(self, history: History, notice: str | None = None) -> Move:
        choice = self.choose(history)
        return Move(choice.guess, reply_text(explain(history, choice), choice.guess))


@functools.lru_cache(maxsize=4096)
def _best_choice(allowed: WordList, candidates: tuple[str, ...], hard_mode: bool = False) -> Choice:
    encoded = allowed.encoded[[allowed.index[w] for w in candidates]]  # [C, 5]
    pool = word_list(candidates) if hard_mode else allowed
    guess = candidates[0] if len(candidates) <= 2 else _most_informative(pool, candidates, encoded)
    codes = pattern_codes(allowed.encoded[[allowed.index[guess]]], encoded)  # [1, C]
    sizes = partition_sizes(codes)[0]  # [243]
    return Choice(guess=guess, candidates=candidates, bits=float(information_from_sizes(sizes[None])[0]),
                  groups=int((sizes > 0).sum()), largest_group=int(sizes.max()))


def _most_informative(allowed: WordList, candidates: tuple[str, ...], encoded: np.ndarray) -> str:
    bits = expected_information(allowed.encoded, encoded)  # [G]
    best = np.flatnonzero(bits >= bits.max() - 1e-9)
    fits = set(candidates)
    preferred = [i for i in best if allowed[i] in fits]
    return allowed[int(preferred[0] if preferred else best[0])]


def explain(history: History, choice: Choice) -> str:
    """Short reasoning for `choice`: known facts, remaining candidates with examples, and why this guess."""
    lines = [describe_feedback(history)] if history else ["No feedback yet, so I start from the whole word list."]
    count = len(choice.candidates)
    examples = ", ".join(word.upper() for word in _guess_first(choice)[:EXAMPLES])
    # The words come before their count: a count first ("1 possible answer remains: ...") makes greedy decoding
    # of a small model pick the most frequent count, 1, and then fill in the only word it has seen, its last guess.
    lines.append(f"Words that fit: {examples}" + (", the only one." if count == 1 else f" ({count} in all)."))
    lines.append(_why(choice))
    return "\n".join(lines)


def _guess_first(choice: Choice) -> list[str]:
    """The candidates, the guess first when it is one of them."""
    if choice.guess not in choice.candidates:
        return list(choice.candidates)
    return [choice.guess] + [word for word in choice.candidates if word != choice.guess]


def _why(choice: Choice) -> str:
    word, count = choice.guess.upper(), len(choice.candidates)
    if count == 1:
        return f"Only {word} fits all the feedback, so I guess it."
    if count == 2:
        other = next(w for w in choice.candidates if w != choice.guess).upper()
        return f"Two words fit. Guessing {word} wins now if it is the answer; otherwise {other} is left."
    split = f"{choice.groups} groups (largest {choice.largest_group}, {choice.bits:.2f} bits"
    if choice.guess in choice.candidates:
        return f"{word} fits and splits them into {split})."
    return f"{word} splits them into {split}, the most of any allowed word)."


def describe_feedback(history: History) -> str:
    """What the feedback so far establishes: placed letters, letters present elsewhere, and absent letters."""
    placed, elsewhere, absent = letter_facts(history)
    facts = [f"Placed letters: {''.join((c or '_').upper() for c in placed)}."] if any(placed) else []
    facts += [f"{letter.upper()} is in the word but not {ordinal_positions(spots)}."
              for letter, spots in elsewhere.items()]
    if absent:
        facts.append(f"Not in the word: {', '.join(letter.upper() for letter in absent)}.")
    return " ".join(facts)
