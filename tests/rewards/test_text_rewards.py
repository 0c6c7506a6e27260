"""copy_fraction / copy_penalty and length_penalty_tokens, with hand-counted expected values."""

import pytest

from rftune.errors import ConfigError
from rftune.rewards import resolve_reward
from rftune.rewards.text import copy_fraction, copy_penalty, length_penalty_tokens, word_ngrams

SOURCE = "The quick brown fox jumps over the lazy dog near the river bank."


def test_word_ngrams_are_lowercased_words_in_order():
    assert word_ngrams("The quick, brown FOX!", 2) == [("the", "quick"), ("quick", "brown"), ("brown", "fox")]
    assert word_ngrams("one two", 3) == []


@pytest.mark.parametrize("completion, n, expected", [
    (SOURCE, 4, 1.0),
    # 6 grams; "quick brown fox jumps" and "brown fox jumps over" are copied
    ("A quick brown fox jumps over a sleepy cat.", 4, 2 / 6),
    ("the quick brown fox jumps", 4, 1.0),
    ("the quick brown fox sleeps", 4, 0.5),  # 2 grams, the first copied
    ("fox jumps", 4, 0.0),  # under n words
    ("the lazy dog", 1, 1.0),
    ("the lazy cat", 1, 2 / 3),
])
def test_copy_fraction(completion, n, expected):
    assert copy_fraction(completion, SOURCE, n) == pytest.approx(expected)


def test_copy_fraction_rejects_a_bad_n():
    with pytest.raises(ValueError, match="n-gram size"):
        copy_fraction("a b", "a b", 0)


def test_copy_penalty_scales_and_falls_back_to_the_prompt():
    assert copy_penalty("p", "the quick brown fox sleeps", {"document": SOURCE}, scale=2.0) == pytest.approx(-1.0)
    prompt = [{"role": "system", "content": "Summarise."}, {"role": "user", "content": SOURCE}]
    assert copy_penalty(prompt, SOURCE, {}) == -1.0
    assert copy_penalty(SOURCE, "entirely new words here today", {}) == 0.0
    assert resolve_reward("copy_penalty") is copy_penalty


def test_length_penalty_tokens_counts_tokens_of_the_named_tokenizer(tiny_model_dir):
    # the tiny tokenizer has one token per character: 10 tokens against a target of 4
    assert length_penalty_tokens("p", "abcdefghij", {}, tokenizer=tiny_model_dir, target=4) == pytest.approx(-1.5)
    assert length_penalty_tokens("p", "abcd", {}, tokenizer=tiny_model_dir, target=4) == 0.0
    assert length_penalty_tokens("p", "x" * 100, {}, tokenizer=tiny_model_dir, target=4, floor=-3) == -3
    assert resolve_reward("length_penalty_tokens") is length_penalty_tokens


def test_length_penalty_tokens_needs_a_tokenizer():
    with pytest.raises(ConfigError, match="tokenizer"):
        length_penalty_tokens("p", "abc", {})
