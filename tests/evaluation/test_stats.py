"""pass@k and the bootstrap intervals against values worked out by hand."""

import math

import pytest

from rftune.evaluation.stats import bootstrap_interval, estimate, paired_difference, pass_at_k


def test_pass_at_k_matches_the_binomial_formula():
    # n = 5 samples, c = 2 correct: pass@1 = 2/5; pass@2 = 1 - C(3,2)/C(5,2) = 1 - 3/10; pass@3 = 1 - 1/10
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4, abs=1e-12)
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7, abs=1e-12)
    assert pass_at_k(5, 2, 3) == pytest.approx(0.9, abs=1e-12)
    assert pass_at_k(5, 2, 4) == 1.0  # only 3 wrong samples: any 4 hold a correct one
    assert pass_at_k(5, 0, 5) == 0.0 and pass_at_k(5, 5, 1) == 1.0
    for n, c, k in [(10, 3, 4), (20, 1, 7), (16, 9, 2)]:
        assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k), abs=1e-12)


def test_pass_at_k_rejects_impossible_counts():
    with pytest.raises(ValueError, match="1 <= k <= n"):
        pass_at_k(4, 1, 5)
    with pytest.raises(ValueError, match="0 <= c <= n"):
        pass_at_k(4, 5, 1)


def test_bootstrap_interval_of_a_fair_coin_is_the_normal_one():
    # 50 zeros and 50 ones: mean 0.5, standard error sqrt(0.25 / 100) = 0.05, so 95% is 0.5 -+ 1.96 * 0.05
    low, high = bootstrap_interval([0.0] * 50 + [1.0] * 50, resamples=4000, seed=1)
    assert low == pytest.approx(0.402, abs=0.015) and high == pytest.approx(0.598, abs=0.015)


def test_bootstrap_of_two_values_and_of_constants():
    # means of 2 draws from {0, 1}: 0 (1/4), 0.5 (1/2), 1 (1/4): the 2.5% and 97.5% points are 0 and 1
    assert bootstrap_interval([0.0, 1.0], resamples=2000, seed=0) == (0.0, 1.0)
    assert bootstrap_interval([0.3] * 7) == pytest.approx((0.3, 0.3), abs=1e-12)
    assert bootstrap_interval([1.0, 2.0, 4.0], seed=5) == bootstrap_interval([1.0, 2.0, 4.0], seed=5)


def test_estimate_leaves_out_not_applicable_values():
    assert estimate([1.0, math.nan, 1.0]) == {"mean": 1.0, "low": 1.0, "high": 1.0, "n": 2}
    assert estimate([math.nan]) is None


def test_paired_difference_cancels_shared_difficulty():
    base = [0.0, 0.2, 0.9, 0.5]
    tuned = [b + 0.1 for b in base]  # better by exactly 0.1 on every row: the interval has no width
    difference = paired_difference(tuned, base)
    assert difference["mean"] == pytest.approx(0.1) and difference["high"] - difference["low"] < 1e-12
    with pytest.raises(ValueError, match="same rows"):
        paired_difference([1.0], [1.0, 2.0])
