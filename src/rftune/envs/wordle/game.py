"""Wordle rules: feedback for a guess, its text form, guess extraction from replies, and the state of one game.

Feedback follows the real game's handling of repeated letters: exact matches are marked first (``✓``), then,
left to right, a letter is marked "elsewhere" (``-``) only while the secret still has copies of it that are not
matched, otherwise absent (``x``). Secret ABBEY, guess BABES gives B(-) A(-) B(✓) E(✓) S(x).

Representations. Inside the package a guess is a lowercase word and its feedback a 5-symbol pattern such as
``'--✓✓x'``. Facing the model and the data files (prompts, dataset rows, environment info) words are uppercase
and feedback is written per tile, ``'B(-) A(-) B(✓) E(✓) S(x)'``; a history is then a list of
``[GUESS, feedback text]`` pairs, the format of the course's data set. `parse_history` reads either form.
"""

from __future__ import annotations

import ast
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from rftune.envs.wordle.words import WordList, is_five_letters, normalize_word, word_list

CORRECT, PRESENT, ABSENT = "✓", "-", "x"
SYMBOLS = (CORRECT, PRESENT, ABSENT)
MAX_GUESSES = 6

_TILE = re.compile(r"([A-Za-z])\(([✓x\-])\)")
_GUESS_TAG = re.compile(r"<guess>(.*?)</guess>", re.DOTALL | re.IGNORECASE)
_SPELLED = re.compile(r"[A-Za-z](?: [A-Za-z])+")  # S P L I T: a word spelled letter by letter
_STRICT_FORMAT = re.compile(
    r"\s*<think>(?:(?!</?think>).)*</think>\s*<guess>(?:(?!</?guess>).)*</guess>\s*", re.DOTALL)

History = list[tuple[str, str]]


def feedback(guess: str, secret: str) -> str:
    """The 5-symbol feedback pattern for `guess` against `secret` (simple reference implementation)."""
    guess, secret = normalize_word(guess, "guess"), normalize_word(secret, "secret")
    marks = [CORRECT if g == s else None for g, s in zip(guess, secret)]
    unmatched = Counter(s for s, mark in zip(secret, marks) if mark is None)
    for i, letter in enumerate(guess):
        if marks[i] is not None:
            continue
        if unmatched[letter] > 0:
            marks[i] = PRESENT
            unmatched[letter] -= 1
        else:
            marks[i] = ABSENT
    return "".join(marks)


def render_feedback(guess: str, pattern: str) -> str:
    """``('crane', 'x✓-xx')`` -> ``'C(x) R(✓) A(-) N(x) E(x)'``."""
    guess = normalize_word(guess, "guess")
    if len(pattern) != len(guess) or any(symbol not in SYMBOLS for symbol in pattern):
        raise ValueError(f"feedback pattern must be 5 symbols from ✓ - x, got {pattern!r}")
    return " ".join(f"{letter.upper()}({symbol})" for letter, symbol in zip(guess, pattern))


def parse_feedback(text: str) -> tuple[str, str]:
    """``'C(x) R(✓) A(-) N(x) E(x)'`` -> ``('crane', 'x✓-xx')``; ValueError naming the text if malformed."""
    tiles = text.split() if isinstance(text, str) else []
    matches = [_TILE.fullmatch(tile) for tile in tiles]
    if len(tiles) != 5 or not all(matches):
        raise ValueError(f"cannot parse Wordle feedback {text!r}: expected five tiles like "
                         f"'C(x) R(✓) A(-) N(x) E(x)'")
    return "".join(m.group(1) for m in matches).lower(), "".join(m.group(2) for m in matches)


def parse_history(raw: Any) -> History:
    """A history in any accepted form -> list of (lowercase guess, symbol pattern).

    Accepts None or ``''`` (no guesses), a list of ``[guess, feedback]`` pairs, or such a list written as a JSON
    or Python-literal string (as in the course's data). Each feedback is tile text (``'C(x) R(✓) ...'``, whose
    letters must spell the guess) or a bare 5-symbol pattern (``'x✓-xx'``).
    """
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return []
    pairs = _load_literal(raw) if isinstance(raw, str) else raw
    if not isinstance(pairs, (list, tuple)):
        raise ValueError(f"past_guess_history must be a list of [guess, feedback] pairs, got {raw!r}")
    return [_parse_pair(pair) for pair in pairs]


def _load_literal(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError) as exc:
        raise ValueError(f"past_guess_history is neither JSON nor a Python literal: {text[:80]!r}") from exc


def _parse_pair(pair: Any) -> tuple[str, str]:
    if not isinstance(pair, (list, tuple)) or len(pair) != 2:
        raise ValueError(f"each history entry must be a [guess, feedback] pair, got {pair!r}")
    guess = normalize_word(pair[0], "guess in past_guess_history")
    text = str(pair[1]).strip()
    if len(text) == 5 and all(symbol in SYMBOLS for symbol in text):
        return guess, text
    letters, pattern = parse_feedback(text)
    if letters != guess:
        raise ValueError(f"history entry {pair!r}: feedback letters {letters.upper()} do not spell the guess")
    return guess, pattern


