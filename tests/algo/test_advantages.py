"""Group-relative advantages: values derived by hand in the comments."""

import math

import pytest
import torch

from rftune.algo.advantages import compute_advantages, zero_std_groups


def test_design_toy_numbers_group_population_std():
    # mean 0.5; deviations -.5 -.3 -.1 0 0 .1 .3 .5; sum of squares 0.70; population var 0.0875
    rewards = torch.tensor([0, 0.2, 0.4, 0.5, 0.5, 0.6, 0.8, 1.0])
    adv, metrics = compute_advantages(rewards, num_generations=8, scale_rewards="group", eps=0.0)
    std = math.sqrt(0.0875)
    expected = torch.tensor([-0.5, -0.3, -0.1, 0, 0, 0.1, 0.3, 0.5]) / std
    torch.testing.assert_close(adv, expected, atol=1e-6, rtol=0)
    assert adv[0].item() == pytest.approx(-1.690, abs=5e-4)
    assert adv[1].item() == pytest.approx(-1.014, abs=5e-4)
    assert metrics["frac_zero_std"] == 0.0


def test_eps_is_added_to_std():
    adv, _ = compute_advantages(torch.tensor([0.0, 1.0]), 2, "group", eps=0.5)
    # population std of [0, 1] is 0.5; (0 - 0.5) / (0.5 + 0.5) = -0.5
    torch.testing.assert_close(adv, torch.tensor([-0.5, 0.5]))


def test_batch_scaling_uses_std_over_whole_batch():
    # groups [1, 0] and [3, 3]: centred [.5, -.5, 0, 0]; batch values mean 1.75, population var 6.75 / 4
    adv, metrics = compute_advantages(torch.tensor([1.0, 0.0, 3.0, 3.0]), 2, "batch", eps=0.0)
    std = math.sqrt(6.75 / 4)
    torch.testing.assert_close(adv, torch.tensor([0.5 / std, -0.5 / std, 0.0, 0.0]))
    assert metrics["frac_zero_std"] == 0.5


def test_no_scaling_is_dr_grpo():
    adv, _ = compute_advantages(torch.tensor([1.0, 0.0, 3.0, 3.0]), 2, "none")
    torch.testing.assert_close(adv, torch.tensor([0.5, -0.5, 0.0, 0.0]))


def test_equal_rewards_give_zero_advantages_and_are_counted():
    rewards = torch.tensor([0.7, 0.7, 0.7, 1.0, 0.0, 0.5])
    adv, metrics = compute_advantages(rewards, 3, "group")
    torch.testing.assert_close(adv[:3], torch.zeros(3))
    assert metrics["frac_zero_std"] == pytest.approx(0.5)
    assert zero_std_groups(rewards, 3).tolist() == [True, False]


def test_batch_not_multiple_of_group_size_raises():
    with pytest.raises(ValueError, match="not a multiple"):
        compute_advantages(torch.ones(5), 2)


def test_unknown_scaling_raises():
    with pytest.raises(ValueError, match="scale_rewards"):
        compute_advantages(torch.ones(4), 2, "median")
