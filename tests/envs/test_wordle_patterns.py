"""Vectorised feedback codes, candidate filtering and expected information."""

import math
import random

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from rftune.envs.wordle.game import feedback
from rftune.envs.wordle.patterns import (
    SOLVED_CODE,
    code_of,
    consistent_words,
    expected_information,
    partition_sizes,
    pattern_codes,
    symbols_of,
)
from rftune.envs.wordle.words import WordList, allowed_words, encode

words = st.text(alphabet="abeors", min_size=5, max_size=5)


@settings(max_examples=200)
@given(st.lists(words, min_size=1, max_size=6), st.lists(words, min_size=1, max_size=6))
def test_vectorised_codes_agree_with_the_simple_feedback(guesses, secrets):
    codes = pattern_codes(encode(guesses), encode(secrets))
    assert codes.shape == (len(guesses), len(secrets))
    assert [[symbols_of(c) for c in row] for row in codes] == [[feedback(g, s) for s in secrets] for g in guesses]


def test_vectorised_codes_agree_on_real_words():
    sample = random.Random(0).sample(allowed_words().words, 120)
    guesses, secrets = sample[:60], sample[60:]
    codes = pattern_codes(encode(guesses), encode(secrets))
    assert [[symbols_of(c) for c in row] for row in codes] == [[feedback(g, s) for s in secrets] for g in guesses]


def test_codes_of_known_patterns():
    assert code_of("xxxxx") == 0
    assert code_of("✓✓✓✓✓") == SOLVED_CODE == 242
    assert code_of("-x✓xx") == 1 + 2 * 9
    assert symbols_of(code_of("--✓✓x")) == "--✓✓x"
    assert pattern_codes(encode(["babes"]), encode(["abbey"]))[0, 0] == code_of("--✓✓x")


def test_blocks_of_many_guesses_match_one_at_a_time(monkeypatch):
    import rftune.envs.wordle.patterns as patterns

    guesses, secrets = encode(["crane", "eerie", "speed", "sissy"]), encode(["abbey", "speed", "crane"])
    whole = pattern_codes(guesses, secrets)
    monkeypatch.setattr(patterns, "_CHUNK_PAIRS", 1)  # one guess per block
    assert np.array_equal(pattern_codes(guesses, secrets), whole)


def test_consistent_words_keeps_only_words_matching_all_feedback():
    pool = WordList(["crate", "crave", "grace", "trace", "crane", "slate"])
    assert consistent_words(pool, [("crane", "✓✓✓x✓")]) == ["crate", "crave"]
    assert consistent_words(pool, [("crane", "✓✓✓x✓"), ("trace", "x✓✓-✓")]) == ["crave"]
    assert consistent_words(pool, []) == list(pool.words)


def test_expected_information_by_hand():
    # crane against {crane, crate, crave, grace, trace}: groups {crane}, {crate, crave}, {grace, trace}
    candidates = encode(["crane", "crate", "crave", "grace", "trace"])
    bits = expected_information(encode(["crane", "zzzzz"]), candidates)
    assert abs(bits[0] - (math.log2(5) - 0.8)) < 1e-12
    assert abs(bits[1]) < 1e-12  # a word sharing no letters tells nothing
    sizes = partition_sizes(pattern_codes(encode(["crane"]), candidates))[0]
    assert sorted(sizes[sizes > 0].tolist()) == [1, 2, 2]
    assert expected_information(encode(["crane"]), encode([])).tolist() == [0.0]
