"""Prefix-shared, padding-trimmed log-probs (rftune.train.logprobs) equal a plain full-sequence forward."""

import random

import pytest
import torch

from rftune.testing import tiny_lora_model
from rftune.train.logprobs import (
    ROWS_PER_BLOCK,
    completion_logprobs,
    length_groups,
    position_ids_from_mask,
    token_logprobs,
)


def plain_logprobs(model, prompt_ids, prompt_mask, completion_ids, attention_mask, temperature):
    """The textbook computation: every row runs prompt + completion; log-softmax at the shifted positions."""
    input_ids = torch.cat([prompt_ids, completion_ids], 1)
    mask = torch.cat([prompt_mask, attention_mask], 1)
    logits = model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits
    logits = logits[:, prompt_ids.shape[1] - 1:-1].float() / temperature  # [R, Tc, V]
    logprobs = logits.log_softmax(-1).gather(2, completion_ids[..., None]).squeeze(2)
    entropy = -(logits.softmax(-1) * logits.log_softmax(-1)).sum(-1)
    return logprobs * attention_mask, entropy * attention_mask


@pytest.fixture(scope="module")
def lora_model(tiny_model_dir):
    model, tokenizer = tiny_lora_model(tiny_model_dir, seed=2, scale=0.3)  # non-zero adapter: merging matters
    return model.train(), tokenizer


def _batch(groups: int, per_group: int, width: int = 9, prompt_width: int = 7, extra_pad: int = 2):
    """Grouped rows: prompts of different lengths (left-padded, plus all-pad columns), ragged completions."""
    torch.manual_seed(3)
    prompt_ids = torch.zeros(groups, prompt_width + extra_pad, dtype=torch.long)
    prompt_mask = torch.zeros_like(prompt_ids)
    for g in range(groups):
        length = prompt_width - g % 3
        prompt_ids[g, -length:] = torch.randint(4, 60, (length,))
        prompt_mask[g, -length:] = 1
    rows = groups * per_group
    completion_ids = torch.randint(4, 60, (rows, width + 3))
    lengths = torch.randint(1, width + 1, (rows,))
    attention_mask = (torch.arange(width + 3)[None] < lengths[:, None]).long()  # 3 all-padding columns at the end
    completion_ids = completion_ids * attention_mask
    repeat = lambda t: t.repeat_interleave(per_group, 0)  # noqa: E731
    return repeat(prompt_ids), repeat(prompt_mask), completion_ids, attention_mask


@pytest.mark.parametrize("groups,per_group,temperature", [(3, 4, 1.0), (2, 3, 0.7), (4, 1, 1.0)])
def test_logprobs_entropy_and_gradients_match_the_plain_forward(lora_model, groups, per_group, temperature):
    model, _ = lora_model
    batch = _batch(groups, per_group)
    params = [p for p in model.parameters() if p.requires_grad]

    model.zero_grad()
    ours, entropy = completion_logprobs(model, *batch, temperature=temperature, with_entropy=True)
    ours.sum().backward()
    our_grads = [p.grad.clone() for p in params]

    model.zero_grad()
    expected, expected_entropy = plain_logprobs(model, *batch, temperature)
    expected.sum().backward()

    assert ours.shape == batch[2].shape
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(entropy, expected_entropy.detach(), atol=1e-5, rtol=1e-5)
    for got, want in zip(our_grads, (p.grad for p in params)):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("dtype, temperature", [(torch.float32, 0.7), (torch.float32, 1.0), (torch.bfloat16, 0.7)])
