"""Ratios, clipping, k3 KL and the loss aggregations on tiny tensors with hand-computed values."""

import math

import pytest
import torch

from rftune.algo.losses import (
    AGGREGATORS,
    BatchNorms,
    clipped_surrogate,
    k3_kl,
    policy_loss,
    sequence_ratio,
    token_ratio,
)

LOG = math.log


def norms(rows=2, tokens=4, micro=1, max_len=4):
    return BatchNorms(rows=rows, tokens=tokens, micro_batches=micro, max_completion_length=max_len)


def test_token_ratio_is_exp_of_logprob_difference():
    ratio = token_ratio(torch.tensor([[LOG(0.5)]]), torch.tensor([[LOG(0.4)]]), torch.ones(1, 1))
    assert ratio.item() == pytest.approx(1.25, abs=1e-6)


def test_clipping_positive_and_negative_advantages():
    ratio = torch.tensor([[1.25, 0.5], [1.25, 0.5]])
    adv = torch.tensor([1.0, -1.0])
    loss, clips = clipped_surrogate(ratio, adv, 0.2, 0.2)
    # A=+1: min(1.25, 1.2)=1.2 -> -1.2 (clipped high); min(0.5, 0.8)=0.5 -> -0.5 (not clipped: A>0, ratio low)
    # A=-1: min(-1.25, -1.2)=-1.25 -> 1.25 (not clipped); min(-0.5, -0.8)=-0.8 -> 0.8 (clipped low)
    torch.testing.assert_close(loss, torch.tensor([[-1.2, -0.5], [1.25, 0.8]]))
    assert clips["high"].tolist() == [[True, False], [False, False]]
    assert clips["low"].tolist() == [[False, False], [False, True]]
    assert clips["region"].tolist() == [[True, False], [False, True]]


def test_clip_higher_widens_only_the_top():
    ratio = torch.tensor([[1.25, 0.7]])
    loss, clips = clipped_surrogate(ratio, torch.tensor([1.0]), 0.2, 0.3)
    # 1.25 < 1.3 so unclipped; 0.7 < 0.8 but A > 0 so the min keeps 0.7
    torch.testing.assert_close(loss, torch.tensor([[-1.25, -0.7]]))
    assert not clips["region"].any()
    loss_neg, clips_neg = clipped_surrogate(ratio, torch.tensor([-1.0]), 0.2, 0.3)
    torch.testing.assert_close(loss_neg, torch.tensor([[1.25, 0.8]]))  # low side still clipped at 0.8
    assert clips_neg["low"].tolist() == [[False, True]]


def test_k3_kl_values():
    # ref - logpi = log(0.25/0.5) = -log 2: exp(-log2) + log2 - 1 = 0.5 + 0.693147 - 1
    kl = k3_kl(torch.tensor([[LOG(0.5), LOG(0.3)]]), torch.tensor([[LOG(0.25), LOG(0.3)]]))
    torch.testing.assert_close(kl, torch.tensor([[0.5 + math.log(2) - 1, 0.0]]))
    assert (k3_kl(torch.randn(4, 5), torch.randn(4, 5)) >= 0).all()


def test_sequence_ratio_is_masked_mean_of_log_ratio():
    logprobs = torch.tensor([[0.1, 0.3, 5.0]])
    ratio = sequence_ratio(logprobs, torch.zeros(1, 3), torch.tensor([[1.0, 1.0, 0.0]]))
    torch.testing.assert_close(ratio, torch.full((1, 3), math.exp(0.2)))


PER_TOKEN = torch.tensor([[1.0, 2.0, 3.0], [4.0, 9.0, 9.0]])
MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])


