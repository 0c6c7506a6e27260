"""Arithmetic and math word problems from reasoning-gym, answered as ``<answer>...</answer>``.

Options (``task.kwargs``): ``dataset`` — a reasoning-gym dataset name (default ``basic_arithmetic``; e.g.
``gsm_symbolic`` for word problems), ``size`` (default 1000), ``seed`` (default 0), ``config`` — options passed to
that reasoning-gym dataset. The default config gives two-term additions and subtractions with 1–2 digit numbers,
a level a 135M model can learn in tens of steps. Rewards default to an exact-answer check (the tagged answer, or
the last number when there is no tag — a small model rarely uses tags at first, and a reward that is always 0
teaches nothing) plus a small reward for ending with a tagged answer. ``reasoning_gym_answer`` (reasoning-gym's own
checker) is available for other reasoning-gym datasets.
"""

from __future__ import annotations

from rftune.config import RewardSpec
from rftune.data import samples_from_rows
from rftune.errors import ConfigError
from rftune.tasks import Task

SYSTEM_PROMPT = (
    "You are a careful math assistant. Think briefly, then give the final answer as a number inside "
    "<answer></answer> tags, for example: <answer>42</answer>."
)
DEFAULT_CONFIG = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2, "operators": ("+", "-"),
                  "allow_negation": False, "allow_parentheses": False}
ANSWER_AT_END = r"(?s).*<answer>.*?</answer>\s*"  # completion ends with a tagged answer
KNOWN_OPTIONS = {"dataset", "size", "seed", "config"}


def build(options: dict, system_prompt: str | None, path: str | None, base_dir: str) -> Task:
    del base_dir
    unknown = set(options) - KNOWN_OPTIONS
    if unknown or path:
        raise ConfigError(f"task 'arithmetic' options are {sorted(KNOWN_OPTIONS)}; got "
                          f"{sorted(unknown) or ['task.path']}")
    import reasoning_gym

    name = options.get("dataset", "basic_arithmetic")
    config = options.get("config", DEFAULT_CONFIG if name == "basic_arithmetic" else {})
    try:
        dataset = reasoning_gym.create_dataset(name, size=int(options.get("size", 1000)),
                                               seed=int(options.get("seed", 0)), **config)
    except Exception as exc:  # reasoning-gym raises several types for bad names/options
        raise ConfigError(f"task.kwargs: reasoning-gym cannot build {name!r} with {config}: {exc}") from exc
    rows = ((f"reasoning-gym {name} #{i}", {"prompt": entry["question"], **entry})
            for i, entry in enumerate(dataset))
    rewards = [RewardSpec(name="exact_answer", weight=1.0, kwargs={"require_tag": False}),
               RewardSpec(name="format_regex", weight=0.2, kwargs={"pattern": ANSWER_AT_END})]
    return Task(samples=samples_from_rows(rows, system_prompt or SYSTEM_PROMPT), default_rewards=rewards)