def test_token_logprobs_match_log_softmax_with_any_upstream_gradient(dtype, temperature):
    torch.manual_seed(5)
    rows = 2 * ROWS_PER_BLOCK + 7  # two whole blocks and a part
    logits = (torch.randn(rows, 50) * 3).to(dtype).requires_grad_()
    targets = torch.randint(0, 50, (rows,))
    upstream = torch.randn(rows)  # a different weight per token, as the GRPO loss gives

    ours, entropy = token_logprobs(logits, targets, temperature, with_entropy=True)
    (ours * upstream).sum().backward()
    our_grad, logits.grad = logits.grad, None

    scaled = logits.float() / temperature  # the textbook values, from the same (rounded) logits
    expected = scaled.log_softmax(-1).gather(1, targets[:, None]).squeeze(1)
    (expected * upstream).sum().backward()
    expected_entropy = -(scaled.softmax(-1) * scaled.log_softmax(-1)).sum(-1)

    assert ours.dtype == entropy.dtype == torch.float32 and our_grad.dtype == dtype
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(entropy, expected_entropy.detach(), atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(our_grad, logits.grad, atol=1e-6, rtol=0)  # both rounded to the logits' dtype once
    assert token_logprobs(logits, targets)[1] is None


def test_reference_pass_with_adapters_disabled_matches(lora_model):
    model, _ = lora_model
    batch = _batch(2, 4)
    with torch.no_grad(), model.disable_adapter():
        ours, _ = completion_logprobs(model, *batch)
        expected, _ = plain_logprobs(model, *batch, 1.0)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)


def test_padding_positions_are_zero_and_an_empty_batch_works(lora_model):
    model, _ = lora_model
    prompt_ids, prompt_mask, completion_ids, attention_mask = _batch(2, 2)
    with torch.no_grad():
        ours, _ = completion_logprobs(model, prompt_ids, prompt_mask, completion_ids, attention_mask)
        assert torch.all(ours[attention_mask == 0] == 0)
        empty, _ = completion_logprobs(model, prompt_ids, prompt_mask, completion_ids,
                                       torch.zeros_like(attention_mask))
    assert torch.all(empty == 0) and empty.shape == completion_ids.shape


def test_length_groups_by_hand():
    # Sorted longest first: 10 10 9 | 2 1. One pass costs 5*10 + 8 = 58; the cut after the 9 costs
    # (3*10 + 8) + (2*2 + 8) = 50, the best of all cuts (e.g. 10 10 | 9 | 2 1 costs 28 + 17 + 12 = 57).
    assert length_groups([2, 10, 1, 9, 10], overhead=8) == [[1, 4, 3], [0, 2]]
    assert length_groups([5, 5, 5], overhead=8) == [[0, 1, 2]]  # equal lengths: one pass
    assert length_groups([64, 1], overhead=0) == [[0], [1]]  # free passes: no padding at all
    assert length_groups([64, 1], overhead=1000) == [[0, 1]]
    assert length_groups([]) == []


def test_length_groups_are_optimal_against_every_partition():
    # Any split of the sorted rows into consecutive runs is a candidate; the DP (which only cuts between
    # different lengths) must find the cheapest of all 2^(n-1) of them and use every row once.
    rng = random.Random(0)
    for _ in range(200):
        lengths = [rng.randint(1, 12) for _ in range(rng.randint(1, 9))]
        overhead = rng.choice([0, 3, 8, 30])
        groups = length_groups(lengths, overhead)
        assert sorted(i for group in groups for i in group) == list(range(len(lengths)))
        cost = sum(len(group) * max(lengths[i] for i in group) + overhead for group in groups)
        assert cost == _cheapest_partition(sorted(lengths, reverse=True), overhead)


def _cheapest_partition(descending: list[int], overhead: int) -> int:
    best = None
    for cuts in range(2 ** (len(descending) - 1)):
        starts = [0] + [k for k in range(1, len(descending)) if cuts >> (k - 1) & 1] + [len(descending)]
        cost = sum((end - start) * descending[start] + overhead for start, end in zip(starts, starts[1:]))
        best = cost if best is None else min(best, cost)
    return best


def test_grouped_completions_match_the_plain_forward(lora_model, monkeypatch):
    # A zero overhead makes every distinct completion length its own pass, so rows of one prompt land in
    # different groups; values and gradients (through the shared prompt too) must not change.
    monkeypatch.setattr("rftune.train.logprobs.GROUP_OVERHEAD_TOKENS", 0)
    model, _ = lora_model
    batch = _batch(3, 4)
    assert len(set(batch[3].sum(1).tolist())) > 3
    params = [p for p in model.parameters() if p.requires_grad]
    model.zero_grad()
    ours, _ = completion_logprobs(model, *batch)
    ours.sum().backward()
    our_grads = [p.grad.clone() for p in params]
    model.zero_grad()
    expected, _ = plain_logprobs(model, *batch, 1.0)
    expected.sum().backward()
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)
    for got, want in zip(our_grads, (p.grad for p in params)):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
