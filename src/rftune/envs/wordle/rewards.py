"""The Wordle rewards of the course, registered as built-ins: format, uses-feedback, guess value, win, partial credit.

All follow rftune's per-sample convention ``f(prompt, completion, example, **options)`` and work in two modes:

- **history mode** (the course's): ``example`` has ``secret`` and ``past_guess_history`` (a list of
  ``[guess, feedback]`` pairs, or that list as a JSON / Python-literal string), and ``completion`` is the reply for
  one turn;
- **episode mode** (multi-turn rollouts): ``example["episode"]["turns"]`` lists ``{"completion", "info"}`` per turn,
  where ``info`` is what `rftune.envs.wordle.env.WordleEnv.step` returned; ``completion`` is then ignored. Each
  reward is the mean over turns of its history-mode value (the turn's info is the example), except `wordle_win`,
  which is 1 when any turn won.

The guess is read from the last ``<guess>...</guess>`` of the reply, case-insensitively. ``allowed_words`` (a list
of words) replaces the official allowed list, e.g. for small hand-checked tests. One departure from the course:
`wordle_format` accepts any whitespace between ``</think>`` and ``<guess>`` rather than exactly one newline.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Sequence

import numpy as np

from rftune.envs.wordle.game import (
    CORRECT,
    PRESENT,
    History,
    extract_guess,
    feedback,
    has_required_format,
    parse_history,
)
from rftune.envs.wordle.patterns import consistent_mask, expected_information
from rftune.envs.wordle.words import WordList, encode, is_five_letters, normalize_word, word_list
from rftune.rewards.registry import register_reward

WordsOption = WordList | Sequence[str] | None


def episode_mean(reward: Callable) -> Callable:
    """Let a history-mode reward also score episodes: the mean of its values over the episode's turns."""

    @functools.wraps(reward)
    def wrapper(prompt, completion: str, example: dict, **options) -> float:
        turns = _episode_turns(example)
        if turns is None:
            return reward(prompt, completion, example, **options)
        return sum(reward(prompt, turn["completion"], turn["info"], **options) for turn in turns) / len(turns)

    return wrapper


def _episode_turns(example: dict) -> list[dict] | None:
    episode = example.get("episode")
    if episode is None:
        return None
    turns = episode.get("turns") if isinstance(episode, dict) else None
    if not turns:
        raise ValueError(f"example['episode'] must hold a non-empty 'turns' list, got {episode!r}")
    return turns


def _secret(example: dict) -> str:
    if "secret" not in example:
        raise ValueError(f"a Wordle reward needs example['secret']; got keys {sorted(example)}")
    return normalize_word(example["secret"], "secret")


def _guess(completion: str) -> str | None:
    """The 5-letter guess of a reply, lowercase, or None when there is none."""
    raw = extract_guess(completion)
    return raw.lower() if raw is not None and is_five_letters(raw) else None


@register_reward("wordle_format")
@episode_mean
def wordle_format(prompt, completion: str, example: dict, allowed_words: WordsOption = None,
                  prefilled_think: bool = False) -> float:
    """Format and validity of the reply, in {0, 0.1, 0.5, 1}.

    0 unless the reply is ``<think>...</think>`` then ``<guess>...</guess>``; then 0.1 when the guess is not 5
    letters, 0.5 when it is 5 letters but not an allowed word, 1.0 when valid. ``prefilled_think``: the prompt
    already ends in ``<think>``.
    """
    if not has_required_format(completion, prefilled_think):
        return 0.0
    guess = _guess(completion)
    if guess is None:
        return 0.1
    return 1.0 if guess in word_list(allowed_words) else 0.5


@register_reward("wordle_feedback")
@episode_mean
def wordle_feedback(prompt, completion: str, example: dict) -> float:
    """How well the guess uses earlier feedback, in [-2.5, 1.0].

    0 when the reply has no 5-letter guess; 0.1 when there is no history yet. Otherwise the sum over the guess's
    letters of the first rule that applies: kept at a position confirmed ✓ +0.2; a letter marked - placed at a
    position where it was not tried +0.1; a - letter placed where it was already marked - −0.2; a letter marked x
    (anywhere, as in the course) −0.5; any other letter +0.05.
    """
    guess = _guess(completion)
    if guess is None:
        return 0.0
    history = parse_history(example.get("past_guess_history"))
    if not history:
        return 0.1
    correct, present, absent = _letter_facts(history)
    return sum(_letter_score(letter, i, correct, present, absent) for i, letter in enumerate(guess))


def _letter_facts(history: History) -> tuple[dict[str, set[int]], dict[str, set[int]], set[str]]:
    correct: dict[str, set[int]] = {}
    present: dict[str, set[int]] = {}
    absent: set[str] = set()
    for guess, pattern in history:
        for i, (letter, symbol) in enumerate(zip(guess, pattern)):
            if symbol == CORRECT:
                correct.setdefault(letter, set()).add(i)
            elif symbol == PRESENT:
                present.setdefault(letter, set()).add(i)
            else:
                absent.add(letter)
    return correct, present, absent


def _letter_score(letter: str, position: int, correct: dict, present: dict, absent: set) -> float:
    if position in correct.get(letter, ()):
        return 0.2
    if letter in present:
        return 0.1 if position not in present[letter] else -0.2
    if letter in absent:
        return -0.5
    return 0.05


@register_reward("wordle_guess_value")
@episode_mean
def wordle_guess_value(prompt, completion: str, example: dict, allowed_words: WordsOption = None) -> float:
    """Normalised expected information of the guess, in [0, 1].

    C = allowed words consistent with all feedback so far, H = log2|C|; the guess partitions C by the feedback it
    would get, and the reward is (H − Σ_g |g|/|C| log2|g|) / H. 0 when the reply has no guess, the guess is not
    allowed, or |C| <= 1.
    """
    allowed = word_list(allowed_words)
    guess = _guess(completion)
    if guess is None or guess not in allowed:
        return 0.0
    history = parse_history(example.get("past_guess_history"))
    candidates = _consistent_encoded(allowed, tuple(history))  # [C, 5]
    if len(candidates) <= 1:
        return 0.0
    bits = expected_information(encode([guess]), candidates)[0]
    return float(bits / math.log2(len(candidates)))


@functools.lru_cache(maxsize=1024)
def _consistent_encoded(allowed: WordList, history: tuple[tuple[str, str], ...]) -> np.ndarray:
    return allowed.encoded[consistent_mask(allowed, list(history))]  # [C, 5]


@register_reward("wordle_win")
def wordle_win(prompt, completion: str, example: dict) -> float:
    """1.0 when the guess is the secret (episode mode: when any turn won), else 0.0."""
    turns = _episode_turns(example)
    if turns is not None:
        return float(any(turn["info"].get("won") for turn in turns))
    return float(_guess(completion) == _secret(example))


@register_reward("wordle_partial_credit")
@episode_mean
def wordle_partial_credit(prompt, completion: str, example: dict, allowed_words: WordsOption = None) -> float:
    """0.2 per ✓ and 0.1 per - in the guess's feedback against the secret, in [0, 1]; 0 for an invalid guess."""
    secret = _secret(example)
    guess = _guess(completion)
    if guess is None or guess not in word_list(allowed_words):
        return 0.0
    pattern = feedback(guess, secret)
    return 0.2 * pattern.count(CORRECT) + 0.1 * pattern.count(PRESENT)