def letter_facts(history: History) -> tuple[list[str | None], dict[str, set[int]], list[str]]:
    """What `history` establishes: the letter placed at each position (None where unknown); the letters with more
    copies in the word than are placed (one guess marked that many copies ✓ or -), with the positions where they
    were marked ``-``; and the letters not in the word at all (marked ``x``, never ✓ or -), sorted."""
    placed: list[str | None] = [None] * 5
    spots: dict[str, set[int]] = {}
    copies: Counter = Counter()
    marked_absent: set[str] = set()
    for guess, pattern in history:
        in_word = Counter(letter for letter, symbol in zip(guess, pattern) if symbol != ABSENT)
        copies |= in_word
        for i, (letter, symbol) in enumerate(zip(guess, pattern)):
            if symbol == CORRECT:
                placed[i] = letter
            elif symbol == PRESENT:
                spots.setdefault(letter, set()).add(i)
            else:
                marked_absent.add(letter)
    elsewhere = {letter: tried for letter, tried in spots.items() if copies[letter] > placed.count(letter)}
    return placed, elsewhere, sorted(marked_absent - set(copies))


def history_records(history: History) -> list[list[str]]:
    """Internal history -> ``[["CRANE", "C(x) R(✓) A(-) N(x) E(x)"], ...]`` (JSON-ready, course format)."""
    return [[guess.upper(), render_feedback(guess, pattern)] for guess, pattern in history]


def extract_guess(completion: str) -> str | None:
    """The trimmed text inside the last ``<guess>...</guess>`` of a reply, or None when there is no such tag.

    A word spelled letter by letter with single spaces (``<guess>S P L I T</guess>``) is read as the word
    (``SPLIT``): one token per letter for a model's tokenizer, the same guess for the game."""
    found = _GUESS_TAG.findall(completion or "")
    if not found:
        return None
    text = found[-1].strip()
    return text.replace(" ", "") if _SPELLED.fullmatch(text) else text


def has_required_format(completion: str, prefilled_think: bool = False) -> bool:
    """True when the reply is exactly ``<think>...</think>`` then ``<guess>...</guess>`` (whitespace around is fine).

    With ``prefilled_think`` the prompt already ended in ``<think>``, so the reply starts inside the thinking.
    """
    text = "<think>" + completion if prefilled_think else completion
    return _STRICT_FORMAT.fullmatch(text or "") is not None


@dataclass(frozen=True)
class GuessOutcome:
    """The result of one guess: ``guess`` is the lowercase word when valid, the raw text (or None) otherwise."""

    guess: str | None
    valid: bool
    pattern: str | None = None
    won: bool = False
    error: str | None = None


@dataclass
class WordleGame:
    """One game: the secret, the guesses so far and whether it is over.

    An invalid guess (missing, not 5 letters, or not an allowed word) uses up one of the `max_guesses` turns and
    gets no feedback; it does not enter `history`, which holds only valid guesses with their patterns.
    """

    secret: str
    allowed: WordList | None = None
    max_guesses: int = MAX_GUESSES
    history: History = field(default_factory=list)
    guesses_used: int = 0
    won: bool = False

    def __post_init__(self):
        self.secret = normalize_word(self.secret, "secret")
        self.allowed = word_list(self.allowed)
        if self.secret not in self.allowed:
            raise ValueError(f"secret {self.secret!r} is not in the allowed word list, so it could never be guessed")
        if self.max_guesses < 1:
            raise ValueError(f"max_guesses must be at least 1, got {self.max_guesses}")

    @property
    def done(self) -> bool:
        return self.won or self.guesses_used >= self.max_guesses

    @property
    def guesses_left(self) -> int:
        return self.max_guesses - self.guesses_used

    def play(self, guess: str | None) -> GuessOutcome:
        """Spend one turn on `guess` (None: the player gave no guess)."""
        if self.done:
            raise ValueError(f"the game for secret {self.secret!r} is over; no more guesses")
        self.guesses_used += 1
        error = _invalid_reason(guess, self.allowed)
        if error is not None:
            return GuessOutcome(guess=guess, valid=False, error=error)
        word = guess.strip().lower()
        pattern = feedback(word, self.secret)
        self.history.append((word, pattern))
        self.won = word == self.secret
        return GuessOutcome(guess=word, valid=True, pattern=pattern, won=self.won)


def _invalid_reason(guess: str | None, allowed: WordList) -> str | None:
    if guess is None:
        return "no guess found: the reply needs <guess>WORD</guess>"
    if not is_five_letters(guess):
        return f"{guess!r} is not a 5-letter word"
    if guess not in allowed:
        return f"{guess.strip().upper()} is not in the list of allowed words"
    return None
