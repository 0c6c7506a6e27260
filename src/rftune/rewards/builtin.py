"""Built-in rewards for verifiable tasks: answer checks (by hand, by math-verify, by reasoning-gym), a format check,
a length penalty.

All are per-sample functions ``f(prompt, completion, example, **options)``; see `rftune.rewards.base`.
"""

from __future__ import annotations

import re

from rftune.rewards.registry import register_reward

ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def extract_answer(completion: str) -> str | None:
    """The text inside the last ``<answer>...</answer>``, or None when there is no such tag."""
    found = ANSWER_TAG.findall(completion)
    return found[-1].strip() if found else None


def _as_number(text: str) -> float | None:
    match = NUMBER.search(text.replace(" ", ""))
    if match is None:
        return None
    try:
        return float(match.group().replace(",", ""))
    except ValueError:
        return None


@register_reward("exact_answer")
def exact_answer(prompt, completion: str, example: dict, answer_key: str = "answer",
                 require_tag: bool = True) -> float:
    """1.0 when the final answer equals ``example[answer_key]``, else 0.0.

    The final answer is the content of the last ``<answer>`` tag; with ``require_tag=False`` a completion with no
    tag falls back to its last number. Numbers compare numerically (``1,000`` == ``1000.0``), other text
    case-insensitively after trimming.
    """
    answer = extract_answer(completion)
    if answer is None and not require_tag:
        numbers = NUMBER.findall(completion)
        answer = numbers[-1] if numbers else None
    if answer is None:
        return 0.0
    expected = str(example[answer_key]).strip()
    got_number, expected_number = _as_number(answer), _as_number(expected)
    if expected_number is not None and NUMBER.fullmatch(expected.replace(",", "")):
        return float(got_number is not None and abs(got_number - expected_number) < 1e-6
                     and NUMBER.fullmatch(answer.replace(",", "").replace(" ", "")) is not None)
    return float(answer.lower() == expected.lower())


@register_reward("math_answer")
def math_answer(prompt, completion: str, example: dict, answer_key: str = "answer",
                require_tag: bool = False) -> float | None:
    """1.0 when math-verify finds the completion's answer mathematically equal to ``example[answer_key]``
    (``1/2`` = ``0.5`` = ``\\frac{1}{2}``, ``1,000`` = ``1000``), else 0.0; None when the reference itself cannot be
    parsed (not applicable). The answer is the last ``<answer>`` tag's content, or with ``require_tag=False`` (the
    default) the whole completion, where math-verify takes the last boxed or plain expression."""
    from math_verify import parse, verify

    gold = parse(str(example[answer_key]))
    if not gold:
        return None
    answer = extract_answer(completion)
    if answer is None and require_tag:
        return 0.0
    predicted = parse(completion if answer is None else answer)
    return float(bool(predicted) and verify(gold, predicted))


@register_reward("reasoning_gym_answer")
def reasoning_gym_answer(prompt, completion: str, example: dict) -> float:
    """Score the tagged answer with reasoning-gym's own checker for the row's source dataset (0..1)."""
    import reasoning_gym

    answer = extract_answer(completion)
    if answer is None:
        return 0.0
    entry = {"question": example.get("question"), "answer": example["answer"], "metadata": example["metadata"]}
    return float(reasoning_gym.get_score_answer_fn(example["metadata"]["source_dataset"])(answer, entry))


@register_reward("format_regex")
def format_regex(prompt, completion: str, example: dict,
                 pattern: str = r"^\s*<think>.*?</think>\s*<answer>.*?</answer>\s*$") -> float:
    """1.0 when the whole completion matches ``pattern`` (dot matches newlines), else 0.0."""
    return float(re.fullmatch(pattern, completion, flags=re.DOTALL) is not None)


@register_reward("length_penalty")
def length_penalty(prompt, completion: str, example: dict, target: int = 1000, floor: float = -10.0,
                   unit: str = "chars") -> float:
    """0 up to ``target`` length, then ``max((target - length) / target, floor)``; length in chars or words."""
    if unit not in ("chars", "words"):
        raise ValueError(f"length_penalty unit must be 'chars' or 'words', got {unit!r}")
    length = len(completion) if unit == "chars" else len(completion.split())
    if length <= target:
        return 0.0
    return max((target - length) / target, floor)
