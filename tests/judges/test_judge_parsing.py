"""Score and answer-letter parsing from judge replies (hand-written table)."""

import pytest

from rftune.judges.parsing import parse_choice, parse_score


@pytest.mark.parametrize("reply, expected", [
    ("<score>7</score>", 0.7),
    ("Concise and faithful.\n<score> 9 </score>", 0.9),
    ("<score>7/10</score>", 0.7),
    ("<score>3 out of 5</score>", 0.6),
    ("First I thought <score>2</score>, but on reflection <score>6</score>", 0.6),
    ("Score: 7/10", 0.7),
    ("**Score:** 9", 0.9),
    ("The score is 6.5 because it misses one point.", 0.65),
    ('{"reasoning": "ok", "score": 4}', 0.4),
    ("Rating: 8 out of 10", 0.8),
    ("I would give this 7 out of 10.", 0.7),
    ("I give it 4/5.", 0.8),
    ("8", 0.8),
    ("  10. ", 1.0),
    ("score of 0", 0.0),
    ("<score>seven</score> Score: 3", 0.3),  # an unreadable tag falls back to the rest of the reply
    ("<score>12</score>", None),  # out of range: None, not clamped
    ("Score: 2024", None),
    ("<score>-1</score>", None),
    ("11/10", None),
    ("I think it is good.", None),
    ("I think 7", None),  # a bare number amid chatter is not trusted
    ("", None),
    (None, None),
])
def test_parse_score(reply, expected):
    result = parse_score(reply, scale=10)
    assert result == (None if expected is None else pytest.approx(expected))


def test_parse_score_uses_the_scale_for_bare_numbers():
    assert parse_score("<score>4</score>", scale=5) == pytest.approx(0.8)
    assert parse_score("<score>6</score>", scale=5) is None


@pytest.mark.parametrize("reply, expected", [
    ("<answer>B</answer>", "B"),
    ("<answer>b</answer>", "B"),
    ("<answer>C) the granite quarry</answer>", "C"),
    ("The answer is C.", "C"),
    ("Answer: (D)", "D"),
    ("I believe option B is right", "B"),
    ("A) Paris", "A"),
    ("E", "E"),
    ("A good question; the text does not say.", None),  # "A" as a word is not an answer
    ("The answer is a bit unclear", None),
    ("<answer>Berlin</answer>", None),
    ("<answer>F</answer>", None),
    (None, None),
])
def test_parse_choice(reply, expected):
    assert parse_choice(reply) == expected


def test_parse_choice_restricted_letters():
    assert parse_choice("<answer>E</answer>", letters="ABCD") is None