@pytest.mark.parametrize("loss_type, expected", [
    ("grpo", (2.0 + 4.0) / 2),  # sequence means 2 and 4
    ("bnpo", 10.0 / 4),  # token mean
    ("dapo", 10.0 / 4),  # token mean over the whole batch (4 tokens)
    ("dr_grpo", 10.0 / (2 * 4)),  # B=2, max_completion_length=4
])
def test_aggregations(loss_type, expected):
    assert AGGREGATORS[loss_type](PER_TOKEN, MASK, norms()).item() == pytest.approx(expected)


@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo"])
def test_micro_batches_add_up_to_the_batch_loss(loss_type):
    torch.manual_seed(0)
    per_token, mask = torch.randn(6, 5), (torch.rand(6, 5) > 0.3).float()
    full = AGGREGATORS[loss_type](per_token, mask, norms(rows=6, tokens=int(mask.sum()), micro=1, max_len=5))
    split = norms(rows=6, tokens=int(mask.sum()), micro=2, max_len=5)
    parts = sum(AGGREGATORS[loss_type](per_token[r], mask[r], split) for r in (slice(0, 3), slice(3, 6)))
    torch.testing.assert_close(parts, full)


def test_bnpo_averages_micro_batch_token_means():
    split = norms(rows=2, tokens=4, micro=2)
    parts = sum(AGGREGATORS["bnpo"](PER_TOKEN[r], MASK[r], split) for r in (slice(0, 1), slice(1, 2)))
    assert parts.item() == pytest.approx((2.0 + 4.0) / 2)


def test_policy_equal_to_reference_and_old_gives_minus_advantage_and_zero_kl():
    logprobs = torch.tensor([[-1.0, -2.0], [-0.5, -0.7]], requires_grad=True)
    adv = torch.tensor([1.0, -2.0])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    loss, metrics = policy_loss(logprobs, logprobs.detach(), logprobs.detach(), adv, mask, norms(rows=2, tokens=3),
                                loss_type="grpo", beta=0.04)
    assert loss.item() == pytest.approx((-1.0 + 2.0) / 2)  # per-token loss is -A; sequence means -1 and 2
    assert metrics["kl"] == 0.0 and metrics["clip/region"] == 0.0
    loss.backward()
    # d/dlogpi of -A * exp(logpi - sg(logpi)) is -A, scaled by 1 / (|o_i| * B)
    torch.testing.assert_close(logprobs.grad, torch.tensor([[-0.25, -0.25], [1.0, 0.0]]))


def test_kl_gradient_pulls_towards_reference():
    logprobs = torch.tensor([[-1.0]], requires_grad=True)
    loss, metrics = policy_loss(logprobs, logprobs.detach(), torch.tensor([[-2.0]]), torch.zeros(1), torch.ones(1, 1),
                                norms(rows=1, tokens=1), beta=1.0)
    # KL = e^{-1} + 1 - 1; dKL/dlogpi = -e^{ref-logpi} + 1 = 1 - e^{-1} > 0: lowering logpi lowers the loss
    assert metrics["kl"] == pytest.approx(math.exp(-1))
    loss.backward()
    assert logprobs.grad.item() == pytest.approx(1 - math.exp(-1))


def test_beta_zero_needs_no_reference():
    loss, metrics = policy_loss(torch.zeros(1, 2), torch.zeros(1, 2), None, torch.ones(1), torch.ones(1, 2),
                                norms(rows=1, tokens=2), beta=0.0)
    assert "kl" not in metrics and loss.item() == pytest.approx(-1.0)


def test_gspo_sequence_level_loss():
    logprobs = torch.tensor([[0.1, 0.3]], requires_grad=True)
    loss, _ = policy_loss(logprobs, torch.zeros(1, 2), None, torch.tensor([1.0]), torch.ones(1, 2),
                          norms(rows=1, tokens=2), importance_sampling_level="sequence", epsilon_high=0.5)
    assert loss.item() == pytest.approx(-math.exp(0.2))  # s = e^0.2 < 1.5 so unclipped
    loss.backward()
    torch.testing.assert_close(logprobs.grad, torch.full((1, 2), -math.exp(0.2) / 2))
