"""Reward calling conventions, weighting with None, and loud errors naming the function and the sample."""

import math

import pytest
import torch

from rftune.errors import ConfigError, RewardError
from rftune.rewards import as_reward_function, resolve_reward, score_completions, weighted_total

PROMPTS = ["p0", "p1", "p2"]
COMPLETIONS = ["a", "bb", "ccc"]
EXAMPLES = [{"prompt": "p0", "answer": 1}, {"prompt": "p1", "answer": 2}, {"prompt": "p2", "answer": 3}]


def per_sample_len(prompt, completion, example):
    return len(completion) * example["answer"]


def trl_style(prompts, completions, answer, **kwargs):
    return [a * 10 + len(c) for c, a in zip(completions, answer)]


def test_both_signatures_and_columns():
    fns = [as_reward_function(per_sample_len), as_reward_function(trl_style, weight=0.5)]
    assert [f.batched for f in fns] == [False, True]
    values, failures = score_completions(fns, PROMPTS, COMPLETIONS, EXAMPLES)
    torch.testing.assert_close(values, torch.tensor([[1.0, 11.0], [4.0, 22.0], [9.0, 33.0]]))
    assert failures == {"per_sample_len": 0, "trl_style": 0}
    torch.testing.assert_close(weighted_total(values, [1.0, 0.5]), torch.tensor([6.5, 15.0, 25.5]))


def test_none_is_left_out_of_the_total():
    fn = as_reward_function(lambda prompt, completion, example: None if completion == "bb" else 1.0, name="maybe")
    values, _ = score_completions([fn, as_reward_function(per_sample_len)], PROMPTS, COMPLETIONS, EXAMPLES)
    assert math.isnan(values[1, 0])
    torch.testing.assert_close(weighted_total(values, [2.0, 1.0]), torch.tensor([3.0, 4.0, 11.0]))


def test_raising_function_is_named_with_the_sample():
    def picky(prompt, completion, example):
        if completion == "bb":
            raise KeyError("missing field")
        return 1.0
    with pytest.raises(RewardError, match=r"reward function 'picky' failed on sample 1 \(prompt: 'p1'\).*KeyError"):
        score_completions([as_reward_function(picky)], PROMPTS, COMPLETIONS, EXAMPLES)


def test_skip_counts_failures_and_yields_none():
    def picky(prompt, completion, example):
        if completion != "a":
            raise ValueError("no")
        return 1.0
    values, failures = score_completions([as_reward_function(picky)], PROMPTS, COMPLETIONS, EXAMPLES, on_error="skip")
    assert values[0, 0] == 1.0 and math.isnan(values[1, 0]) and math.isnan(values[2, 0])
    assert failures == {"picky": 2}


def test_batched_wrong_count_and_bad_values():
    short = as_reward_function(lambda prompts, completions, **kw: [1.0], name="short")
    with pytest.raises(RewardError, match=r"'short' failed on a batch of 3 .* returned 1 values for 3"):
        score_completions([short], PROMPTS, COMPLETIONS, EXAMPLES)
    texty = as_reward_function(lambda prompts, completions, **kw: [1.0, "high", 0.0], name="texty")
    with pytest.raises(RewardError, match=r"'texty' failed on sample 1.*expected a number"):
        score_completions([texty], PROMPTS, COMPLETIONS, EXAMPLES)
    nan = as_reward_function(lambda prompt, completion, example: float("nan"), name="nan")
    with pytest.raises(RewardError, match="non-finite"):
        score_completions([nan], PROMPTS, COMPLETIONS, EXAMPLES)


def test_bool_and_numpy_values_are_numbers():
    import numpy as np
    fn = as_reward_function(lambda prompt, completion, example: np.float32(0.5) if completion == "a" else True,
                            name="b")
    values, _ = score_completions([fn], PROMPTS, COMPLETIONS, EXAMPLES)
    assert values[:, 0].tolist() == [0.5, 1.0, 1.0]


def test_kwargs_are_bound():
    fn = as_reward_function(lambda prompt, completion, example, scale: scale * len(completion), name="s",
                            kwargs={"scale": 10})
    values, _ = score_completions([fn], PROMPTS, COMPLETIONS, EXAMPLES)
    assert values[:, 0].tolist() == [10.0, 20.0, 30.0]


def test_resolve_builtin_module_and_file(tmp_path):
    assert resolve_reward("exact_answer").__name__ == "exact_answer"
    assert resolve_reward("rftune.rewards.builtin:format_regex").__name__ == "format_regex"
    (tmp_path / "mine.py").write_text("def shout(prompt, completion, example):\n"
                                      "    return float(completion.isupper())\n")
    assert resolve_reward("mine.py:shout", base_dir=tmp_path)("p", "HI", {}) == 1.0
    with pytest.raises(ConfigError, match="Did you mean .exact_answer."):
        resolve_reward("exact_answr")
    with pytest.raises(ConfigError, match="has no callable named 'nope'"):
        resolve_reward("mine.py:nope", base_dir=tmp_path)
    with pytest.raises(ConfigError, match="reward file not found"):
        resolve_reward("missing.py:f", base_dir=tmp_path)
    with pytest.raises(ConfigError, match="cannot import module"):
        resolve_reward("no_such_pkg_xyz:f")
