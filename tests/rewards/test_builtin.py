"""Built-in verifiable rewards."""

import pytest

from rftune.rewards.builtin import exact_answer, format_regex, length_penalty, math_answer, reasoning_gym_answer


@pytest.mark.parametrize("completion, answer, require_tag, expected", [
    ("so <answer>42</answer>", "42", True, 1.0),
    ("<answer>1,000</answer>", "1000", True, 1.0),
    ("<answer>41</answer>", "42", True, 0.0),
    ("<answer>42 apples</answer>", "42", True, 0.0),  # a number answer must be just the number
    ("<answer>1</answer> then <answer>42</answer>", "42", True, 1.0),  # the last tag counts
    ("5 + 37 = 42", "42", True, 0.0),
    ("5 + 37 = 42", "42", False, 1.0),  # fallback: the last number
    ("-3 - 4 = -7", "-7", False, 1.0),
    ("<answer> Paris </answer>", "paris", True, 1.0),
])
def test_exact_answer(completion, answer, require_tag, expected):
    assert exact_answer(None, completion, {"answer": answer}, require_tag=require_tag) == expected


@pytest.mark.parametrize("completion, answer, require_tag, expected", [
    ("so <answer>42</answer>", "42", False, 1.0),
    ("<answer>41</answer>", "42", False, 0.0),
    ("<answer>\\frac{1}{2}</answer>", "0.5", False, 1.0),  # equal values, written differently
    ("<answer>1/2</answer>", "0.5", False, 1.0),
    ("Half of it: 0.5 apples each, 2 in all. The total is 1000.", "1,000", False, 1.0),  # no tag: the last number
    ("The total is 1000.", "1000", True, 0.0),  # a tag was required
    ("no answer here", "7", False, 0.0),
    ("<answer>3</answer>", "", False, None),  # the reference cannot be parsed: not applicable
])
def test_math_answer_compares_values_with_math_verify(completion, answer, require_tag, expected):
    assert math_answer(None, completion, {"answer": answer}, require_tag=require_tag) == expected


def test_math_answer_accepts_what_the_string_check_refuses():
    for completion in ("<answer>\\frac{1}{2}</answer>", "<answer>1/2</answer>"):
        assert exact_answer(None, completion, {"answer": "0.5"}) == 0.0
        assert math_answer(None, completion, {"answer": "0.5"}) == 1.0


def test_format_regex_default_and_custom():
    assert format_regex(None, "<think>hm</think>\n<answer>3</answer>", {}) == 1.0
    assert format_regex(None, "<answer>3</answer>", {}) == 0.0
    assert format_regex(None, "x <answer>3</answer>", {}, pattern=r".*<answer>\d+</answer>") == 1.0


@pytest.mark.parametrize("text, target, expected", [
    ("a" * 100, 100, 0.0),
    ("a" * 150, 100, -0.5),  # (100 - 150) / 100
    ("a" * 2000, 100, -10.0),  # (100 - 2000) / 100 = -19, floored at -10
])
def test_length_penalty(text, target, expected):
    assert length_penalty(None, text, {}, target=target) == pytest.approx(expected)


def test_length_penalty_in_words_and_bad_unit():
    assert length_penalty(None, "one two three four", {}, target=2, unit="words") == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="unit"):
        length_penalty(None, "x", {}, unit="tokens")


def test_reasoning_gym_checker():
    import reasoning_gym
    entry = reasoning_gym.create_dataset("basic_arithmetic", size=1, seed=3)[0]
    assert reasoning_gym_answer(None, f"<answer>{entry['answer']}</answer>", entry) == 1.0
    assert reasoning_gym_answer(None, "no tag", entry) == 0.0
