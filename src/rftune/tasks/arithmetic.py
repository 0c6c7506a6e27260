"""Arithmetic and math word problems from reasoning-gym, answered as ``<answer>...</answer>``.

Options (``task.kwargs``): ``dataset`` — a reasoning-gym dataset name (default ``basic_arithmetic``; e.g.
``gsm_symbolic`` for word problems), ``size`` (default 1000), ``seed`` (default 0), ``config`` — options passed to
that reasoning-gym dataset. The default config gives two-term additions and subtractions with 1–2 digit numbers,
a level a 135M model can learn in tens of steps. Rewards default to an exact-answer check (the tagged answer, or
the last number when there is no tag — a small model rarely uses tags at first, and a reward that is always 0
teaches nothing) plus a small reward for ending with a tagged answer. ``reasoning_gym_answer`` (reasoning-gym's own
checker) is available for other reasoning-gym datasets.

Worked examples (the SFT warm start, ``sft.data: task``): for two-term additions and subtractions, a training row
answered place by place — ``Tens: 50 + 20 = 70. Ones: 7 + 9 = 16. Total: 70 + 16 = 86.`` then the tagged answer.
Each step is a one-digit fact or a sum of round numbers, which a 135M model can learn to write from a few hundred
examples; it cannot reliably add two-digit numbers in one token. Only training rows are used, so no held-out
problem is ever shown. For datasets whose rows carry their own solution (``gsm_symbolic``: ``answer_cot``), the
worked answer is that solution with its ``#### 44`` line replaced by ``<answer>44</answer>``.

Held-out rows: ``eval_size`` (default 500) problems drawn with another seed, without those whose expression (or,
for datasets without one, question) occurs in the training rows, each expression once. Drawing with another seed
alone does not hold anything out: 112 of 200 such two-term problems repeat one of 2,000 training expressions.
A completion is correct when ``exact_answer`` gives it 1.
"""

from __future__ import annotations

import functools
import random
import re

from rftune.config import RewardSpec
from rftune.errors import ConfigError
from rftune.tasks import Task, check_options
from rftune.tasks.data import samples_from_rows
from rftune.tasks.heldout import without_keys

SYSTEM_PROMPT = (
    "You are a careful math assistant. Think briefly, then give the final answer as a number inside "
    "<answer></answer> tags, for example: <answer>42</answer>."
)
DEFAULT_CONFIG = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2, "operators": ("+", "-"),
                  "allow_negation": False, "allow_parentheses": False}
ANSWER_AT_END = r"(?s).*<answer>.*?</answer>\s*"  # completion ends with a tagged answer
KNOWN_OPTIONS = {"dataset", "size", "seed", "config", "eval_size"}
EVAL_SEED_OFFSET = 1_000_003  # held-out problems are drawn with seed + this, then filtered by content


def build(options: dict, system_prompt: str | None, path: str | None, base_dir: str) -> Task:
    del base_dir
    check_options("arithmetic", options, KNOWN_OPTIONS, path)
    name = options.get("dataset", "basic_arithmetic")
    config = options.get("config", DEFAULT_CONFIG if name == "basic_arithmetic" else {})
    seed = int(options.get("seed", 0))
    training = _samples(name, config, int(options.get("size", 1000)), seed, system_prompt)
    drawn = _samples(name, config, int(options.get("eval_size", 500)), seed + EVAL_SEED_OFFSET, system_prompt)
    held_out = without_keys(drawn, {problem_key(s.example) for s in training}, problem_key, keep_once=True)
    if not held_out:
        raise ConfigError(f"task 'arithmetic': every held-out draw of {name!r} repeats a training problem; "
                          "use a harder task.kwargs.config or a smaller task.kwargs.size")
    rewards = [RewardSpec(name="exact_answer", weight=1.0, kwargs={"require_tag": False}),
               RewardSpec(name="format_regex", weight=0.2, kwargs={"pattern": ANSWER_AT_END})]
    return Task(samples=training, default_rewards=rewards, eval_samples=held_out, content_key=problem_key,
                correct_reward="exact_answer", worked_examples=_worked_writer(name, config, training))


def problem_key(example: dict) -> str:
    """What makes two problems the same: the expression without spaces, else the question."""
    expression = (example.get("metadata") or {}).get("expression")
    return "".join(str(expression).split()) if expression is not None else str(example.get("question"))


def worked_answer(expression: str) -> str:
    """A two-term expression answered place by place, then tagged: '57 + 29' -> 'Tens: 50 + 20 = 70. Ones: 7 + 9 =
    16. Total: 70 + 16 = 86.' and '<answer>86</answer>' on the next line."""
    left, operator, right = expression.split()
    a, b = int(left), int(right)
    sign = 1 if operator == "+" else -1
    tens, ones = a // 10 * 10 + sign * (b // 10 * 10), a % 10 + sign * (b % 10)
    total = tens + ones
    ones_term = f"- {-ones}" if ones < 0 else f"+ {ones}"
    return (f"Tens: {a // 10 * 10} {operator} {b // 10 * 10} = {tens}. Ones: {a % 10} {operator} {b % 10} = {ones}. "
            f"Total: {tens} {ones_term} = {total}.\n<answer>{total}</answer>")


def chain_of_thought_answer(example: dict) -> str:
    """A reasoning-gym solution (``metadata.answer_cot``, GSM8K style, ending in ``#### 44``) with its last line
    replaced by the tagged answer: '... 53-9=44 pebbles.' and '<answer>44</answer>' on the next line."""
    steps = re.sub(r"\n?####[^\n]*\s*$", "", str(example["metadata"]["answer_cot"]).strip())
    return f"{steps}\n<answer>{example['answer']}</answer>"


def _worked_writer(name: str, config: dict, training: list):
    """The task's SFT warm-start data, where it can write one: place-by-place answers for two-term
    additions/subtractions, the dataset's own chain of thought where every training row carries one."""
    if name == "basic_arithmetic" and config.get("min_terms") == config.get("max_terms") == 2 and not (
            config.get("allow_negation") or config.get("allow_parentheses")):
        return functools.partial(_worked_examples, training,
                                 lambda example: worked_answer(example["metadata"]["expression"]))
    if training and all((s.example.get("metadata") or {}).get("answer_cot") for s in training):
        return functools.partial(_worked_examples, training, chain_of_thought_answer)
    return None


def _worked_examples(training: list, answer, count: int, seed: int) -> list[list[dict]]:
    """`count` training rows (a seeded choice), each with ``answer(row)`` as the assistant's reply."""
    chosen = random.Random(seed).sample(training, min(count, len(training)))
    return [sample.prompt + [{"role": "assistant", "content": answer(sample.example)}] for sample in chosen]


def _samples(name: str, config: dict, size: int, seed: int, system_prompt: str | None):
    import reasoning_gym

    try:
        dataset = reasoning_gym.create_dataset(name, size=size, seed=seed, **config)
    except Exception as exc:  # reasoning-gym raises several types for bad names/options
        raise ConfigError(f"task.kwargs: reasoning-gym cannot build {name!r} with {config}: {exc}") from exc
    rows = ((f"reasoning-gym {name} #{i}", {"prompt": entry["question"], **entry})
            for i, entry in enumerate(dataset))
    return samples_from_rows(rows, system_prompt or SYSTEM_PROMPT)
