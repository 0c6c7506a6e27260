"""Robust parsing of judge replies: scores on a 0..scale rubric, and multiple-choice answer letters.

Scores, in order of trust (the last match of the first kind found wins, since judges reason before concluding):
  1. ``<score>7</score>`` (the content may itself be ``7/10`` or ``7 out of 10``);
  2. a labelled score: ``Score: 7``, ``**Score**: 7/10``, ``"score": 7``, ``score of 7.5``;
  3. a fraction anywhere: ``7/10``, ``7 out of 10``;
  4. a reply that is nothing but a number.
A fraction with its own denominator is normalised by it (``4/5`` -> 0.8); a bare number by ``scale``.

Out-of-range numbers (below 0, above the denominator) give ``None`` rather than a clamped value: on a 0..10
rubric a "12" or "2024" is far more often a misread number than a judgement, and ``None`` is counted and left out
of the reward instead of silently skewing it. ``None`` also means nothing usable was found.
"""

from __future__ import annotations

import re

_NUMBER = r"(-?\d+(?:\.\d+)?)"
_DENOMINATOR = rf"(?:\s*(?:/|out\s+of)\s*{_NUMBER})?"
_SCORE_TAG = re.compile(r"<score>(.*?)</score>", re.IGNORECASE | re.DOTALL)
_LABELLED = re.compile(rf"\b(?:score|rating|grade)\b[\s*_:=\"'`]*(?:of|is|was|would be|:)?[\s*_:=\"'`]*"
                       rf"{_NUMBER}{_DENOMINATOR}", re.IGNORECASE)
_FRACTION = re.compile(rf"{_NUMBER}\s*(?:/|out\s+of)\s*{_NUMBER}", re.IGNORECASE)
_ONLY_NUMBER = re.compile(rf"\s*[*_`\"']*{_NUMBER}{_DENOMINATOR}[*_`\"'.]*\s*")

_ANSWER_TAG = re.compile(r"<answer>\s*\(?([A-Za-z])\)?\s*(?:[).:]|</answer>|\s)", re.IGNORECASE)
_ANSWER_LABEL = re.compile(r"\b(?i:answer|option|choice)\b(?:\s+is)?\s*[:=]?\s*\(?\**([A-Z])\b(?![a-z'])")
_LEADING_LETTER = re.compile(r"\s*\**\(?([A-Z])(?:[).:*]|\s*$|\s+-)")


def parse_score(text: str | None, scale: float = 10) -> float | None:
    """The judge's score mapped to [0, 1], or None when the reply holds no usable score (see module docs)."""
    if not text:
        return None
    tagged = _SCORE_TAG.findall(text)
    if tagged:
        match = _ONLY_NUMBER.fullmatch(tagged[-1]) or _FRACTION.search(tagged[-1])
        if match:
            return _normalise(match.group(1), match.group(2), scale)
    for pattern in (_LABELLED, _FRACTION):
        matches = pattern.findall(text)
        if matches:
            value, denominator = matches[-1]
            return _normalise(value, denominator, scale)
    match = _ONLY_NUMBER.fullmatch(text)
    return _normalise(match.group(1), match.group(2), scale) if match else None


def _normalise(value: str, denominator: str | None, scale: float) -> float | None:
    top = float(denominator) if denominator else float(scale)
    number = float(value)
    if top <= 0 or not 0 <= number <= top:
        return None
    return number / top


def parse_choice(text: str | None, letters: str = "ABCDE") -> str | None:
    """The option letter a judge chose (upper case), or None when no letter in ``letters`` can be read.

    Looks for ``<answer>B</answer>``, then ``answer: B`` / ``The answer is (B)``, then a reply starting with
    ``B)`` / ``B.`` / ``B`` alone. A free-standing capital letter elsewhere is not trusted ("A" is also a word).
    """
    if not text:
        return None
    for pattern in (_ANSWER_TAG, _ANSWER_LABEL):
        found = [letter.upper() for letter in pattern.findall(text) if letter.upper() in letters]
        if found:
            return found[-1]
    match = _LEADING_LETTER.match(text)
    if match and match.group(1) in letters:
        return match.group(1)
    return None
