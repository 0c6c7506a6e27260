"""Fused RMS norms (rftune.cpu.rms_norm) equal transformers' written-out norm: values and gradients."""

import pytest
import torch

from rftune.cpu.rms_norm import use_fused_rms_norm
from rftune.testing import tiny_lora_model


@pytest.fixture
def norm_and_input(tiny_model_dir):
    model, _ = tiny_lora_model(tiny_model_dir, seed=4, scale=0.3)
    norm = model.get_base_model().model.layers[0].input_layernorm
    torch.manual_seed(2)
    with torch.no_grad():
        norm.weight.normal_()  # not all ones: the weight must be applied, and get its gradient
    norm.weight.requires_grad_(True)  # as in a full fine-tune (LoRA freezes it)
    # Small activations: mean(x^2) ~ 1e-5 is comparable to eps, so eps must enter exactly as in the formula.
    x = (torch.randn(3, 5, norm.weight.shape[0]) * 3e-3).requires_grad_()
    return model, norm, x


def _values_and_gradients(norm, x, upstream):
    y = norm(x)
    grad_x, grad_w = torch.autograd.grad((y * upstream).sum(), [x, norm.weight])
    return y, grad_x, grad_w


def test_fused_norm_equals_the_written_out_formula(norm_and_input):
    model, norm, x = norm_and_input
    upstream = torch.randn_like(x)
    expected = _values_and_gradients(norm, x, upstream)
    by_hand = norm.weight * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    torch.testing.assert_close(expected[0], by_hand, atol=1e-6, rtol=1e-5)

    layers = len(model.get_base_model().model.layers)
    assert use_fused_rms_norm(model) == 2 * layers + 1  # two per layer and the final norm
    got = _values_and_gradients(norm, x, upstream)
    for ours, theirs in zip(got, expected):
        torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-5)


def test_a_bf16_input_keeps_the_written_out_rounding(norm_and_input):
    model, norm, x = norm_and_input
    low = x.detach().to(torch.bfloat16)
    expected = norm(low)
    use_fused_rms_norm(model)
    assert torch.equal(norm(low), expected)


def test_other_architectures_keep_their_norms(tiny_model_dir):
    model, _ = tiny_lora_model(tiny_model_dir, seed=4, scale=0.3)
    model.get_base_model().config.model_type = "gemma"  # Gemma scales by (1 + w): not this formula
    assert use_fused_rms_norm(model) == 0
