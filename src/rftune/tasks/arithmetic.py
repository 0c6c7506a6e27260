"""Arithmetic and math word problems from reasoning-gym, answered as ``<answer>...</answer>``.

Options (``task.kwargs``): ``dataset`` — a reasoning-gym dataset name (default ``basic_arithmetic``; e.g.
``gsm_symbolic`` for word problems), ``size`` (default 1000), ``seed`` (default 0), ``config`` — options passed to
that reasoning-gym dataset. The default config gives two-term additions and subtractions with 1–2 digit numbers,
a level a 135M model can learn in tens of steps. Rewards default to an exact-answer check (the tagged answer, or
the last number when there is no tag — a small model rarely uses tags at first, and a reward that is always 0
teaches nothing) plus a small reward for ending with a tagged answer. ``reasoning_gym_answer`` (reasoning-gym's own
checker) is available for other reasoning-gym datasets.

Held-out rows: ``eval_size`` (default 500) problems drawn with another seed, without those whose expression (or,
for datasets without one, question) occurs in the training rows, each expression once. Drawing with another seed
alone does not hold anything out: 112 of 200 such two-term problems repeat one of 2,000 training expressions.
A completion is correct when ``exact_answer`` gives it 1.
"""

from __future__ import annotations

from rftune.config import RewardSpec
from rftune.data import samples_from_rows
from rftune.errors import ConfigError
from rftune.heldout import without_keys
from rftune.tasks import Task

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
    unknown = set(options) - KNOWN_OPTIONS
    if unknown or path:
        raise ConfigError(f"task 'arithmetic' options are {sorted(KNOWN_OPTIONS)}; got "
                          f"{sorted(unknown) or ['task.path']}")
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
                correct_reward="exact_answer")


def problem_key(example: dict) -> str:
    """What makes two problems the same: the expression without spaces, else the question."""
    expression = (example.get("metadata") or {}).get("expression")
    return "".join(str(expression).split()) if expression is not None else str(example.get("question"))


def _samples(name: str, config: dict, size: int, seed: int, system_prompt: str | None):
    import reasoning_gym

    try:
        dataset = reasoning_gym.create_dataset(name, size=size, seed=seed, **config)
    except Exception as exc:  # reasoning-gym raises several types for bad names/options
        raise ConfigError(f"task.kwargs: reasoning-gym cannot build {name!r} with {config}: {exc}") from exc
    rows = ((f"reasoning-gym {name} #{i}", {"prompt": entry["question"], **entry})
            for i, entry in enumerate(dataset))
    return samples_from_rows(rows, system_prompt or SYSTEM_PROMPT)
